//! The whole per-message path in memory, without sockets: masked client bytes in → header
//! decode → unmask → UTF-8 validation → echo handler → header encode → bytes out, through the
//! real connection state machine (`sans_io::Endpoint`).
//!
//! The handshake is done once in setup. `feed` unmasks in place, so each iteration first copies
//! the pre-built masked frame into a scratch buffer (as the reactor's read buffer would hold it)
//! and the time of that copy is *included*; `echo_path/copy_only` measures the copy alone so it
//! can be subtracted. Output is drained into a reused `Vec` that is cleared each iteration.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::frame::{encode_header, OpCode, MAX_HEADER_LEN};
use wsreactor::mask::apply_mask;
use wsreactor::sans_io::Endpoint;
use wsreactor::{Config, Conn, Handler, Message};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send(message);
    }
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Text payload of `len` bytes: mostly ASCII with some 2- and 3-byte characters.
fn text(len: usize) -> Vec<u8> {
    let sample = "Hello, wörld! Grüße · 日本 · lorem ipsum dolor sit amet ";
    let mut out = String::with_capacity(len + 4);
    for ch in sample.chars().cycle() {
        if out.len() + ch.len_utf8() > len {
            break;
        }
        out.push(ch);
    }
    while out.len() < len {
        out.push('.');
    }
    out.into_bytes()
}

fn frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, mask, payload.len() as u64);
    let mut out = header[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn open_endpoint() -> Endpoint<Echo> {
    let mut endpoint = Endpoint::new(Config::default(), Echo);
    let mut out = Vec::new();
    endpoint.feed(&mut UPGRADE.to_vec());
    endpoint.drain_output(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 101 "), "handshake failed");
    assert!(endpoint.is_open());
    endpoint
}

fn echo_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_path");
    for size in [20usize, 1 << 10, 64 << 10] {
        let payload = text(size);
        let input = frame(OpCode::Text, &payload, Some(KEY));
        let expected = frame(OpCode::Text, &payload, None);
        group.throughput(Throughput::Bytes(size as u64));

        let mut endpoint = open_endpoint();
        let mut scratch = input.clone();
        let mut out = Vec::with_capacity(expected.len());
        endpoint.feed(&mut scratch);
        endpoint.drain_output(&mut out);
        assert_eq!(out, expected, "echo of {size} bytes");

        group.bench_function(BenchmarkId::new("text", size), |b| {
            b.iter(|| {
                scratch.copy_from_slice(&input);
                endpoint.feed(black_box(&mut scratch));
                endpoint.drain_output(&mut out);
                let n = out.len();
                out.clear();
                n
            })
        });
        assert!(endpoint.is_open());
        assert_eq!(endpoint.pending_output(), 0);

        group.bench_function(BenchmarkId::new("copy_only", size), |b| {
            b.iter(|| {
                scratch.copy_from_slice(black_box(&input));
                black_box(&mut scratch);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(500), Duration::from_millis(1000));
    targets = echo_path
}
criterion_main!(benches);
