//! Message contents and echo checking. Every message is a per-message tag (the sequence number
//! in ASCII hex, up to 8 bytes) followed by a body shared by all messages of a run, so a
//! reordered, duplicated or corrupted echo is caught without storing each message. Text bodies
//! are valid UTF-8 with multi-byte characters whenever the size allows; binary bodies are
//! pseudo-random bytes (not valid UTF-8). A [`Mix`] is a weighted set of such shapes: each
//! message picks one, and its echo is checked against the shape it was sent with.

use serde::Serialize;

/// Text or binary messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Opcode 0x1, UTF-8 payload.
    Text,
    /// Opcode 0x2, arbitrary bytes.
    Binary,
}

impl Kind {
    /// The frame opcode.
    pub fn opcode(self) -> u8 {
        match self {
            Kind::Text => crate::frame::OP_TEXT,
            Kind::Binary => crate::frame::OP_BINARY,
        }
    }
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "binary",
        }
    }
}

/// Bytes of the per-message tag (fewer when the message is smaller).
pub const TAG_LEN: usize = 8;

/// Characters cycled through text bodies: 1-, 2-, 3- and 4-byte UTF-8 sequences.
const TEXT_CHARS: [&str; 8] = ["a", "é", "b", "€", "c", "𝄞", "d", "ж"];

/// The shape of every message of a run.
#[derive(Debug, Clone)]
pub struct Payload {
    size: usize,
    kind: Kind,
    /// The full message with a zero tag; bytes `tag_len..` are the shared body.
    template: Vec<u8>,
}

impl Payload {
    /// Messages of exactly `size` bytes of `kind`.
    pub fn new(size: usize, kind: Kind) -> Self {
        let tag_len = size.min(TAG_LEN);
        let mut t = Vec::with_capacity(size);
        t.resize(tag_len, b'0');
        match kind {
            Kind::Text => {
                let mut i = 0;
                while t.len() < size {
                    let c = TEXT_CHARS[i % TEXT_CHARS.len()].as_bytes();
                    if t.len() + c.len() <= size {
                        t.extend_from_slice(c);
                    } else {
                        t.push(b'.');
                    }
                    i += 1;
                }
            }
            Kind::Binary => {
                let mut x: u32 = 0x9E37_79B9;
                while t.len() < size {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    t.push((x >> 24) as u8);
                }
            }
        }
        Payload {
            size,
            kind,
            template: t,
        }
    }

    /// Message size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Text or binary.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// Length of the tag part.
    pub fn tag_len(&self) -> usize {
        self.size.min(TAG_LEN)
    }

    /// The tag of message `seq` (ASCII hex, always valid UTF-8).
    pub fn tag(&self, seq: u64) -> [u8; TAG_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; TAG_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((seq >> (4 * (TAG_LEN - 1 - i))) & 0xF) as usize];
        }
        out
    }

    /// The body shared by all messages (after the tag).
    pub fn body(&self) -> &[u8] {
        &self.template[self.tag_len()..]
    }

    /// The complete message `seq` (for tests and small messages).
    pub fn message(&self, seq: u64) -> Vec<u8> {
        let mut m = self.template.clone();
        let tl = self.tag_len();
        m[..tl].copy_from_slice(&self.tag(seq)[..tl]);
        m
    }

    /// Does `chunk`, found at byte `offset` of echoed message `seq`, match what was sent?
    pub fn matches(&self, seq: u64, offset: usize, chunk: &[u8]) -> bool {
        let end = match offset.checked_add(chunk.len()) {
            Some(e) if e <= self.size => e,
            _ => return false,
        };
        let tl = self.tag_len();
        let mut c = chunk;
        let mut off = offset;
        if off < tl {
            let tag = self.tag(seq);
            let n = (tl - off).min(c.len());
            if c[..n] != tag[off..off + n] {
                return false;
            }
            c = &c[n..];
            off += n;
        }
        c.is_empty() || c == &self.template[off..end]
    }
}

/// One shape of a mix and its weight.
#[derive(Debug, Clone)]
pub struct MixEntry {
    /// Size and kind of the messages.
    pub payload: Payload,
    /// Relative share of the messages sent.
    pub weight: u32,
}

/// A weighted set of message shapes (sizes × kinds); a single shape is a mix of one.
#[derive(Debug, Clone)]
pub struct Mix {
    entries: Vec<MixEntry>,
}

impl Mix {
    /// Messages of one size and kind.
    pub fn single(size: usize, kind: Kind) -> Mix {
        Mix {
            entries: vec![MixEntry {
                payload: Payload::new(size, kind),
                weight: 1,
            }],
        }
    }

