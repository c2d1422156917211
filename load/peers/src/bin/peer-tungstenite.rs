//! `peer-tungstenite`: a WebSocket echo server on `tokio-tungstenite`, one current-thread tokio
//! runtime, written the way the crate's own echo-server example is (split the stream, forward
//! text and binary messages back). It is a comparison peer for the `load compare` harness.
//!
//! Usage: `peer-tungstenite --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

fn listen_arg() -> String {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            if let Some(v) = args.next() {
                return v;
            }
        } else if let Some(v) = a.strip_prefix("--listen=") {
            return v.to_string();
        }
    }
    "127.0.0.1:9001".to_string()
}

async fn serve(stream: TcpStream) {
    // Nagle off, as every latency-sensitive server does (the load generator does the same).
    let _ = stream.set_nodelay(true);
    let ws = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let (write, read) = ws.split();
    // Ping/pong and close replies are handled inside tungstenite; only data is echoed.
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

fn main() -> std::io::Result<()> {
    let addr = listen_arg();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(serve(stream));
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok(())
    })
}
