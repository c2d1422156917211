//! The handler's handles: [`Conn`] on the connection a callback is about, [`Ctx`] on every
//! connection of the reactor, and the panic guard around every callback.
//!
//! Owns what a handler may do to connections (send, close, read their backlog) and nothing of
//! how frames are read or written: sends go through the connection's sender. Must not let a
//! handler reach a connection that is lent out for a call (the reactor keeps it out of
//! [`Peers`] while it is served), so nothing is aliased.

use super::*;
use crate::metrics::DEFLATE_OUT;

impl Connection {
    /// Calls the handler with a handle on this connection. A panic in the callback fails
    /// only this connection, with close 1011 (or aborts the process if configured so).
    pub(super) fn call<H: Handler>(
        &mut self,
        env: &mut Env<'_, H>,
        callback: impl FnOnce(&mut H, &mut Conn<'_>),
    ) {
        let ctx = Ctx::new(
            env.peers, env.pool, env.config, env.stats, env.topics, env.now,
        );
        let mut conn = Conn::new(env.id, self, ctx, env.direct);
        let handler = &mut *env.handler;
        let outcome = catch_unwind(AssertUnwindSafe(|| callback(handler, &mut conn)));
        if outcome.is_err() {
            handler_panicked(env.config, env.stats);
            let cause = CloseCause::Panic;
            self.start_close(close_code::INTERNAL_ERROR, "handler panicked", cause, env);
            if self.state == State::Open {
                self.abort(cause, env);
            }
        }
    }
}

pub(super) fn guard<H: Handler, R>(
    env: &mut Env<'_, H>,
    callback: impl FnOnce(&mut H) -> R,
) -> Option<R> {
    let handler = &mut *env.handler;
    match catch_unwind(AssertUnwindSafe(|| callback(handler))) {
        Ok(value) => Some(value),
        Err(_) => {
            handler_panicked(env.config, env.stats);
            None
        }
    }
}

pub(crate) fn handler_panicked(config: &Config, stats: &Counters) {
    if config.abort_on_panic {
        std::process::abort();
    }
    stats.handler_panics.bump();
    log::warn!("a handler callback panicked; its connection is closed with 1011");
}

/// The handler's handle on one connection, valid for the duration of a callback. Through
/// [`ctx`](Self::ctx) (or [`send_to`](Self::send_to)) it reaches every other connection too.
pub struct Conn<'a> {
    id: ConnId,
    conn: &'a mut Connection,
    ctx: Ctx<'a>,
    direct: Option<&'a dyn Transmit>,
}

impl std::fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("state", &self.conn.state)
            .field("buffered", &self.conn.pending_output())
            .finish_non_exhaustive()
    }
}

impl<'a> Conn<'a> {
    pub(crate) fn new(
        id: ConnId,
        conn: &'a mut Connection,
        ctx: Ctx<'a>,
        direct: Option<&'a dyn Transmit>,
    ) -> Self {
        Conn {
            id,
            conn,
            ctx,
            direct,
        }
    }

    /// This connection's id, valid for as long as it is open (ids are never reused in a way
    /// that could reach another connection).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send_whole(OpCode::Text, text.as_bytes())
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> SendStatus {
        self.send_whole(OpCode::Binary, data)
    }

    /// Sends a whole message, text or binary as it is: an echo is `conn.send(message)`.
    #[inline]
    pub fn send(&mut self, message: Message<'_>) -> SendStatus {
        let (opcode, payload) = message_frame(message);
        self.send_whole(opcode, payload)
    }

    /// Sends `message` to the connection `id`: this one or any other, with the same answers
    /// as [`send_text`](Self::send_text). A stale or unknown id gets [`SendStatus::Closed`].
    pub fn send_to(&mut self, id: ConnId, message: Message<'_>) -> SendStatus {
        if id == self.id {
            self.send(message)
        } else {
            self.ctx.send(id, message)
        }
    }

