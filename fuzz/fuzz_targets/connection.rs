//! The whole connection state machine (`sans_io::Endpoint`, the reactor's own `Connection`)
//! fed arbitrary bytes split at arbitrary points, with an echo handler that also closes and
//! pings on some messages. (It never panics on purpose: libfuzzer's panic hook aborts even on
//! a panic the server catches; `tests/limits.rs` covers handler panics.) Half the inputs start with a valid upgrade, so frames are reached.
//! Checks: no panic, server frames are well formed, nothing follows a close frame, and EOF
//! plus the timeouts always finish the connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsreactor::sans_io::Endpoint;
use wsreactor::{Config, Conn, Handler, Message};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        match message.as_bytes().first() {
            Some(b'C') => conn.close(4000, "bye"),
            Some(b'P') => {
                let _ = conn.ping(message.as_bytes());
            }
            _ => {
                let _ = conn.send(message);
            }
        }
    }
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Checks a stream of server frames (after the 101): well formed, nothing after a close.
fn check_frames(mut out: &[u8]) {
    let mut closed = false;
    while out.len() >= 2 {
        assert!(!closed, "bytes after a close frame");
        assert_eq!(out[1] & 0x80, 0, "masked server frame");
        let opcode = out[0] & 0x0f;
        assert!(
            matches!(opcode, 0x1 | 0x2 | 0x8 | 0x9 | 0xA),
            "opcode {opcode}"
        );
        let (len, at) = match out[1] & 0x7f {
            126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&out[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        assert!(out.len() >= at + len, "truncated server frame");
        if opcode == 0x8 {
            closed = true;
            if len >= 2 {
                let code = u16::from_be_bytes([out[at], out[at + 1]]);
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                    "code {code}"
                );
            }
        }
        out = &out[at + len..];
    }
    assert!(out.is_empty(), "truncated frame header");
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    // Small limits so that the 1009 paths are reached with small inputs.
    let config = Config {
        max_frame_size: 512,
        max_message_size: 2048,
        backlog_high_water: 1024,
        backlog_low_water: 256,
        max_backlog: 4096,
        max_request_head: 1024,
        ..Config::default()
    };
    let mut endpoint = Endpoint::new(config, Echo);
    let mut input = Vec::with_capacity(UPGRADE.len() + rest.len());
    let upgraded = knobs & 1 == 0;
    if upgraded {
        input.extend_from_slice(UPGRADE);
    }
    input.extend_from_slice(rest);
    // Split points from the knob byte: pieces of 1 to 32 bytes, or all at once.
    let piece = if knobs & 0x80 != 0 {
        input.len().max(1)
    } else {
        1 + (knobs as usize >> 1) % 32
    };
    let mut out = Vec::new();
    for (i, chunk) in input.chunks(piece).enumerate() {
        endpoint.feed(&mut chunk.to_vec());
        // Sometimes the peer is slow to read: output waits (backpressure paths).
        if i % 3 != 2 {
            endpoint.drain_output(&mut out);
        }
        if i % 7 == 6 {
            // Slow enough that a trickled upgrade beats the 10 s handshake timeout.
            endpoint.advance(100);
        }
    }
    endpoint.drain_output(&mut out);
    if upgraded {
        let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!("no 101: {:?}", String::from_utf8_lossy(&out));
        };
        let end = end + 4;
        assert!(out.starts_with(b"HTTP/1.1 101"));
        check_frames(&out[end..]);
    } else if !out.is_empty() {
        assert!(out.starts_with(b"HTTP/1.1 "), "not an HTTP response");
    }
    endpoint.feed_eof();
    for _ in 0..4 {
        endpoint.advance(120_000);
        endpoint.drain_output(&mut out);
    }
    assert!(endpoint.is_done(), "connection never finishes");
});
