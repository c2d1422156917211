//! permessage-deflate (RFC 7692) over real sockets: negotiation answers, compressed echoes,
//! and every bad input's answer (bombs 1009, bad deflate data 1007, misplaced RSV1 1002,
//! malformed offers declined with the upgrade still answered).
//!
//! The client is raw TCP with `flate2` (the server's own deflate crate) for its side of the
//! compression, so each test controls every bit of every frame.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress};
use wsreactor::{Compression, Config};

mod common;

use common::{Echo, TestServer};

fn start(compression: Compression, max_message_size: usize) -> TestServer {
    let config = Config {
        compression,
        max_message_size,
        max_frame_size: max_message_size,
        ..Config::default()
    };
    TestServer::start(config, Echo)
}

/// Upgrades with `extensions` (if any) and returns the socket and the response head.
fn connect(addr: SocketAddr, extensions: Option<&str>) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ext = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

/// Sends one masked frame with first byte `b0` (FIN, RSV, opcode).
fn send_frame(stream: &mut TcpStream, b0: u8, payload: &[u8]) {
    let frame = common::masked_frame_from_first_byte(b0, [0x12, 0x34, 0x56, 0x78], payload);
    stream.write_all(&frame).unwrap();
}

/// Reads one frame: its first byte and payload.
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

/// The close code of the next frame, which must be a close.
fn close_code(stream: &mut TcpStream) -> u16 {
    let (b0, payload) = read_frame(stream);
    assert_eq!(b0 & 0x0f, 8, "expected a close frame, got {b0:#x}");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Raw deflate with a sync flush, the tail stripped.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Level::best(), false, 15);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let used = c.total_in() as usize;
        c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

#[test]
fn negotiated_messages_round_trip_compressed_and_small_ones_plain() {
    let server = start(Compression::NoContextTakeover, 1 << 20);
    let (mut s, head) = connect(server.addr, Some(OFFER));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains(ANSWER), "{head}");

    let text = r#"{"id":1,"name":"wsreactor","tags":["fast","trustworthy"]}"#.repeat(40);
    send_frame(&mut s, 0xc1, &deflate(text.as_bytes())); // FIN | RSV1 | text
    let (b0, payload) = read_frame(&mut s);
    assert_eq!(b0, 0xc1, "a long echo goes back compressed");
    assert!(payload.len() < text.len() / 4);
    assert_eq!(inflate(&payload), text.as_bytes());

    // Compressed in, below the threshold: echoed uncompressed.
    send_frame(&mut s, 0xc1, &deflate(b"hi"));
    assert_eq!(read_frame(&mut s), (0x81, b"hi".to_vec()));
    // Uncompressed in is fine too.
    send_frame(&mut s, 0x82, b"plain");
    assert_eq!(read_frame(&mut s), (0x82, b"plain".to_vec()));

    // Fragmented: RSV1 on the first frame only, compressed bytes split anywhere.
    let compressed = deflate(text.as_bytes());
    let (a, rest) = compressed.split_at(7);
    let (b, c) = rest.split_at(rest.len() / 2);
    send_frame(&mut s, 0x41, a);
    send_frame(&mut s, 0x00, b);
    send_frame(&mut s, 0x89, b"ping between"); // a control frame in between
    send_frame(&mut s, 0x80, c);
    assert_eq!(read_frame(&mut s), (0x8a, b"ping between".to_vec()));
    let (b0, payload) = read_frame(&mut s);
    assert_eq!(b0, 0xc1);
    assert_eq!(inflate(&payload), text.as_bytes());
}

#[test]
fn malformed_or_unknown_offers_are_declined_and_the_upgrade_answered() {
    let server = start(Compression::NoContextTakeover, 1 << 20);
    for offer in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; bogus=1",
        "permessage-deflate; client_max_window_bits=99",
        ";;,,\"",
        "x-webkit-deflate-frame",
    ] {
        let (mut s, head) = connect(server.addr, Some(offer));
        assert!(head.starts_with("HTTP/1.1 101"), "{offer}: {head}");
        assert!(
            !head.contains("Sec-WebSocket-Extensions"),
            "{offer}: {head}"
        );
        // And RSV1 is then a protocol error.
        send_frame(&mut s, 0xc1, &deflate(b"hello"));
        assert_eq!(close_code(&mut s), 1002, "{offer}");
    }
    // A bad offer followed by a good one: the good one is taken.
    let (_s, head) = connect(
        server.addr,
        Some("permessage-deflate; x, permessage-deflate"),
    );
    assert!(head.contains(ANSWER), "{head}");
}

#[test]
fn compression_off_ignores_offers_and_rsv1_is_1002() {
    let server = start(Compression::Off, 1 << 20);
    let (mut s, head) = connect(server.addr, Some(OFFER));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    send_frame(&mut s, 0xc1, &deflate(b"hello"));
    assert_eq!(close_code(&mut s), 1002);
}

