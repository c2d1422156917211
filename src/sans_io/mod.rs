//! Connections driven entirely in memory: bytes in, bytes out, time advanced by hand. For
//! tests, property tests, fuzz targets and benchmarks of the whole per-message path without
//! sockets; not part of the server's API proper.
//!
//! [`Endpoint`] is one server-side connection: the reactor's very `Connection`, with its own
//! buffer pool, counters and clock. [`Client`] is an in-memory client, strict about what the
//! server sends, and [`Pair`] wires the two together.

mod client;
mod pair;

pub use client::{Client, Received, Violation, SWITCHING_PROTOCOLS, UPGRADE_REQUEST};
pub use pair::Pair;

use crate::config::Config;
use crate::connection::{Connection, Env, NoPeers, Shared};
use crate::handler::{ConnId, Handler};
use crate::metrics::Blocks;
use crate::stats::Stats;

/// A server-side connection, as if just accepted, that is fed bytes directly.
#[derive(Debug)]
pub struct Endpoint<H: Handler> {
    conn: Connection,
    shared: Shared<H>,
    peers: NoPeers,
}

impl<H: Handler> Endpoint<H> {
    /// A connection in its handshake state, at time 0.
    pub fn new(config: Config, handler: H) -> Self {
        Endpoint {
            conn: Connection::new(0, &config),
            shared: Shared::new(config, handler, &Blocks::new(1), 0),
            peers: NoPeers,
        }
    }

    /// Feeds bytes as if read from the socket. The slice is used as scratch (frames are
    /// unmasked in it), exactly as the reactor's read buffer is.
    pub fn feed(&mut self, input: &mut [u8]) {
        if !self.conn.wants_read() {
            return;
        }
        let (conn, mut env) = self.split();
        conn.handle_input(input, &mut env);
    }

    /// The peer closed its side of the TCP connection.
    pub fn feed_eof(&mut self) {
        let (conn, mut env) = self.split();
        conn.handle_eof(&mut env);
    }

    /// Moves the clock forward and fires the connection's timeout if it is due.
    pub fn advance(&mut self, ms: u64) {
        self.shared.now += ms;
        let deadline = self.conn.deadline();
        if deadline != 0 && deadline <= self.shared.now {
            let (conn, mut env) = self.split();
            conn.handle_timeout(&mut env);
        }
    }

    /// Moves everything the connection wants written into `out`, as if the socket took it all.
    pub fn drain_output(&mut self, out: &mut Vec<u8>) {
        let pending = self.conn.output();
        out.extend_from_slice(pending);
        let written = pending.len();
        let (conn, mut env) = self.split();
        if conn.wrote(written, env.config, env.pool) {
            conn.drained(&mut env);
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> usize {
        self.conn.pending_output()
    }

    /// Whether the server would read from this connection now (false under backpressure or
    /// once closed).
    pub fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    /// Whether the reactor would now drop the socket.
    pub fn is_done(&self) -> bool {
        self.conn.is_done()
    }

    /// Whether the WebSocket is open.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// The handler, to inspect what it recorded.
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// Counters for this connection.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    fn split(&mut self) -> (&mut Connection, Env<'_, H>) {
        let id = ConnId {
            key: 0,
            generation: 0,
        };
        (&mut self.conn, self.shared.env(id, None, &mut self.peers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conn, Message};

    struct Echo;
    impl Handler for Echo {
        fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
            let _ = conn.send(message);
        }
    }

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const MASKED_HELLO: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const FRAGMENTED: &[u8] = &[
        0x01, 0x83, 0, 0, 0, 0, b'H', b'e', b'l', 0x80, 0x82, 0, 0, 0, 0, b'l', b'o',
    ];

    fn expected_reply() -> Vec<u8> {
        let mut expected = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec();
        expected.extend_from_slice(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        expected.extend_from_slice(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        expected
    }

    #[test]
    fn same_bytes_out_whatever_the_read_boundaries() {
        let mut stream = UPGRADE.to_vec();
        stream.extend_from_slice(MASKED_HELLO);
        stream.extend_from_slice(FRAGMENTED);
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let mut endpoint = Endpoint::new(Config::default(), Echo);
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                endpoint.feed(&mut chunk.to_vec());
                endpoint.drain_output(&mut out);
            }
            assert_eq!(out, expected_reply(), "piece size {piece}");
            assert!(endpoint.is_open());
        }
    }

    #[test]
    fn unmasked_client_frame_is_answered_with_1002() {
        let mut endpoint = Endpoint::new(Config::default(), Echo);
        let mut out = Vec::new();
        endpoint.feed(&mut UPGRADE.to_vec());
        endpoint.drain_output(&mut out);
        out.clear();
        endpoint.feed(&mut [0x81, 0x02, b'h', b'i']);
        endpoint.drain_output(&mut out);
        assert_eq!(
            (out[0], &out[2..4]),
            (0x88, &[0x03, 0xea][..]),
            "close 1002"
        );
        assert!(!endpoint.is_open());
    }
}
