//! One client connection's state machine (connect → upgrade → open → closing) and what the
//! connections share ([`Ctx`]): building each message's frame into the connection's out
//! buffer, picking the message's shape from the mix, parsing the echo as it streams in and
//! checking it byte for byte against the shape it was sent with, and the window's tally.
//! It must not poll, accept readiness or decide when a run starts or stops: that is the
//! reactor's ([`super::Engine`]) and the workloads' job.

use super::deflating::Deflating;
use super::tls::TlsSession;
use super::Mode;
use crate::frame::{self, Event, FrameParser, MaskedBodies};
use crate::handshake;
use crate::payload::Payload;
use crate::stats::Latency;
use mio::net::TcpStream;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Write};
use std::time::{Duration, Instant};

/// An out buffer larger than this is given back to the allocator once it is written.
const KEEP_OUT_CAPACITY: usize = 1 << 20;

/// Counts over the measured window.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Messages queued for sending.
    pub sent_msgs: u64,
    /// Payload bytes queued for sending.
    pub sent_bytes: u64,
    /// Echoes received and checked.
    pub recv_msgs: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Round-trip times.
    pub latency: Latency,
    /// Echoes received and checked, per shape of the mix (in the mix's order).
    pub recv_by_shape: Vec<u64>,
    /// `--deflate`: message payload bytes sent as they went on the wire (compressed).
    pub sent_wire_bytes: u64,
    /// `--deflate`: echo payload bytes as they came off the wire (compressed or not).
    pub recv_wire_bytes: u64,
    /// `--deflate`: echoes that came back compressed.
    pub recv_compressed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Connecting,
    Handshaking,
    Open,
    Closing,
}

/// Per-connection state. An idle open connection holds no buffers.
pub(super) struct Conn {
    pub(super) idx: usize,
    pub(super) stream: TcpStream,
    pub(super) state: State,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    pub(super) dirty: bool,
    /// Send times and shapes (index into the mix) of the messages in flight, oldest first.
    pub(super) inflight: VecDeque<(Instant, u16)>,
    pub(super) send_seq: u64,
    pub(super) recv_seq: u64,
    pub(super) recv_off: usize,
    pub(super) bad: bool,
    pub(super) parser: FrameParser,
    /// `wss://`: the connection's TLS state.
    pub(super) tls: Option<Box<TlsSession>>,
    /// The server agreed to permessage-deflate.
    pub(super) deflated: bool,
    /// A compressed echo that spans reads, gathered until its end (empty otherwise).
    pub(super) zbuf: Vec<u8>,
    pub(super) hs_accept: String,
    pub(super) hs_buf: Vec<u8>,
    pub(super) depth: usize,
    pub(super) budget: Option<u64>,
    pub(super) next_due: Instant,
}

/// One shape of the mix, with its body pre-masked under a few keys (WebSocket mode).
pub(super) struct Shape {
    pub(super) payload: Payload,
    pub(super) masked: MaskedBodies,
}

/// Everything the connections share, kept apart from them for the borrow checker.
pub(super) struct Ctx {
    pub(super) mode: Mode,
    /// The mix's shapes; a message picks one by weight.
    pub(super) shapes: Vec<Shape>,
    /// Cumulative weights of `shapes`.
    pub(super) cum_weights: Vec<u64>,
    pub(super) rng: u64,
    pub(super) now: Instant,
    pub(super) sending: bool,
    pub(super) measuring: bool,
    pub(super) rate_interval: Option<Duration>,
    /// `--deflate`: the shared codec and the JSON documents of each shape.
    pub(super) deflate: Option<Box<Deflating>>,
    pub(super) tally: Tally,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) dirty: Vec<usize>,
    pub(super) completed_total: u64,
    pub(super) opened: usize,
    pub(super) last_open_at: Option<Instant>,
}

impl Ctx {
    pub(super) fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }
    pub(super) fn error_n(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_string()).or_insert(0) += n;
        }
    }
    pub(super) fn next_rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }
    /// Picks the shape of the next message by weight (no draw for a single shape).
    fn pick_shape(&mut self) -> u16 {
        let total = match self.cum_weights.last() {
            Some(&t) if self.cum_weights.len() > 1 => t,
            _ => return 0,
        };
        let r = self.next_rand() % total;
        self.cum_weights.partition_point(|&c| c <= r) as u16
    }
}

/// xorshift64*: fast, and random enough for masking keys and key picks (`state` nonzero).
pub(super) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Outcome of feeding bytes to a connection.
pub(super) type Fed = Result<(), &'static str>;

impl Conn {
    pub(super) fn mark_dirty(&mut self, ctx: &mut Ctx) {
        if !self.dirty {
            self.dirty = true;
            ctx.dirty.push(self.idx);
        }
    }

