//! Shared test harness: a server on an ephemeral 127.0.0.1 port in a thread, and a raw client
//! that writes exactly the bytes a test wants (masked frames built here, independently of the
//! server's own encoder) and reads frames and HTTP responses back.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use wsreactor::{Config, Conn, Handler, Message, Server, ShutdownHandle};

/// Sends every message back.
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = match message {
            Message::Text(text) => conn.send_text(text),
            Message::Binary(data) => conn.send_binary(data),
        };
    }
}

/// A running server, shut down gracefully (and joined) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start<H: Handler + Send + 'static>(config: Config, handler: H) -> TestServer {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let mut server = Server::bind(config, handler).expect("bind");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("reactor"));
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

    /// Stops the server and waits for the reactor thread (panics if it panicked).
    pub fn stop(mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("reactor thread");
        }
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

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client frame: masked with a fixed, non-trivial key.
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0x5b, 0x3c, 0xe7];
    let mut frame = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// A close frame's payload: code then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
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
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end + 4].to_vec()).expect("ascii head");
                self.buf.drain(..end + 4);
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
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if at > 0 && self.buf.len() >= at + len {
                    let frame = Frame {
                        fin: self.buf[0] & 0x80 != 0,
                        opcode: self.buf[0] & 0x0f,
                        payload: self.buf[at..at + len].to_vec(),
                    };
                    self.buf.drain(..at + len);
                    return Some(frame);
                }
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
