//! One connection's state machine: HTTP handshake → open → closing → closed, sans-IO.
//!
//! Owns the protocol rules for one peer. It is fed bytes that were read and the current time;
//! it answers with bytes to write (in its out buffer), calls to the handler, and its next
//! deadline. It never reads a clock or touches a socket: the reactor does both, through a
//! [`Transport`](crate::transport::Transport), and tests drive it directly in memory.
//!
//! The connection in layers, one module each, in the order a byte meets them:
//!
//! - [`http_phase`]: request heads, the upgrade, plain HTTP;
//! - [`reader`]: frame headers, the payload cursor, control frames;
//! - [`transform`]: the one place payload bytes change (unmask, the UTF-8 check, later
//!   inflate);
//! - [`assembler`]: messages whole, assembled or in parts, delivered to the handler;
//! - [`sender`]: outgoing frames, backpressure, the close;
//! - [`handle`]: [`Conn`] and [`Ctx`], what a handler may do, and the panic guard.
//!
//! What stays here is the state, the lifecycle (open, close, abort, timeouts) and deadlines.
//!
//! Complete frames are unmasked and delivered in place, in the caller's buffer. Only what
//! straddles a read boundary is kept: a partial header (≤ 14 bytes), a control payload
//! (≤ 125 bytes), or a data payload, streamed into the message buffer as it arrives (unmasked
//! and UTF-8-checked on the way, so invalid text fails before the frame is complete).

use std::io::IoSlice;

pub(crate) use crate::transport::Transmit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::buffers::{Busy, BusyPool, Cursor};
use crate::config::{Config, HEADER_ARRAY};
use crate::deflate::context::Stream;
use crate::frame::{self, close_code, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::handler::{
    Close, CloseCause, ConnId, Handler, Message, MessageKind, MessagePart, SendStatus,
};
use crate::handshake::{self, Refusal, Request, Verdict};
use crate::http;
use crate::mask::apply_mask;
use crate::metrics::{kind_index, Blocks, Counters, RefusedBy, Scrape};
use crate::stats::Stats;
use crate::topics::publish::{admit, Delivery, Reach, SLOW_CLOSE};
use crate::topics::Topics;
use crate::utf8;
use std::sync::Arc;

mod assembler;
mod handle;
mod http_phase;
mod reader;
mod sender;
mod shed;
mod takeover;
mod transform;

use handle::guard;
pub(crate) use handle::handler_panicked;
pub use handle::{Conn, Ctx, Fanout};
use sender::FrameHead;
pub(crate) use shed::Shed;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading HTTP request heads (an upgrade, or plain requests on a keep-alive connection).
    Handshake,
    /// WebSocket open in both directions.
    Open,
    /// We sent a close frame; reading on until the peer's close (data is discarded).
    Closing,
    /// Nothing more is read; the socket is dropped once the output is written.
    Closed,
}

/// We pinged at the idle timeout and no input has come since.
const PING_SENT: u16 = 1;
/// Output is over the high-water mark: the reactor must not read this connection.
const READ_PAUSED: u16 = 2;
/// The handler saw `on_open` and is owed exactly one `on_close`.
const OPENED: u16 = 4;
/// Drop the socket now, even with output pending.
const ABORT: u16 = 8;
/// The byte stream can no longer be parsed: ignore all input until EOF or the timeout.
const DISCARD_INPUT: u16 = 16;
/// The message coming in is handed to the handler in parts (`Handler::stream_from`), not
/// assembled.
const STREAM_IN: u16 = 32;
/// We sent a data frame without FIN: our next data frame must be its continuation.
const PARTS_OUT: u16 = 64;
/// The frame being handled ends the bytes of the current read, so a reply to it shares no
/// write with replies to later frames (see `sender::DIRECT_WRITE_ALONE_MIN`).
const ENDS_READ: u16 = 128;
/// The connection was dropped because its backlog reached `max_backlog`, or closed because as
/// a subscriber it passed `max_subscriber_backlog`.
const BACKLOG_DROPPED: u16 = 256;
/// permessage-deflate: these 3 bits hold the window bits of what we send minus 8 (1..=7)
/// when it was negotiated, 0 when it was not.
const DEFLATE_SHIFT: u16 = 10;
const DEFLATE_BITS: u16 = 7 << DEFLATE_SHIFT;

