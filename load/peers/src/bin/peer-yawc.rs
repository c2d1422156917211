//! `peer-yawc`: a WebSocket echo server on `yawc` (a tokio WebSocket crate with
//! permessage-deflate) over hyper 1, on a current-thread tokio runtime, shaped like the
//! crate's README echo server. It is the peer of `load compare`'s compressed workload:
//! compression on at zlib level 1 (wsreactor's default level), no context takeover when the
//! client asks for it (as `wsrload --deflate` does), messages up to 16 MiB.
//!
//! Usage: `peer-yawc --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT.

use futures_util::SinkExt;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use yawc::frame::OpCode;
use yawc::{CompressionLevel, Options, WebSocket};

fn options() -> Options {
    Options::default()
        .with_compression_level(CompressionLevel::new(1))
        .with_max_payload_read(16 << 20)
        .with_max_read_buffer(32 << 20)
        .with_utf8()
        .with_no_delay()
}

async fn server_upgrade(req: Request<Incoming>) -> yawc::Result<Response<Empty<Bytes>>> {
    let (response, fut) = WebSocket::upgrade_with_options(req, options())?;
    tokio::spawn(async move {
        let Ok(mut ws) = fut.await else {
            return;
        };
        // Ping/pong and the close reply are yawc's; only data is echoed.
        while let Ok(frame) = ws.next_frame().await {
            let data = matches!(frame.opcode, OpCode::Text | OpCode::Binary);
            if frame.opcode == OpCode::Close || (data && ws.send(frame).await.is_err()) {
                break;
            }
        }
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    peers::serve_until_signal(|stream| {
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
