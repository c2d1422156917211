//! The application's side of the server: the [`Handler`] trait and the types its callbacks see.
//!
//! Owns the public contract between the reactor and user code. Callbacks run on the reactor
//! thread and must not block; messages are borrowed slices, valid only during the callback.

use crate::connection::Conn;
use crate::connection::Ctx;
use crate::handshake::Request;
use crate::http::Response;

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

/// How a connection's WebSocket life ended, as [`Handler::on_close`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    /// The close code: the peer's (1005 if its close frame had none), ours when the server
    /// closed, or 1006 when there was no close handshake at all.
    pub code: u16,
    /// The reason sent with the code (UTF-8, at most 123 bytes), or empty.
    pub reason: &'a str,
    /// Who closed, or why the connection ended without a close handshake.
    pub cause: CloseCause,
}

/// Who closed a connection, or what ended it without a close handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer sent a close frame first.
    Peer,
    /// The application closed it ([`Conn::close`]); the peer's answer, if any, came after.
    Local,
    /// The server is shutting down (close 1001 to everyone).
    Shutdown,
    /// The server failed the connection because the peer broke the protocol or a limit
    /// (1002, 1007 or 1009; see [`Close::code`]).
    Protocol,
    /// No input for the idle timeout (close 1001), or the shutdown's wait for the peer's
    /// close ran out.
    Timeout,
    /// The peer did not read its replies and the backlog reached `max_backlog`: dropped
    /// without a close frame.
    Backlog,
    /// The TCP connection ended without a close handshake: end of stream, reset or another
    /// I/O error.
    Io,
    /// A handler callback panicked (close 1011).
    Panic,
    /// The server's memory budget ran out and this connection was one of those holding the
    /// most: closed with 1013, or dropped when its unread backlog left no room for a close.
    Budget,
}

/// Whether a message is text or binary, for messages handled in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message: its parts together are valid UTF-8.
    Text,
    /// A binary message.
    Binary,
}

/// A piece of a data message, handed over as soon as its bytes arrive (see
/// [`Handler::stream_from`]). The bytes are borrowed from the server's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePart<'a> {
    /// Text or binary, the same for every part of one message.
    pub kind: MessageKind,
    /// The next bytes of the message. For text, everything up to and including this part has
    /// been checked to be (the start of) valid UTF-8, but a part may end inside a character.
    pub data: &'a [u8],
    /// The message's first part.
    pub first: bool,
    /// The message's last part (the message was valid to its end). If the connection fails
    /// before the last part (invalid UTF-8 further on, a limit), no last part comes: `on_close`
    /// follows instead.
    pub last: bool,
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
    /// Not sent: a message being sent in parts ([`Conn::send_part`]) has not had its last part
    /// yet, and a whole message may not be slipped between its fragments.
    PartsOpen,
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

    /// Messages whose first frame announces at least this many payload bytes, and that cannot be
    /// handed over whole when that frame's header is read (the frame is still arriving, or it
    /// is the first of several fragments), are given to [`on_message_part`](Self::on_message_part)
    /// piece by piece as their bytes arrive, instead of being assembled for `on_message`. Such a
    /// message costs no buffer at all and can be forwarded before its end has arrived (an echo
    /// or a relay starts sending after the first read instead of after the last).
    /// `max_message_size` still applies. `None`, the default: every message is assembled.
    ///
    /// What backpressure does meanwhile: a message that has begun arriving is read to its end,
    /// even when what the handler sends in reply to its parts passes `backlog_high_water`
    /// (`send_*` and [`Conn::send_part`] then answer [`SendStatus::Backpressure`]). Reading
    /// pauses at the next message boundary, until the backlog falls below
    /// `backlog_low_water`. A peer that writes a whole message before it reads anything, as
    /// every blocking client does, is then always answered; pausing inside its message would
    /// leave both sides waiting for the other. What bounds memory while a message is read to
    /// its end is `max_message_size` (the message) and `max_backlog` (the output, at which the
    /// connection is dropped): a relay or echo that sends one byte per byte received stays
    /// within both at the defaults.
    fn stream_from(&self) -> Option<u64> {
        None
    }

    /// The next part of a message handled in parts (see [`stream_from`](Self::stream_from)).
    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        let _ = (conn, part);
    }

    /// The connection `id` closed (see [`Close`] for who closed it and why). Called once for
    /// every connection that saw `on_open`, when its close begins: no message is delivered to
    /// it or sent on it after this. `ctx` reaches every other connection.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, close: Close<'_>) {
        let _ = (ctx, id, close);
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