    fn may_send(&self, ctx: &Ctx) -> bool {
        ctx.sending
            && self.state == State::Open
            && self.inflight.len() < self.depth
            && self.budget != Some(0)
    }

    /// Appends message `send_seq` to the out buffer, stamped with `stamp`.
    fn queue_message(&mut self, ctx: &mut Ctx, stamp: Instant) {
        let seq = self.send_seq;
        self.send_seq += 1;
        let which = ctx.pick_shape();
        let key_pick = match ctx.mode {
            Mode::WebSocket => ctx.next_rand() >> 32,
            Mode::Raw => 0,
        };
        let shape = &ctx.shapes[which as usize];
        let p = &shape.payload;
        let tag = p.tag(seq);
        match ctx.mode {
            Mode::WebSocket if ctx.deflate.is_some() => {
                let key = (key_pick as u32).to_ne_bytes();
                let wire = ctx
                    .deflate
                    .as_deref_mut()
                    .map_or(0, |d| d.push(&mut self.out, which, seq, key));
                if ctx.measuring {
                    ctx.tally.sent_wire_bytes += wire as u64;
                }
            }
            Mode::WebSocket => {
                let opcode = p.kind().opcode();
                shape
                    .masked
                    .push_frame(&mut self.out, opcode, &tag, key_pick);
            }
            Mode::Raw => {
                // Copied as the WebSocket frame's tag is, so both generators pay alike.
                frame::push_prefix(&mut self.out, &tag, p.tag_len());
                self.out.extend_from_slice(p.body());
            }
        }
        let size = p.size() as u64;
        self.inflight.push_back((stamp, which));
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        if ctx.measuring {
            ctx.tally.sent_msgs += 1;
            ctx.tally.sent_bytes += size;
        }
        self.mark_dirty(ctx);
    }

    /// Fills the pipeline (unless a fixed rate drives the sends).
    pub(super) fn fill(&mut self, ctx: &mut Ctx) {
        if ctx.rate_interval.is_some() {
            return;
        }
        while self.may_send(ctx) {
            let now = ctx.now;
            self.queue_message(ctx, now);
        }
    }

    /// Sends what a fixed rate allows by now; returns when the next send is due, unless the
    /// connection cannot send (a full pipeline waits for an echo, which wakes the loop anyway).
    pub(super) fn fill_rated(&mut self, ctx: &mut Ctx, interval: Duration) -> Option<Instant> {
        while self.may_send(ctx) && self.next_due <= ctx.now {
            let due = self.next_due;
            self.queue_message(ctx, due);
            self.next_due += interval;
        }
        self.may_send(ctx).then_some(self.next_due)
    }

    pub(super) fn on_open(&mut self, ctx: &mut Ctx) {
        self.state = State::Open;
        ctx.opened += 1;
        ctx.last_open_at = Some(ctx.now);
        self.hs_buf = Vec::new();
        self.hs_accept = String::new();
        self.next_due = ctx.now;
        self.fill(ctx);
    }

    pub(super) fn complete_message(&mut self, ctx: &mut Ctx) {
        let Some((sent, which)) = self.inflight.pop_front() else {
            return;
        };
        self.recv_seq += 1;
        self.recv_off = 0;
        if std::mem::take(&mut self.bad) {
            ctx.error("mismatch");
        }
        ctx.completed_total += 1;
        if ctx.measuring {
            let t = &mut ctx.tally;
            t.recv_msgs += 1;
            t.recv_bytes += ctx.shapes[which as usize].payload.size() as u64;
            if t.recv_by_shape.len() <= which as usize {
                t.recv_by_shape.resize(which as usize + 1, 0);
            }
            t.recv_by_shape[which as usize] += 1;
            let rtt = ctx.now.saturating_duration_since(sent);
            ctx.tally.latency.record(rtt.as_nanos() as u64);
        }
        self.fill(ctx);
    }