/// A WebSocket connection's protocol state. Idle, it is a few words: every buffer lives in an
/// optional [`Busy`] taken from a pool only while something is pending.
#[derive(Debug)]
pub struct Connection {
    busy: Option<Box<Busy>>,
    /// permessage-deflate with context takeover: the windows that carry over between
    /// messages (see [`crate::deflate::context`]); `None` for every other connection.
    stream: Option<Box<Stream>>,
    /// Milliseconds since the reactor's start at which `on_timeout` is due; 0 for none.
    deadline: u64,
    state: State,
    flags: u16,
}

/// What every connection on one reactor shares, owned in one place so that a connection can
/// borrow all of it at once, as an [`Env`], while its own slot is borrowed too.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub handler: H,
    pub config: Config,
    pub pool: BusyPool,
    /// This reactor's counter block, which it alone writes.
    pub stats: Arc<Counters>,
    /// Every reactor's block, for answering `/metrics` on the WebSocket port.
    pub scrape: Scrape,
    pub topics: Topics,
    /// Milliseconds since the reactor started.
    pub now: u64,
}

impl<H> Shared<H> {
    /// The state of reactor `index` among those whose counters are `blocks`.
    pub(crate) fn new(config: Config, handler: H, blocks: &Blocks, index: usize) -> Self {
        let scrape = Scrape {
            path: config.metrics_path.as_deref().map(Box::from),
            blocks: blocks.clone(),
        };
        Shared {
            handler,
            config,
            pool: BusyPool::default(),
            stats: blocks.block(index),
            scrape,
            topics: Topics::default(),
            now: 0,
        }
    }

    /// Everything connection `id` needs for one call: `direct` lends its socket for large
    /// sends, `peers` every other connection.
    pub(crate) fn env<'a>(
        &'a mut self,
        id: ConnId,
        direct: Option<&'a dyn Transmit>,
        peers: &'a mut dyn Peers,
    ) -> Env<'a, H> {
        Env {
            handler: &mut self.handler,
            config: &self.config,
            pool: &mut self.pool,
            stats: &self.stats,
            scrape: &self.scrape,
            topics: &mut self.topics,
            now: self.now,
            id,
            direct,
            peers,
        }
    }

    /// A context for a callback that is about no connection in particular (a tick, work
    /// handed in from another thread), and the handler to call.
    pub(crate) fn ctx<'a>(&'a mut self, peers: &'a mut dyn Peers) -> (&'a mut H, Ctx<'a>) {
        let ctx = Ctx::new(
            peers,
            &mut self.pool,
            &self.config,
            &self.stats,
            &mut self.topics,
            self.now,
        );
        (&mut self.handler, ctx)
    }
}

/// What the connection borrows from its owner for one call.
pub(crate) struct Env<'a, H> {
    pub handler: &'a mut H,
    pub config: &'a Config,
    pub pool: &'a mut BusyPool,
    pub stats: &'a Counters,
    pub scrape: &'a Scrape,
    pub topics: &'a mut Topics,
    /// Milliseconds since the reactor started.
    pub now: u64,
    pub id: ConnId,
    /// Where a large send may be written at once instead of being copied into the out buffer
    /// (the reactor lends its socket through [`Transmit`]; tests and ticks pass `None`).
    pub direct: Option<&'a dyn Transmit>,
    /// Every other connection of the reactor, for sends from the handler.
    pub peers: &'a mut dyn Peers,
}

/// The other connections of a reactor, as a callback reaches them. The connection being
/// served is not among them: the reactor lends it out of its slot for the call, so that
/// nothing aliases it.
pub(crate) trait Peers {
    /// The connection `id`, if it still exists (a stale id finds nothing). The reactor writes
    /// what is queued to it at the end of the loop turn.
    fn peer(&mut self, id: ConnId) -> Option<&mut Connection>;
    /// Writes what connection `id` has queued now, as far as its socket takes it, instead of
    /// at the end of the loop turn: a subscriber about to pass its limit under a batch of
    /// publishes is given the chance a reader that keeps up deserves. Returns the bytes
    /// written; a failed write is left for the turn's flush to meet again.
    fn write_now(&mut self, id: ConnId, pool: &mut BusyPool, stats: &Counters) -> usize;
    /// TCP connections held, in any state.
    fn connection_count(&self) -> usize;
    /// Open WebSocket connections.
    fn open_count(&self) -> usize;
}

/// No other connections: an endpoint driven alone, in memory.
#[derive(Debug, Default)]
pub(crate) struct NoPeers;

impl Peers for NoPeers {
    fn peer(&mut self, _id: ConnId) -> Option<&mut Connection> {
        None
    }
    fn write_now(&mut self, _id: ConnId, _pool: &mut BusyPool, _stats: &Counters) -> usize {
        0
    }
    fn connection_count(&self) -> usize {
        0
    }
    fn open_count(&self) -> usize {
        0
    }
}

