//! Frame headers: decode and encode for each length form (7-bit, 16-bit and 64-bit lengths,
//! masked as clients send them), and a stream of many small frames decoded from one buffer.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::frame::{decode_header, encode_header, OpCode, MAX_HEADER_LEN};
use wsreactor::mask::apply_mask;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The three length forms: 7-bit, 16-bit, 64-bit.
const FORMS: [(&str, u64); 3] = [("len7", 125), ("len16", 1000), ("len64", 100_000)];

fn header_bytes(mask: Option<[u8; 4]>, payload_len: u64) -> Vec<u8> {
    let mut out = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut out, true, OpCode::Binary, mask, payload_len);
    out[..n].to_vec()
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/decode");
    group.throughput(Throughput::Elements(1));
    for (form, len) in FORMS {
        let bytes = header_bytes(Some(KEY), len);
        assert_eq!(decode_header(&bytes).unwrap().unwrap().payload_len, len);
        group.bench_function(BenchmarkId::new("masked", form), |b| {
            b.iter(|| decode_header(black_box(&bytes)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("frame/encode");
    group.throughput(Throughput::Elements(1));
    for (form, len) in FORMS {
        let mut out = [0u8; MAX_HEADER_LEN];
        group.bench_function(BenchmarkId::new("unmasked", form), |b| {
            b.iter(|| {
                encode_header(
                    black_box(&mut out),
                    true,
                    black_box(OpCode::Binary),
                    black_box(None),
                    black_box(len),
                )
            })
        });
    }
    group.finish();
}

/// Decodes every header of a buffer of `count` frames, skipping (or unmasking) payloads.
fn walk(buf: &mut [u8], unmask: bool) -> usize {
    let mut at = 0;
    let mut frames = 0;
    while let Ok(Some(header)) = decode_header(&buf[at..]) {
        let start = at + header.header_len;
        let end = start + header.payload_len as usize;
        if unmask {
            if let Some(key) = header.mask {
                apply_mask(&mut buf[start..end], key, 0);
            }
        }
        at = end;
        frames += 1;
    }
    frames
}

fn stream(c: &mut Criterion) {
    const COUNT: usize = 1000;
    let mut group = c.benchmark_group("frame/stream");
    // Masked client text frames of 0 to 40 payload bytes, as a chatty client sends them.
    let mut buf = Vec::new();
    for i in 0..COUNT {
        let len = (i * 7) % 41;
        buf.extend_from_slice(&header_bytes(Some(KEY), len as u64));
        buf.extend((0..len).map(|j| b'a' + (j % 26) as u8));
    }
    assert_eq!(walk(&mut buf.clone(), true), COUNT);
    group.throughput(Throughput::Elements(COUNT as u64));
    group.bench_function(BenchmarkId::new("headers", COUNT), |b| {
        b.iter(|| walk(black_box(&mut buf), false))
    });
    group.bench_function(BenchmarkId::new("headers_unmask", COUNT), |b| {
        b.iter(|| walk(black_box(&mut buf), true))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(300), Duration::from_millis(1000));
    targets = headers, stream
}
criterion_main!(benches);
