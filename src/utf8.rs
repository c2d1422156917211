//! Incremental, fail-fast UTF-8 validation for text messages that arrive in pieces.
//!
//! Owns the carry of an unfinished code point (at most 3 bytes) between pieces. The bulk of every
//! piece is checked by `simdutf8`; this module only stitches piece boundaries. It must fail as
//! soon as a byte sequence can no longer become valid, not at the end of the message, because
//! RFC 6455 §8.1 tells the endpoint to fail the connection on invalid text as soon as it sees it.

use simdutf8::compat::from_utf8;

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
        if !is_ascii(bulk) && simdutf8::basic::from_utf8(bulk).is_err() {
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

/// Whether every byte is ASCII, stopping at the first 256-byte block that is not.
///
/// A cheaper first pass than the full validator for the commonest text (JSON and the like):
/// at 4 KiB pieces, `simdutf8`'s fixed cost per call (dispatch through a function pointer,
/// set-up and final reduction) measured about 20% of its time on ASCII.
#[inline]
fn is_ascii(bytes: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if bytes.len() >= 256 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just checked to support AVX2.
            return unsafe { x86::is_ascii_avx2(bytes) };
        }
    }
    bytes.is_ascii()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256};

    /// [`super::is_ascii`] in 256-byte blocks of eight 32-byte vectors.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn is_ascii_avx2(bytes: &[u8]) -> bool {
        let mut blocks = bytes.chunks_exact(256);
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
                return false;
            }
        }
        blocks.remainder().is_ascii()
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
    simdutf8::basic::from_utf8(bytes).map_err(|_| InvalidUtf8)
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
    fn ascii_check_finds_a_high_byte_anywhere() {
        let mut bytes = vec![b'a'; 1000];
        assert!(is_ascii(&bytes));
        for at in [0, 1, 127, 128, 255, 256, 511, 900, 999] {
            bytes[at] = 0xC3;
            assert!(!is_ascii(&bytes), "at {at}");
            assert!(!is_ascii(&bytes[at..]), "from {at}");
            bytes[at] = b'a';
        }
    }

    #[test]
    fn one_shot_matches_std() {
        assert!(validate("héllo".as_bytes()).is_ok());
        assert!(validate(b"\xff").is_err());
    }
}