    /// The shape of the message being echoed (the oldest in flight).
    fn current<'c>(&self, ctx: &'c Ctx) -> Option<&'c Payload> {
        let &(_, which) = self.inflight.front()?;
        ctx.shapes.get(which as usize).map(|s| &s.payload)
    }

    /// Checks a piece of the current echo.
    fn check_piece(&mut self, ctx: &Ctx, piece: &[u8]) {
        let ok = self
            .current(ctx)
            .is_some_and(|p| p.matches(self.recv_seq, self.recv_off, piece));
        if !ok {
            self.bad = true;
        }
        self.recv_off = self.recv_off.saturating_add(piece.len());
    }

    /// Feeds bytes read from the socket.
    pub(super) fn feed(&mut self, ctx: &mut Ctx, data: &[u8]) -> Fed {
        match ctx.mode {
            Mode::Raw => self.feed_raw(ctx, data),
            Mode::WebSocket => {
                if self.state == State::Handshaking {
                    self.hs_buf.extend_from_slice(data);
                    match handshake::check_response(&self.hs_buf, &self.hs_accept) {
                        Ok(None) => Ok(()),
                        Ok(Some(head)) => {
                            if ctx.deflate.is_some() {
                                match crate::deflate::accepted(&self.hs_buf[..head])? {
                                    true => self.deflated = true,
                                    false => return Err("deflate-declined"),
                                }
                                self.parser.allow_compressed();
                            }
                            let rest = self.hs_buf.split_off(head);
                            self.on_open(ctx);
                            self.feed_frames(ctx, &rest)
                        }
                        Err(_) => Err("handshake"),
                    }
                } else {
                    self.feed_frames(ctx, data)
                }
            }
        }
    }

    fn feed_raw(&mut self, ctx: &mut Ctx, mut data: &[u8]) -> Fed {
        while !data.is_empty() {
            let Some(size) = self.current(ctx).map(|p| p.size()) else {
                return Err("unexpected-data");
            };
            let take = (size - self.recv_off).min(data.len());
            self.check_piece(ctx, &data[..take]);
            data = &data[take..];
            if self.recv_off == size {
                self.complete_message(ctx);
            }
        }
        Ok(())
    }

    fn feed_frames(&mut self, ctx: &mut Ctx, data: &[u8]) -> Fed {
        let mut pos = 0;
        while pos < data.len() {
            if let Some((n, opcode, payload)) = self.parser.whole_message(&data[pos..]) {
                pos += n;
                self.on_data(ctx, opcode, true, true, payload)?;
                continue;
            }
            let (n, ev) = self.parser.next(&data[pos..]).map_err(|_| "protocol")?;
            pos += n;
            match ev {
                None => {}
                Some(Event::Data {
                    opcode,
                    start,
                    end,
                    payload,
                }) => self.on_data(ctx, opcode, start, end, payload)?,
                Some(Event::Control { opcode, payload }) => match opcode {
                    frame::OP_PING => {
                        let key = (ctx.next_rand() as u32).to_ne_bytes();
                        frame::push_masked_frame(&mut self.out, frame::OP_PONG, &[&payload], key);
                        self.mark_dirty(ctx);
                    }
                    // A close answering ours is fine: the server now closes the TCP connection.
                    frame::OP_CLOSE if self.state != State::Closing => {
                        return Err("closed-by-server");
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// A piece of an echoed message: checked against what was sent, and the message is
    /// complete at its `end`.
    fn on_data(
        &mut self,
        ctx: &mut Ctx,
        opcode: u8,
        start: bool,
        end: bool,
        payload: &[u8],
    ) -> Fed {
        if self.state == State::Closing {
            return Ok(()); // data after our close is discarded (§7)
        }
        if self.deflated {
            return self.on_deflated_data(ctx, opcode, start, end, payload);
        }
        let Some(sent) = self.current(ctx) else {
            return Err("unexpected-message");
        };
        let (sent_opcode, sent_size) = (sent.kind().opcode(), sent.size());
        if start {
            self.recv_off = 0;
            self.bad = opcode != sent_opcode;
        }
        self.check_piece(ctx, payload);
        if end {
            if self.recv_off != sent_size {
                self.bad = true;
            }
            self.complete_message(ctx);
        }
        Ok(())
    }

    /// Starts the closing handshake (WebSocket) or half-closes (raw).
    pub(super) fn begin_close(&mut self, ctx: &mut Ctx) {
        match self.state {
            State::Open => {}
            _ => return,
        }
        self.state = State::Closing;
        match ctx.mode {
            Mode::WebSocket => {
                let key = (ctx.next_rand() as u32).to_ne_bytes();
                frame::push_masked_frame(
                    &mut self.out,
                    frame::OP_CLOSE,
                    &[&1000u16.to_be_bytes()],
                    key,
                );
                self.mark_dirty(ctx);
            }
            Mode::Raw => {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    /// Bytes wait to be written (plain, or TLS records).
    pub(super) fn has_output(&self) -> bool {
        self.out_pos < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes the out buffer (normally in one `write`); over TLS, seals it into records and
    /// writes those. Err means the connection is dead.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if let Some(t) = self.tls.as_mut() {
            t.send(&self.out, &mut self.stream)?;
            self.out_pos = self.out.len();
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    if self.out_pos < self.out.len() {
                        return Ok(()); // socket full: a WRITABLE edge will follow
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out_pos = 0;
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok(())
    }
}
