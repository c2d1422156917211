//! One connection's state machine: HTTP handshake → open → closing → closed, sans-IO.
//!
//! Owns the protocol rules for one peer. It is fed bytes that were read and the current time;
//! it answers with bytes to write (in its out buffer), calls to the handler, and its next
//! deadline. It never reads a clock or touches a socket: the reactor does both, and tests drive
//! it directly in memory.
//!
//! Complete frames are unmasked and delivered in place, in the caller's buffer. Only what
//! straddles a read boundary is kept: a partial header (≤ 14 bytes), a control payload
//! (≤ 125 bytes), or a data payload, streamed into the message buffer as it arrives (unmasked
//! and UTF-8-checked on the way, so invalid text fails before the frame is complete).

use std::io::IoSlice;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::buffers::{Busy, BusyPool, Cursor};
use crate::config::{Config, HEADER_ARRAY};
use crate::frame::{self, close_code, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::handler::{ConnId, Handler, Message, MessageKind, MessagePart, SendStatus};
use crate::handshake::{self, Refusal, Request, Verdict};
use crate::http;
use crate::mask::apply_mask;
use crate::stats::Stats;
use crate::utf8;

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
const PING_SENT: u8 = 1;
/// Output is over the high-water mark: the reactor must not read this connection.
const READ_PAUSED: u8 = 2;
/// The handler saw `on_open` and is owed exactly one `on_close`.
const OPENED: u8 = 4;
/// Drop the socket now, even with output pending.
const ABORT: u8 = 8;
/// The byte stream can no longer be parsed: ignore all input until EOF or the timeout.
const DISCARD_INPUT: u8 = 16;
/// The message coming in is handed to the handler in parts (`Handler::stream_from`), not
/// assembled.
const STREAM_IN: u8 = 32;
/// We sent a data frame without FIN: our next data frame must be its continuation.
const PARTS_OUT: u8 = 64;
/// The frame being handled ends the bytes of the current read, so a reply to it shares no
/// write with replies to later frames (see [`DIRECT_WRITE_ALONE_MIN`]).
const ENDS_READ: u8 = 128;

/// Payloads at least this large that are still arriving are read straight into the message
/// buffer by the reactor, instead of through the shared read buffer.
pub(crate) const DIRECT_READ_MIN: u64 = 16 * 1024;

/// Messages at least this large, sent while nothing else is waiting to be written, go straight
/// to the socket (header and payload in one `writev`) instead of being copied into the out
/// buffer: for a 1 MiB echo that copy costs as much as the unmasking. Smaller ones are corked,
/// unless [`DIRECT_WRITE_ALONE_MIN`] applies.
pub(crate) const DIRECT_WRITE_MIN: usize = 64 * 1024;

/// The same for a frame whose write would not be shared anyway: a fragment of a message sent
/// in parts (each comes from one read), or the reply to the frame that ends a read when
/// nothing is queued ahead of it. Writing it at once costs no extra syscall, while corking it
/// costs a copy. (With 8 messages of 16 KiB in flight, writing every message at once measured
/// 20-30% fewer messages/s than corking them; the reply that ends a read does not have that
/// cost.)
const DIRECT_WRITE_ALONE_MIN: usize = 4 * 1024;

/// The first byte of an outgoing frame, as its parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHead {
    pub opcode: OpCode,
    /// The frame ends its message (always, for control frames).
    pub fin: bool,
}

impl FrameHead {
    /// A frame that is a whole message, or a control frame.
    pub(crate) fn whole(opcode: OpCode) -> Self {
        FrameHead { opcode, fin: true }
    }
}

/// A WebSocket connection's protocol state. Idle, it is a few words: every buffer lives in an
/// optional [`Busy`] taken from a pool only while something is pending.
#[derive(Debug)]
pub struct Connection {
    busy: Option<Box<Busy>>,
    /// Milliseconds since the reactor's start at which `on_timeout` is due; 0 for none.
    deadline: u64,
    state: State,
    flags: u8,
}

/// What every connection on one reactor shares, owned in one place so that a connection can
/// borrow all of it at once, as an [`Env`], while its own slot is borrowed too.
#[derive(Debug)]
pub(crate) struct Shared<H> {
    pub handler: H,
    pub config: Config,
    pub pool: BusyPool,
    pub stats: Stats,
    /// Milliseconds since the reactor started.
    pub now: u64,
}

impl<H> Shared<H> {
    pub(crate) fn new(config: Config, handler: H) -> Self {
        Shared {
            handler,
            config,
            pool: BusyPool::default(),
            stats: Stats::default(),
            now: 0,
        }
    }

    /// Everything connection `id` needs for one call; `direct` lends its socket for large sends.
    pub(crate) fn env<'a>(
        &'a mut self,
        id: ConnId,
        direct: Option<&'a dyn Transmit>,
    ) -> Env<'a, H> {
        Env {
            handler: &mut self.handler,
            config: &self.config,
            pool: &mut self.pool,
            stats: &mut self.stats,
            now: self.now,
            id,
            direct,
        }
    }
}

