//! Harness for the hardening tests (`limits.rs`, `abuse.rs`): a server in a thread whose handler
//! publishes what it saw (counters, the largest backlog it ever queued, close codes) so a test
//! can watch the server while it runs, and a raw client that writes exactly the bytes a test
//! wants and reads frames back with a timeout on every socket, so a bug fails a test instead of
//! hanging it. The wire pieces (frames, the upgrade request) come from `common`, so a test crate
//! declares `mod common; mod harden;`.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wsreactor::{
    Close, CloseCause, Config, Conn, ConnId, Ctx, Handler, Message, Request, SendStatus, Stats,
};

use crate::common::{
    masked_frame, take_frame, take_head, upgrade_request, Frame, TestServer, ACCEPT,
};

/// Every client socket gets this read and write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server's handler saw, readable by the test while the server runs.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Server counters, refreshed on every tick (10 ms).
    pub stats: Stats,
    /// TCP connections the reactor holds, refreshed on every tick.
    pub connections: usize,
    /// Open WebSocket connections, refreshed on every tick.
    pub open: usize,
    /// Ticks so far (a tick after an event proves the event was handled).
    pub ticks: u64,
    pub messages: u64,
    /// Largest `buffered_amount` seen right after any send.
    pub max_buffered: usize,
    pub sent: u64,
    pub backpressure: u64,
    pub dropped: u64,
    pub drains: u64,
    pub opens: u64,
    /// Codes passed to `on_close`, in order.
    pub closes: Vec<u16>,
    /// Causes passed to `on_close`, in the same order.
    pub causes: Vec<CloseCause>,
}

pub type Shared = Arc<Mutex<Seen>>;

/// Echoes every message, with a few commands (text messages) for tests:
/// `panic` panics; `flood N SIZE` sends N binary messages of SIZE bytes at once, ignoring
/// backpressure; `close CODE` closes with CODE.
pub struct Probe {
    pub seen: Shared,
    /// Panic in `on_open` when the request path is `/panic-open`.
    pub panic_on_open_path: bool,
}

impl Probe {
    pub fn new() -> (Probe, Shared) {
        let seen = Shared::default();
        (
            Probe {
                seen: Arc::clone(&seen),
                panic_on_open_path: true,
            },
            seen,
        )
    }

    fn record(&self, conn: &Conn<'_>, status: SendStatus) {
        let mut seen = lock(&self.seen);
        seen.sent += 1;
        seen.max_buffered = seen.max_buffered.max(conn.buffered_amount());
        match status {
            SendStatus::Backpressure => seen.backpressure += 1,
            SendStatus::Dropped => seen.dropped += 1,
            SendStatus::Sent | SendStatus::Closed | SendStatus::PartsOpen => {}
        }
    }
}

impl Handler for Probe {
    fn on_open(&mut self, _conn: &mut Conn<'_>, request: &Request<'_>) {
        lock(&self.seen).opens += 1;
        if self.panic_on_open_path && request.path == "/panic-open" {
            panic!("test handler panics in on_open on purpose");
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        lock(&self.seen).messages += 1;
        if let Message::Text(text) = message {
            if text == "panic" {
                panic!("test handler panics in on_message on purpose");
            }
            if let Some(args) = text.strip_prefix("flood ") {
                let mut args = args.split(' ').map(|a| a.parse::<usize>().unwrap_or(0));
                let (count, size) = (args.next().unwrap_or(0), args.next().unwrap_or(0));
                let payload = vec![0x5a; size];
                for _ in 0..count {
                    let status = conn.send_binary(&payload);
                    self.record(conn, status);
                    if status == SendStatus::Dropped {
                        break;
                    }
                }
                return;
            }
            if let Some(code) = text.strip_prefix("close ") {
                conn.close(code.parse().unwrap_or(1000), "asked to");
                return;
            }
        }
        let status = conn.send(message);
        self.record(conn, status);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, close: Close<'_>) {
        let mut seen = lock(&self.seen);
        seen.closes.push(close.code);
        seen.causes.push(close.cause);
    }

    fn on_drain(&mut self, _conn: &mut Conn<'_>) {
        lock(&self.seen).drains += 1;
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        let mut seen = lock(&self.seen);
        seen.stats = ctx.stats();
        seen.connections = ctx.connection_count();
        seen.open = ctx.open_count();
        seen.ticks += 1;
    }
}

/// Locks even if a failed assertion poisoned the mutex in another thread.
pub fn lock(seen: &Shared) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A test configuration: ephemeral port, 10 ms ticks, short timeouts.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tick_interval: Some(Duration::from_millis(10)),
        handshake_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(2),
        idle_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    }
}

/// A server running in its own thread; shut down on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub seen: Shared,
    server: TestServer,
}

impl Running {
    pub fn start(config: Config) -> Running {
        let (probe, seen) = Probe::new();
        Running::with_handler(config, probe, seen)
    }

