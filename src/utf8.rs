//! Incremental, fail-fast UTF-8 validation for text messages that arrive in pieces.
//!
//! Owns the carry of an unfinished code point (at most 3 bytes) between pieces, and the
//! validators themselves: an AVX-512 kernel where the CPU has one, `simdutf8` otherwise. The
//! kernel can also unmask a payload in the same pass (the XOR is [`crate::mask`]'s, applied per
//! 64-byte block), so that a text payload is read once; it knows no frame layout. It must fail as
//! soon as a byte sequence can no longer become valid, not at the end of the message, because
//! RFC 6455 §8.1 tells the endpoint to fail the connection on invalid text as soon as it sees it.

use simdutf8::compat::from_utf8;

use crate::mask::{apply_mask, key_word};

/// The text could never be valid UTF-8, whatever bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Forgets any carried bytes: the start of a new message.
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    /// Checks the next piece. Fails as soon as the bytes so far cannot begin valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let have = self.carry_len as usize;
            let need = sequence_len(self.carry[0]);
            let take = (need - have).min(piece.len());
            self.carry[have..have + take].copy_from_slice(&piece[..take]);
            self.carry_len += take as u8;
            piece = &piece[take..];
            let carried = &self.carry[..self.carry_len as usize];
            match from_utf8(carried) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                // Still a valid prefix, and the piece ran out before the code point did.
                Err(_) => return Ok(()),
            }
        }
        // The bulk of the piece ends on a code point boundary, so the one-shot validator
        // (the fast `basic` flavour, no error position) decides it alone; only an unfinished
        // code point at the very end (at most 3 bytes) is checked as a prefix and carried.
        let (bulk, tail) = piece.split_at(unfinished_tail(piece));
        if !is_valid(bulk) {
            return Err(InvalidUtf8);
        }
        if !tail.is_empty() {
            match from_utf8(tail) {
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                _ => {
                    self.carry[..tail.len()].copy_from_slice(tail);
                    self.carry_len = tail.len() as u8;
                }
            }
        }
        Ok(())
    }

    /// Unmasks `data` in place, exactly as [`apply_mask`] does with `key` from `phase`, and
    /// feeds it; returns the phase after `data` (as `apply_mask`) and the check's result.
    ///
    /// Where the CPU has AVX-512 this is one pass over the bytes: each 64-byte block is XORed,
    /// stored and validated while in a register, so a text payload is read once, not twice.
    /// The data is unmasked in full even when it is found invalid.
    pub fn unmask_and_feed(
        &mut self,
        data: &mut [u8],
        key: [u8; 4],
        phase: usize,
    ) -> (usize, Result<(), InvalidUtf8>) {
        #[cfg(target_arch = "x86_64")]
        {
            if data.len() >= FUSED_FEED_MIN && avx512::available() {
                let carry = &self.carry[..self.carry_len as usize];
                // SAFETY: the CPU was just checked to support AVX-512 F, BW and VBMI.
                let valid = unsafe { avx512::unmask_and_check(carry, data, key_word(key, phase)) };
                let next_phase = (phase + data.len()) & 3;
                if !valid {
                    return (next_phase, Err(InvalidUtf8));
                }
                // `data` (at least 64 bytes) finished any carried code point; carry its own
                // unfinished one. The check above refused any bad pair inside it; a lead byte
                // that ends `data` is judged with the bytes that follow it, or by `finish`.
                let tail = &data[unfinished_tail(data)..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                return (next_phase, Ok(()));
            }
        }
        let next_phase = apply_mask(data, key, phase);
        (next_phase, self.feed(data))
    }

    /// Ends the message: valid only if no code point is left unfinished.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.carry_len != 0;
        self.carry_len = 0;
        if unfinished {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

/// Where the code point that `bytes` ends in starts, if it is unfinished (its lead byte calls for
/// more bytes than follow it); `bytes.len()` otherwise. Looks at the last 3 bytes only: a
/// lead byte farther back cannot start an unfinished sequence, and whatever is not a well-formed
/// sequence is left in the bulk for the validator to reject.
#[inline]
fn unfinished_tail(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for back in 1..=len.min(3) {
        let byte = bytes[len - back];
        if byte & 0xC0 != 0x80 {
            // Not a continuation byte: ASCII or a lead byte.
            if byte >= 0xC0 && sequence_len(byte) > back {
                return len - back;
            }
            return len;
        }
    }
    len
}

/// Whether `bytes` is valid UTF-8 on its own (a code point left unfinished at the end is invalid).
///
/// An ASCII prefix is skipped first: ASCII needs no context, so what follows it is validated as
/// if it began the input. The rest goes to the AVX-512 validator where the CPU has it, whatever
/// its length: on 64 KiB of mixed text it checked about 1.7x as many bytes per second as
/// `simdutf8`'s AVX2 kernel, and a 21-byte message took 6 ns against 21 ns in `simdutf8`
/// (which hands short inputs to std's scalar loop). Otherwise `simdutf8`.
#[inline]
fn is_valid(bytes: &[u8]) -> bool {
    let rest = &bytes[ascii_prefix_len(bytes)..];
    if rest.is_empty() {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // SAFETY: the CPU was just checked to support AVX-512 F, BW and VBMI.
            return unsafe { avx512::is_valid(rest) };
        }
    }
    is_valid_portable(rest)
}

/// `simdutf8`, for CPUs without the AVX-512 kernel.
#[inline]
fn is_valid_portable(bytes: &[u8]) -> bool {
    if bytes.len() < SHORT_PADDED {
        // `simdutf8` hands inputs this short to std's scalar loop (about 200 instructions for
        // 20 bytes of mixed text); padded with zeros, which are ASCII and cannot complete a
        // code point cut short, they take its vector path and get the same verdict.
        let mut padded = [0u8; SHORT_PADDED];
        padded[..bytes.len()].copy_from_slice(bytes);
        return simdutf8::basic::from_utf8(&padded).is_ok();
    }
    simdutf8::basic::from_utf8(bytes).is_ok()
}

/// Shorter non-ASCII text is checked in a zero-padded copy of this size (see [`is_valid`]).
const SHORT_PADDED: usize = 64;

/// Pieces from this size take the fused path of [`Utf8Validator::unmask_and_feed`]: long
/// enough to finish any carried code point (which needs at most 3 more bytes), so the carry
/// after them comes from the piece alone. Shorter ones are unmasked, then fed.
const FUSED_FEED_MIN: usize = 64;

/// How many leading bytes are ASCII, in whole 256-byte blocks (or all of `bytes`).
///
/// A cheaper first pass than the full validator for the commonest text (JSON and the like):
/// at 4 KiB pieces, `simdutf8`'s fixed cost per call (dispatch through a function pointer,
/// set-up and final reduction) measured about 20% of its time on ASCII.
#[inline]
fn ascii_prefix_len(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if bytes.len() >= 256 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked to support AVX2.
            return unsafe { x86::ascii_prefix_len_avx2(bytes) };
        }
    }
    if bytes.is_ascii() {
        bytes.len()
    } else {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256};

    /// [`super::ascii_prefix_len`] in 256-byte blocks of eight 32-byte vectors.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn ascii_prefix_len_avx2(bytes: &[u8]) -> usize {
        let mut blocks = bytes.chunks_exact(256);
        let mut prefix = 0;
        for block in &mut blocks {
            let p = block.as_ptr() as *const __m256i;
            // SAFETY: AVX2 is enabled in this function; the eight unaligned loads cover
            // exactly the 256 bytes of `block`.
            let high_bits = unsafe {
                let a = _mm256_or_si256(_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
                let b = _mm256_or_si256(_mm256_loadu_si256(p.add(2)), _mm256_loadu_si256(p.add(3)));
                let c = _mm256_or_si256(_mm256_loadu_si256(p.add(4)), _mm256_loadu_si256(p.add(5)));
                let d = _mm256_or_si256(_mm256_loadu_si256(p.add(6)), _mm256_loadu_si256(p.add(7)));
                _mm256_movemask_epi8(_mm256_or_si256(
                    _mm256_or_si256(a, b),
                    _mm256_or_si256(c, d),
                ))
            };
            if high_bits != 0 {
                return prefix;
            }
            prefix += 256;
        }
        if blocks.remainder().is_ascii() {
            bytes.len()
        } else {
            prefix
        }
    }
}

