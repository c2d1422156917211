//! Payload (un)masking: `payload[i] ^= key[(phase + i) % 4]`, at memory speed.
//!
//! Owns the XOR loop and nothing else: it knows nothing about frames, only about a key and the
//! key's phase, so that a frame split across reads can be unmasked piece by piece. The key is
//! widened to a word rotated to the slice's phase. Below 16 bytes a few word-sized steps cover
//! the slice without a loop, and from 16 to 32 bytes two vectors do; both are inlined into the
//! caller. On x86_64, up to 256 bytes, a loop of 16-byte SSE2 vectors ends a ragged slice with
//! one overlapping vector instead of a byte tail; from 256 bytes a 32-byte AVX2 loop, with
//! 64-byte AVX-512 blocks on CPUs that have them, is chosen at run time, because the release
//! binary is not built for `target-cpu=native`. On other architectures (and x86_64 CPUs
//! without AVX2) the portable loop XORs 64-bit words, which the compiler vectorises.

/// Below this many bytes no vector loop runs: a few word-sized XORs cover the whole slice.
const SMALL: usize = 16;

/// From this many bytes the AVX2 loop is worth its call (it cannot be inlined into callers
/// built without AVX2); below, the inlined SSE2 loop is faster. From here
/// on, too, the vector loop first XORs up to the next 64-byte boundary, so that no load or
/// store of the main loop straddles a cache line, and uses 64-byte AVX-512 vectors where the
/// CPU has them.
#[cfg(target_arch = "x86_64")]
const ZMM_MIN: usize = 256;

/// XORs `data` with the masking `key`, the first byte of `data` taking `key[phase % 4]`.
///
/// Returns the phase for the byte that follows `data`, so a caller that unmasks a payload in
/// several pieces passes the returned value to the next call. Masking and unmasking are the
/// same operation.
///
/// Up to 32 bytes (most messages) it is inlined whole into the caller, with no loop; longer
/// slices go to a loop that is not.
#[inline(always)]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let phase = phase & 3;
    // The key as a little-endian word rotated so that its low byte masks `data[0]`.
    let word = u32::from_le_bytes(key).rotate_right(8 * phase as u32);
    if data.len() < SMALL {
        xor_short(data, word);
    } else if data.len() <= 2 * SMALL {
        xor_up_to_32(data, word);
    } else {
        xor_long(data, word);
    }
    (phase + data.len()) & 3
}

/// The key as a little-endian word rotated so that its low byte masks the byte at `phase`: XOR
/// with it, repeated, unmasks a slice that starts at that phase (what `apply_mask` computes
/// first; the UTF-8 kernel's fused unmasking uses it too).
#[inline(always)]
pub fn key_word(key: [u8; 4], phase: usize) -> u32 {
    u32::from_le_bytes(key).rotate_right(8 * (phase & 3) as u32)
}

/// The reference loop: one byte at a time. Kept public for benchmarks and tests.
#[inline]
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(phase + i) & 3];
    }
    (phase + data.len()) & 3
}

/// `key` rotated past `n` masked bytes: the key word for the byte that follows them.
#[inline(always)]
fn advance(key: u32, n: usize) -> u32 {
    key.rotate_right(8 * (n & 3) as u32)
}

/// Fewer than 16 bytes: one 8-, 4-, 2- and 1-byte step each at most, no loop.
/// `key` is the little-endian key word aligned to `data[0]`.
#[inline(always)]
fn xor_short(mut data: &mut [u8], key: u32) {
    debug_assert!(data.len() < 16);
    if data.len() >= 8 {
        let (word, rest) = std::mem::take(&mut data).split_at_mut(8);
        xor_u64(word, key);
        data = rest;
    }
    if data.len() >= 4 {
        let (word, rest) = std::mem::take(&mut data).split_at_mut(4);
        let mut w = [0u8; 4];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u32::from_le_bytes(w) ^ key).to_le_bytes());
        data = rest;
    }
    let mut key = key;
    if data.len() >= 2 {
        let (half, rest) = std::mem::take(&mut data).split_at_mut(2);
        let h = u16::from_le_bytes([half[0], half[1]]) ^ key as u16;
        half.copy_from_slice(&h.to_le_bytes());
        key = key.rotate_right(16);
        data = rest;
    }
    if let Some(byte) = data.first_mut() {
        *byte ^= key as u8;
    }
}

/// XORs exactly 8 bytes with the key repeated twice.
#[inline(always)]
fn xor_u64(word: &mut [u8], key: u32) {
    let wide = key as u64 | (key as u64) << 32;
    let mut w = [0u8; 8];
    w.copy_from_slice(word);
    word.copy_from_slice(&(u64::from_le_bytes(w) ^ wide).to_le_bytes());
}

