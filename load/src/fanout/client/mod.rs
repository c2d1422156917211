//! The fan-out client reactor: one `mio::Poll`, one thread, edge-triggered, holding the
//! subscribers and the publishers of a run. Publishers send tagged messages at a fixed total
//! rate (woken by the engine's [`SendTimer`] when a send is due, not on the millisecond poll);
//! every subscriber parses what it receives, checks each message's size and opcode and runs
//! its publisher's [`SeqCheck`], and records the delivery latency (receipt minus the tag's due
//! time) while a window is measured. Publishers are room members too (the sender is
//! included): what they receive is read and dropped, so they never back up.
//!
//! It owns the sockets, the handshakes and the per-connection receive state ([`send`]: what
//! publishers send, writes, the closing); how long a run lasts and what is reported is
//! [`super`]'s.

mod send;

use super::tag::{tag_len, Arrival, SeqCheck, Tag, MAX_TAG};
use crate::engine::timer::{SendTimer, MIN_WAIT, TIMER};
use crate::engine::Target;
use crate::frame::{self, Event, FrameParser};
use crate::handshake;
use crate::payload::Kind;
use crate::stats::Latency;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read};
use std::time::{Duration, Instant};

/// Size of the shared read buffer.
const SCRATCH: usize = 256 * 1024;
/// A publisher whose unwritten output is above this skips sends (counted) until it drains.
const MAX_PUBLISHER_BACKLOG: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    Closing,
    /// Gone: its socket is closed and its slot stays (slots are not reused within a run).
    Closed,
}

/// Publisher `id`'s schedule.
struct Publisher {
    id: u32,
    next_due: Instant,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// `None`: a subscriber.
    publisher: Option<Publisher>,
    target: usize,
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
    hs_accept: String,
    hs_buf: Vec<u8>,
    parser: FrameParser,
    /// The front of the message being received (its tag), its length so far and opcode.
    head: [u8; MAX_TAG],
    len: usize,
    opcode: u8,
    /// One per publisher (subscribers only).
    checks: Box<[SeqCheck]>,
}

/// Counts of a window (or of the whole run, for `lost` and friends: see [`Client::losses`]).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Messages published.
    pub published: u64,
    /// Messages delivered to subscribers.
    pub delivered: u64,
    /// Publish-to-receipt latency of the deliveries.
    pub latency: Latency,
}

/// Loss, duplication and reordering over the whole run, summed over subscribers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Losses {
    /// Messages a subscriber never received.
    pub lost: u64,
    /// Messages a subscriber received twice.
    pub duplicated: u64,
    /// Messages that arrived after a later one from the same publisher.
    pub reordered: u64,
}

/// Settings of a [`Client`].
pub struct ClientConfig {
    /// Where subscribers (0) and publishers (1) connect.
    pub targets: [Target; 2],
    /// Publishers.
    pub publishers: usize,
    /// Total publish rate, messages per second.
    pub rate: f64,
    /// Message size in bytes (at least the tag).
    pub size: usize,
    /// Message kind.
    pub kind: Kind,
}

/// The reactor.
pub struct Client {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
    targets: [Target; 2],
    timer: Option<SendTimer>,
    epoch: Instant,
    now: Instant,
    interval: Duration,
    kind: Kind,
    size: usize,
    /// The message body after the tag (the same for every message).
    body: Vec<u8>,
    rng: u64,
    publishing: bool,
    measuring: bool,
    /// Messages published per publisher over the whole run.
    sent: Vec<u64>,
    losses: Losses,
    tally: Tally,
    errors: BTreeMap<String, u64>,
    opened: usize,
    live: usize,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

impl Client {
    /// A reactor with no connections yet.
    pub fn new(cfg: ClientConfig) -> io::Result<Client> {
        let poll = Poll::new()?;
        let timer = SendTimer::new(poll.registry()).ok();
        let tag = tag_len(cfg.kind);
        let body: Vec<u8> = (0..cfg.size.saturating_sub(tag))
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let now = Instant::now();
        Ok(Client {
            poll,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            scratch: vec![0; SCRATCH],
            targets: cfg.targets,
            timer,
            epoch: now,
            now,
            interval: Duration::from_secs_f64(cfg.publishers.max(1) as f64 / cfg.rate.max(1e-3)),
            kind: cfg.kind,
            size: cfg.size,
            body,
            rng: (std::process::id() as u64) << 32 | 0x9E37_79B9,
            publishing: false,
            measuring: false,
            sent: vec![0; cfg.publishers],
            losses: Losses::default(),
            tally: Tally::default(),
            errors: BTreeMap::new(),
            opened: 0,
            live: 0,
        })
    }

    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Starts one connection: a subscriber, or publisher `publisher`.
    pub fn connect(&mut self, publisher: Option<u32>) {
        let target = publisher.is_some() as usize;
        let mut stream = match TcpStream::connect(self.targets[target].addr) {
            Ok(s) => s,
            Err(_) => return self.error("connect"),
        };
        let idx = self.conns.len();
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return self.error("connect");
        }
        let checks = match publisher {
            None => vec![SeqCheck::default(); self.sent.len()].into_boxed_slice(),
            Some(_) => Box::default(),
        };
        self.conns.push(Conn {
            stream,
            state: State::Connecting,
            publisher: publisher.map(|id| Publisher {
                id,
                next_due: self.now,
            }),
            target,
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            hs_accept: String::new(),
            hs_buf: Vec::new(),
            parser: FrameParser::new(),
            head: [0; MAX_TAG],
            len: 0,
            opcode: 0,
            checks,
        });
        self.live += 1;
    }