/// UTF-8 validation 64 bytes at a time with AVX-512 (F, BW and VBMI: Ice Lake, Zen 4 and later).
///
/// The method is the one of Keiser and Lemire, "Validating UTF-8 in less than one instruction per
/// byte" (2021): almost every error shows in some pair of adjacent bytes, and which pairs are bad
/// depends only on the first byte's two nibbles and the second byte's high nibble. Three 16-entry
/// tables, one per nibble, give each pair a set of error classes (one bit each), and a pair is bad
/// when a class is in all three. The one rule pairs cannot see, how many continuation bytes a lead
/// byte wants, is checked against the lead bytes two and three places back. The tables are built
/// here from the class definitions (`CLASSES`), not written out by hand.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_alignr_epi32, _mm512_alignr_epi8, _mm512_broadcast_i32x4,
        _mm512_loadu_si512, _mm512_mask_storeu_epi8, _mm512_maskz_loadu_epi8,
        _mm512_maskz_mov_epi8, _mm512_movepi8_mask, _mm512_or_si512, _mm512_permutexvar_epi8,
        _mm512_set1_epi32, _mm512_set1_epi8, _mm512_set_epi32, _mm512_setzero_si512,
        _mm512_srli_epi16, _mm512_storeu_si512, _mm512_subs_epu8, _mm512_ternarylogic_epi32,
        _mm512_test_epi8_mask, _mm512_xor_si512, _mm_loadu_si128,
    };

    /// Whether the CPU has what [`is_valid`] needs, and `WSREACTOR_NO_AVX512` is not set in
    /// the environment (to compare against the `simdutf8` path, or to test it, on a CPU that
    /// has AVX-512). Decided once per process.
    #[inline]
    pub(super) fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::env::var_os("WSREACTOR_NO_AVX512").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
        })
    }

    /// The nibbles 0x`lo`..=0x`hi` as a set.
    const fn nibbles(lo: u8, hi: u8) -> u16 {
        let mut set = 0u16;
        let mut n = lo;
        while n <= hi {
            set |= 1 << n;
            n += 1;
        }
        set
    }

    const ANY: u16 = nibbles(0x0, 0xF);
    const ASCII: u16 = nibbles(0x0, 0x7);
    const CONTINUATION: u16 = nibbles(0x8, 0xB);
    const LEAD: u16 = nibbles(0xC, 0xF);

    /// Continuation after continuation. Not an error in itself: it must happen exactly where a
    /// three- or four-byte sequence wants its third or fourth byte, which is checked apart. It is
    /// bit 7 so that that check can flip it with one byte-wise add of 0x80.
    const TWO_CONTINUATIONS: u8 = 0x80;

    /// Error classes of a byte pair: (bit, first byte's high nibble, first byte's low nibble,
    /// second byte's high nibble). Two classes share a bit only where the union of their sets is
    /// again a product of three nibble sets, so the lookup cannot mix them into a false error.
    const CLASSES: [(u8, u16, u16, u16); 9] = [
        // A lead byte not followed by a continuation (too short).
        (0x01, LEAD, ANY, ASCII | LEAD),
        // A continuation after ASCII (no lead byte to belong to).
        (0x02, ASCII, ANY, CONTINUATION),
        // E0 80..9F: an overlong three-byte form.
        (
            0x04,
            nibbles(0xE, 0xE),
            nibbles(0x0, 0x0),
            nibbles(0x8, 0x9),
        ),
        // F4 90..BF and F5..FF 90..BF: above U+10FFFF.
        (
            0x08,
            nibbles(0xF, 0xF),
            nibbles(0x4, 0xF),
            nibbles(0x9, 0xB),
        ),
        // ED A0..BF: a UTF-16 surrogate.
        (
            0x10,
            nibbles(0xE, 0xE),
            nibbles(0xD, 0xD),
            nibbles(0xA, 0xB),
        ),
        // C0, C1: an overlong two-byte form.
        (0x20, nibbles(0xC, 0xC), nibbles(0x0, 0x1), CONTINUATION),
        // F0 80..8F: an overlong four-byte form; and F5..FF 80..8F: above U+10FFFF.
        (
            0x40,
            nibbles(0xF, 0xF),
            nibbles(0x0, 0x0),
            nibbles(0x8, 0x8),
        ),
        (
            0x40,
            nibbles(0xF, 0xF),
            nibbles(0x5, 0xF),
            nibbles(0x8, 0x8),
        ),
        (TWO_CONTINUATIONS, CONTINUATION, ANY, CONTINUATION),
    ];

    /// The lookup table for one nibble position (0: first byte high, 1: first byte low, 2: second
    /// byte high).
    const fn table(position: usize) -> [u8; 16] {
        let mut table = [0u8; 16];
        let mut nibble = 0;
        while nibble < 16 {
            let mut class = 0;
            while class < CLASSES.len() {
                let (bit, first_high, first_low, second_high) = CLASSES[class];
                let set = match position {
                    0 => first_high,
                    1 => first_low,
                    _ => second_high,
                };
                if set & (1 << nibble) != 0 {
                    table[nibble] |= bit;
                }
                class += 1;
            }
            nibble += 1;
        }
        table
    }

    const FIRST_HIGH: [u8; 16] = table(0);
    const FIRST_LOW: [u8; 16] = table(1);
    const SECOND_HIGH: [u8; 16] = table(2);

    /// The three tables, each repeated in all four 128-bit lanes (byte shuffles stay in a lane).
    struct Tables {
        first_high: __m512i,
        first_low: __m512i,
        second_high: __m512i,
    }

    impl Tables {
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
        fn load() -> Self {
            let lanes = |table: &[u8; 16]| {
                // SAFETY: reads exactly the 16 bytes of `table`.
                _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) })
            };
            Tables {
                first_high: lanes(&FIRST_HIGH),
                first_low: lanes(&FIRST_LOW),
                second_high: lanes(&SECOND_HIGH),
            }
        }
    }

    /// Error bits for the 64 bytes of `input`, each paired with the bytes before it (the last
    /// ones of `prev`, the block before). Zero where all is well.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn block_errors(tables: &Tables, prev: __m512i, input: __m512i) -> __m512i {
        // Each 128-bit lane of `behind` is the lane before it in `input` (or `prev`'s last lane),
        // which is what the in-lane byte alignment below needs to look 1-3 bytes back.
        let behind = _mm512_alignr_epi32::<12>(input, prev);
        let prev1 = _mm512_alignr_epi8::<15>(input, behind);
        let prev2 = _mm512_alignr_epi8::<14>(input, behind);
        let prev3 = _mm512_alignr_epi8::<13>(input, behind);

        // A 64-entry byte permutation reads only the low 6 bits of each index, and the tables
        // repeat every 16 bytes, so neither nibble needs masking: the low nibble is the byte
        // itself, the high one the byte shifted right by 4 (whatever the 16-bit shift brings in
        // from the next byte lands in bits 4-7 and is ignored).
        let first_high = _mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(prev1), tables.first_high);
        let first_low = _mm512_permutexvar_epi8(prev1, tables.first_low);
        let second_high =
            _mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(input), tables.second_high);
        // 0x80: a & b & c.
        let pair_errors = _mm512_ternarylogic_epi32::<0x80>(first_high, first_low, second_high);

        // Third and fourth bytes: wanted after E0..FF two back or F0..FF three back. Saturating
        // subtraction leaves bit 7 set exactly for those lead bytes.
        let third = _mm512_subs_epu8(prev2, _mm512_set1_epi8((0xE0u8 - 0x80) as i8));
        let fourth = _mm512_subs_epu8(prev3, _mm512_set1_epi8((0xF0u8 - 0x80) as i8));
        // 0xA8: (a | b) & c.
        let wanted = _mm512_ternarylogic_epi32::<0xA8>(
            third,
            fourth,
            _mm512_set1_epi8(TWO_CONTINUATIONS as i8),
        );
        // Where one is wanted, a continuation after a continuation is right and its absence is
        // the error: XOR flips bit 7 (TWO_CONTINUATIONS) of those bytes.
        _mm512_xor_si512(pair_errors, wanted)
    }

    /// Whether `bytes` is valid UTF-8, with no code point left unfinished at the end.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn is_valid(bytes: &[u8]) -> bool {
        // SAFETY: `scan::<false>` only reads, the `bytes.len()` bytes at the pointer.
        unsafe { scan::<false>(bytes.as_ptr().cast_mut(), bytes.len(), 0, &[], true) }
    }

    /// XORs `data` with the repeated key word `key` (as `mask::apply_mask` does), then checks it
    /// as a whole text, as [`is_valid`] does. One pass.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn unmask_and_validate(data: &mut [u8], key: u32) -> bool {
        // SAFETY: `data` is exclusively borrowed, its `data.len()` bytes readable and writable.
        unsafe { scan::<true>(data.as_mut_ptr(), data.len(), key, &[], true) }
    }

    /// XORs `data` with the repeated key word `key` (as `mask::apply_mask` does), then checks it
    /// as the continuation of text whose unfinished code point so far is `carry` (at most 3
    /// bytes; a code point left unfinished at the end of `data` is not an error). One pass.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI ([`available`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn unmask_and_check(carry: &[u8], data: &mut [u8], key: u32) -> bool {
        // SAFETY: `data` is exclusively borrowed, its `data.len()` bytes readable and writable.
        unsafe { scan::<true>(data.as_mut_ptr(), data.len(), key, carry, false) }
    }

    /// Checks the `len` bytes at `data` as the text that follows `before` (the last up to 3
    /// bytes before them, none at the start), 64 at a time; with `UNMASK`, each 64-byte block
    /// is first XORed with the repeated word `key` and stored back, so the bytes are read once.
    /// `whole`: the bytes end the text, so a code point left unfinished is an error.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI; `data` must be valid for reads of `len` bytes, and
    /// for writes too with `UNMASK`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn scan<const UNMASK: bool>(
        data: *mut u8,
        len: usize,
        key: u32,
        before: &[u8],
        whole: bool,
    ) -> bool {
        let tables = Tables::load();
        let key = _mm512_set1_epi32(key as i32);
        // The bytes before, at the end of an otherwise ASCII (zero) block: the top 32-bit lane
        // holds them, the last in its most significant byte. (Built in a register: a copy into a
        // stack block here made the compiler keep `errors` on the stack through the loop.)
        debug_assert!(before.len() <= 3);
        let top_lane = before
            .iter()
            .rev()
            .enumerate()
            .fold(0u32, |lane, (back, &byte)| {
                lane | u32::from(byte) << (24 - 8 * back)
            });
        let mut prev =
            _mm512_set_epi32(top_lane as i32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut prev_high_bits = _mm512_movepi8_mask(prev);
        let mut errors = _mm512_setzero_si512();
        let mut at = 0;
        while len - at >= 64 {
            // SAFETY: `at + 64 <= len`: the block is inside the caller's bytes.
            let block = unsafe { data.add(at) };
            let mut input = unsafe { _mm512_loadu_si512(block.cast()) };
            if UNMASK {
                input = _mm512_xor_si512(input, key);
                // SAFETY: as the load; the caller allows writes when UNMASK.
                unsafe { _mm512_storeu_si512(block.cast(), input) };
            }
            let high_bits = _mm512_movepi8_mask(input);
            // Two ASCII blocks in a row cannot hold an error: skip the lookups.
            if high_bits | prev_high_bits != 0 {
                errors = _mm512_or_si512(errors, block_errors(&tables, prev, input));
            }
            prev = input;
            prev_high_bits = high_bits;
            at += 64;
        }
        let rest = len - at;
        if rest > 0 || whole {
            // The rest (0-63 bytes), padded with zero bytes (ASCII): when `whole`, a code point
            // left unfinished at the end meets ASCII where it wants a continuation, and fails;
            // otherwise only the errors at the bytes present count.
            let present = (1u64 << rest) - 1;
            // SAFETY: the mask covers only the `rest` bytes left; masked-off bytes are neither
            // read nor written and cannot fault.
            let block = unsafe { data.add(at) };
            let mut input = unsafe { _mm512_maskz_loadu_epi8(present, block.cast()) };
            if UNMASK {
                input = _mm512_maskz_mov_epi8(present, _mm512_xor_si512(input, key));
                unsafe { _mm512_mask_storeu_epi8(block.cast(), present, input) };
            }
            let block_errors = block_errors(&tables, prev, input);
            let counted = if whole {
                block_errors
            } else {
                _mm512_maskz_mov_epi8(present, block_errors)
            };
            errors = _mm512_or_si512(errors, counted);
        }
        _mm512_test_epi8_mask(errors, errors) == 0
    }
}

