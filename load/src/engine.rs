//! The client reactor: one `mio::Poll`, one thread, edge-triggered. It owns the sockets and the
//! per-connection state (connect → upgrade → open → closing), builds every frame a connection
//! sends during one loop turn into that connection's buffer and writes it once at the end of
//! the turn, reads each readable socket into one shared scratch buffer until a short read, and
//! checks every echo byte-exactly while it streams in. Workload drivers (`workloads`) move it
//! through its phases; nothing here decides how long a run lasts.

use crate::frame::{self, Event, FrameParser, MaskedBodies};
use crate::handshake;
use crate::payload::Payload;
use crate::stats::Latency;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Size of the shared read buffer.
const SCRATCH: usize = 256 * 1024;
/// An out buffer larger than this is given back to the allocator once it is written.
const KEEP_OUT_CAPACITY: usize = 1 << 20;

/// WebSocket frames or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6455 over an HTTP upgrade.
    WebSocket,
    /// Plain TCP: messages are runs of bytes, echoed in order.
    Raw,
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved loopback address.
    pub addr: SocketAddr,
    /// Value of the `Host` header.
    pub host: String,
    /// Request path.
    pub path: String,
}

impl Target {
    /// Parses `ws://host:port/path` (or `tcp://host:port`, or a bare `host:port`). Only loopback
    /// addresses are accepted: this tool never sends load anywhere else.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url);
        if url.starts_with("wss://") {
            return Err("wss:// is not supported".into());
        }
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("no IPv4 address for {hostport:?}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; load is only sent to 127.0.0.0/8"
            ));
        }
        Ok(Target {
            addr,
            host: hostport.to_string(),
            path: path.to_string(),
        })
    }
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    Open,
    Closing,
}

/// Per-connection state. An idle open connection holds no buffers.
struct Conn {
    idx: usize,
    stream: TcpStream,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    dirty: bool,
    /// Send times of the messages in flight, oldest first.
    inflight: VecDeque<Instant>,
    send_seq: u64,
    recv_seq: u64,
    recv_off: usize,
    bad: bool,
    parser: FrameParser,
    hs_accept: String,
    hs_buf: Vec<u8>,
    depth: usize,
    budget: Option<u64>,
    next_due: Instant,
}

/// Everything the connections share, kept apart from them for the borrow checker.
struct Ctx {
    mode: Mode,
    payload: Payload,
    /// The payload's body pre-masked under a few keys (WebSocket mode).
    masked: MaskedBodies,
    rng: u64,
    now: Instant,
    sending: bool,
    measuring: bool,
    rate_interval: Option<Duration>,
    tally: Tally,
    errors: BTreeMap<String, u64>,
    dirty: Vec<usize>,
    completed_total: u64,
    opened: usize,
    last_open_at: Option<Instant>,
}

impl Ctx {
    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }
    fn error_n(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_string()).or_insert(0) += n;
        }
    }
    fn next_rand(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }
}

/// xorshift64*: fast, and random enough for masking keys and key picks (`state` nonzero).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Outcome of feeding bytes to a connection.
type Fed = Result<(), &'static str>;

impl Conn {
    fn mark_dirty(&mut self, ctx: &mut Ctx) {
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
        let p = &ctx.payload;
        let tag = p.tag(seq);
        match ctx.mode {
            Mode::WebSocket => {
                let pick = ctx.next_rand() >> 32;
                let opcode = ctx.payload.kind().opcode();
                ctx.masked.push_frame(&mut self.out, opcode, &tag, pick);
            }
            Mode::Raw => {
                // Copied as the WebSocket frame's tag is, so both generators pay alike.
                frame::push_prefix(&mut self.out, &tag, p.tag_len());
                self.out.extend_from_slice(ctx.payload.body());
            }
        }
        self.inflight.push_back(stamp);
        if let Some(b) = self.budget.as_mut() {
            *b -= 1;
        }
        if ctx.measuring {
            ctx.tally.sent_msgs += 1;
            ctx.tally.sent_bytes += ctx.payload.size() as u64;
        }
        self.mark_dirty(ctx);
    }

    /// Fills the pipeline (unless a fixed rate drives the sends).
    fn fill(&mut self, ctx: &mut Ctx) {
        if ctx.rate_interval.is_some() {
            return;
        }
        while self.may_send(ctx) {
            let now = ctx.now;
            self.queue_message(ctx, now);
        }
    }