/// What the connection borrows from its owner for one call.
pub(crate) struct Env<'a, H> {
    pub handler: &'a mut H,
    pub config: &'a Config,
    pub pool: &'a mut BusyPool,
    pub stats: &'a mut Stats,
    /// Milliseconds since the reactor started.
    pub now: u64,
    pub id: ConnId,
    /// Where a large send may be written at once instead of being copied into the out buffer
    /// (the reactor lends its socket through [`Transmit`]; tests and ticks pass `None`).
    pub direct: Option<&'a dyn Transmit>,
}

/// A socket the reactor lends for one immediate write; the connection never sees its type.
pub(crate) trait Transmit {
    /// Writes from `bufs` now, as `writev` does: the bytes taken, possibly fewer than offered.
    fn transmit(&self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;
}

impl Connection {
    /// A freshly accepted connection, waiting for its request head.
    pub(crate) fn new(now: u64, config: &Config) -> Self {
        Connection {
            busy: None,
            deadline: now + ms(config.handshake_timeout),
            state: State::Handshake,
            flags: 0,
        }
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

    /// Records that `n` bytes of output were written. Resumes reading below the low-water mark
    /// (calling the handler's `on_drain`); returns true when reading resumed.
    pub(crate) fn wrote<H: Handler>(&mut self, n: usize, env: &mut Env<'_, H>) -> bool {
        if let Some(busy) = self.busy.as_mut() {
            busy.out.consume(n);
        }
        let mut resumed = false;
        if self.flags & READ_PAUSED != 0 && self.pending_output() <= env.config.backlog_low_water {
            self.flags &= !READ_PAUSED;
            resumed = true;
            if self.state == State::Open {
                self.call(env, |handler, conn| handler.on_drain(conn));
            }
        }
        self.release_if_idle(env.pool);
        resumed
    }

    /// Feeds bytes read from the socket. `input` is scratch space: frames are unmasked in it.
    pub(crate) fn handle_input<H: Handler>(&mut self, input: &mut [u8], env: &mut Env<'_, H>) {
        env.stats.bytes_in += input.len() as u64;
        match self.state {
            State::Handshake => self.handshake_input(input, env),
            State::Open | State::Closing => self.frame_input(input, env),
            State::Closed => {}
        }
        self.release_if_idle(env.pool);
    }

    /// The peer closed its side of the TCP connection.
    pub(crate) fn handle_eof<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.notify_closed(close_code::ABNORMAL, "", env);
        if self.state != State::Closed {
            // Write what is pending (a half-closed peer may still read), bounded by the timeout.
            self.state = State::Closed;
            self.deadline = env.now + ms(env.config.close_timeout);
        }
    }