    /// Every connection of the reactor, for sends to others while this callback runs.
    pub fn ctx(&mut self) -> &mut Ctx<'a> {
        &mut self.ctx
    }

    /// This connection's state machine and the context, borrowed apart.
    pub(crate) fn split_for_publish(&mut self) -> (&mut Connection, &mut Ctx<'a>) {
        (self.conn, &mut self.ctx)
    }

    /// Sends a ping (payload truncated to 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> SendStatus {
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        self.send_head(FrameHead::whole(OpCode::Ping), &payload[..len])
    }

    /// Sends the next part of a message sent in parts, as one frame: the first part opens a
    /// `kind` message (later parts continue it, whatever their `kind`), and `last` finishes it.
    /// Until then whole messages are refused ([`SendStatus::PartsOpen`]); pings and the close
    /// may still go between parts. For text, the parts together must be valid UTF-8, and the
    /// server does not check them: forward only text that was checked, such as the parts of
    /// [`Handler::on_message_part`](crate::Handler::on_message_part).
    pub fn send_part(&mut self, kind: MessageKind, data: &[u8], last: bool) -> SendStatus {
        let opcode = if self.conn.flags & PARTS_OUT != 0 {
            OpCode::Continuation
        } else {
            match kind {
                MessageKind::Text => OpCode::Text,
                MessageKind::Binary => OpCode::Binary,
            }
        };
        // Parts go uncompressed: a shared compressor cannot keep one message's context
        // across calls while other connections send.
        let head = FrameHead {
            opcode,
            fin: last,
            rsv1: false,
        };
        let status = self.send_head(head, data);
        if matches!(status, SendStatus::Sent | SendStatus::Backpressure) {
            if last {
                self.conn.flags &= !PARTS_OUT;
            } else {
                self.conn.flags |= PARTS_OUT;
            }
        }
        status
    }

    /// Starts the closing handshake with `code` and `reason` (cut to fit a control frame).
    /// No message is delivered or sent after this; `on_close` follows with
    /// [`CloseCause::Local`] when the peer answers (or the close timeout runs out).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.conn.state == State::Open {
            let code = if frame::is_valid_close_code(code) {
                code
            } else {
                close_code::NORMAL
            };
            let ctx = &mut self.ctx;
            self.conn.send_close(code, reason, ctx.pool, ctx.config);
            self.conn.deadline = ctx.now + ms(ctx.config.close_timeout);
        }
    }

    /// Bytes accepted for sending and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.conn.pending_output()
    }

    /// Whether messages can still be sent.
    pub fn is_open(&self) -> bool {
        self.conn.state == State::Open
    }

    fn send_whole(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if self.conn.flags & PARTS_OUT != 0 && self.conn.state == State::Open {
            return SendStatus::PartsOpen;
        }
        if self.conn.flags & DEFLATE_BITS != 0
            && payload.len() >= self.ctx.config.compression_threshold
        {
            return self.send_compressed(opcode, payload);
        }
        self.send_head(FrameHead::whole(opcode), payload)
    }

    /// Sends a whole message compressed (permessage-deflate was negotiated and the message is
    /// at least `compression_threshold` long), in the reactor's scratch buffer.
    #[inline(never)]
    fn send_compressed(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if self.conn.state != State::Open {
            return SendStatus::Closed;
        }
        let bits = self.conn.deflate_bits().unwrap_or(15);
        let config = self.ctx.config;
        let codec = &mut self.ctx.pool.deflate;
        let mut out = std::mem::take(&mut codec.scratch);
        match self.conn.stream.as_deref_mut().filter(|s| s.send.is_some()) {
            Some(stream) => {
                let level = config.compression_level;
                if codec.compress_stream(stream, level, config.compression_live, payload, &mut out)
                {
                    self.ctx.stats.deflate_resumes[DEFLATE_OUT].bump();
                }
                self.conn.recount_stream(self.ctx.pool);
            }
            None => codec.compress(bits, config.compression_level, payload, &mut out),
        }
        let stats = self.ctx.stats;
        stats.deflate_plain[DEFLATE_OUT].add(payload.len() as u64);
        stats.deflate_compressed[DEFLATE_OUT].add(out.len() as u64);
        let head = FrameHead {
            opcode,
            fin: true,
            rsv1: true,
        };
        let status = self.send_head(head, &out);
        let codec = &mut self.ctx.pool.deflate;
        codec.scratch = out;
        codec.trim();
        status
    }

    #[inline(always)]
    fn send_head(&mut self, head: FrameHead, payload: &[u8]) -> SendStatus {
        let ctx = &mut self.ctx;
        self.conn
            .send_frame(head, payload, ctx.pool, ctx.config, ctx.stats, self.direct)
    }
}

/// The opcode and payload of a whole data message.
fn message_frame(message: Message<'_>) -> (OpCode, &[u8]) {
    match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes()),
        Message::Binary(data) => (OpCode::Binary, data),
    }
}