/// Fewer than 32 bytes: a 16-byte step, then [`xor_short`].
#[inline(always)]
fn xor_tail(data: &mut [u8], key: u32) {
    debug_assert!(data.len() < 32);
    if data.len() >= 16 {
        let (block, rest) = data.split_at_mut(16);
        xor_u64(&mut block[..8], key);
        xor_u64(&mut block[8..], key);
        xor_short(rest, key);
    } else {
        xor_short(data, key);
    }
}

/// 16 to 32 bytes, the size of most chat and game messages: on x86_64 two 16-byte SSE2
/// vectors, the first and the last, which overlap unless the slice is exactly 32 bytes. Both
/// are loaded before either is stored, so the shared bytes come out right. No loop, inlined.
#[inline(always)]
fn xor_up_to_32(data: &mut [u8], key: u32) {
    debug_assert!((16..=32).contains(&data.len()));
    #[cfg(target_arch = "x86_64")]
    x86::xor_two_vectors(data, key);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (block, rest) = data.split_at_mut(16);
        xor_u64(&mut block[..8], key);
        xor_u64(&mut block[8..], key);
        xor_tail(rest, key); // at most 16 bytes
    }
}

/// More than 32 bytes, with the widest loop the CPU supports.
#[inline(never)]
fn xor_long(data: &mut [u8], key: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() < ZMM_MIN {
            x86::xor_sse2(data, key);
            return;
        }
        // Every length from here, in L1 or not: payloads fresh from `recv` are not in L1 above
        // about 32 KiB, and there 64-byte vectors unmasked 1 MiB in 28-35 µs where 16-byte SSE2
        // ones took 37-40 (server CPU per message, `perf record`, 1 x 1 MiB echo), and did
        // 64 KiB-1 MiB in the `mask` benches in 0.7-0.8x the time.
        if std::arch::is_x86_feature_detected!("avx2") {
            let zmm = std::arch::is_x86_feature_detected!("avx512f");
            // SAFETY: the CPU was just checked to support AVX2 (and AVX-512F if `zmm`).
            unsafe { x86::xor_avx2(data, key, zmm) };
            return;
        }
    }
    xor_words(data, key);
}

