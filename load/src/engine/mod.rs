//! The client reactor: one `mio::Poll`, one thread, edge-triggered. It owns the sockets and the
//! per-connection state (connect → upgrade → open → closing), builds every frame a connection
//! sends during one loop turn into that connection's buffer and writes it once at the end of
//! the turn, reads each readable socket into one shared scratch buffer until a short read, and
//! checks every echo byte-exactly while it streams in. Workload drivers (`workloads`) move it
//! through its phases; nothing here decides how long a run lasts.
//!
//! This module owns the poll loop, sockets and their registration; [`conn`] owns what one
//! connection does with the bytes, [`target`] where they go, [`tls`] the `wss://` layer
//! between the socket and the connection, and `deflating` what `--deflate` changes in a
//! connection's sends and echo checks.

mod conn;
mod deflating;
mod target;
pub(crate) mod timer;
pub mod tls;

pub use conn::Tally;
pub use target::{Mode, Target};

use crate::frame::{FrameParser, MaskedBodies};
use crate::handshake;
use crate::payload::Mix;
use conn::{xorshift, Conn, Ctx, Shape, State};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use timer::{SendTimer, MIN_WAIT, TIMER, WAIT_PER_CONN};
use tls::{TlsClient, TlsOptions, TlsSession};

/// What goes on the wire besides WebSocket frames: TLS for `wss://` URLs and compression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wire {
    /// Trust and resumption for `wss://` URLs (unused for `ws://`).
    pub tls: TlsOptions,
    /// Offer permessage-deflate and send compressed JSON-like text (`--deflate`).
    pub deflate: bool,
}

/// Size of the shared read buffer.
const SCRATCH: usize = 256 * 1024;

/// Settings for an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// WebSocket or raw TCP.
    pub mode: Mode,
    /// Where to connect.
    pub target: Target,
    /// Message shapes and their weights.
    pub mix: Mix,
    /// Total fixed rate in messages per second over `rate_connections` connections.
    pub rate: Option<f64>,
    /// Connections the rate is shared by.
    pub rate_connections: usize,
    /// Number of loopback source addresses (127.0.0.1 ..= 127.0.0.N) to spread over.
    pub source_ips: usize,
    /// Wake for paced sends when they are due (a timerfd) rather than on the next millisecond
    /// poll, which sends them in per-millisecond batches, up to a millisecond late.
    pub send_timer: bool,
    /// TLS and compression.
    pub wire: Wire,
}

/// The per-connection send interval of a total `rate` over `connections`.
fn interval_for(rate: Option<f64>, connections: usize) -> Option<Duration> {
    rate.and_then(|r| (r > 0.0).then(|| Duration::from_secs_f64(connections.max(1) as f64 / r)))
}

/// Source addresses needed for `n` connections (one per 16,000, the ephemeral port range of one
/// address being about 28,000).
pub fn auto_source_ips(n: usize) -> usize {
    n.div_ceil(16_000).clamp(1, 250)
}

/// The client reactor.
pub struct Engine {
    poll: Poll,
    events: Events,
    /// Readiness of the current turn (token, readable, writable, error), reused across turns.
    ready: Vec<(usize, bool, bool, bool)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    scratch: Vec<u8>,
    ctx: Ctx,
    target: Target,
    source_ips: usize,
    next_source: usize,
    connecting: usize,
    live: usize,
    failed_connects: u64,
    /// Wakes the loop when a paced send is due (`None` if no timerfd could be made: then the
    /// loop polls every millisecond, as coarse as `epoll_wait` is).
    timer: Option<SendTimer>,
    /// `wss://`: the client configuration and the buffer records are opened into.
    tls: Option<TlsClient>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("live", &self.live)
            .field("connecting", &self.connecting)
            .finish()
    }
}

