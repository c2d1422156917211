//! What the comparison peers share: the `--listen` argument and, for the tokio peers, the
//! accept loop that prints `listening on ADDR` and exits on SIGTERM or SIGINT.

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

/// The address given as `--listen ADDR` or `--listen=ADDR` (default `127.0.0.1:9001`).
pub fn listen_arg() -> String {
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

/// Binds `--listen` on a current-thread tokio runtime, prints `listening on ADDR` to stderr and
/// hands every accepted connection to `accept` (on the runtime, so it may `tokio::spawn`) until
/// SIGTERM or SIGINT.
pub fn serve_until_signal(mut accept: impl FnMut(TcpStream)) -> std::io::Result<()> {
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
                        accept(stream);
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok(())
    })
}
