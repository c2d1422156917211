//! `peer-broadcast`: chat rooms the way Rust servers usually get them, since no WebSocket
//! crate has them built in: tokio-tungstenite, and one `tokio::sync::broadcast` channel per
//! room. A WebSocket on `/room/NAME` joins room NAME; every text or binary message a member
//! sends goes to every member, the sender included (as wsreactor's `/room/NAME` does). Every
//! other path echoes, as `peer-tungstenite` does. It is the fan-out peer of `load compare`.
//!
//! Written as the tokio examples and most chat tutorials write it: per member, one task reads
//! and `send`s into the room's channel, another `recv`s from it and `send`s each message to its
//! socket (one write per message). The channel hands every receiver its own clone of the
//! message: with tungstenite 0.24 a `Message` owns its bytes, so each member's copy is a new
//! allocation, and each is framed again by that member's sink. A receiver more than
//! [`ROOM_CAPACITY`] messages behind is `Lagged`: it skips what it missed (the channel's own
//! slow-subscriber policy), and the member stays connected.
//!
//! The runtime is tokio's current-thread one, as for `peer-tungstenite`: `load compare` pins
//! every server to one core, where a multi-thread runtime only adds its work-stealing overhead
//! to the same core.
//!
//! Usage: `peer-broadcast --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT.

use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Messages a room's channel holds for its slowest member before that member lags.
const ROOM_CAPACITY: usize = 1024;

type Rooms = Mutex<HashMap<String, broadcast::Sender<Message>>>;

fn rooms() -> &'static Rooms {
    static ROOMS: OnceLock<Rooms> = OnceLock::new();
    ROOMS.get_or_init(Rooms::default)
}

/// The room a request path names: `/room/NAME` (query ignored), NAME non-empty.
fn room_of(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let name = path.strip_prefix("/room/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The callback's signature is tungstenite's (its error type is an HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let (mut write, read) = ws.split();
    let Some(room) = room_of(&path) else {
        let _ = read
            .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
            .forward(write)
            .await;
        return;
    };
    let (tx, mut rx) = {
        let mut rooms = rooms().lock().unwrap_or_else(|e| e.into_inner());
        let tx = rooms
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(ROOM_CAPACITY).0)
            .clone();
        let rx = tx.subscribe();
        (tx, rx)
    };
    let writer = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    if write.send(m).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let _ = read
        .try_for_each(|m| {
            if m.is_text() || m.is_binary() {
                // No receiver (everyone left meanwhile) is not an error for the sender.
                let _ = tx.send(m);
            }
            future::ready(Ok(()))
        })
        .await;
    writer.abort();
    let _ = writer.await; // its receiver is dropped once it has ended
    let mut rooms = rooms().lock().unwrap_or_else(|e| e.into_inner());
    if tx.receiver_count() == 0 {
        rooms.remove(&room);
    }
}

fn main() -> std::io::Result<()> {
    peers::serve_until_signal(|stream| {
        tokio::spawn(serve(stream));
    })
}