#[test]
fn rsv1_on_a_continuation_or_a_control_frame_is_1002() {
    let server = start(Compression::NoContextTakeover, 1 << 20);
    let (mut s, _) = connect(server.addr, Some(OFFER));
    send_frame(&mut s, 0x01, b"plain ");
    send_frame(&mut s, 0xc0, &deflate(b"compressed"));
    assert_eq!(close_code(&mut s), 1002);

    let (mut s, _) = connect(server.addr, Some(OFFER));
    send_frame(&mut s, 0xc9, b"");
    assert_eq!(close_code(&mut s), 1002);
}

#[test]
fn a_bomb_is_1009_before_it_is_inflated() {
    let server = start(Compression::NoContextTakeover, 1 << 20);
    let (mut s, _) = connect(server.addr, Some(OFFER));
    let bomb = deflate(&vec![b'a'; 16 << 20]); // 16 MiB in about 16 KiB
    assert!(bomb.len() < 64 << 10);
    send_frame(&mut s, 0xc1, &bomb);
    assert_eq!(close_code(&mut s), 1009);

    // The same in fragments.
    let (mut s, _) = connect(server.addr, Some(OFFER));
    let (a, b) = bomb.split_at(bomb.len() / 2);
    send_frame(&mut s, 0x42, a);
    send_frame(&mut s, 0x80, b);
    assert_eq!(close_code(&mut s), 1009);
}

#[test]
fn invalid_deflate_data_or_inflated_text_is_1007() {
    let server = start(Compression::NoContextTakeover, 1 << 20);
    let (mut s, _) = connect(server.addr, Some(OFFER));
    send_frame(&mut s, 0xc1, &[0xff, 0xff, 0xff, 0xff, 0x00]);
    assert_eq!(close_code(&mut s), 1007);

    let (mut s, _) = connect(server.addr, Some(OFFER));
    send_frame(&mut s, 0xc1, &deflate(b"valid until \xff here"));
    assert_eq!(close_code(&mut s), 1007);

    // Invalid text fails fast: in the first fragment, before the message ends.
    let (mut s, _) = connect(server.addr, Some(OFFER));
    let bad = deflate(b"\xc0\xaf and much more text to come");
    send_frame(&mut s, 0x41, &bad);
    assert_eq!(close_code(&mut s), 1007);
}

/// Raw deflate of `data` as the next message of `c`'s stream: sync flush, tail stripped.
fn deflate_next(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = c.total_in();
    loop {
        let used = (c.total_in() - start) as usize;
        c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out.truncate(out.len() - 4);
    out
}

/// Inflates the next message of `d`'s stream.
fn inflate_next(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

const TAKEOVER: Compression = Compression::ContextTakeover { window_bits: 15 };

#[test]
fn context_takeover_carries_both_streams_over_between_messages() {
    let server = start(TAKEOVER, 1 << 20);
    let (mut s, head) = connect(server.addr, Some(OFFER));
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n"
        ),
        "{head}"
    );
    let mut c = Compress::new_with_window_bits(Level::new(6), false, 15);
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut sizes = Vec::new();
    for i in 0..40 {
        let text = format!(
            "{{\"seq\":{},\"rows\":[{}]}}",
            i % 2,
            "{\"id\":1234,\"name\":\"a fairly long name\",\"price\":12.50},".repeat(20)
        );
        send_frame(&mut s, 0xc1, &deflate_next(&mut c, text.as_bytes()));
        let (b0, payload) = read_frame(&mut s);
        assert_eq!(b0, 0xc1, "compressed echo {i}");
        sizes.push(payload.len());
        assert_eq!(inflate_next(&mut d, &payload), text.as_bytes(), "echo {i}");
    }
    // Refers back into earlier messages: a repeat costs a few bytes.
    assert!(sizes[3] * 4 < sizes[0], "{sizes:?}");
}

/// The resident set of this process, in KiB.
fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_bomb_in_a_stream_taking_context_over_is_1009_and_memory_stays_bounded() {
    let server = start(TAKEOVER, 1 << 20);
    // The same stream on every connection: a valid message, then one that inflates to
    // 16 MiB, past the 1 MiB limit, referring back into the first.
    let first = b"{\"hello\":\"world\",\"padding\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}".repeat(8);
    let mut c = Compress::new_with_window_bits(Level::best(), false, 15);
    let valid = deflate_next(&mut c, &first);
    let bomb = deflate_next(&mut c, &vec![b'a'; 16 << 20]);
    assert!(bomb.len() < 64 << 10);
    let before = rss_kib();
    for _ in 0..8 {
        let (mut s, head) = connect(server.addr, Some(OFFER));
        assert!(head.contains("client_max_window_bits=15"), "{head}");
        send_frame(&mut s, 0xc1, &valid);
        assert_eq!(read_frame(&mut s).0, 0xc1);
        send_frame(&mut s, 0xc1, &bomb);
        assert_eq!(close_code(&mut s), 1009);
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // Inflated whole, 8 bombs would be 128 MiB; the limit stops each at 1 MiB. (Other tests
    // in this process allocate too, hence the slack.)
    assert!(grown_mib < 48, "RSS grew {grown_mib} MiB");
}
