//! UTF-8 validation throughput: the incremental `Utf8Validator`, fed 4 KiB or 1 byte at a time,
//! and the server's one-shot `utf8::validate`, against one-shot `simdutf8` (what the validator
//! falls back to without AVX-512) and `std::str::from_utf8`.
//!
//! Inputs, 64 KiB each: `ascii`; `mixed` (2-, 3- and 4-byte code points with some ASCII, so that
//! 4 KiB cuts fall inside code points); `invalid` (`mixed` with one bad byte in its last 4 KiB,
//! so every validator must read almost all of it before it can refuse).

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::mask;
use wsreactor::utf8::{self, Utf8Validator};

const LEN: usize = 64 << 10;

fn ascii() -> Vec<u8> {
    let line = b"The quick brown fox jumps over the lazy dog; {\"id\":12345,\"ok\":true}\n";
    line.iter().copied().cycle().take(LEN).collect()
}

fn mixed() -> Vec<u8> {
    let text = "κόσμε · 日本語のテキスト · 𝄞𝄢 music · Grüße, Jürgen · 😀🎉 · привет мир · ";
    let mut out = String::with_capacity(LEN + 64);
    while out.len() < LEN {
        for ch in text.chars() {
            if out.len() + ch.len_utf8() > LEN {
                break;
            }
            out.push(ch);
        }
        if out.len() + 4 > LEN {
            // Pad with ASCII to exactly LEN.
            while out.len() < LEN {
                out.push('.');
            }
        }
    }
    assert_eq!(out.len(), LEN);
    out.into_bytes()
}

fn invalid() -> Vec<u8> {
    let mut bytes = mixed();
    // A lone continuation byte where a lead or ASCII byte must be.
    let at = LEN - 1000;
    let at = (at..LEN).find(|&i| bytes[i].is_ascii()).unwrap();
    bytes[at] = 0x80;
    assert!(std::str::from_utf8(&bytes).is_err());
    bytes
}

fn incremental(bytes: &[u8], piece: usize) -> bool {
    let mut validator = Utf8Validator::new();
    for chunk in bytes.chunks(piece) {
        if validator.feed(black_box(chunk)).is_err() {
            return false;
        }
    }
    validator.finish().is_ok()
}

fn validation(c: &mut Criterion) {
    for (name, input) in [
        ("ascii", ascii()),
        ("mixed", mixed()),
        ("invalid", invalid()),
    ] {
        let expected = name != "invalid";
        let mut group = c.benchmark_group(format!("utf8/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        assert_eq!(incremental(&input, 4096), expected);
        assert_eq!(incremental(&input, 1), expected);
        group.bench_function(BenchmarkId::new("incremental", "4KiB"), |b| {
            b.iter(|| incremental(black_box(&input), 4096))
        });
        group.bench_function(BenchmarkId::new("wsreactor", "oneshot"), |b| {
            b.iter(|| utf8::validate(black_box(&input)).is_ok())
        });
        // Unmasking and checking a whole payload: one fused pass against unmask, then check.
        // A zero key leaves the bytes as they are, so every iteration sees the same input
        // while doing all the work of a real key.
        let mut payload = input.clone();
        group.bench_function(BenchmarkId::new("wsreactor", "unmask_fused"), |b| {
            b.iter(|| utf8::unmask_and_validate(black_box(&mut payload), [0; 4]).is_ok())
        });
        group.bench_function(BenchmarkId::new("wsreactor", "unmask_then_check"), |b| {
            b.iter(|| {
                mask::apply_mask(black_box(&mut payload), [0; 4], 0);
                utf8::validate(&payload).is_ok()
            })
        });
        group.bench_function(BenchmarkId::new("simdutf8", "oneshot"), |b| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(&input)).is_ok())
        });
        group.bench_function(BenchmarkId::new("std", "oneshot"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&input)).is_ok())
        });
        group.bench_function(BenchmarkId::new("incremental", "1B"), |b| {
            b.iter(|| incremental(black_box(&input), 1))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(500), Duration::from_millis(1000));
    targets = validation
}
criterion_main!(benches);
