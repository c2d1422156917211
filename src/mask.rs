//! Payload (un)masking: `payload[i] ^= key[(phase + i) % 4]`, at memory speed.
//!
//! Owns the XOR loop and nothing else: it knows nothing about frames, only about a key and the
//! key's phase, so that a frame split across reads can be unmasked piece by piece. The portable
//! path XORs whole 64-bit words (which the compiler turns into 16-byte SSE2 on x86_64); on x86_64
//! a 32-byte AVX2 build of the same loop is chosen at run time, because the release binary is not
//! built for `target-cpu=native`.

/// Below this many bytes the plain byte loop wins: no key widening, no dispatch.
const SMALL: usize = 16;

/// XORs `data` with the masking `key`, the first byte of `data` taking `key[phase % 4]`.
///
/// Returns the phase for the byte that follows `data`, so a caller that unmasks a payload in
/// several pieces passes the returned value to the next call. Masking and unmasking are the
/// same operation.
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let phase = phase & 3;
    if data.len() < SMALL {
        apply_mask_bytewise(data, key, phase);
    } else {
        // Rotate the key so that index 0 of `data` lines up with key byte 0.
        let aligned = [key[phase], key[(phase + 1) & 3], key[(phase + 2) & 3], key[(phase + 3) & 3]];
        apply_mask_wide(data, aligned);
    }
    (phase + data.len()) & 3
}

/// The reference loop: one byte at a time. Kept public for benchmarks and tests.
#[inline]
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(phase + i) & 3];
    }
    (phase + data.len()) & 3
}

/// XORs with a key already aligned to `data[0]`, choosing the widest loop the CPU supports.
#[inline]
fn apply_mask_wide(data: &mut [u8], key: [u8; 4]) {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= 64 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked to support AVX2.
            unsafe { xor_words_avx2(data, key) };
            return;
        }
    }
    xor_words(data, key);
}

/// AVX2 build of [`xor_words`]: same code, 32-byte vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn xor_words_avx2(data: &mut [u8], key: [u8; 4]) {
    xor_words(data, key);
}

/// Word-at-a-time XOR. Written over fixed 32-byte chunks so the compiler vectorises it, with the
/// 4-byte key widened to a 64-bit word (the key period divides every chunk boundary).
#[inline(always)]
fn xor_words(data: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key) as u64;
    let wide = k | (k << 32);
    let mut chunks = data.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for word in chunk.chunks_exact_mut(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
        }
    }
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
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
        let key = [0x11, 0x83, 0xfe, 0x42];
        let source: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..8 {
            for len in [0usize, 1, 3, 4, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 600] {
                for phase in 0..4 {
                    let mut fast = source[offset..offset + len].to_vec();
                    let mut slow = fast.clone();
                    let p1 = apply_mask(&mut fast, key, phase);
                    let p2 = apply_mask_bytewise(&mut slow, key, phase);
                    assert_eq!(fast, slow, "len {len} phase {phase} offset {offset}");
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
}
