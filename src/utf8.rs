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
        match from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
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

/// Length of the UTF-8 sequence that `lead` starts. Only called on bytes `simdutf8` already
/// accepted as the start of a valid prefix, so every other value is unreachable in practice and
/// maps to 4, the longest (the next validation then rejects it).
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
                assert_eq!(feed_split(bytes, piece), Err(InvalidUtf8), "{bytes:?} / {piece}");
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

    #[test]
    fn one_shot_matches_std() {
        assert!(validate("héllo".as_bytes()).is_ok());
        assert!(validate(b"\xff").is_err());
    }
}