/// Every connection of one reactor, reached by [`ConnId`], during a callback: sends to any of
/// them, and the reactor's figures. What is sent is written at the end of the loop turn, with
/// one write per connection. The connection a [`Conn`] is about is reached through that
/// `Conn`, not through its `Ctx`.
pub struct Ctx<'a> {
    /// `None` inside a handle from [`Ctx::conn`]: that handle reaches its own connection only.
    pub(crate) peers: Option<&'a mut dyn Peers>,
    pub(crate) pool: &'a mut BusyPool,
    pub(crate) config: &'a Config,
    pub(crate) stats: &'a Counters,
    pub(crate) topics: &'a mut Topics,
    pub(crate) now: u64,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// How many targets of [`Ctx::send_many`] got each answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Queued, under the high-water mark ([`SendStatus::Sent`]).
    pub sent: usize,
    /// Queued, over the high-water mark ([`SendStatus::Backpressure`]).
    pub backpressure: usize,
    /// Not sent: closed, unknown, dropped for its backlog, or sending parts.
    pub not_sent: usize,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        peers: &'a mut dyn Peers,
        pool: &'a mut BusyPool,
        config: &'a Config,
        stats: &'a Counters,
        topics: &'a mut Topics,
        now: u64,
    ) -> Self {
        Ctx {
            peers: Some(peers),
            pool,
            config,
            stats,
            topics,
            now,
        }
    }

    /// A handle on the connection `id`, if it still exists and is not the one this callback
    /// is about. The handle reaches that connection only (its own `ctx` has no peers).
    pub fn conn(&mut self, id: ConnId) -> Option<Conn<'_>> {
        let conn = self.peers.as_mut()?.peer(id)?;
        let ctx = Ctx {
            peers: None,
            pool: &mut *self.pool,
            config: self.config,
            stats: self.stats,
            topics: &mut *self.topics,
            now: self.now,
        };
        Some(Conn::new(id, conn, ctx, None))
    }

    /// Sends `message` to the connection `id`: [`SendStatus::Closed`] if it is gone (or is
    /// the connection this callback is about: send to that one through its [`Conn`]).
    pub fn send(&mut self, id: ConnId, message: Message<'_>) -> SendStatus {
        match self.conn(id) {
            Some(mut conn) => conn.send(message),
            None => SendStatus::Closed,
        }
    }

    /// Sends `message` to every connection in `ids`, each as [`send`](Self::send) would, and
    /// counts the answers. The frame is encoded for each target's output in turn; use `send`
    /// in a loop to act on each target's answer.
    pub fn send_many(
        &mut self,
        ids: impl IntoIterator<Item = ConnId>,
        message: Message<'_>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        for id in ids {
            match self.send(id, message) {
                SendStatus::Sent => fanout.sent += 1,
                SendStatus::Backpressure => fanout.backpressure += 1,
                _ => fanout.not_sent += 1,
            }
        }
        fanout
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Counters of the whole server: with one reactor, [`stats`](Self::stats); in a
    /// [`MultiServer`](crate::MultiServer), every reactor's, each read live.
    pub fn server_stats(&self) -> Stats {
        match self.topics.server_blocks() {
            Some(blocks) => Counters::total(blocks.all()),
            None => self.stats.snapshot(),
        }
    }

    /// TCP connections held (any state) by the whole server: this reactor's now, the other
    /// reactors' as of their last timer sweep.
    pub fn server_connection_count(&self) -> usize {
        let here = self.connection_count();
        let Some(blocks) = self.topics.server_blocks() else {
            return here;
        };
        let mine: *const Counters = self.stats;
        let others: u64 = blocks
            .all()
            .iter()
            .filter(|b| !std::ptr::eq(Arc::as_ptr(b), mine))
            .map(|b| b.connections.get())
            .sum();
        here + others as usize
    }

    /// TCP connections held (any state).
    pub fn connection_count(&self) -> usize {
        self.peers.as_ref().map_or(0, |p| p.connection_count())
    }

    /// Open WebSocket connections.
    pub fn open_count(&self) -> usize {
        self.peers.as_ref().map_or(0, |p| p.open_count())
    }

    /// Bytes the server holds for its connections, as counted against
    /// [`Config::max_memory`](crate::Config::max_memory).
    pub fn memory_held(&self) -> usize {
        self.pool.account.total()
    }

    /// Milliseconds since the server started.
    pub fn uptime_ms(&self) -> u64 {
        self.now
    }
}
