//! permessage-deflate costs on JSON-like text, small (~300 B) and large (~64 KiB):
//!
//! - `deflate/compress/*` and `deflate/inflate/*`: the crate the server uses, `flate2` on
//!   `zlib-rs` (raw deflate, level 1, sync flush, reset per message: the no-context-takeover
//!   mode), against `miniz_oxide` (the pure-Rust default of `flate2`) the same way, and
//!   `libdeflater` (libdeflate, whole messages only: it has no streaming, so it cannot inflate
//!   in parts or bound the output as it goes, and ends each message with a final block);
//! - `deflate/takeover/*`: the context takeover choice, per small message with a 32 KiB
//!   window: keep the live (de)compressor (`live`), or prime a reset one with the window by
//!   `set_dictionary` every message (`primed`), the cost of resuming a stream.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A JSON-like message of about `size` bytes; `seed` varies its values.
fn json(size: usize, seed: u32) -> Vec<u8> {
    let mut s = format!("{{\"type\":\"update\",\"seq\":{seed},\"rows\":[");
    let mut i = seed;
    while s.len() < size {
        s.push_str(&format!(
            "{{\"id\":{},\"user\":\"user{}\",\"price\":{}.{:02},\"side\":\"{}\"}},",
            i.wrapping_mul(7919) % 100_003,
            i % 211,
            i.wrapping_mul(31) % 1000,
            i % 100,
            if i.is_multiple_of(3) { "buy" } else { "sell" }
        ));
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12345) >> 8;
    }
    s.push_str("]}");
    s.into_bytes()
}