    /// Connections that completed their handshake.
    pub fn opened(&self) -> usize {
        self.opened
    }
    /// Connections not yet open or failed.
    pub fn connecting(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.state, State::Connecting | State::Handshaking))
            .count()
    }
    /// Connections still alive.
    pub fn live(&self) -> usize {
        self.live
    }
    /// Errors by kind.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }
    /// The counts since measuring last started.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }
    /// Messages published over the whole run.
    pub fn published_total(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Starts publishing (each publisher's first message due now, spread over one interval).
    pub fn start_publishing(&mut self) {
        let n = self.sent.len().max(1) as u32;
        let now = Instant::now();
        for c in &mut self.conns {
            if let Some(p) = c.publisher.as_mut() {
                p.next_due = now + self.interval * p.id / n;
            }
        }
        self.publishing = true;
    }
    /// Stops publishing.
    pub fn stop_publishing(&mut self) {
        self.publishing = false;
    }
    /// Starts (resetting the tally) or stops counting.
    pub fn set_measuring(&mut self, on: bool) {
        if on {
            self.tally = Tally::default();
        }
        self.measuring = on;
    }

    /// Whether every open subscriber has received (or skipped past) every published message.
    pub fn caught_up(&self) -> bool {
        self.conns
            .iter()
            .filter(|c| c.publisher.is_none() && c.state == State::Open)
            .all(|c| {
                c.checks
                    .iter()
                    .zip(&self.sent)
                    .all(|(k, &n)| k.caught_up(n))
            })
    }

    /// Loss, duplication and reordering so far; subscribers that closed count what they missed
    /// as lost.
    pub fn losses(&self) -> Losses {
        let mut l = self.losses;
        for c in self.conns.iter().filter(|c| c.publisher.is_none()) {
            if matches!(c.state, State::Open | State::Closing) {
                l.lost += c
                    .checks
                    .iter()
                    .zip(&self.sent)
                    .map(|(k, &n)| k.lost(n))
                    .sum::<u64>();
            }
        }
        l
    }

    fn drop_conn(&mut self, idx: usize, error: Option<&str>) {
        let sent = &self.sent;
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if c.state == State::Closed {
            return;
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        if c.publisher.is_none() && c.state == State::Open {
            // What it had not received by now it never will.
            self.losses.lost += c
                .checks
                .iter()
                .zip(sent)
                .map(|(k, &n)| k.lost(n))
                .sum::<u64>();
        }
        c.state = State::Closed;
        c.out = Vec::new();
        c.checks = Box::default();
        self.live -= 1;
        if let Some(kind) = error {
            self.error(kind);
        }
    }

    fn mark_dirty(c: &mut Conn, dirty: &mut Vec<usize>, idx: usize) {
        if !c.dirty {
            c.dirty = true;
            dirty.push(idx);
        }
    }

    /// Sends the upgrade request once the TCP connection is up.
    fn on_connected(&mut self, idx: usize) -> Result<(), &'static str> {
        let c = &mut self.conns[idx];
        if let Ok(Some(_)) | Err(_) = c.stream.take_error() {
            return Err("connect");
        }
        match c.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err("connect"),
        }
        let _ = c.stream.set_nodelay(true);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&xorshift(&mut self.rng).to_ne_bytes());
        nonce[8..].copy_from_slice(&xorshift(&mut self.rng).to_ne_bytes());
        let key = handshake::key_from_nonce(nonce);
        c.hs_accept = handshake::accept_for(&key);
        let t = &self.targets[c.target];
        c.out
            .extend_from_slice(&handshake::request(&t.host, &t.path, &key));
        c.state = State::Handshaking;
        Ok(())
    }

    /// Reads until a short read; Err when the connection must go.
    fn on_readable(&mut self, idx: usize) -> Result<(), &'static str> {
        loop {
            let n = match self.conns[idx].stream.read(&mut self.scratch) {
                Ok(0) => {
                    return Err(match self.conns[idx].state {
                        State::Closing => "",
                        State::Handshaking => "handshake",
                        _ => "closed-by-server",
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Err("io"),
            };
            let scratch = std::mem::take(&mut self.scratch);
            let r = self.feed(idx, &scratch[..n]);
            self.scratch = scratch;
            r?;
            if n < self.scratch.len() {
                return Ok(());
            }
        }
    }

    fn feed(&mut self, idx: usize, data: &[u8]) -> Result<(), &'static str> {
        let c = &mut self.conns[idx];
        let mut data = data;
        let mut rest: Vec<u8>;
        if c.state == State::Handshaking {
            c.hs_buf.extend_from_slice(data);
            match handshake::check_response(&c.hs_buf, &c.hs_accept) {
                Ok(None) => return Ok(()),
                Ok(Some(head)) => {
                    rest = c.hs_buf.split_off(head);
                    c.hs_buf = Vec::new();
                    c.hs_accept = String::new();
                    c.state = State::Open;
                    self.opened += 1;
                    rest.shrink_to_fit();
                    data = &rest;
                }
                Err(_) => return Err("handshake"),
            }
        }
        let mut pos = 0;
        while pos < data.len() {
            let c = &mut self.conns[idx];
            if let Some((n, opcode, payload)) = c.parser.whole_message(&data[pos..]) {
                pos += n;
                self.on_data(idx, opcode, true, true, payload)?;
                continue;
            }
            let (n, ev) = c.parser.next(&data[pos..]).map_err(|_| "protocol")?;
            pos += n;
            match ev {
                None => {}
                Some(Event::Data {
                    opcode,
                    start,
                    end,
                    payload,
                }) => self.on_data(idx, opcode, start, end, payload)?,
                Some(Event::Control { opcode, payload }) => match opcode {
                    frame::OP_PING => {
                        let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
                        let c = &mut self.conns[idx];
                        frame::push_masked_frame(&mut c.out, frame::OP_PONG, &[&payload], key);
                    }
                    frame::OP_CLOSE if c.state != State::Closing => return Err("closed-by-server"),
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// A piece of a received message; checked when it ends.
    fn on_data(
        &mut self,
        idx: usize,
        opcode: u8,
        start: bool,
        end: bool,
        payload: &[u8],
    ) -> Result<(), &'static str> {
        let c = &mut self.conns[idx];
        if c.state != State::Open || c.publisher.is_some() {
            return Ok(()); // after our close, or a publisher's own copy: not checked
        }
        if start {
            c.len = 0;
            c.opcode = opcode;
        }
        if c.len < MAX_TAG {
            let take = (MAX_TAG - c.len).min(payload.len());
            c.head[c.len..c.len + take].copy_from_slice(&payload[..take]);
        }
        c.len += payload.len();
        if !end {
            return Ok(());
        }
        if c.len != self.size || c.opcode != self.kind.opcode() {
            self.error("mismatch");
            return Ok(());
        }
        let Some(tag) = Tag::read(self.kind, &c.head) else {
            self.error("bad-tag");
            return Ok(());
        };
        let Some(check) = c.checks.get_mut(tag.publisher as usize) else {
            self.error("bad-tag");
            return Ok(());
        };
        match check.arrive(tag.seq) {
            Arrival::InOrder | Arrival::Gap(_) => {}
            Arrival::Duplicate => self.losses.duplicated += 1,
            Arrival::Late => self.losses.reordered += 1,
        }
        if self.measuring {
            self.tally.delivered += 1;
            let due = self.epoch + Duration::from_nanos(tag.due_ns);
            let lat = self.now.saturating_duration_since(due);
            self.tally.latency.record(lat.as_nanos() as u64);
        }
        Ok(())
    }

    /// One loop turn: wait up to `timeout`, handle readiness, publish what is due, write.
    pub fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = if self.publishing && self.timer.is_none() {
            timeout.min(Duration::from_millis(1))
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.now = Instant::now();
        let ready: Vec<(usize, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                    e.is_error(),
                )
            })
            .collect();
        let mut dirty = Vec::new();
        for (idx, readable, writable, error) in ready {
            if idx == TIMER.0 {
                if let Some(t) = self.timer.as_mut() {
                    t.fired();
                }
                continue;
            }
            let Some(state) = self.conns.get(idx).map(|c| c.state) else {
                continue;
            };
            if state == State::Closed {
                continue;
            }
            if state == State::Connecting {
                if error {
                    self.drop_conn(idx, Some("connect"));
                    continue;
                }
                if let Err(kind) = self.on_connected(idx) {
                    self.drop_conn(idx, Some(kind));
                    continue;
                }
            }
            if readable {
                if let Err(kind) = self.on_readable(idx) {
                    self.drop_conn(idx, (!kind.is_empty()).then_some(kind));
                    continue;
                }
            }
            let c = &mut self.conns[idx];
            let _ = writable; // output waits in `out` until the socket takes it
            if !c.out.is_empty() && c.state != State::Closed {
                Self::mark_dirty(c, &mut dirty, idx);
            }
        }
        if self.publishing {
            if let Some(due) = self.publish_due(&mut dirty) {
                if let Some(t) = self.timer.as_mut() {
                    t.arm(due, self.now, MIN_WAIT);
                }
            }
        }
        for idx in dirty {
            let c = &mut self.conns[idx];
            c.dirty = false;
            if c.state != State::Closed && Self::flush(c).is_err() {
                self.drop_conn(idx, Some("io"));
            }
        }
        Ok(())
    }
}