    /// The socket failed or is being dropped: nothing more will be written.
    pub(crate) fn abort<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.notify_closed(close_code::ABNORMAL, "", env);
        self.state = State::Closed;
        self.flags |= ABORT;
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
                self.start_close(close_code::GOING_AWAY, "idle timeout", env);
            }
            State::Handshake | State::Closing | State::Closed => {
                self.abort(env);
            }
        }
    }

    /// Starts the closing handshake from our side (shutdown, idle timeout, the handler).
    pub(crate) fn start_close<H: Handler>(
        &mut self,
        code: u16,
        reason: &str,
        env: &mut Env<'_, H>,
    ) {
        match self.state {
            State::Open => {
                self.send_close(code, reason, env.pool, env.config);
                self.deadline = env.now + ms(env.config.close_timeout);
                self.notify_closed(code, reason, env);
            }
            State::Handshake => self.abort(env),
            State::Closing | State::Closed => {}
        }
    }

    // ---- handshake -------------------------------------------------------------------------

    fn handshake_input<H: Handler>(&mut self, input: &mut [u8], env: &mut Env<'_, H>) {
        let buffered = self.busy.as_ref().is_some_and(|b| !b.head.is_empty());
        if !buffered {
            // Common case: the whole head arrived in one read; parse it where it lies.
            let partial = self.consume_heads(input, env);
            if partial > 0 {
                let start = input.len() - partial;
                self.busy_mut(env.pool)
                    .head
                    .extend_from_slice(&input[start..]);
            }
            return;
        }
        let busy = self.busy_mut(env.pool);
        busy.head.extend_from_slice(input);
        // A head ends with an empty line: only a new line feed can complete it (and a trickled
        // head is then not re-parsed on every byte).
        if !input.contains(&b'\n') && busy.head.len() < env.config.max_request_head {
            return;
        }
        let mut head = std::mem::take(&mut busy.head);
        let partial = self.consume_heads(&mut head, env);
        if self.state == State::Handshake {
            head.drain(..head.len() - partial);
            if let Some(busy) = self.busy.as_mut() {
                busy.head = head;
            }
        }
    }

    /// Answers every complete request head at the start of `buf` (pipelined plain HTTP requests
    /// come one after another), in a loop, never recursively. Bytes after an upgrade go to the
    /// frame decoder. Returns the length of a trailing partial head still waiting for bytes.
    fn consume_heads<H: Handler>(&mut self, buf: &mut [u8], env: &mut Env<'_, H>) -> usize {
        let mut at = 0;
        while at < buf.len() && self.state == State::Handshake {
            match self.try_head(&buf[at..], env) {
                Some(used) => at += used,
                None => break,
            }
        }
        match self.state {
            State::Handshake => buf.len() - at,
            State::Open => {
                self.frame_input(&mut buf[at..], env);
                0
            }
            State::Closing | State::Closed => 0,
        }
    }

    /// Parses and answers one request head if `buf` holds a complete one; returns its length.
    fn try_head<H: Handler>(&mut self, buf: &[u8], env: &mut Env<'_, H>) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; HEADER_ARRAY];
        let limit = env.config.max_headers.min(HEADER_ARRAY);
        let (used, parsed) =
            match handshake::parse_head(buf, &mut headers[..limit], env.config.max_request_head) {
                Ok(Some(done)) => done,
                Ok(None) => return None,
                Err(refusal) => {
                    self.refuse(refusal, env);
                    return None;
                }
            };
        let verdict = handshake::evaluate(&parsed, env.config);
        let request = Request {
            method: parsed.method.unwrap_or(""),
            path: parsed.path.unwrap_or(""),
            minor_version: parsed.version.unwrap_or(0),
            headers: parsed.headers,
            subprotocol: match verdict {
                Verdict::Upgrade { subprotocol, .. } => subprotocol,
                _ => None,
            },
        };
        match verdict {
            Verdict::Refuse(refusal) => self.refuse(refusal, env),
            Verdict::Http => self.answer_http(&request, env),
            Verdict::Upgrade {
                accept,
                subprotocol,
            } => {
                let accepted = guard(env, |handler| handler.accept(&request)).unwrap_or(false);
                if !accepted {
                    self.refuse(Refusal::Forbidden, env);
                    return Some(used);
                }
                handshake::write_switching_protocols(
                    self.busy_mut(env.pool).out.appender(),
                    &accept,
                    subprotocol,
                );
                self.state = State::Open;
                self.flags |= OPENED;
                self.deadline = env.config.idle_timeout.map_or(0, |t| env.now + ms(t));
                env.stats.opened += 1;
                self.call(env, |handler, conn| handler.on_open(conn, &request));
            }
        }
        Some(used)
    }

    fn answer_http<H: Handler>(&mut self, request: &Request<'_>, env: &mut Env<'_, H>) {
        let response = guard(env, |handler| handler.on_http(request))
            .unwrap_or_else(|| http::Response::plain(500));
        // A request body is not read by this server: close after answering one that has it.
        let has_body = request.header("transfer-encoding").is_some()
            || request
                .header("content-length")
                .is_some_and(|v| v.trim_ascii() != b"0");
        let keep_alive = !request.wants_close() && !has_body;
        http::write_handler_response(
            self.busy_mut(env.pool).out.appender(),
            &response,
            request.method == "HEAD",
            keep_alive,
        );
        env.stats.http_requests += 1;
        if keep_alive {
            self.deadline = env.now + ms(env.config.handshake_timeout);
        } else {
            self.close_after_output(env);
        }
    }

    fn refuse<H: Handler>(&mut self, refusal: Refusal, env: &mut Env<'_, H>) {
        handshake::write_refusal(self.busy_mut(env.pool).out.appender(), refusal);
        env.stats.refused += 1;
        self.close_after_output(env);
    }

    fn close_after_output<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.state = State::Closed;
        self.deadline = env.now + ms(env.config.close_timeout);
        if let Some(busy) = self.busy.as_mut() {
            busy.head.clear();
        }
    }

    // ---- frames ----------------------------------------------------------------------------

    fn frame_input<H: Handler>(&mut self, mut input: &mut [u8], env: &mut Env<'_, H>) {
        if self.state == State::Open {
            self.flags &= !PING_SENT;
            if let Some(idle) = env.config.idle_timeout {
                self.deadline = env.now + ms(idle);
            }
        }
        while !input.is_empty() && self.reads_frames() {
            if self.nothing_in_progress() {
                input = self.short_messages(input, env);
                if input.is_empty() || !self.reads_frames() {
                    break;
                }
            }
            let used = if let Some(cursor) = self.busy.as_ref().and_then(|b| b.cursor) {
                self.set_ends_read(cursor.remaining >= input.len() as u64);
                self.continue_payload(input, env)
            } else if self.busy.as_ref().is_some_and(|b| b.header_len > 0) {
                self.complete_header(input, env)
            } else {
                match frame::decode_header(input) {
                    Err(frame::HeaderError::LengthTooLarge) => {
                        self.fail_unsynced(env);
                        return;
                    }
                    Ok(None) => {
                        let busy = self.busy_mut(env.pool);
                        busy.header[..input.len()].copy_from_slice(input);
                        busy.header_len = input.len() as u8;
                        return;
                    }
                    Ok(Some(header)) => {
                        let Some(opcode) = self.check_header(&header, env) else {
                            // Failed: its payload (if any) is skipped by a cursor.
                            input = &mut input[header.header_len..];
                            continue;
                        };
                        let total = header.header_len as u64 + header.payload_len;
                        if input.len() as u64 >= total {
                            self.set_ends_read(input.len() as u64 == total);
                            let payload = &mut input[header.header_len..total as usize];
                            let key = header.mask.unwrap_or_default();
                            self.complete_frame(opcode, header.fin, payload, key, env);
                            total as usize
                        } else {
                            self.begin_payload(opcode, &header, env);
                            header.header_len
                        }
                    }
                }
            };
            input = &mut input[used..];
        }
    }

    /// No frame or message is part-way through: the next byte starts a frame, and a data frame
    /// must start a message.
    #[inline]
    fn nothing_in_progress(&self) -> bool {
        self.busy
            .as_ref()
            .is_none_or(|b| b.cursor.is_none() && b.header_len == 0 && b.message_kind.is_none())
    }

    /// Takes the run of whole short data frames at the start of `input` (see
    /// [`frame::short_data_frame`]), the frames most messages come in, and returns the rest.
    /// Nothing may be in progress when it is called, and handling such a frame leaves nothing
    /// in progress (the handler cannot start an incoming message), so each frame costs only
    /// the checks [`Connection::check_header`] would make that the pattern does not: the
    /// connection is open, and the payload is within both size limits.
    #[inline]
    fn short_messages<'b, H: Handler>(
        &mut self,
        mut input: &'b mut [u8],
        env: &mut Env<'_, H>,
    ) -> &'b mut [u8] {
        let limit = env.config.max_frame_size.min(env.config.max_message_size);
        while self.state == State::Open {
            let Some((opcode, key, total)) = frame::short_data_frame(input)
                .filter(|&(_, _, total)| total - frame::SHORT_MASKED_HEADER_LEN <= limit)
            else {
                break;
            };
            self.set_ends_read(total == input.len());
            let (this, rest) = input.split_at_mut(total);
            self.deliver_whole(
                opcode,
                &mut this[frame::SHORT_MASKED_HEADER_LEN..],
                key,
                env,
            );
            input = rest;
        }
        input
    }

    /// Records whether the frame about to be handled ends the current read.
    #[inline]
    fn set_ends_read(&mut self, ends: bool) {
        if ends {
            self.flags |= ENDS_READ;
        } else {
            self.flags &= !ENDS_READ;
        }
    }

    fn reads_frames(&self) -> bool {
        matches!(self.state, State::Open | State::Closing) && self.flags & DISCARD_INPUT == 0
    }

    /// Completes a header that began in an earlier read; returns the bytes of `input` used.
    fn complete_header<H: Handler>(&mut self, input: &[u8], env: &mut Env<'_, H>) -> usize {
        let busy = self.busy_mut(env.pool);
        let have = busy.header_len as usize;
        let mut used = 0;
        if have < 2 {
            used = (2 - have).min(input.len());
            busy.header[have..have + used].copy_from_slice(&input[..used]);
        }
        let have = have + used;
        if have < 2 {
            busy.header_len = have as u8;
            return used;
        }
        let need = frame::header_len(busy.header[1]);
        let more = (need - have).min(input.len() - used);
        busy.header[have..have + more].copy_from_slice(&input[used..used + more]);
        used += more;
        busy.header_len = (have + more) as u8;
        if (busy.header_len as usize) < need {
            return used;
        }
        let bytes = busy.header;
        busy.header_len = 0;
        match frame::decode_header(&bytes[..need]) {
            Ok(Some(header)) => {
                if let Some(opcode) = self.check_header(&header, env) {
                    self.begin_payload(opcode, &header, env);
                }
            }
            Ok(None) => debug_assert!(false, "a full header decodes"),
            Err(frame::HeaderError::LengthTooLarge) => self.fail_unsynced(env),
        }
        used
    }

    /// RFC 6455 §5 checks on a header. Fails the connection and returns `None` on a violation.
    fn check_header<H: Handler>(
        &mut self,
        header: &frame::FrameHeader,
        env: &mut Env<'_, H>,
    ) -> Option<OpCode> {
        use close_code::{PROTOCOL_ERROR, TOO_BIG};
        let violation = 'check: {
            if header.rsv != 0 {
                break 'check Some((PROTOCOL_ERROR, "reserved bits set"));
            }
            let Some(opcode) = OpCode::from_u8(header.opcode) else {
                break 'check Some((PROTOCOL_ERROR, "reserved opcode"));
            };
            if header.mask.is_none() {
                break 'check Some((PROTOCOL_ERROR, "client frames must be masked"));
            }
            if opcode.is_control() {
                if !header.fin || header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                    break 'check Some((PROTOCOL_ERROR, "control frames must be whole and short"));
                }
                return Some(opcode);
            }
            if self.state == State::Closing {
                return Some(opcode); // discarded anyway
            }
            let (in_progress, assembled) = self.busy.as_ref().map_or((false, 0), |b| {
                (
                    b.message_kind.is_some(),
                    b.message.len() as u64 + b.streamed,
                )
            });
            if opcode == OpCode::Continuation && !in_progress {
                break 'check Some((PROTOCOL_ERROR, "continuation without a message"));
            }
            if opcode != OpCode::Continuation && in_progress {
                break 'check Some((PROTOCOL_ERROR, "new message inside a fragmented one"));
            }
            if header.payload_len > env.config.max_frame_size as u64 {
                break 'check Some((TOO_BIG, "frame too big"));
            }
            if assembled + header.payload_len > env.config.max_message_size as u64 {
                break 'check Some((TOO_BIG, "message too big"));
            }
            return Some(opcode);
        };
        if let Some((code, reason)) = violation {
            self.fail(code, reason, env);
            if header.opcode == OpCode::Close as u8 {
                // A malformed close is still the peer closing: no second close will come.
                self.state = State::Closed;
            } else if self.reads_frames() && header.payload_len > 0 {
                // The header was parsed, so its payload can be skipped and the stream stays
                // in sync: the peer's close that should follow is still seen.
                self.busy_mut(env.pool).cursor = Some(Cursor {
                    opcode: OpCode::Binary,
                    fin: false,
                    remaining: header.payload_len,
                    mask: [0; 4],
                    phase: 0,
                });
            }
        }
        None
    }

    /// A frame whose payload is still arriving: remember where it is.
    fn begin_payload<H: Handler>(
        &mut self,
        opcode: OpCode,
        header: &frame::FrameHeader,
        env: &mut Env<'_, H>,
    ) {
        let closing = self.state == State::Closing;
        let starts_message = !opcode.is_control() && !closing && opcode != OpCode::Continuation;
        if starts_message && self.streams(header.payload_len, env) {
            self.flags |= STREAM_IN;
        }
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        if starts_message {
            busy.start_message(opcode);
        }
        if !opcode.is_control() && !closing && !streaming {
            // Bounded by max_frame_size, checked above. Capacity that is never written to
            // costs address space, not memory.
            busy.message.reserve(header.payload_len as usize);
        }
        busy.control_len = 0;
        busy.cursor = Some(Cursor {
            opcode,
            fin: header.fin,
            remaining: header.payload_len,
            mask: header.mask.unwrap_or_default(),
            phase: 0,
        });
        if header.payload_len == 0 {
            if streaming && !opcode.is_control() && !closing {
                // An empty fragment of a message handled in parts (its header came in pieces).
                busy.cursor = None;
                self.stream_part(&[], header.fin, env);
            } else {
                self.finish_payload(env);
            }
        }
    }

    /// Whether a message whose first frame announces `len` bytes, and cannot be handed over
    /// whole now, is to be handed to the handler in parts.
    fn streams<H: Handler>(&mut self, len: u64, env: &mut Env<'_, H>) -> bool {
        self.state == State::Open
            && guard(env, |handler| handler.stream_from())
                .flatten()
                .is_some_and(|from| len >= from.max(1))
    }

    /// Hands the handler the next bytes of a message handled in parts: unmasked and, if text,
    /// already fed to the validator. `last`: they end the message.
    fn stream_part<H: Handler>(&mut self, data: &[u8], last: bool, env: &mut Env<'_, H>) {
        let busy = self.busy_mut(env.pool);
        let Some(opcode) = busy.message_kind else {
            return;
        };
        let kind = if opcode == OpCode::Text {
            if last && busy.utf8.finish().is_err() {
                return self.fail_bad_text(env);
            }
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let first = busy.streamed == 0;
        busy.streamed += data.len() as u64;
        if last {
            busy.drop_message();
            self.flags &= !STREAM_IN;
            env.stats.messages_in += 1;
        }
        let part = MessagePart {
            kind,
            data,
            first,
            last,
        };
        self.call(env, |handler, conn| handler.on_message_part(conn, part));
    }

    /// Takes the next bytes of a frame in progress from `input`; returns how many it used.
    fn continue_payload<H: Handler>(&mut self, input: &mut [u8], env: &mut Env<'_, H>) -> usize {
        let closing = self.state == State::Closing;
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        let Some(mut cursor) = busy.cursor else {
            return 0;
        };
        let take = cursor.remaining.min(input.len() as u64) as usize;
        let chunk = &mut input[..take];
        let message_data = !cursor.opcode.is_control() && !closing;
        let kind = if message_data {
            busy.message_kind
        } else {
            None
        };
        let (phase, checked) =
            unmask_message_bytes(&mut busy.utf8, kind, chunk, cursor.mask, cursor.phase);
        cursor.phase = phase;
        cursor.remaining -= take as u64;
        busy.cursor = Some(cursor);
        if checked.is_err() {
            self.fail_bad_text(env);
            return take;
        }
        if streaming && message_data {
            // Handed over in place: no copy, no buffer.
            if cursor.remaining == 0 {
                busy.cursor = None;
            }
            self.stream_part(chunk, cursor.remaining == 0 && cursor.fin, env);
            return take;
        }
        if cursor.opcode.is_control() {
            let at = busy.control_len as usize;
            busy.control[at..at + take].copy_from_slice(chunk);
            busy.control_len += take as u8;
        } else if !closing {
            busy.message.extend_from_slice(chunk);
        }
        if cursor.remaining == 0 {
            self.finish_payload(env);
        }
        take
    }

    /// Where the reactor may read the rest of a large frame in progress directly: the message
    /// buffer and how many bytes the frame still needs.
    pub(crate) fn direct_read_target(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        if self.state != State::Open || self.flags & (DISCARD_INPUT | STREAM_IN) != 0 {
            return None;
        }
        let busy = self.busy.as_mut()?;
        let cursor = busy.cursor?;
        if cursor.opcode.is_control() || cursor.remaining < DIRECT_READ_MIN {
            return None;
        }
        let room = cursor.remaining.min(usize::MAX as u64) as usize;
        Some((&mut busy.message, room))
    }

    /// The reactor appended `n` bytes read from the socket to the message buffer (see
    /// [`direct_read_target`](Self::direct_read_target)): unmask and check them in place.
    pub(crate) fn handle_direct_input<H: Handler>(&mut self, n: usize, env: &mut Env<'_, H>) {
        env.stats.bytes_in += n as u64;
        if let Some(idle) = env.config.idle_timeout {
            self.deadline = env.now + ms(idle);
        }
        self.flags &= !PING_SENT;
        let busy = self.busy_mut(env.pool);
        let Some(mut cursor) = busy.cursor else {
            return;
        };
        let start = busy.message.len() - n;
        let chunk = &mut busy.message[start..];
        let (phase, checked) = unmask_message_bytes(
            &mut busy.utf8,
            busy.message_kind,
            chunk,
            cursor.mask,
            cursor.phase,
        );
        cursor.phase = phase;
        cursor.remaining -= n as u64;
        busy.cursor = Some(cursor);
        if checked.is_err() {
            self.fail_bad_text(env);
        } else if cursor.remaining == 0 {
            // The read was sized to the frame: nothing follows it.
            self.set_ends_read(true);
            self.finish_payload(env);
        }
    }

    /// The frame in progress has all its payload.
    fn finish_payload<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        let busy = self.busy_mut(env.pool);
        let Some(cursor) = busy.cursor.take() else {
            return;
        };
        if cursor.opcode.is_control() {
            let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
            let len = busy.control_len as usize;
            payload[..len].copy_from_slice(&busy.control[..len]);
            busy.control_len = 0;
            self.control_frame(cursor.opcode, &payload[..len], env);
        } else if cursor.fin && self.state == State::Open {
            self.deliver_assembled(env);
        }
    }

    /// A whole frame in the caller's buffer, still masked with `key`: unmasked here, text in the
    /// same pass as its UTF-8 check.
    fn complete_frame<H: Handler>(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &mut [u8],
        key: [u8; 4],
        env: &mut Env<'_, H>,
    ) {
        if opcode.is_control() {
            apply_mask(payload, key, 0);
            self.control_frame(opcode, payload, env);
            return;
        }
        if self.state != State::Open {
            return; // closing: data is discarded
        }
        if fin && opcode != OpCode::Continuation {
            return self.deliver_whole(opcode, payload, key, env);
        }
        if opcode != OpCode::Continuation && self.streams(payload.len() as u64, env) {
            // The first of several fragments, large enough to be handed over in parts.
            self.flags |= STREAM_IN;
            self.busy_mut(env.pool).start_message(opcode);
        }
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        if opcode != OpCode::Continuation && !streaming {
            busy.start_message(opcode);
        }
        let (_, checked) = unmask_message_bytes(&mut busy.utf8, busy.message_kind, payload, key, 0);
        if checked.is_err() {
            return self.fail_bad_text(env);
        }
        if streaming {
            return self.stream_part(payload, fin, env);
        }
        busy.message.extend_from_slice(payload);
        if fin {
            self.deliver_assembled(env);
        }
    }

    /// A whole message in one frame (text or binary, FIN set, no message in progress, the
    /// connection open), still masked with `key`: unmasked in place (text in the same pass as
    /// its UTF-8 check) and handed to the handler as a borrowed slice, no copy. Inlined into
    /// the short-frame path of [`frame_input`](Self::frame_input), where most messages go.
    #[inline(always)]
    fn deliver_whole<H: Handler>(
        &mut self,
        opcode: OpCode,
        payload: &mut [u8],
        key: [u8; 4],
        env: &mut Env<'_, H>,
    ) {
        env.stats.messages_in += 1;
        let message = if opcode == OpCode::Text {
            match utf8::unmask_and_validate(payload, key) {
                Ok(text) => Message::Text(text),
                Err(_) => return self.fail_bad_text(env),
            }
        } else {
            apply_mask(payload, key, 0);
            Message::Binary(payload)
        };
        self.call(env, |handler, conn| handler.on_message(conn, message));
    }

    /// Hands the handler the message assembled in the message buffer.
    fn deliver_assembled<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        let busy = self.busy_mut(env.pool);
        let Some(kind) = busy.message_kind.take() else {
            return;
        };
        if kind == OpCode::Text && busy.utf8.finish().is_err() {
            self.fail_bad_text(env);
            return;
        }
        let mut message = std::mem::take(&mut busy.message);
        env.stats.messages_in += 1;
        let msg = if kind == OpCode::Text {
            // SAFETY: every byte of this message went through `Utf8Validator::feed`, which
            // accepted it, and `finish` confirmed no code point was left unfinished.
            Message::Text(unsafe { std::str::from_utf8_unchecked(&message) })
        } else {
            Message::Binary(&message)
        };
        self.call(env, |handler, conn| handler.on_message(conn, msg));
        message.clear();
        if let Some(busy) = self.busy.as_mut() {
            busy.message = message;
        } else {
            let mut busy = env.pool.take();
            busy.message = message;
            self.busy = Some(busy);
        }
    }

    fn control_frame<H: Handler>(&mut self, opcode: OpCode, payload: &[u8], env: &mut Env<'_, H>) {
        match opcode {
            OpCode::Ping if self.state == State::Open => {
                let pong = FrameHead::whole(OpCode::Pong);
                let _ = self.send_frame(pong, payload, env.pool, env.config, env.stats, None);
            }
            OpCode::Pong => {}
            OpCode::Close => self.close_frame(payload, env),
            _ => {}
        }
    }

    /// The peer's close frame: check it, answer it, and finish.
    fn close_frame<H: Handler>(&mut self, payload: &[u8], env: &mut Env<'_, H>) {
        let parsed = match payload {
            [] => Ok((close_code::NO_STATUS, "")),
            [_] => Err((close_code::PROTOCOL_ERROR, "close payload of one byte")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !frame::is_valid_close_code(code) {
                    Err((close_code::PROTOCOL_ERROR, "invalid close code"))
                } else {
                    utf8::validate(reason)
                        .map(|reason| (code, reason))
                        .map_err(|_| (close_code::INVALID_PAYLOAD, "invalid UTF-8 in close reason"))
                }
            }
        };
        let (code, reason) = match parsed {
            Ok(close) => close,
            Err((code, reason)) => {
                // The peer has closed, badly: answer with the error, then close the TCP side
                // ourselves rather than wait for a second close.
                self.fail(code, reason, env);
                self.state = State::Closed;
                return;
            }
        };
        if self.state == State::Open {
            // Echo the peer's code; an empty close is answered with an empty close.
            let echo: &[u8] = if code == close_code::NO_STATUS {
                &[]
            } else {
                &payload[..2]
            };
            self.queue_frame(OpCode::Close, echo, env.pool);
        }
        self.notify_closed(code, reason, env);
        // The server closes the TCP connection first, once the reply is written.
        self.state = State::Closed;
        self.deadline = env.now + ms(env.config.close_timeout);
    }

    fn fail_bad_text<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8 in text", env);
    }

    /// Fails the connection (RFC 6455 §7.1.7): close frame with `code`, then wait for the
    /// peer's close. A second failure while closing gives up on parsing.
    fn fail<H: Handler>(&mut self, code: u16, reason: &str, env: &mut Env<'_, H>) {
        env.stats.protocol_errors += 1;
        self.flags &= !STREAM_IN;
        if let Some(busy) = self.busy.as_mut() {
            busy.drop_message();
        }
        match self.state {
            State::Open => self.start_close(code, reason, env),
            _ => self.flags |= DISCARD_INPUT,
        }
    }

    /// A failure after which frame boundaries are lost (a length over 2^63).
    fn fail_unsynced<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.fail(close_code::PROTOCOL_ERROR, "frame length over 2^63", env);
        self.flags |= DISCARD_INPUT;
    }

    fn notify_closed<H: Handler>(&mut self, code: u16, reason: &str, env: &mut Env<'_, H>) {
        if self.flags & OPENED != 0 {
            self.flags &= !OPENED;
            env.stats.closed += 1;
            let id = env.id;
            guard(env, |handler| handler.on_close(id, code, reason));
        }
    }

    // ---- output ----------------------------------------------------------------------------

    /// Appends one unmasked frame to the output, no questions asked.
    fn queue_frame(&mut self, opcode: OpCode, payload: &[u8], pool: &mut BusyPool) {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = frame::encode_header(&mut header, true, opcode, None, payload.len() as u64);
        self.busy_mut(pool).out.push_frame(&header, n, payload);
    }

    /// Sends a frame if the connection is open, enforcing the backlog limits. Small frames,
    /// which are most of them, take the inlined path: one size check, the header, one append.
    #[inline]
    pub(crate) fn send_frame(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        pool: &mut BusyPool,
        config: &Config,
        stats: &mut Stats,
        direct: Option<&dyn Transmit>,
    ) -> SendStatus {
        if self.state != State::Open {
            return SendStatus::Closed;
        }
        let pending = self.pending_output();
        if pending + payload.len() + MAX_HEADER_LEN > config.max_backlog {
            return self.drop_for_backlog(stats);
        }
        if matches!(head.opcode, OpCode::Text | OpCode::Binary) {
            stats.messages_out += 1;
        }
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = frame::encode_header(
            &mut header,
            head.fin,
            head.opcode,
            None,
            payload.len() as u64,
        );
        let written = match direct {
            // Nothing is queued ahead of it, so writing now keeps the order.
            Some(socket) if payload.len() >= DIRECT_WRITE_ALONE_MIN && pending == 0 => {
                self.write_now(socket, head, &header[..header_len], payload, stats)
            }
            _ => 0,
        };
        let backlog = if written < header_len + payload.len() {
            // Only now is a buffer taken: a frame written whole needs none.
            let out = &mut self.busy_mut(pool).out;
            if written == 0 {
                out.push_frame(&header, header_len, payload);
            } else if written < header_len {
                out.extend(&header[written..header_len]);
                out.extend(payload);
            } else {
                out.extend(&payload[written - header_len..]);
            }
            out.len()
        } else {
            pending // written whole, so nothing was queued before it either
        };
        if backlog > config.backlog_high_water {
            self.pause_reading();
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Writes a large frame to the socket at once, if it is large enough for that to beat
    /// copying it into the out buffer; returns the bytes written (0: queue it all). A failed
    /// write leaves it all queued: the next flush meets the same error and drops the socket.
    #[inline(never)]
    fn write_now(
        &self,
        socket: &dyn Transmit,
        head: FrameHead,
        header: &[u8],
        payload: &[u8],
        stats: &mut Stats,
    ) -> usize {
        let part = !head.fin || head.opcode == OpCode::Continuation;
        let direct_min = if part || self.flags & ENDS_READ != 0 {
            DIRECT_WRITE_ALONE_MIN
        } else {
            DIRECT_WRITE_MIN
        };
        if payload.len() < direct_min {
            return 0;
        }
        let written = socket
            .transmit(&[IoSlice::new(header), IoSlice::new(payload)])
            .unwrap_or(0);
        stats.bytes_out += written as u64;
        written
    }

    /// Output passed the high-water mark: stop reading at the end of the message arriving now,
    /// if any (see [`wants_read`](Self::wants_read)).
    #[cold]
    fn pause_reading(&mut self) {
        if self.flags & READ_PAUSED == 0 {
            self.flags |= READ_PAUSED;
            if let Some(busy) = self.busy.as_mut() {
                busy.read_to_end = busy.message_kind.is_some();
            }
        }
    }

    /// The peer is not reading: give up on it rather than grow without bound.
    #[cold]
    fn drop_for_backlog(&mut self, stats: &mut Stats) -> SendStatus {
        self.state = State::Closed;
        self.flags |= ABORT;
        stats.backlog_drops += 1;
        SendStatus::Dropped
    }

    /// Queues our close frame and moves to `Closing`.
    fn send_close(&mut self, code: u16, reason: &str, pool: &mut BusyPool, config: &Config) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        if self.pending_output() + MAX_CONTROL_PAYLOAD + MAX_HEADER_LEN <= config.max_backlog {
            self.queue_frame(OpCode::Close, &payload[..2 + cut], pool);
        }
        self.state = State::Closing;
        // Reading resumes so that the peer's close can be seen.
        self.flags &= !READ_PAUSED;
    }

    /// Calls the handler with a handle on this connection. A panic in the callback fails
    /// only this connection, with close 1011 (or aborts the process if configured so).
    fn call<H: Handler>(
        &mut self,
        env: &mut Env<'_, H>,
        callback: impl FnOnce(&mut H, &mut Conn<'_>),
    ) {
        let mut conn = Conn::new(
            env.id, self, env.pool, env.config, env.stats, env.now, env.direct,
        );
        let handler = &mut *env.handler;
        let outcome = catch_unwind(AssertUnwindSafe(|| callback(handler, &mut conn)));
        if outcome.is_err() {
            handler_panicked(env.config, env.stats);
            self.start_close(close_code::INTERNAL_ERROR, "handler panicked", env);
            if self.state == State::Open {
                self.abort(env);
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

/// Calls the handler without a connection handle, with the same panic policy as `call`.
/// `None` if it panicked.
/// Unmasks `data`, the next bytes of a data message of `kind` (`None`: bytes that belong to no
/// message being read, such as a control frame's), starting at key phase `phase`. Text is fed to
/// `utf8` in the same pass. Returns the phase after `data` and the text check's verdict.
fn unmask_message_bytes(
    utf8: &mut utf8::Utf8Validator,
    kind: Option<OpCode>,
    data: &mut [u8],
    key: [u8; 4],
    phase: u8,
) -> (u8, Result<(), utf8::InvalidUtf8>) {
    let (phase, checked) = if kind == Some(OpCode::Text) {
        utf8.unmask_and_feed(data, key, phase as usize)
    } else {
        (apply_mask(data, key, phase as usize), Ok(()))
    };
    (phase as u8, checked)
}

fn guard<H: Handler, R>(env: &mut Env<'_, H>, callback: impl FnOnce(&mut H) -> R) -> Option<R> {
    let handler = &mut *env.handler;
    match catch_unwind(AssertUnwindSafe(|| callback(handler))) {
        Ok(value) => Some(value),
        Err(_) => {
            handler_panicked(env.config, env.stats);
            None
        }
    }
}

pub(crate) fn handler_panicked(config: &Config, stats: &mut Stats) {
    if config.abort_on_panic {
        std::process::abort();
    }
    stats.handler_panics += 1;
}

fn ms(duration: std::time::Duration) -> u64 {
    duration.as_millis().min(u64::MAX as u128) as u64
}

/// The handler's handle on one connection, valid for the duration of a callback.
pub struct Conn<'a> {
    id: ConnId,
    conn: &'a mut Connection,
    pool: &'a mut BusyPool,
    config: &'a Config,
    stats: &'a mut Stats,
    now: u64,
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
        pool: &'a mut BusyPool,
        config: &'a Config,
        stats: &'a mut Stats,
        now: u64,
        direct: Option<&'a dyn Transmit>,
    ) -> Self {
        Conn {
            id,
            conn,
            pool,
            config,
            stats,
            now,
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

    /// Sends a ping (payload truncated to 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> SendStatus {
        let len = payload.len().min(MAX_CONTROL_PAYLOAD);
        self.send(FrameHead::whole(OpCode::Ping), &payload[..len])
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
        let status = self.send(FrameHead { opcode, fin: last }, data);
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
    /// No message is delivered or sent after this.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.conn.state == State::Open {
            let code = if frame::is_valid_close_code(code) {
                code
            } else {
                close_code::NORMAL
            };
            self.conn.send_close(code, reason, self.pool, self.config);
            self.conn.deadline = self.now + ms(self.config.close_timeout);
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
        self.send(FrameHead::whole(opcode), payload)
    }

    #[inline(always)]
    fn send(&mut self, head: FrameHead, payload: &[u8]) -> SendStatus {
        self.conn.send_frame(
            head,
            payload,
            self.pool,
            self.config,
            self.stats,
            self.direct,
        )
    }
}