/// Portable loop: fixed 32-byte chunks of 64-bit words, which the compiler vectorises
/// (16-byte SSE2 on x86_64), then [`xor_tail`]. The key period divides every chunk boundary.
#[inline(always)]
fn xor_words(data: &mut [u8], key: u32) {
    let mut chunks = data.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for word in chunk.chunks_exact_mut(8) {
            xor_u64(word, key);
        }
    }
    xor_tail(chunks.into_remainder(), key);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, __m512i, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_storeu_si256,
        _mm256_xor_si256, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_storeu_si512,
        _mm512_xor_si512, _mm_loadu_si128, _mm_set1_epi32, _mm_storeu_si128, _mm_xor_si128,
    };

    /// 33 bytes or more (meant for fewer than [`super::ZMM_MIN`]) in 16-byte SSE2 vectors,
    /// which every x86_64 CPU has, so this needs no feature check. A
    /// ragged end costs one more vector, not a byte-by-byte tail: the last 16 bytes are loaded
    /// before the loop and written last, XORed from those original values, so the bytes this
    /// vector shares with the loop's last one come out right although both store them.
    #[inline(always)]
    pub(super) fn xor_sse2(data: &mut [u8], key: u32) {
        let len = data.len();
        assert!(len >= 16);
        let ptr = data.as_mut_ptr();
        let tail_at = len - 16;
        // SAFETY: SSE2 is part of the x86_64 baseline. Every 16-byte access starts at or
        // before `tail_at = len - 16`, so lies inside `data`; loads and stores are unaligned
        // ones. The tail is read before any store can reach it.
        unsafe {
            let wide = _mm_set1_epi32(key as i32);
            let tail_key = _mm_set1_epi32(super::advance(key, tail_at) as i32);
            let tail = _mm_loadu_si128(ptr.add(tail_at) as *const __m128i);
            let mut at = 0;
            while at < tail_at {
                let p = ptr.add(at) as *mut __m128i;
                _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), wide));
                at += 16;
            }
            _mm_storeu_si128(
                ptr.add(tail_at) as *mut __m128i,
                _mm_xor_si128(tail, tail_key),
            );
        }
    }

    /// 16 to 32 bytes as two 16-byte vectors, the first and the last (see
    /// [`super::xor_up_to_32`]).
    #[inline(always)]
    pub(super) fn xor_two_vectors(data: &mut [u8], key: u32) {
        let len = data.len();
        assert!((16..=32).contains(&len));
        let ptr = data.as_mut_ptr();
        let tail_at = len - 16;
        // SAFETY: SSE2 is part of the x86_64 baseline. Both 16-byte accesses, at 0 and at
        // `len - 16`, lie inside `data`; both are loaded before anything is stored.
        unsafe {
            let head = _mm_loadu_si128(ptr as *const __m128i);
            let tail = _mm_loadu_si128(ptr.add(tail_at) as *const __m128i);
            let tail_key = _mm_set1_epi32(super::advance(key, tail_at) as i32);
            _mm_storeu_si128(
                ptr as *mut __m128i,
                _mm_xor_si128(head, _mm_set1_epi32(key as i32)),
            );
            _mm_storeu_si128(
                ptr.add(tail_at) as *mut __m128i,
                _mm_xor_si128(tail, tail_key),
            );
        }
    }

    /// 32-byte AVX2 loop, four vectors per turn. With `zmm`, a slice of at least
    /// [`super::ZMM_MIN`] bytes is first XORed up to a 64-byte boundary and its bulk is done in
    /// 256-byte blocks of four 64-byte AVX-512 vectors; in L1, 64-byte stores are what lets
    /// unmasking keep up with `memcpy` (which uses them too), 32-byte ones reach about 2/3 of it.
    ///
    /// # Safety
    /// The CPU must support AVX2, and AVX-512F (with the OS saving its state) if `zmm` is set.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn xor_avx2(data: &mut [u8], key: u32, zmm: bool) {
        let mut data = data;
        let mut key = key;
        if data.len() >= super::ZMM_MIN {
            let head = data.as_ptr().align_offset(64);
            if head != 0 {
                // head < 64 <= len.
                let (first, rest) = std::mem::take(&mut data).split_at_mut(head);
                // SAFETY: AVX2 is enabled in this function; `first` is fewer than 64 bytes.
                unsafe { xor_below_128(first, key) };
                key = super::advance(key, head);
                data = rest;
            }
            if zmm {
                let done = data.len() & !255;
                // SAFETY: the caller checked AVX-512F; `data` is 64-byte aligned and `done` is
                // a multiple of 256 no larger than its length.
                unsafe { xor_zmm_blocks(data.as_mut_ptr(), done / 256, key) };
                data = &mut std::mem::take(&mut data)[done..];
            }
        }
        let len = data.len();
        let ptr = data.as_mut_ptr();
        let mut at = 0;
        // SAFETY (the whole block): AVX2 is enabled in this function; each 32-byte access at
        // `ptr + at + 32 * j` is checked by its loop condition to lie inside `data`, and the
        // loads and stores are unaligned ones.
        unsafe {
            let wide = _mm256_set1_epi32(key as i32);
            while at + 128 <= len {
                let p = ptr.add(at) as *mut __m256i;
                let a = _mm256_loadu_si256(p);
                let b = _mm256_loadu_si256(p.add(1));
                let c = _mm256_loadu_si256(p.add(2));
                let d = _mm256_loadu_si256(p.add(3));
                _mm256_storeu_si256(p, _mm256_xor_si256(a, wide));
                _mm256_storeu_si256(p.add(1), _mm256_xor_si256(b, wide));
                _mm256_storeu_si256(p.add(2), _mm256_xor_si256(c, wide));
                _mm256_storeu_si256(p.add(3), _mm256_xor_si256(d, wide));
                at += 128;
            }
        }
        // `at` is a multiple of 32, so the key word still lines up.
        // SAFETY: AVX2 is enabled in this function; fewer than 128 bytes remain.
        unsafe { xor_below_128(&mut data[at..], key) };
    }

    /// Fewer than 128 bytes: up to three 32-byte vectors, then [`super::xor_tail`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn xor_below_128(data: &mut [u8], key: u32) {
        debug_assert!(data.len() < 128);
        let mut chunks = data.chunks_exact_mut(32);
        // SAFETY: AVX2 is enabled in this function; each access covers exactly one 32-byte
        // chunk of `data`, with unaligned loads and stores.
        unsafe {
            let wide = _mm256_set1_epi32(key as i32);
            for chunk in &mut chunks {
                let p = chunk.as_mut_ptr() as *mut __m256i;
                _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), wide));
            }
        }
        super::xor_tail(chunks.into_remainder(), key);
    }

    /// XORs `blocks` blocks of 256 bytes at `ptr` with four 64-byte AVX-512 vectors each.
    ///
    /// # Safety
    /// The CPU and OS must support AVX-512F; `ptr` must be valid for reads and writes of
    /// `256 * blocks` bytes (alignment to 64 is for speed only).
    #[target_feature(enable = "avx512f")]
    unsafe fn xor_zmm_blocks(ptr: *mut u8, blocks: usize, key: u32) {
        let wide = _mm512_set1_epi32(key as i32);
        for block in 0..blocks {
            // SAFETY: block < blocks, so the four 64-byte accesses at `ptr + 256 * block` lie
            // inside the caller's region; loads and stores are unaligned ones.
            unsafe {
                let p = ptr.add(256 * block) as *mut __m512i;
                let a = _mm512_loadu_si512(p);
                let b = _mm512_loadu_si512(p.add(1));
                let c = _mm512_loadu_si512(p.add(2));
                let d = _mm512_loadu_si512(p.add(3));
                _mm512_storeu_si512(p, _mm512_xor_si512(a, wide));
                _mm512_storeu_si512(p.add(1), _mm512_xor_si512(b, wide));
                _mm512_storeu_si512(p.add(2), _mm512_xor_si512(c, wide));
                _mm512_storeu_si512(p.add(3), _mm512_xor_si512(d, wide));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_hello_vector_unmasks() {
        // RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn wide_matches_bytewise_at_every_length_phase_and_offset() {
        let source: Vec<u8> = (0..1300u32).map(|i| (i * 7 + 3) as u8).collect();
        let lens: Vec<usize> = (0..=48)
            .chain([
                63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 300, 600, 1100,
            ])
            .collect();
        // Offsets up to 70 from the allocation move the slice over every 64-byte alignment.
        let offsets: Vec<usize> = (0..70).collect();
        assert_matches_bytewise(&source, [0x11, 0x83, 0xfe, 0x42], &lens, &offsets);
    }

    #[test]
    fn long_slices_match_bytewise() {
        // Beyond L1 sizes, where the 64-byte loop runs over whole reads of a large message.
        let source: Vec<u8> = (0..70_100u32).map(|i| (i * 13 + i / 251) as u8).collect();
        let lens = [32_767, 32_768, 32_769, 40_003, 70_001];
        assert_matches_bytewise(&source, [0x9d, 0x04, 0x6b, 0xe2], &lens, &[0, 1, 3, 63]);
    }

    /// `apply_mask` on `source[offset..offset + len]` at every phase agrees with the byte loop,
    /// on the bytes and on the phase returned.
    fn assert_matches_bytewise(source: &[u8], key: [u8; 4], lens: &[usize], offsets: &[usize]) {
        for &offset in offsets {
            for &len in lens {
                for phase in 0..4 {
                    let mut fast = source.to_vec();
                    let mut slow = source.to_vec();
                    let p1 = apply_mask(&mut fast[offset..offset + len], key, phase);
                    let p2 = apply_mask_bytewise(&mut slow[offset..offset + len], key, phase);
                    assert!(fast == slow, "len {len} phase {phase} offset {offset}");
                    assert_eq!(p1, p2);
                }
            }
        }
    }

    #[test]
    fn phase_carries_across_any_split() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        for split in [1usize, 2, 3, 5, 17, 64, 299] {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            let phase = apply_mask(a, key, 0);
            apply_mask(b, key, phase);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_without_avx512_matches_bytewise() {
        // The 32-byte-only path, for CPUs with AVX2 but no AVX-512 (whatever the test machine).
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let key = [0x3c, 0xc3, 0x81, 0x18];
        let source: Vec<u8> = (0..1400u32).map(|i| (i * 11 + 5) as u8).collect();
        for offset in 0..70 {
            for len in [64usize, 100, 255, 256, 300, 511, 512, 1000, 1300] {
                let mut fast = source.clone();
                let mut slow = source.clone();
                let rotated = u32::from_le_bytes(key).rotate_right(8 * (offset as u32 & 3));
                // SAFETY: AVX2 was checked above.
                unsafe { x86::xor_avx2(&mut fast[offset..offset + len], rotated, false) };
                apply_mask_bytewise(&mut slow[offset..offset + len], key, offset & 3);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn portable_loop_matches_bytewise() {
        // The fallback for CPUs without AVX2, exercised here whatever the test machine has.
        let key = [0xa5, 0x5a, 0x0f, 0xf0];
        let source: Vec<u8> = (0..400u32).map(|i| (i * 13 + 1) as u8).collect();
        for len in 16..400 {
            for phase in 0..4 {
                let mut fast = source[..len].to_vec();
                let mut slow = fast.clone();
                let aligned = u32::from_le_bytes(key).rotate_right(8 * phase as u32);
                xor_words(&mut fast, aligned);
                apply_mask_bytewise(&mut slow, key, phase);
                assert_eq!(fast, slow, "len {len} phase {phase}");
            }
        }
    }
}