    /// Every size with every kind; a pair's weight is the product of the two weights, so sizes
    /// and kinds are drawn independently. Zero weights drop the entry; at least one must stay.
    pub fn new(sizes: &[(usize, u32)], kinds: &[(Kind, u32)]) -> Result<Mix, String> {
        let mut entries = Vec::new();
        for &(size, ws) in sizes {
            for &(kind, wk) in kinds {
                let weight = ws
                    .checked_mul(wk)
                    .ok_or_else(|| "mix weights too large".to_string())?;
                if weight > 0
                    && !entries
                        .iter()
                        .any(|e: &MixEntry| e.payload.size() == size && e.payload.kind() == kind)
                {
                    entries.push(MixEntry {
                        payload: Payload::new(size, kind),
                        weight,
                    });
                }
            }
        }
        if entries.is_empty() {
            return Err("the mix is empty (every weight is 0)".into());
        }
        if entries.len() > u16::MAX as usize {
            return Err("too many shapes in the mix".into());
        }
        Ok(Mix { entries })
    }

    /// The shapes and their weights.
    pub fn entries(&self) -> &[MixEntry] {
        &self.entries
    }
    /// The largest message size.
    pub fn max_size(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.payload.size())
            .max()
            .unwrap_or(0)
    }
    /// Expected message size, weighted.
    pub fn mean_size(&self) -> f64 {
        let w: f64 = self.entries.iter().map(|e| e.weight as f64).sum();
        self.entries
            .iter()
            .map(|e| e.payload.size() as f64 * e.weight as f64)
            .sum::<f64>()
            / w.max(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_text_is_utf8() {
        for size in [0, 1, 7, 8, 9, 10, 11, 20, 100, 1024, 16 * 1024, 1 << 20] {
            for kind in [Kind::Text, Kind::Binary] {
                let p = Payload::new(size, kind);
                for seq in [0, 1, 0xdead_beef] {
                    let m = p.message(seq);
                    assert_eq!(m.len(), size);
                    if kind == Kind::Text {
                        assert!(std::str::from_utf8(&m).is_ok(), "size {size}");
                    }
                }
            }
        }
        let t = Payload::new(20, Kind::Text).message(3);
        assert!(
            t.iter().any(|&b| b >= 0x80),
            "20-byte text has multi-byte chars"
        );
        let t = String::from_utf8(Payload::new(64, Kind::Text).message(3)).expect("utf8");
        assert!(t.contains('€') && t.contains('𝄞'));
        let b = Payload::new(64, Kind::Binary).message(1);
        assert!(std::str::from_utf8(&b).is_err(), "binary body is not UTF-8");
    }

    #[test]
    fn echo_check_in_pieces() {
        let p = Payload::new(100, Kind::Text);
        let m = p.message(42);
        for split in 0..=100 {
            assert!(p.matches(42, 0, &m[..split]));
            assert!(p.matches(42, split, &m[split..]));
        }
        assert!(!p.matches(41, 0, &m), "another message's tag");
        let mut bad = m.clone();
        bad[50] ^= 1;
        assert!(!p.matches(42, 0, &bad));
        assert!(!p.matches(42, 1, &m), "too long at that offset");
        assert!(p.matches(42, 100, &[]));
        let e = Payload::new(0, Kind::Binary);
        assert!(e.matches(0, 0, &[]));
        assert!(!e.matches(0, 0, b"x"));
    }

    #[test]
    fn mixes_cross_sizes_and_kinds() {
        let m = Mix::new(
            &[(20, 80), (1024, 15), (0, 0)],
            &[(Kind::Text, 1), (Kind::Binary, 3)],
        )
        .expect("mix");
        let e = m.entries();
        assert_eq!(e.len(), 4, "the 0-weight size is dropped");
        assert_eq!((e[0].payload.size(), e[0].payload.kind()), (20, Kind::Text));
        assert_eq!(e[1].weight, 240);
        assert_eq!(m.max_size(), 1024);
        assert!((m.mean_size() - (20.0 * 320.0 + 1024.0 * 60.0) / 380.0).abs() < 1e-9);
        assert!(Mix::new(&[(20, 0)], &[(Kind::Text, 1)]).is_err());
    }

    #[test]
    fn tags_differ_per_message() {
        let p = Payload::new(8, Kind::Binary);
        assert_eq!(&p.tag(0x1f), b"0000001f");
        assert_ne!(p.message(1), p.message(2));
    }
}
