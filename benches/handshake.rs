//! The opening handshake: parse a typical browser upgrade request, check it (which computes the
//! SHA-1/base64 accept key) and write the `101 Switching Protocols` response.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsreactor::handshake::{accept_key, evaluate, parse_head, write_switching_protocols, Verdict};
use wsreactor::Config;

/// What a desktop Chrome sends to open a WebSocket.
const BROWSER: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: ws.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://www.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=3f9a1c0e8b7d4e2f; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

const MAX_HEAD: usize = 8 * 1024;

/// Parse, check and answer: the handshake's whole pure path. Returns the response length.
fn upgrade(config: &Config, out: &mut Vec<u8>) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (_, request) = parse_head(black_box(BROWSER), &mut headers, MAX_HEAD)
        .expect("valid head")
        .expect("complete head");
    match evaluate(&request, config) {
        Verdict::Upgrade {
            accept,
            subprotocol,
            ..
        } => write_switching_protocols(out, &accept, subprotocol),
        other => panic!("not an upgrade: {other:?}"),
    }
    out.len()
}

fn handshake(c: &mut Criterion) {
    let config = Config::default();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let parsed = parse_head(black_box(BROWSER), &mut headers, MAX_HEAD);
            matches!(parsed, Ok(Some((len, _))) if len == BROWSER.len())
        })
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    let mut out = Vec::with_capacity(512);
    group.bench_function("write_101", |b| {
        let accept = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        b.iter(|| {
            out.clear();
            write_switching_protocols(black_box(&mut out), black_box(&accept), None);
            out.len()
        })
    });
    group.bench_function("parse_evaluate_write_101", |b| {
        b.iter(|| {
            out.clear();
            upgrade(&config, &mut out)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(300), Duration::from_millis(1000));
    targets = handshake
}
criterion_main!(benches);