impl Connection {
    /// A freshly accepted connection, waiting for its request head.
    pub(crate) fn new(now: u64, config: &Config) -> Self {
        Connection {
            busy: None,
            stream: None,
            deadline: now + ms(config.handshake_timeout),
            state: State::Handshake,
            flags: 0,
        }
    }

    /// Whether it holds buffers from the pool now.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// The window bits of what we send, if permessage-deflate was negotiated.
    #[inline]
    pub(crate) fn deflate_bits(&self) -> Option<u8> {
        let bits = (self.flags & DEFLATE_BITS) >> DEFLATE_SHIFT;
        (bits != 0).then_some(bits as u8 + 8)
    }

    pub(crate) fn deadline(&self) -> u64 {
        self.deadline
    }

    /// Whether the reactor should read this connection now.
    ///
    /// Backpressure pauses reading only between messages: while a data message is arriving,
    /// reading goes on until it ends, whatever the backlog. A peer that writes a whole message
    /// before it reads anything (every blocking client) could otherwise never finish its write
    /// while the reply to the first part of that message waits for it to read: both sides
    /// would wait forever. The message is bounded by `max_message_size`, and the output it
    /// causes by `max_backlog`, so memory stays bounded.
    pub(crate) fn wants_read(&self) -> bool {
        self.state != State::Closed && (self.flags & READ_PAUSED == 0 || self.message_arriving())
    }

    /// A data message that had begun when reading paused has not ended yet.
    fn message_arriving(&self) -> bool {
        self.state == State::Open
            && self
                .busy
                .as_ref()
                .is_some_and(|b| b.read_to_end && b.message_kind.is_some())
    }