impl Engine {
    /// A reactor with no connections yet.
    pub fn new(cfg: EngineConfig) -> io::Result<Engine> {
        let rate_interval = interval_for(cfg.rate, cfg.rate_connections);
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ 0x9E37_79B9_7F4A_7C15
            ^ (std::process::id() as u64) << 32;
        let mut rng = !seed | 1;
        let mut cum = 0u64;
        let mut cum_weights = Vec::new();
        let shapes: Vec<Shape> = cfg
            .mix
            .entries()
            .iter()
            .map(|e| {
                cum += e.weight as u64;
                cum_weights.push(cum);
                let p = &e.payload;
                let masked = match cfg.mode {
                    Mode::WebSocket => MaskedBodies::new(p.body(), p.tag_len(), || {
                        ((xorshift(&mut rng) >> 32) as u32).to_ne_bytes()
                    }),
                    Mode::Raw => MaskedBodies::new(&[], 0, || [0; 4]),
                };
                Shape {
                    payload: p.clone(),
                    masked,
                }
            })
            .collect();
        let tls = TlsClient::for_target(&cfg.target, cfg.mode, &cfg.wire.tls)?;
        let deflate = deflating::Deflating::for_run(cfg.wire.deflate, cfg.mode, &shapes)?;
        let poll = Poll::new()?;
        let timer = match cfg.send_timer {
            true => SendTimer::new(poll.registry()).ok(),
            false => None,
        };
        Ok(Engine {
            poll,
            timer,
            events: Events::with_capacity(4096),
            ready: Vec::with_capacity(4096),
            conns: Vec::new(),
            free: Vec::new(),
            scratch: vec![0u8; SCRATCH],
            tls,
            ctx: Ctx {
                mode: cfg.mode,
                deflate,
                shapes,
                cum_weights,
                rng: seed | 1,
                now: Instant::now(),
                sending: true,
                measuring: false,
                rate_interval,
                tally: Tally::default(),
                errors: BTreeMap::new(),
                dirty: Vec::new(),
                completed_total: 0,
                opened: 0,
                last_open_at: None,
            },
            target: cfg.target,
            source_ips: cfg.source_ips.max(1),
            next_source: 0,
            connecting: 0,
            live: 0,
            failed_connects: 0,
        })
    }

