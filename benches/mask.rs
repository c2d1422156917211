//! Unmasking throughput: the production `apply_mask` against the byte-at-a-time loop,
//! `fastwebsockets::unmask` and `memcpy` of the same bytes (the bandwidth ceiling).
//!
//! Groups (filter with `cargo bench --bench mask -- GROUP`):
//! - `mask/aligned`, `mask/unaligned`: one call over `size` bytes starting at a 64-byte
//!   boundary, or one byte past it.
//! - `mask/split`: the same payload unmasked in two calls, cut at an odd point, so the second
//!   call starts unaligned and at a non-zero key phase.
//!
//! Masking is its own inverse, so each iteration XORs the same buffer again: no reset needed.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsreactor::mask::{apply_mask, apply_mask_bytewise};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// 1-16 B (the small-message target), then 64 B to 1 MiB.
const SIZES: &[usize] = &[
    1,
    4,
    7,
    16,
    64,
    512,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
];

/// A buffer of at least `len + offset` bytes whose slice `[start..start + len]` begins `offset`
/// bytes after a 64-byte boundary.
struct Placed {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Placed {
    fn new(len: usize, offset: usize) -> Self {
        let storage: Vec<u8> = (0..len + offset + 64).map(|i| (i * 31 + 7) as u8).collect();
        let start = storage.as_ptr().align_offset(64) + offset;
        Placed {
            storage,
            start,
            len,
        }
    }

    fn slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn placement(c: &mut Criterion, label: &str, offset: usize) {
    let mut group = c.benchmark_group(format!("mask/{label}"));
    for &size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = Placed::new(size, offset);
        group.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            let data = buf.slice();
            b.iter(|| apply_mask(black_box(&mut *data), black_box(KEY), black_box(0)))
        });
        group.bench_function(BenchmarkId::new("bytewise", size), |b| {
            let data = buf.slice();
            b.iter(|| apply_mask_bytewise(black_box(&mut *data), black_box(KEY), black_box(0)))
        });
        group.bench_function(BenchmarkId::new("fastwebsockets", size), |b| {
            let data = buf.slice();
            b.iter(|| fastwebsockets::unmask(black_box(&mut *data), black_box(KEY)))
        });
        let mut source = Placed::new(size, offset);
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            let data = buf.slice();
            let source = source.slice();
            b.iter(|| black_box(&mut *data).copy_from_slice(black_box(&*source)))
        });
    }
    group.finish();
}

fn aligned(c: &mut Criterion) {
    placement(c, "aligned", 0);
}

fn unaligned(c: &mut Criterion) {
    placement(c, "unaligned", 1);
}

fn split(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask/split");
    for &size in &[64usize, 4 << 10, 64 << 10] {
        group.throughput(Throughput::Bytes(size as u64));
        // An odd cut: the second piece starts at phase 1 (after phase 0 + 33 bytes, say) and one
        // byte past a word boundary.
        let cut = size / 2 + 1;
        let mut buf = Placed::new(size, 0);
        group.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            let data = buf.slice();
            b.iter(|| {
                let (first, second) = black_box(&mut *data).split_at_mut(cut);
                let phase = apply_mask(first, black_box(KEY), 0);
                apply_mask(second, black_box(KEY), phase)
            })
        });
        group.bench_function(BenchmarkId::new("bytewise", size), |b| {
            let data = buf.slice();
            b.iter(|| {
                let (first, second) = black_box(&mut *data).split_at_mut(cut);
                let phase = apply_mask_bytewise(first, black_box(KEY), 0);
                apply_mask_bytewise(second, black_box(KEY), phase)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(300), Duration::from_millis(800));
    targets = aligned, unaligned, split
}
criterion_main!(benches);