    /// Finished: the socket can be dropped.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Closed && (self.flags & ABORT != 0 || self.pending_output() == 0)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.state == State::Handshake
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Bytes accepted for sending and not yet written.
    pub(crate) fn pending_output(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.out.len())
    }

    /// The unwritten output, oldest first.
    pub(crate) fn output(&self) -> &[u8] {
        match &self.busy {
            Some(busy) => busy.out.pending(),
            None => &[],
        }
    }

    /// Records that `n` bytes of output were written. Returns true when the backlog fell
    /// below the low-water mark after backpressure: reading resumes, and the reactor then
    /// calls [`drained`](Self::drained). Needs no handler, so a write costs no call.
    pub(crate) fn wrote(&mut self, n: usize, config: &Config, pool: &mut BusyPool) -> bool {
        self.consume_output(n, pool);
        self.resume_if_drained(config)
    }

    /// Records that `n` bytes of output were written, outside the reactor's flush (an early
    /// write of a subscriber's backlog during a publish): reading is not resumed here, but at
    /// the connection's next flush ([`resume_if_drained`](Self::resume_if_drained)).
    pub(crate) fn consume_output(&mut self, n: usize, pool: &mut BusyPool) {
        if let Some(busy) = self.busy.as_mut() {
            busy.out.consume(n);
        }
        self.release_if_idle(pool);
    }

    /// Resumes reading if it was paused and the backlog is below the low-water mark; true if
    /// it did (the reactor then calls [`drained`](Self::drained)).
    #[inline]
    pub(crate) fn resume_if_drained(&mut self, config: &Config) -> bool {
        let resumed =
            self.flags & READ_PAUSED != 0 && self.pending_output() <= config.backlog_low_water;
        if resumed {
            self.flags &= !READ_PAUSED;
        }
        resumed
    }

    /// Reading resumed after backpressure ([`wrote`](Self::wrote) said so): tells the handler.
    pub(crate) fn drained<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        if self.state == State::Open {
            self.call(env, |handler, conn| handler.on_drain(conn));
        }
    }

    /// Feeds bytes read from the socket. `input` is scratch space: frames are unmasked in it.
    pub(crate) fn handle_input<H: Handler>(&mut self, input: &mut [u8], env: &mut Env<'_, H>) {
        env.stats.bytes_in.add(input.len() as u64);
        match self.state {
            State::Handshake => self.handshake_input(input, env),
            State::Open | State::Closing => self.frame_input(input, env),
            State::Closed => {}
        }
        self.release_if_idle(env.pool);
    }

    /// The peer closed its side of the TCP connection.
    pub(crate) fn handle_eof<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.notify_closed(close_code::ABNORMAL, "", CloseCause::Io, env);
        if self.state != State::Closed {
            // Write what is pending (a half-closed peer may still read), bounded by the timeout.
            self.state = State::Closed;
            self.deadline = env.now + ms(env.config.close_timeout);
        }
    }

    /// The socket failed or is being dropped (`cause` says why, unless the backlog limit
    /// dropped it): nothing more will be written.
    pub(crate) fn abort<H: Handler>(&mut self, cause: CloseCause, env: &mut Env<'_, H>) {
        let cause = if self.flags & BACKLOG_DROPPED != 0 {
            CloseCause::Backlog
        } else if self.state == State::Closing {
            CloseCause::Local // our close, from `Conn::close`, was never answered
        } else {
            cause
        };
        self.notify_closed(close_code::ABNORMAL, "", cause, env);
        self.state = State::Closed;
        self.flags |= ABORT;
        self.drop_stream(env.pool);
    }

    /// Frees the context takeover windows and whatever the connection had parked.
    fn drop_stream(&mut self, pool: &mut BusyPool) {
        if let Some(stream) = self.stream.take() {
            pool.deflate.forget_stream(stream.token);
            pool.account.refund(stream.accounted);
        }
    }

    /// Brings what the context takeover windows count in the memory budget up to date.
    fn recount_stream(&mut self, pool: &mut BusyPool) {
        if let Some(stream) = self.stream.as_mut() {
            let now = std::mem::size_of::<Stream>() + stream.allocated();
            pool.account.charge(now);
            pool.account.refund(stream.accounted);
            stream.accounted = now;
        }
    }

    /// Gives back any buffers; the connection is about to be dropped.
    pub(crate) fn release(&mut self, pool: &mut BusyPool) {
        if let Some(busy) = self.busy.take() {
            pool.give(busy);
        }
    }

    /// The deadline passed: handshake, idle or close timeout, depending on the state.
    pub(crate) fn handle_timeout<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        match self.state {
            State::Open if env.config.auto_ping && self.flags & PING_SENT == 0 => {
                self.flags |= PING_SENT;
                let ping = FrameHead::whole(OpCode::Ping);
                let _ = self.send_frame(ping, &[], env.pool, env.config, env.stats, None);
                self.deadline = env.now + env.config.idle_timeout.map_or(0, ms);
            }
            State::Open => {
                let cause = CloseCause::Timeout;
                self.start_close(close_code::GOING_AWAY, "idle timeout", cause, env);
            }
            State::Handshake | State::Closing | State::Closed => {
                self.abort(CloseCause::Timeout, env);
            }
        }
    }

    /// Starts the closing handshake from our side (shutdown, idle timeout, the handler).
    pub(crate) fn start_close<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        cause: CloseCause,
        env: &mut Env<'_, H>,
    ) {
        match self.state {
            State::Open => {
                self.send_close(code, reason, env.pool, env.config);
                self.deadline = env.now + ms(env.config.close_timeout);
                self.notify_closed(code, reason, cause, env);
            }
            State::Handshake => self.abort(cause, env),
            State::Closing | State::Closed => {}
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): close frame with `code`, then wait for the
    /// peer's close. A second failure while closing gives up on parsing.
    fn fail<H: Handler>(&mut self, code: u16, reason: &str, env: &mut Env<'_, H>) {
        env.stats.protocol_errors.bump();
        self.flags &= !STREAM_IN;
        if let Some(busy) = self.busy.as_mut() {
            busy.drop_message();
        }
        match self.state {
            State::Open => self.start_close(code, reason, CloseCause::Protocol, env),
            _ => self.flags |= DISCARD_INPUT,
        }
    }

    fn notify_closed<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        cause: CloseCause,
        env: &mut Env<'_, H>,
    ) {
        if self.flags & OPENED != 0 {
            self.flags &= !OPENED;
            env.stats.close(code, cause);
            let id = env.id;
            let close = Close {
                code,
                reason,
                cause,
            };
            // A closing connection has left its topics before its handler hears of it.
            env.topics.leave_all(id);
            let mut ctx = Ctx::new(
                env.peers, env.pool, env.config, env.stats, env.topics, env.now,
            );
            let handler = &mut *env.handler;
            let outcome = catch_unwind(AssertUnwindSafe(|| handler.on_close(&mut ctx, id, close)));
            if outcome.is_err() {
                handler_panicked(env.config, env.stats);
            }
        }
    }

    fn busy_mut(&mut self, pool: &mut BusyPool) -> &mut Busy {
        self.busy.get_or_insert_with(|| pool.take())
    }

    fn release_if_idle(&mut self, pool: &mut BusyPool) {
        if self.busy.as_ref().is_some_and(|b| b.is_idle()) {
            self.release(pool);
        }
    }
}

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis().min(u64::MAX as u128) as u64
}