/// Length of the UTF-8 sequence that `lead` starts. Bytes that start no valid sequence (0x80-0xC1,
/// 0xF5-0xFF) map to 4: whoever asks validates the bytes next and rejects them then.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// One-shot validation of a whole message that arrived in one piece.
#[inline]
pub fn validate(bytes: &[u8]) -> Result<&str, InvalidUtf8> {
    if is_valid(bytes) {
        // SAFETY: `is_valid` just checked that the bytes are UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        Err(InvalidUtf8)
    }
}

/// Unmasks a whole message's payload in place (key phase 0, as [`apply_mask`]) and validates
/// it; one pass over the bytes where the CPU has AVX-512 (see
/// [`Utf8Validator::unmask_and_feed`]). The payload is unmasked in full even when invalid.
#[inline]
pub fn unmask_and_validate(data: &mut [u8], key: [u8; 4]) -> Result<&str, InvalidUtf8> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // SAFETY: the CPU was just checked to support AVX-512 F, BW and VBMI.
            if unsafe { avx512::unmask_and_validate(data, key_word(key, 0)) } {
                // SAFETY: just validated as UTF-8.
                return Ok(unsafe { std::str::from_utf8_unchecked(data) });
            }
            return Err(InvalidUtf8);
        }
    }
    apply_mask(data, key, 0);
    validate(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], piece: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn valid_text_passes_at_every_piece_size() {
        let text = "κόσμε, 𝄞 music, ascii, 日本語, ü".as_bytes();
        for piece in 1..=text.len() {
            assert_eq!(feed_split(text, piece), Ok(()), "piece {piece}");
        }
    }

    #[test]
    fn invalid_text_fails_at_every_piece_size() {
        let cases: [&[u8]; 5] = [
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"abc\xff",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
            b"ok\xe2\x82",
        ];
        for bytes in cases {
            for piece in 1..=bytes.len() {
                assert_eq!(
                    feed_split(bytes, piece),
                    Err(InvalidUtf8),
                    "{bytes:?} / {piece}"
                );
            }
        }
    }

    #[test]
    fn fails_on_the_first_impossible_byte_not_at_the_end() {
        // ED A0 can never start a valid sequence (it would encode a surrogate).
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"hello \xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
        // A byte split right inside a four-byte sequence is fine until it is finished.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf0\x9d"), Ok(()));
        assert_eq!(v.feed(b"\x84"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    /// Byte strings around every boundary case of the UTF-8 grammar.
    fn tricky_inputs() -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let atoms: [&[u8]; 24] = [
            b"a",
            b"\x7f",
            b"\xc2\x80",
            b"\xdf\xbf",
            b"\xe0\xa0\x80",
            b"\xed\x9f\xbf",
            b"\xef\xbf\xbf",
            b"\xf0\x90\x80\x80",
            b"\xf4\x8f\xbf\xbf",
            b"\x80",
            b"\xbf",
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xc2",
            b"\xe0\x80\x80",
            b"\xe0\xa0",
            b"\xed\xa0\x80",
            b"\xf0\x80\x80\x80",
            b"\xf0\x90\x80",
            b"\xf4\x90\x80\x80",
            b"\xf5\x80\x80\x80",
            b"\xff",
            b"\xe2\x82\xac",
            b"\xce\xba",
        ];
        for a in atoms {
            for b in atoms {
                let mut case = b"xy".to_vec();
                case.extend_from_slice(a);
                case.extend_from_slice(b);
                case.extend_from_slice("ü".as_bytes());
                cases.push(case);
            }
        }
        cases
    }

    #[test]
    fn agrees_with_std_on_every_piece_size() {
        for bytes in tricky_inputs() {
            let expected = std::str::from_utf8(&bytes).is_ok();
            for piece in 1..=bytes.len() {
                assert_eq!(
                    feed_split(&bytes, piece).is_ok(),
                    expected,
                    "{bytes:x?} / {piece}"
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time_fails_on_the_byte_that_proves_it() {
        for bytes in tricky_inputs() {
            let Err(e) = std::str::from_utf8(&bytes) else {
                continue;
            };
            let mut v = Utf8Validator::new();
            let failed_at = (0..bytes.len()).find(|&i| v.feed(&bytes[i..i + 1]).is_err());
            match e.error_len() {
                // The maximal valid-looking prefix is `valid_up_to + len - 1`; the byte after
                // that at the latest (or one of that prefix's own bytes) must be refused.
                Some(len) => {
                    let at = failed_at.expect("refused somewhere");
                    assert!(at >= e.valid_up_to(), "{bytes:x?}: too early, at {at}");
                    assert!(at <= e.valid_up_to() + len, "{bytes:x?}: too late, at {at}");
                }
                None => {
                    assert_eq!(failed_at, None, "{bytes:x?}");
                    assert_eq!(v.finish(), Err(InvalidUtf8));
                }
            }
        }
    }

    #[test]
    fn ascii_prefix_stops_at_the_block_of_the_first_high_byte() {
        let mut bytes = vec![b'a'; 1000];
        assert_eq!(ascii_prefix_len(&bytes), 1000);
        for at in [0, 1, 127, 128, 255, 256, 511, 900, 999] {
            bytes[at] = 0xC3;
            let prefix = ascii_prefix_len(&bytes);
            assert!(prefix <= at && at - prefix < 256, "at {at}: {prefix}");
            assert!(ascii_prefix_len(&bytes[at..]) == 0, "from {at}");
            bytes[at] = b'a';
        }
    }

    /// A validator under test, by name.
    type Named = (&'static str, fn(&[u8]) -> bool);

    /// Every validator path this CPU can take, for the tests below to hold against std.
    fn validators() -> Vec<Named> {
        let mut all: Vec<Named> = vec![
            ("dispatch", is_valid),
            ("simdutf8", |b| simdutf8::basic::from_utf8(b).is_ok()),
            ("portable", is_valid_portable),
        ];
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: the CPU supports AVX-512 F, BW and VBMI.
            all.push(("avx512", |b| unsafe { avx512::is_valid(b) }));
        } else {
            eprintln!("no AVX-512 on this CPU: its validator is not exercised");
        }
        all
    }

    /// Checked in CI's second run, which sets the variable: the fallback really is what runs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_environment_turns_the_kernel_off() {
        if std::env::var_os("WSREACTOR_NO_AVX512").is_some() {
            assert!(!avx512::available());
        }
    }

    /// `seq` at offsets around the 64-byte block boundaries, with ASCII before and after.
    fn placements(seq: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        [0usize, 1, 61, 62, 63, 64, 127]
            .into_iter()
            .flat_map(move |at| {
                [0usize, 70].into_iter().map(move |after| {
                    let mut bytes = vec![b'x'; at];
                    bytes.extend_from_slice(seq);
                    bytes.resize(bytes.len() + after, b'y');
                    bytes
                })
            })
    }

    fn assert_agrees_with_std(bytes: &[u8], validators: &[Named]) {
        let expected = std::str::from_utf8(bytes).is_ok();
        for (name, valid) in validators {
            assert_eq!(valid(bytes), expected, "{name}: {bytes:x?}");
        }
    }

    #[test]
    fn every_byte_pair_at_every_block_offset() {
        let validators = validators();
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                for bytes in placements(&[first, second]) {
                    assert_agrees_with_std(&bytes, &validators);
                }
            }
        }
    }

    #[test]
    fn three_and_four_byte_forms_at_every_block_offset() {
        let validators = validators();
        // Every continuation boundary (and a non-continuation on either side of the range).
        let next = [
            0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC3, 0xE2, 0xF0,
        ];
        for lead in 0xC0..=0xFFu8 {
            for &b in &next {
                for &c in &next {
                    for bytes in placements(&[lead, b, c]) {
                        assert_agrees_with_std(&bytes, &validators);
                    }
                    for &d in &next {
                        for bytes in placements(&[lead, b, c, d]) {
                            assert_agrees_with_std(&bytes, &validators);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_text_and_noise_agree_with_std() {
        let validators = validators();
        let atoms: [&[u8]; 12] = [
            b"a",
            b"~",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            "ж".as_bytes(),
            "\u{10FFFF}".as_bytes(),
            "\u{FFFF}".as_bytes(),
            b"\x80",
            b"\xC2",
            b"\xED\xA0\x80",
            b"\xF4\x90",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            // Mostly valid characters; now and then one bad atom or one random byte.
            let mut bytes = Vec::with_capacity(len + 4);
            while bytes.len() < len {
                let r = next();
                match r % 1000 {
                    0 => bytes.push((r >> 16) as u8),
                    1..=3 => bytes.extend_from_slice(atoms[8 + (r >> 16) as usize % 4]),
                    _ => bytes.extend_from_slice(atoms[(r >> 16) as usize % 8]),
                }
            }
            assert_agrees_with_std(&bytes, &validators);
        }
    }

    /// Masks `bytes`, then unmasks and checks them in pieces of `piece` bytes (or whole, when
    /// `piece` is 0) with the fused calls; returns the unmasked bytes and the verdict.
    fn unmask_in_pieces(bytes: &[u8], key: [u8; 4], piece: usize) -> (Vec<u8>, bool) {
        let mut data = bytes.to_vec();
        apply_mask(&mut data, key, 0);
        let valid = unmask_in_place(&mut data, key, piece);
        (data, valid)
    }

    /// Unmasks and checks the masked `data` where it lies, in pieces of `piece` bytes (whole,
    /// when `piece` is 0) with the fused calls; returns the verdict.
    fn unmask_in_place(data: &mut [u8], key: [u8; 4], piece: usize) -> bool {
        if piece == 0 {
            return unmask_and_validate(data, key).is_ok();
        }
        let mut v = Utf8Validator::new();
        let mut phase = 0;
        let mut valid = true;
        for chunk in data.chunks_mut(piece) {
            let (next, result) = v.unmask_and_feed(chunk, key, phase);
            phase = next;
            valid &= result.is_ok();
        }
        valid && v.finish().is_ok()
    }

    #[test]
    fn fused_unmask_and_check_agree_with_mask_then_std() {
        let key = [0x37, 0xFA, 0x21, 0x3D];
        let filler = "κόσμε · 日本語 · 𝄞 · plain ascii, enough of it for a block or two ".repeat(2);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for case in tricky_inputs() {
            for (before, after) in [(0, 0), (61, 0), (62, 70), (63, 3), (127, 64)] {
                let mut bytes = filler.as_bytes()[..before].to_vec();
                // Cut the filler on a character boundary (ASCII pads the cut).
                while std::str::from_utf8(&bytes).is_err() {
                    bytes.pop();
                }
                bytes.resize(before, b'-');
                bytes.extend_from_slice(&case);
                bytes.extend(std::iter::repeat_n(b'z', after));
                inputs.push(bytes);
            }
        }
        for bytes in &inputs {
            let expected = std::str::from_utf8(bytes).is_ok();
            for piece in [0, 1, 3, 63, 64, 65, 100, 200] {
                let (unmasked, valid) = unmask_in_pieces(bytes, key, piece);
                assert_eq!(&unmasked, bytes, "unmasking, piece {piece}");
                assert_eq!(valid, expected, "{bytes:x?} / piece {piece}");
            }
        }
    }

    /// Texts of several blocks at several offsets from a 64-byte boundary, with a bad (or
    /// tricky) sequence placed around block boundaries: one shot, and fused in pieces of
    /// 257-333 bytes, so later pieces start at other offsets and often with a carried code point.
    #[test]
    fn long_texts_at_several_offsets_agree_with_std() {
        let key = [0x5A, 0x01, 0xC3, 0x99];
        let filler = "жé€𝄞a".repeat(60);
        let filler = filler.as_bytes();
        let mut storage = vec![0u8; 1024 + 128];
        let base = storage.as_ptr().align_offset(64);
        for case in tricky_inputs() {
            for at in [
                0, 1, 61, 62, 63, 64, 65, 127, 128, 190, 191, 255, 256, 320, 383, 500,
            ] {
                let mut bytes = filler[..at].to_vec();
                while std::str::from_utf8(&bytes).is_err() {
                    bytes.pop();
                }
                bytes.resize(at, b'-');
                bytes.extend_from_slice(&case);
                bytes.extend_from_slice(&filler[..filler.len() - at.min(200)]);
                while std::str::from_utf8(&bytes[at + case.len()..]).is_err() {
                    bytes.pop();
                }
                let expected = std::str::from_utf8(&bytes).is_ok();
                assert_eq!(validate(&bytes).is_ok(), expected, "{case:x?} at {at}");
                for offset in [0, 1, 2, 3, 5, 31, 62, 63] {
                    let start = base + offset;
                    let buf = &mut storage[start..start + bytes.len()];
                    buf.copy_from_slice(&bytes);
                    assert_eq!(validate(buf).is_ok(), expected, "offset {offset}");
                    for piece in [0, 257, 300, 333] {
                        apply_mask(buf, key, 0);
                        let valid = unmask_in_place(buf, key, piece);
                        assert_eq!(buf, &bytes[..], "unmasking, offset {offset}, piece {piece}");
                        assert_eq!(
                            valid, expected,
                            "{case:x?} at {at}, offset {offset}, piece {piece}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_shot_matches_std() {
        assert!(validate("héllo".as_bytes()).is_ok());
        assert!(validate(b"\xff").is_err());
    }
}