    /// Sends what a fixed rate allows by now.
    fn fill_rated(&mut self, ctx: &mut Ctx, interval: Duration) {
        while self.may_send(ctx) && self.next_due <= ctx.now {
            let due = self.next_due;
            self.queue_message(ctx, due);
            self.next_due += interval;
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx) {
        self.state = State::Open;
        ctx.opened += 1;
        ctx.last_open_at = Some(ctx.now);
        self.hs_buf = Vec::new();
        self.hs_accept = String::new();
        self.next_due = ctx.now;
        self.fill(ctx);
    }

    fn complete_message(&mut self, ctx: &mut Ctx) {
        let Some(sent) = self.inflight.pop_front() else {
            return;
        };
        self.recv_seq += 1;
        self.recv_off = 0;
        if std::mem::take(&mut self.bad) {
            ctx.error("mismatch");
        }
        ctx.completed_total += 1;
        if ctx.measuring {
            ctx.tally.recv_msgs += 1;
            ctx.tally.recv_bytes += ctx.payload.size() as u64;
            let rtt = ctx.now.saturating_duration_since(sent);
            ctx.tally.latency.record(rtt.as_nanos() as u64);
        }
        self.fill(ctx);
    }

    /// Checks a piece of the current echo.
    fn check_piece(&mut self, ctx: &Ctx, piece: &[u8]) {
        if !ctx.payload.matches(self.recv_seq, self.recv_off, piece) {
            self.bad = true;
        }
        self.recv_off = self.recv_off.saturating_add(piece.len());
    }

    /// Feeds bytes read from the socket.
    fn feed(&mut self, ctx: &mut Ctx, data: &[u8]) -> Fed {
        match ctx.mode {
            Mode::Raw => self.feed_raw(ctx, data),
            Mode::WebSocket => {
                if self.state == State::Handshaking {
                    self.hs_buf.extend_from_slice(data);
                    match handshake::check_response(&self.hs_buf, &self.hs_accept) {
                        Ok(None) => Ok(()),
                        Ok(Some(head)) => {
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
        let size = ctx.payload.size();
        while !data.is_empty() {
            if self.inflight.is_empty() {
                return Err("unexpected-data");
            }
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
        if self.inflight.is_empty() {
            return Err("unexpected-message");
        }
        if start {
            self.recv_off = 0;
            self.bad = opcode != ctx.payload.kind().opcode();
        }
        self.check_piece(ctx, payload);
        if end {
            if self.recv_off != ctx.payload.size() {
                self.bad = true;
            }
            self.complete_message(ctx);
        }
        Ok(())
    }

    /// Starts the closing handshake (WebSocket) or half-closes (raw).
    fn begin_close(&mut self, ctx: &mut Ctx) {
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

    /// Writes the out buffer (normally in one `write`). Err means the connection is dead.
    fn flush(&mut self) -> io::Result<()> {
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

/// Settings for an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// WebSocket or raw TCP.
    pub mode: Mode,
    /// Where to connect.
    pub target: Target,
    /// Message shape.
    pub payload: Payload,
    /// Total fixed rate in messages per second over `rate_connections` connections.
    pub rate: Option<f64>,
    /// Connections the rate is shared by.
    pub rate_connections: usize,
    /// Number of loopback source addresses (127.0.0.1 ..= 127.0.0.N) to spread over.
    pub source_ips: usize,
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
        let rate_interval = cfg.rate.and_then(|r| {
            (r > 0.0).then(|| Duration::from_secs_f64(cfg.rate_connections.max(1) as f64 / r))
        });
        let seed = Instant::now().elapsed().as_nanos() as u64
            ^ 0x9E37_79B9_7F4A_7C15
            ^ (std::process::id() as u64) << 32;
        let masked = match cfg.mode {
            Mode::WebSocket => {
                let mut rng = !seed | 1;
                let phase = cfg.payload.tag_len();
                MaskedBodies::new(cfg.payload.body(), phase, || {
                    ((xorshift(&mut rng) >> 32) as u32).to_ne_bytes()
                })
            }
            Mode::Raw => MaskedBodies::new(&[], 0, || [0; 4]),
        };
        Ok(Engine {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            ready: Vec::with_capacity(4096),
            conns: Vec::new(),
            free: Vec::new(),
            scratch: vec![0u8; SCRATCH],
            ctx: Ctx {
                mode: cfg.mode,
                masked,
                payload: cfg.payload,
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
                    let r = c.feed(&mut self.ctx, &self.scratch[..n]);
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
        let timeout = match self.ctx.rate_interval {
            Some(_) => timeout.min(Duration::from_millis(1)),
            None => timeout,
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
                    if c.out_pos < c.out.len() {
                        c.mark_dirty(&mut self.ctx);
                    }
                }
            }
        }
        self.ready = ready;
        if let Some(interval) = self.ctx.rate_interval {
            if self.ctx.sending {
                for c in self.conns.iter_mut().flatten() {
                    c.fill_rated(&mut self.ctx, interval);
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
