//! `peer-tungstenite`: a WebSocket echo server on `tokio-tungstenite`, one current-thread tokio
//! runtime, written the way the crate's own echo-server example is (split the stream, forward
//! text and binary messages back). It is a comparison peer for the `load compare` harness.
//!
//! Usage: `peer-tungstenite --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT.

use futures_util::{future, StreamExt, TryStreamExt};
use tokio::net::TcpStream;

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
    peers::serve_until_signal(|stream| {
        tokio::spawn(serve(stream));
    })
}
