//! Shared test harness: a server on an ephemeral 127.0.0.1 port in a thread, and a raw client
//! that writes exactly the bytes a test wants (the wire pieces, in `wire.rs`, are shared with
//! the hardening harness and the property tests) and reads frames and HTTP responses back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wsreactor::{Config, Conn, Handler, Message, Server, ShutdownHandle, Stats};

mod wire;
pub use wire::*;

/// Sends every message back.
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send(message);
    }
}

/// A running server, shut down gracefully (and joined) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<Stats>>,
}

/// The environment variable that runs the suite on the io_uring backend: `.ci/run` runs the
/// tests once without it and once with `WSREACTOR_IO_URING=1`.
pub const IO_URING_ENV: &str = "WSREACTOR_IO_URING";

/// Whether this run of the suite is on the io_uring backend ([`IO_URING_ENV`]).
pub fn io_uring_run() -> bool {
    std::env::var_os(IO_URING_ENV).is_some_and(|v| v == "1")
}

/// `config` on the backend this run of the suite tests.
pub fn on_backend(config: Config) -> Config {
    Config {
        io_uring: config.io_uring || io_uring_run(),
        ..config
    }
}

impl TestServer {
    pub fn start<H: Handler + Send + 'static>(config: Config, handler: H) -> TestServer {
        let config = on_backend(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        });
        let mut server = Server::bind(config, handler).expect("bind");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || {
            server.run().expect("reactor");
            server.stats()
        });
        TestServer {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn echo() -> TestServer {
        TestServer::start(Config::default(), Echo)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Stops the server gracefully and waits for the reactor thread (panics if it
    /// panicked); returns the final counters.
    pub fn stop(mut self) -> Stats {
        self.shutdown.shutdown();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("reactor thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server process (the binary, an example), stopped by its PID on drop.
pub struct Process {
    pub child: Child,
    /// The address it printed after "listening on".
    pub addr: String,
    /// Every line it wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` and waits for it to print "listening on ADDR" on stderr.
    pub fn start(command: &mut Command) -> Process {
        let is_server = std::path::Path::new(command.get_program())
            .file_name()
            .is_some_and(|name| name == "wsreactor");
        let has_it = command.get_args().any(|a| a == "--io-uring");
        if is_server && io_uring_run() && !has_it {
            command.arg("--io-uring");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the process printed 'listening on'");
        Process { child, addr, log }
    }
}

impl Process {
    /// Waits up to `within` for a line of the log that contains `needle`, and returns it.
    pub fn log_line(&self, needle: &str, within: Duration) -> Option<String> {
        let start = std::time::Instant::now();
        loop {
            let found = self
                .log
                .lock()
                .ok()
                .and_then(|lines| lines.iter().find(|l| l.contains(needle)).cloned());
            if found.is_some() || start.elapsed() > within {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the server said is the first thing to read about a failed test.
            if let Ok(lines) = self.log.lock() {
                let tail = &lines[lines.len().saturating_sub(20)..];
                eprintln!(
                    "server log (last {} lines):\n{}",
                    tail.len(),
                    tail.join("\n")
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client speaking raw bytes.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes an upgrade; panics unless the answer is a correct 101.
    pub fn open(addr: SocketAddr) -> RawClient {
        let mut client = RawClient::connect(addr);
        client.send(upgrade_request("/", "").as_bytes());
        let (status, head) = client.read_response_head();
        assert_eq!(status, 101, "{head}");
        assert!(
            head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")),
            "{head}"
        );
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&masked_frame(fin, opcode, payload));
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Reads an HTTP response head (and, given Content-Length, its body); returns the status and
    /// the whole text.
    pub fn read_response_head(&mut self) -> (u16, String) {
        loop {
            if let Some(head) = take_head(&mut self.buf) {
                let head = String::from_utf8(head).expect("ascii head");
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                return (status, head);
            }
            assert!(self.fill(), "connection closed before a response head");
        }
    }

    /// Reads a response with its body.
    pub fn read_response(&mut self) -> (u16, String, Vec<u8>) {
        let (status, head) = self.read_response_head();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while self.buf.len() < length {
            assert!(self.fill(), "connection closed inside a body");
        }
        let body = self.buf.drain(..length).collect();
        (status, head, body)
    }

    /// The next server frame, or `None` if the server closed the connection.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Some(frame);
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "closed inside a frame");
                return None;
            }
        }
    }

    /// Reads frames until a close arrives and then expects the server to close the TCP
    /// connection; returns the close frame.
    pub fn expect_close(&mut self) -> Frame {
        loop {
            match self.read_frame() {
                Some(frame) if frame.opcode == 8 => {
                    // Answer as a well-behaved client would (the server may already be gone).
                    let echo = frame.payload.get(..2).unwrap_or(&[]).to_vec();
                    let _ = self.stream.write_all(&masked_frame(true, 8, &echo));
                    assert_eq!(
                        self.read_frame(),
                        None,
                        "server must close the TCP connection"
                    );
                    return frame;
                }
                Some(_) => continue,
                None => panic!("connection closed without a close frame"),
            }
        }
    }
}

/// A TCP connection whose SO_RCVBUF and SO_SNDBUF are set (where given) before it connects:
/// the kernel doubles the values and turns autotuning off for them. Shrinking the buffers
/// after the handshake instead would make the kernel drop data it already allowed in the
/// window, and stall on retransmission timers.
pub fn connect_with_buffers(
    addr: SocketAddr,
    receive: Option<i32>,
    send: Option<i32>,
) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own, with correctly sized arguments; the
    // descriptor is handed to `TcpStream`, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = TcpStream::from_raw_fd(fd);
        for (option, bytes) in [(libc::SO_RCVBUF, receive), (libc::SO_SNDBUF, send)] {
            let Some(bytes) = bytes else { continue };
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt(buffer size)");
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}