    fn new_socket(&mut self) -> io::Result<TcpStream> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let n = self.next_source % self.source_ips;
        self.next_source += 1;
        if self.source_ips > 1 {
            // Let connect() pick the port per 4-tuple instead of reserving one at bind().
            let one: libc::c_int = 1;
            // SAFETY: setsockopt on a valid fd with a c_int option value.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let ip = Ipv4Addr::new(127, 0, 0, 1 + n as u8);
            sock.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into())?;
        }
        match sock.connect(&self.target.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let std: std::net::TcpStream = sock.into();
        Ok(TcpStream::from_std(std))
    }

    /// Starts one connection that keeps `depth` messages in flight, sending at most `budget`
    /// messages (`None`: until told to stop). Depth 0 makes an idle connection.
    pub fn connect(&mut self, depth: usize, budget: Option<u64>) -> io::Result<()> {
        let mut stream = match self.new_socket() {
            Ok(s) => s,
            Err(e) => {
                self.failed_connects += 1;
                self.ctx.error("connect");
                return Err(e);
            }
        };
        let idx = self.free.pop().unwrap_or(self.conns.len());
        if idx == self.conns.len() {
            self.conns.push(None);
        }
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(idx);
            self.failed_connects += 1;
            self.ctx.error("connect");
            return Err(e);
        }
        self.conns[idx] = Some(Conn {
            idx,
            stream,
            state: State::Connecting,
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            inflight: VecDeque::new(),
            send_seq: 0,
            recv_seq: 0,
            recv_off: 0,
            bad: false,
            parser: FrameParser::new(),
            tls: None,
            deflated: false,
            zbuf: Vec::new(),
            hs_accept: String::new(),
            hs_buf: Vec::new(),
            depth,
            budget,
            next_due: self.ctx.now,
        });
        self.connecting += 1;
        self.live += 1;
        Ok(())
    }

    fn drop_conn(&mut self, idx: usize, error: Option<&str>) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(|c| c.take()) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if matches!(c.state, State::Connecting | State::Handshaking) {
            self.connecting -= 1;
            self.failed_connects += 1;
        }
        if let Some(kind) = error {
            self.ctx.error(kind);
            if c.state != State::Closing {
                self.ctx.error_n("lost-in-flight", c.inflight.len() as u64);
            }
        }
        self.live -= 1;
        self.free.push(idx);
    }

    fn on_connected(&mut self, idx: usize) -> Result<(), &'static str> {
        let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
            return Ok(());
        };
        if c.state != State::Connecting {
            return Ok(());
        }
        if let Ok(Some(_)) | Err(_) = c.stream.take_error() {
            return Err("connect");
        }
        match c.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()), // not yet
            Err(_) => return Err("connect"),
        }
        match self.ctx.mode {
            Mode::WebSocket => {
                let a = self.ctx.next_rand().to_ne_bytes();
                let b = self.ctx.next_rand().to_ne_bytes();
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&a);
                nonce[8..].copy_from_slice(&b);
                let key = handshake::key_from_nonce(nonce);
                c.hs_accept = handshake::accept_for(&key);
                c.out.extend_from_slice(&handshake::request(
                    &self.target.host,
                    &self.target.path,
                    &key,
                ));
                if self.ctx.deflate.is_some() {
                    crate::deflate::add_offer(&mut c.out);
                }
                if let Some(t) = &self.tls {
                    c.tls = Some(TlsSession::new(t)?);
                }
                c.state = State::Handshaking;
                c.mark_dirty(&mut self.ctx);
            }
            Mode::Raw => {
                self.connecting -= 1;
                c.on_open(&mut self.ctx);
            }
        }
        Ok(())
    }

    /// Reads until a short read; returns an error kind when the connection must go.
    fn on_readable(&mut self, idx: usize) -> Result<(), &'static str> {
        loop {
            let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
                return Ok(());
            };
            match c.stream.read(&mut self.scratch) {
                Ok(0) => {
                    return if c.state == State::Closing {
                        Err("")
                    } else if c.state == State::Handshaking {
                        Err("handshake")
                    } else {
                        Err("closed-by-server")
                    };
                }
                Ok(n) => {
                    let was_hs = c.state == State::Handshaking;
                    let r = match c.tls.take() {
                        None => c.feed(&mut self.ctx, &self.scratch[..n]),
                        Some(mut t) => {
                            let plain = &mut self.tls.as_mut().ok_or("tls")?.plain;
                            let ctx = &mut self.ctx;
                            let r = t.receive(&self.scratch[..n], plain, |p| c.feed(ctx, p));
                            // Handshake records (or a key update) to answer.
                            if t.wants_write() {
                                c.mark_dirty(ctx);
                            }
                            c.tls = Some(t);
                            r
                        }
                    };
                    if was_hs && c.state == State::Open {
                        self.connecting -= 1;
                    }
                    r?;
                    if n < self.scratch.len() {
                        return Ok(()); // drained; the next edge brings more
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err("io"),
            }
        }
    }

    /// One loop turn: wait up to `timeout`, handle readiness, send what a fixed rate allows,
    /// then write each connection that has output once.
    pub fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = match (self.ctx.rate_interval, &self.timer) {
            (Some(_), None) => timeout.min(Duration::from_millis(1)),
            _ => timeout,
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.ctx.now = Instant::now();
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|e| {
            (
                e.token().0,
                e.is_readable() || e.is_read_closed(),
                e.is_writable(),
                e.is_error(),
            )
        }));
        for &(idx, readable, writable, error) in &ready {
            if idx == TIMER.0 {
                if let Some(t) = self.timer.as_mut() {
                    t.fired();
                }
                continue;
            }
            let state = match self.conns.get(idx).and_then(|c| c.as_ref()) {
                Some(c) => c.state,
                None => continue,
            };
            if state == State::Connecting {
                if error {
                    self.drop_conn(idx, Some("connect"));
                    continue;
                }
                if writable || readable {
                    if let Err(kind) = self.on_connected(idx) {
                        self.drop_conn(idx, Some(kind));
                        continue;
                    }
                }
            }
            if readable {
                if let Err(kind) = self.on_readable(idx) {
                    self.drop_conn(idx, (!kind.is_empty()).then_some(kind));
                    continue;
                }
            }
            if writable {
                if let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) {
                    if c.has_output() {
                        c.mark_dirty(&mut self.ctx);
                    }
                }
            }
        }
        self.ready = ready;
        if let Some(interval) = self.ctx.rate_interval {
            if self.ctx.sending {
                let mut next: Option<Instant> = None;
                for c in self.conns.iter_mut().flatten() {
                    if let Some(due) = c.fill_rated(&mut self.ctx, interval) {
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                }
                if let (Some(t), Some(due)) = (self.timer.as_mut(), next) {
                    let min_wait = MIN_WAIT.max(WAIT_PER_CONN * self.live as u32);
                    t.arm(due, self.ctx.now, min_wait);
                }
            }
        }
        let dirty = std::mem::take(&mut self.ctx.dirty);
        for &idx in &dirty {
            let Some(c) = self.conns.get_mut(idx).and_then(|c| c.as_mut()) else {
                continue;
            };
            c.dirty = false;
            if c.flush().is_err() {
                self.drop_conn(idx, Some("io"));
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.ctx.dirty.is_empty() {
            self.ctx.dirty = dirty; // keep the allocation
        }
        Ok(())
    }

    /// Connections alive (connecting, open or closing).
    pub fn live(&self) -> usize {
        self.live
    }
    /// Connections still connecting or handshaking.
    pub fn connecting(&self) -> usize {
        self.connecting
    }
    /// Connections that completed their handshake so far.
    pub fn opened(&self) -> usize {
        self.ctx.opened
    }
    /// When the last handshake completed.
    pub fn last_open_at(&self) -> Option<Instant> {
        self.ctx.last_open_at
    }
    /// Connection attempts that failed.
    pub fn failed_connects(&self) -> u64 {
        self.failed_connects
    }
    /// Echoes completed since the start (measured or not).
    pub fn completed_total(&self) -> u64 {
        self.ctx.completed_total
    }
    /// Errors by kind.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.ctx.errors
    }
    /// Counts one error of `kind`.
    pub fn count_error(&mut self, kind: &str, n: u64) {
        self.ctx.error_n(kind, n);
    }
    /// Messages in flight over all connections.
    pub fn in_flight(&self) -> usize {
        self.conns.iter().flatten().map(|c| c.inflight.len()).sum()
    }
    /// Starts (`true`) or stops counting into the tally; starting resets it.
    pub fn set_measuring(&mut self, on: bool) {
        if on {
            self.ctx.tally = Tally::default();
        }
        self.ctx.measuring = on;
    }
    /// The tally of the measured window.
    pub fn tally(&self) -> &Tally {
        &self.ctx.tally
    }
    /// Changes the fixed total rate (messages per second over `connections`), or goes back to
    /// as fast as echoes return with `None`. Pacing restarts from now: a backlog built up at
    /// the old rate is not sent in a burst at the new one, and the connections' first sends
    /// are spread evenly over one interval, so that they do not all send in the same instant
    /// (a burst of N messages every interval would measure queueing the rate does not ask for).
    pub fn set_rate(&mut self, rate: Option<f64>, connections: usize) {
        self.ctx.rate_interval = interval_for(rate, connections);
        let now = Instant::now();
        let open = self.conns.iter().flatten().count().max(1) as u32;
        let interval = self.ctx.rate_interval.unwrap_or(Duration::ZERO);
        for (k, c) in self.conns.iter_mut().flatten().enumerate() {
            c.next_due = now + interval * k as u32 / open;
        }
        if self.ctx.rate_interval.is_none() {
            for c in self.conns.iter_mut().flatten() {
                c.fill(&mut self.ctx);
            }
        }
    }
    /// Changes the fixed total rate without restarting the schedule (a ramp's small steps,
    /// one phase to the next): sends already due stay due, so lateness still counts in the
    /// latency, and the wait of every send planned ahead is scaled by the new interval over
    /// the old, so the connections stay spread over the interval instead of bunching up.
    pub fn retarget_rate(&mut self, rate: f64, connections: usize) {
        let Some(interval) = interval_for(Some(rate), connections) else {
            return;
        };
        let old = self.ctx.rate_interval.replace(interval);
        let Some(old) = old.filter(|o| !o.is_zero()) else {
            return;
        };
        let ratio = interval.as_secs_f64() / old.as_secs_f64();
        let now = Instant::now();
        for c in self.conns.iter_mut().flatten() {
            if let Some(wait) = c.next_due.checked_duration_since(now) {
                c.next_due = now + wait.mul_f64(ratio);
            }
        }
    }
    /// Queues new messages again after [`Engine::stop_sending`].
    pub fn resume_sending(&mut self) {
        self.ctx.sending = true;
    }
    /// Stops queueing new messages (in-flight ones still complete).
    pub fn stop_sending(&mut self) {
        self.ctx.sending = false;
    }
    /// Closes every open connection politely and waits up to `timeout` for them to go.
    pub fn close_all(&mut self, timeout: Duration) -> io::Result<()> {
        // Connections still connecting are simply dropped.
        let pending: Vec<usize> = self
            .conns
            .iter()
            .flatten()
            .filter(|c| matches!(c.state, State::Connecting | State::Handshaking))
            .map(|c| c.idx)
            .collect();
        for idx in pending {
            self.drop_conn(idx, None);
        }
        for c in self.conns.iter_mut().flatten() {
            c.begin_close(&mut self.ctx);
        }
        let end = Instant::now() + timeout;
        while self.live > 0 && Instant::now() < end {
            self.turn(Duration::from_millis(10))?;
        }
        let rest: Vec<usize> = self.conns.iter().flatten().map(|c| c.idx).collect();
        for idx in rest {
            self.drop_conn(idx, None);
        }
        Ok(())
    }
}
