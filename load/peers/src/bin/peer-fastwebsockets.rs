//! `peer-fastwebsockets`: a WebSocket echo server on `fastwebsockets` with its `upgrade` feature
//! over hyper 1, on a current-thread tokio runtime, shaped like the crate's `echo_server`
//! example (a `FragmentCollector`, auto-close and auto-pong on, the handler run `unconstrained`).
//! It is a comparison peer for the `load compare` harness.
//!
//! Usage: `peer-fastwebsockets --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr
//! when ready and exits on SIGTERM or SIGINT.

use fastwebsockets::{upgrade, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    peers::serve_until_signal(|stream| {
        // Nagle off, as every latency-sensitive server does.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = http1::Builder::new()
                .serve_connection(io, service_fn(server_upgrade))
                .with_upgrades();
            let _ = conn.await;
        });
    })
}
