//! The application's side of the server: the [`Handler`] trait and the types its callbacks see.
//!
//! Owns the public contract between the reactor and user code. Callbacks run on the reactor
//! thread and must not block; messages are borrowed slices, valid only during the callback.

use crate::connection::Conn;
use crate::handshake::Request;
use crate::http::Response;
use crate::reactor::Ctx;

/// Identifies a connection for its whole life. Ids of closed connections are never confused
/// with new ones: the slab key is paired with a generation counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// A number unique among ids in use, for logs.
    pub fn as_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.key as u64
    }
}

/// A complete data message, borrowed from the server's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already checked to be valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl Message<'_> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a send can be refused or push the connection into backpressure"]
pub enum SendStatus {
    /// Queued; it goes out at the end of this loop turn.
    Sent,
    /// Queued, but the output backlog is over the high-water mark: the connection is no longer
    /// read until it drains, and [`Handler::on_drain`] says when.
    Backpressure,
    /// Not sent: the connection is closing or closed.
    Closed,
    /// Not sent: the backlog would exceed `max_backlog`, so the connection was dropped.
    Dropped,
}

/// Application callbacks. Every method but `on_message` has a default that does nothing (or,
/// for `on_http`, answers 404).
pub trait Handler {
    /// A WebSocket upgrade request passed every protocol check; return false to refuse it with
    /// `403` (an origin or authentication policy).
    fn accept(&mut self, request: &Request<'_>) -> bool {
        let _ = request;
        true
    }

    /// The connection is open; `request` is its upgrade request.
    fn on_open(&mut self, conn: &mut Conn<'_>, request: &Request<'_>) {
        let _ = (conn, request);
    }

    /// A complete message arrived.
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>);

    /// The connection closed: `code` is the peer's close code, ours if we failed it, 1005 for
    /// a close without a code, 1006 if it dropped without a close frame. Called once for every
    /// connection that saw `on_open`.
    fn on_close(&mut self, id: ConnId, code: u16, reason: &str) {
        let _ = (id, code, reason);
    }

    /// The output backlog fell below the low-water mark after backpressure.
    fn on_drain(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// An ordinary HTTP request (not an upgrade) on the WebSocket port.
    fn on_http(&mut self, request: &Request<'_>) -> Response {
        let _ = request;
        Response::plain(404)
    }

    /// Called every `Config::tick_interval`, with access to every connection by id.
    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }
}