    pub fn with_handler<H: Handler + Send + 'static>(
        config: Config,
        handler: H,
        seen: Shared,
    ) -> Running {
        let server = TestServer::start(config, handler);
        Running {
            addr: server.addr,
            seen,
            server,
        }
    }

    /// A snapshot of what the handler saw.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Waits (at most `within`) until `cond` holds on a snapshot taken after a fresh tick.
    pub fn wait_for(&self, within: Duration, what: &str, cond: impl Fn(&Seen) -> bool) -> Seen {
        let start = Instant::now();
        loop {
            let ticks = lock(&self.seen).ticks;
            // A tick that started after this point reflects everything that happened before.
            while lock(&self.seen).ticks < ticks + 2 {
                assert!(
                    start.elapsed() < within,
                    "timed out after {within:?} waiting for: {what}; seen {:?}",
                    self.seen()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            let seen = self.seen();
            if cond(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < within,
                "timed out after {within:?} waiting for: {what}; seen {seen:?}"
            );
        }
    }

    /// Graceful shutdown; returns the final counters.
    pub fn stop(self) -> Stats {
        self.server.stop()
    }
}

// ---- raw client ---------------------------------------------------------------------------

/// A raw WebSocket (or plain TCP) client with a timeout on every read and write.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Only a TCP connection.
    pub fn tcp(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A WebSocket over a connection with small socket buffers (see
    /// [`connect_with_small_buffers`]).
    pub fn ws_small_buffers(addr: SocketAddr, receive: i32, send: i32) -> Client {
        let mut client = Client::from_stream(connect_with_small_buffers(addr, receive, send));
        client.send(upgrade_request("/", "").as_bytes());
        let head = client.read_head().expect("response head");
        assert!(head.starts_with("HTTP/1.1 101 "), "no upgrade: {head}");
        client
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A TCP connection upgraded to a WebSocket (asserts the 101).
    pub fn ws(addr: SocketAddr) -> Client {
        Client::ws_path(addr, "/")
    }

    pub fn ws_path(addr: SocketAddr, path: &str) -> Client {
        let mut client = Client::tcp(addr);
        client.send(upgrade_request(path, "").as_bytes());
        let head = client.read_head().expect("response head");
        assert!(head.starts_with("HTTP/1.1 101 "), "no upgrade: {head}");
        assert!(head.contains(ACCEPT), "wrong accept key: {head}");
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&masked_frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 0x1, text.as_bytes());
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads an HTTP response head (up to the blank line).
    pub fn read_head(&mut self) -> io::Result<String> {
        loop {
            if let Some(head) = take_head(&mut self.buf) {
                return Ok(String::from_utf8_lossy(&head).into_owned());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF in head: {:?}", String::from_utf8_lossy(&self.buf)),
                ));
            }
        }
    }

    /// The status code of the next HTTP response.
    pub fn read_status(&mut self) -> u16 {
        let head = self.read_head().expect("response head");
        head.get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head}"))
    }

    /// Reads one server frame (server frames are never masked).
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Ok(frame);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in frame"));
            }
        }
    }

    /// Reads frames until a close frame; returns its code. Pings and pongs are skipped.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let frame = self.read_frame().expect("a close frame");
            match frame.opcode {
                0x8 => return frame.expect_close_code(),
                0x9 | 0xA => continue,
                _ => panic!("expected a close, got {frame:?}"),
            }
        }
    }

    /// True when the server closed the TCP connection (EOF or reset) within `within`,
    /// discarding whatever else arrives meanwhile.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let start = Instant::now();
        let mut chunk = [0u8; 64 * 1024];
        self.stream
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .expect("timeout");
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(e) => panic!("read failed: {e}"),
            }
            if start.elapsed() >= within {
                return false;
            }
        }
    }

    /// Asserts nothing arrives (and the socket stays open) for `quiet`.
    pub fn assert_silent(&mut self, quiet: Duration) {
        self.stream.set_read_timeout(Some(quiet)).expect("timeout");
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}"),
        }
        self.stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("timeout");
    }

    /// A clean close from our side: close 1000, the echo, then the server's EOF.
    pub fn close(mut self) {
        self.send_frame(true, 0x8, &1000u16.to_be_bytes());
        assert_eq!(self.expect_close(), 1000);
        assert!(
            self.closed_within(IO_TIMEOUT),
            "server kept the socket open"
        );
    }

    /// Half-closes our side (FIN) while still reading.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Closes the socket with a TCP reset instead of a FIN.
    pub fn reset(self) {
        set_linger_zero(&self.stream);
        drop(self.stream);
    }
}

/// SO_LINGER with a zero timeout: `close` then sends RST and discards unsent data.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized, initialised option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

/// A TCP connection whose SO_RCVBUF is set to `receive` bytes and SO_SNDBUF to `send` before
/// it connects, so that a peer that stops reading fills the pipe quickly (and one that writes
/// does so fast); see [`crate::common::connect_with_buffers`].
pub fn connect_with_small_buffers(addr: SocketAddr, receive: i32, send: i32) -> TcpStream {
    crate::common::connect_with_buffers(addr, Some(receive), Some(send))
}

/// After an abuse: a brand-new client (tungstenite) still gets a prompt, correct echo.
pub fn assert_serves_fresh_client(addr: SocketAddr) {
    let start = Instant::now();
    let stream = TcpStream::connect(addr).expect("fresh client connects");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let (mut ws, _) =
        tungstenite::client(format!("ws://{addr}/"), stream).expect("fresh client handshake");
    ws.send(tungstenite::Message::text("still there?"))
        .expect("fresh client send");
    let reply = ws.read().expect("fresh client echo");
    assert_eq!(reply, tungstenite::Message::text("still there?"));
    ws.send(tungstenite::Message::binary(vec![7u8; 1000]))
        .expect("fresh client send");
    let reply = ws.read().expect("fresh client echo");
    assert!(
        reply == tungstenite::Message::binary(vec![7u8; 1000]),
        "wrong echo of {} bytes",
        reply.len()
    );
    let _ = ws.close(None);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "fresh client took {:?}",
        start.elapsed()
    );
}