fn flate2_compress(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let start = c.total_in();
    loop {
        let used = (c.total_in() - start) as usize;
        c.compress_vec(&data[used..], out, FlushCompress::Sync)
            .expect("deflate");
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out.truncate(out.len() - TAIL.len());
}

fn flate2_inflate(d: &mut Decompress, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for piece in [data, &TAIL[..]] {
        let start = d.total_in();
        loop {
            let used = (d.total_in() - start) as usize;
            d.decompress_vec(&piece[used..], out, FlushDecompress::None)
                .expect("inflate");
            if (d.total_in() - start) as usize == piece.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

fn miniz_compress(
    c: &mut miniz_oxide::deflate::core::CompressorOxide,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    use miniz_oxide::deflate::core::{compress, TDEFLFlush};
    c.reset();
    out.clear();
    out.resize(data.len() + data.len() / 8 + 64, 0);
    let (_, used, written) = compress(c, data, out, TDEFLFlush::Sync);
    assert_eq!(used, data.len());
    out.truncate(written - TAIL.len());
}

fn miniz_inflate(
    d: &mut miniz_oxide::inflate::stream::InflateState,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    use miniz_oxide::inflate::stream::inflate;
    use miniz_oxide::{DataFormat, MZFlush};
    d.reset(DataFormat::Raw);
    let mut input = Vec::with_capacity(data.len() + 4);
    input.extend_from_slice(data);
    input.extend_from_slice(&TAIL);
    out.clear();
    out.resize(out.capacity().max(1 << 17), 0);
    let result = inflate(d, &input, out, MZFlush::Sync);
    assert_eq!(result.bytes_consumed, input.len());
    out.truncate(result.bytes_written);
}

fn crates(c: &mut Criterion) {
    for (name, size) in [("small", 300), ("large", 64 << 10)] {
        let data = json(size, 1);
        let mut out = Vec::with_capacity(2 * data.len() + 64);
        let mut group = c.benchmark_group(format!("deflate/compress/{name}"));
        group.throughput(Throughput::Bytes(data.len() as u64));
        let mut z = Compress::new_with_window_bits(Compression::new(1), false, 15);
        group.bench_function("flate2_zlib_rs", |b| {
            b.iter(|| {
                z.reset();
                flate2_compress(&mut z, black_box(&data), &mut out);
            })
        });
        let flags = miniz_oxide::deflate::core::create_comp_flags_from_zip_params(1, -15, 0);
        let mut m = miniz_oxide::deflate::core::CompressorOxide::new(flags);
        group.bench_function("miniz_oxide", |b| {
            b.iter(|| miniz_compress(&mut m, black_box(&data), &mut out))
        });
        let mut l = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
        let mut lout = vec![0; l.deflate_compress_bound(data.len())];
        group.bench_function("libdeflater", |b| {
            b.iter(|| l.deflate_compress(black_box(&data), &mut lout).unwrap())
        });
        group.finish();

        // What each compresses to, for the README (printed once).
        z.reset();
        flate2_compress(&mut z, &data, &mut out);
        let zlen = out.len();
        miniz_compress(&mut m, &data, &mut out);
        let mlen = out.len();
        let llen = l.deflate_compress(&data, &mut lout).unwrap();
        eprintln!(
            "deflate {name}: {} B -> flate2_zlib_rs {zlen} B, miniz_oxide {mlen} B, libdeflater {llen} B (level 1)",
            data.len()
        );

        z.reset();
        let mut compressed = Vec::with_capacity(data.len() + 64);
        flate2_compress(&mut z, &data, &mut compressed);
        let final_block = lout[..llen].to_vec();
        let mut group = c.benchmark_group(format!("deflate/inflate/{name}"));
        group.throughput(Throughput::Bytes(data.len() as u64));
        let mut zd = Decompress::new_with_window_bits(false, 15);
        let mut inflated = Vec::with_capacity(data.len() + 64);
        group.bench_function("flate2_zlib_rs", |b| {
            b.iter(|| {
                zd.reset(false);
                flate2_inflate(&mut zd, black_box(&compressed), &mut inflated);
            })
        });
        let mut md =
            miniz_oxide::inflate::stream::InflateState::new_boxed(miniz_oxide::DataFormat::Raw);
        group.bench_function("miniz_oxide", |b| {
            b.iter(|| miniz_inflate(&mut md, black_box(&compressed), &mut inflated))
        });
        let mut ld = libdeflater::Decompressor::new();
        let mut lin = vec![0; data.len()];
        group.bench_function("libdeflater", |b| {
            b.iter(|| {
                ld.deflate_decompress(black_box(&final_block), &mut lin)
                    .unwrap()
            })
        });
        group.finish();
        miniz_inflate(&mut md, &compressed, &mut inflated);
        assert_eq!(inflated, data, "miniz_oxide inflates what flate2 made");
    }
}

/// A stream of `n` small messages, each different but alike (the case context takeover is
/// for), and the 32 KiB window before each.
fn stream(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let messages: Vec<Vec<u8>> = (0..n as u32).map(|i| json(300, i * 17 + 3)).collect();
    let mut windows = Vec::new();
    let mut all: Vec<u8> = Vec::new();
    for m in &messages {
        windows.push(all[all.len().saturating_sub(32 << 10)..].to_vec());
        all.extend_from_slice(m);
    }
    (messages, windows)
}

fn takeover(c: &mut Criterion) {
    const N: usize = 512;
    let (messages, windows) = stream(N);
    let mut out = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("deflate/takeover/compress_small");
    group.throughput(Throughput::Elements(1));
    let mut live = Compress::new_with_window_bits(Compression::new(1), false, 15);
    let mut i = 0;
    group.bench_function("live", |b| {
        b.iter(|| {
            flate2_compress(&mut live, black_box(&messages[i % N]), &mut out);
            i += 1;
        })
    });
    let mut primed = Compress::new_with_window_bits(Compression::new(1), false, 15);
    // Messages past the first 110 have a full window (110 x 300 B > 32 KiB).
    let mut i = 200;
    group.bench_function("primed", |b| {
        b.iter(|| {
            primed.reset();
            primed.set_dictionary(&windows[i]).unwrap();
            flate2_compress(&mut primed, black_box(&messages[i]), &mut out);
            i = if i + 1 == N { 200 } else { i + 1 };
        })
    });
    let mut reset = Compress::new_with_window_bits(Compression::new(1), false, 15);
    group.bench_function("reset_no_window", |b| {
        b.iter(|| {
            reset.reset();
            flate2_compress(&mut reset, black_box(&messages[i % N]), &mut out);
        })
    });
    group.finish();

    // Sizes on the wire, once: what the window buys.
    let mut c1 = Compress::new_with_window_bits(Compression::new(1), false, 15);
    let (mut with, mut without) = (0, 0);
    for m in &messages[200..] {
        flate2_compress(&mut c1, m, &mut out);
        with += out.len();
        reset.reset();
        flate2_compress(&mut reset, m, &mut out);
        without += out.len();
    }
    let plain: usize = messages[200..].iter().map(Vec::len).sum();
    eprintln!(
        "takeover small: {plain} B -> {with} B with the window, {without} B reset per message"
    );

    // The same stream, compressed continuously, for the inflate side.
    let mut whole = Compress::new_with_window_bits(Compression::new(1), false, 15);
    let compressed: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut o = Vec::with_capacity(4096);
            flate2_compress(&mut whole, m, &mut o);
            o
        })
        .collect();
    let mut inflated = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("deflate/takeover/inflate_small");
    group.throughput(Throughput::Elements(1));
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut i = 0;
    group.bench_function("live", |b| {
        b.iter(|| {
            if i == N {
                d.reset(false); // the stream starts again
                i = 0;
            }
            flate2_inflate(&mut d, black_box(&compressed[i]), &mut inflated);
            i += 1;
        })
    });
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut i = 200;
    group.bench_function("primed", |b| {
        b.iter(|| {
            d.reset(false);
            d.set_dictionary(&windows[i]).unwrap();
            flate2_inflate(&mut d, black_box(&compressed[i]), &mut inflated);
            i = if i + 1 == N { 200 } else { i + 1 };
        })
    });
    group.finish();
    d.reset(false);
    d.set_dictionary(&windows[300]).unwrap();
    flate2_inflate(&mut d, &compressed[300], &mut inflated);
    assert_eq!(
        inflated, messages[300],
        "a primed inflater follows the stream"
    );
}

criterion_group! {
    name = benches;
    config = support::config(Duration::from_millis(500), Duration::from_millis(1500));
    targets = crates, takeover
}
criterion_main!(benches);
