//! The sequence tag at the front of every fan-out message, and the per-publisher check a
//! receiver runs on it. A tag names the publisher, the message's sequence number from that
//! publisher (from 0) and when the message was due to be sent (nanoseconds since the run's
//! epoch, one clock for the whole generator). Binary messages carry it as 20 little-endian
//! bytes, text messages as 40 lowercase hex digits (so that the message stays UTF-8).
//! This module owns the tag's layout and the loss/duplicate/reorder arithmetic; it must not
//! touch sockets.

use crate::payload::Kind;

/// Bytes of a binary tag: publisher `u32`, sequence `u64`, due time `u64`.
pub const BINARY_TAG: usize = 20;
/// Bytes of a text tag: the same three fields as 8 + 16 + 16 hex digits.
pub const TEXT_TAG: usize = 40;
/// The longest tag.
pub const MAX_TAG: usize = TEXT_TAG;

/// What a message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Which publisher sent it (0-based).
    pub publisher: u32,
    /// Its number among that publisher's messages (from 0).
    pub seq: u64,
    /// When it was due, in nanoseconds since the run's epoch.
    pub due_ns: u64,
}

/// Length of the tag a message of `kind` carries.
pub fn tag_len(kind: Kind) -> usize {
    match kind {
        Kind::Text => TEXT_TAG,
        Kind::Binary => BINARY_TAG,
    }
}

fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (n - 1 - i))) & 0xF) as usize];
    }
}

fn unhex(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d as u64)
    })
}

impl Tag {
    /// Writes the tag into the front of `out` (at least [`tag_len`] bytes).
    pub fn write(&self, kind: Kind, out: &mut [u8]) {
        match kind {
            Kind::Binary => {
                out[..4].copy_from_slice(&self.publisher.to_le_bytes());
                out[4..12].copy_from_slice(&self.seq.to_le_bytes());
                out[12..20].copy_from_slice(&self.due_ns.to_le_bytes());
            }
            Kind::Text => {
                hex(&mut out[..8], self.publisher as u64);
                hex(&mut out[8..24], self.seq);
                hex(&mut out[24..40], self.due_ns);
            }
        }
    }

    /// Reads a tag from the front of `bytes`; `None` if it is not one.
    pub fn read(kind: Kind, bytes: &[u8]) -> Option<Tag> {
        let bytes = bytes.get(..tag_len(kind))?;
        match kind {
            Kind::Binary => {
                let u64_at = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[i..i + 8]);
                    u64::from_le_bytes(b)
                };
                let mut p = [0u8; 4];
                p.copy_from_slice(&bytes[..4]);
                Some(Tag {
                    publisher: u32::from_le_bytes(p),
                    seq: u64_at(4),
                    due_ns: u64_at(12),
                })
            }
            Kind::Text => Some(Tag {
                publisher: u32::try_from(unhex(&bytes[..8])?).ok()?,
                seq: unhex(&bytes[8..24])?,
                due_ns: unhex(&bytes[24..40])?,
            }),
        }
    }
}

/// How a received sequence number fits what came before from its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one.
    InOrder,
    /// Later than the next one: the numbers between are missing (for now).
    Gap(u64),
    /// One seen already.
    Duplicate,
    /// One that was missing and came after later ones.
    Late,
}

/// Bits of history kept per publisher to tell a duplicate from a late message.
const HISTORY: u64 = 64;

/// One receiver's record of one publisher's sequence.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqCheck {
    /// The sequence number expected next.
    next: u64,
    /// Bit `i` set: `next - 1 - i` has arrived.
    seen: u64,
    /// Numbers skipped and not (yet) come late.
    missing: u64,
}

impl SeqCheck {
    /// Records the arrival of `seq`.
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.seen = self.seen << 1 | 1;
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let gap = seq - self.next;
            let shift = gap + 1;
            self.seen = if shift >= HISTORY {
                1
            } else {
                self.seen << shift | 1
            };
            self.next = seq + 1;
            self.missing += gap;
            return Arrival::Gap(gap);
        }
        let back = self.next - 1 - seq;
        if back < HISTORY {
            if self.seen & (1 << back) != 0 {
                return Arrival::Duplicate;
            }
            self.seen |= 1 << back;
        }
        // Older than the history: taken as late (a duplicate that old cannot be told apart).
        self.missing = self.missing.saturating_sub(1);
        Arrival::Late
    }

    /// Messages lost when the publisher sent `published` in all.
    pub fn lost(&self, published: u64) -> u64 {
        self.missing + published.saturating_sub(self.next)
    }

    /// Whether everything up to `published` has arrived or been skipped past.
    pub fn caught_up(&self, published: u64) -> bool {
        self.next >= published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_in_both_kinds() {
        let t = Tag {
            publisher: 7,
            seq: 0x1234_5678_9abc,
            due_ns: u64::MAX - 3,
        };
        for kind in [Kind::Binary, Kind::Text] {
            let mut buf = [0u8; MAX_TAG];
            t.write(kind, &mut buf);
            assert_eq!(Tag::read(kind, &buf[..tag_len(kind)]), Some(t));
            assert_eq!(Tag::read(kind, &buf[..tag_len(kind) - 1]), None);
        }
        let mut text = [0u8; TEXT_TAG];
        t.write(Kind::Text, &mut text);
        assert!(std::str::from_utf8(&text).is_ok());
        assert_eq!(Tag::read(Kind::Text, &[b'z'; TEXT_TAG]), None);
    }

    #[test]
    fn sequence_check_tells_loss_duplicates_and_reordering() {
        let mut c = SeqCheck::default();
        assert_eq!(c.arrive(0), Arrival::InOrder);
        assert_eq!(c.arrive(1), Arrival::InOrder);
        assert_eq!(c.arrive(4), Arrival::Gap(2));
        assert_eq!(c.lost(5), 2);
        assert_eq!(c.arrive(2), Arrival::Late);
        assert_eq!(c.arrive(2), Arrival::Duplicate);
        assert_eq!(c.arrive(4), Arrival::Duplicate);
        assert_eq!(c.lost(5), 1, "3 still missing");
        assert!(c.caught_up(5));
        assert_eq!(c.lost(8), 4, "3, and 5..8 never came");
        assert!(!c.caught_up(8));
        assert_eq!(c.arrive(200), Arrival::Gap(195));
        assert_eq!(c.arrive(3), Arrival::Late, "beyond the history: late");
    }
}
