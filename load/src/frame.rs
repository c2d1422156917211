//! WebSocket frames as the client sees them: building masked client frames into an output
//! buffer (RFC 6455 §5.2/§5.3) and incrementally parsing the server's unmasked replies, including
//! the 126 (16-bit) and 127 (64-bit) length forms, without copying data payloads.

use std::fmt;

use crate::payload::TAG_LEN;

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// XORs `buf` with the 4-byte `key`, where `buf[0]` sits at offset `phase` of the masked
/// payload (so a payload can be masked in pieces). Works a u64 at a time.
pub fn mask_in_place(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let mut k = [0u8; 8];
    for (i, b) in k.iter_mut().enumerate() {
        *b = key[(phase + i) % 4];
    }
    let word = u64::from_ne_bytes(k);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i];
    }
}

/// Longest client frame header: 2 bytes, a 64-bit length and the key.
const MAX_HEADER_LEN: usize = 14;

/// Writes the header of a masked client frame with FIN set to the front of `head` (at least
/// [`MAX_HEADER_LEN`] bytes); returns its length. Built on the stack, so a frame costs one
/// `extend` rather than a push per byte.
fn encode_header(head: &mut [u8], opcode: u8, len: usize, key: [u8; 4]) -> usize {
    head[0] = 0x80 | (opcode & 0x0F);
    let at = if len < 126 {
        head[1] = 0x80 | len as u8;
        2
    } else if len <= u16::MAX as usize {
        head[1] = 0x80 | 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 0x80 | 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    head[at..at + 4].copy_from_slice(&key);
    at + 4
}

/// Appends the first `len` bytes of `bytes`. Copying the whole fixed-size array and cutting it
/// back is a few register moves, where a copy of a run-time length would be a call to
/// `memcpy`: this is on the generator's per-message path.
#[inline]
pub fn push_prefix<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let at = out.len();
    out.extend_from_slice(bytes);
    out.truncate(at + len.min(N));
}

/// Appends a frame header for a masked client frame with FIN set.
pub fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, key: [u8; 4]) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut head, opcode, len, key);
    out.extend_from_slice(&head[..n]);
}

/// Appends one complete masked client frame (FIN set) whose payload is the concatenation of
/// `parts` (for example a per-message tag and a shared body).
pub fn push_masked_frame(out: &mut Vec<u8>, opcode: u8, parts: &[&[u8]], key: [u8; 4]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + 14);
    push_header(out, opcode, len, key);
    let start = out.len();
    for p in parts {
        out.extend_from_slice(p);
    }
    mask_in_place(&mut out[start..], key, 0);
}

/// A message body shared by every message of a run, masked in advance under a few random
/// keys, so that sending a message costs what the raw TCP ceiling's generator pays (one copy
/// of the body) instead of a copy plus a masking pass. The server cannot tell: every frame
/// still carries a key, drawn per message from the set, and must be unmasked in full.
/// Without this the generator, not the server, is what a large-message WebSocket run
/// measures, and the raw ceiling (which masks nothing) is not a like-for-like bound.
#[derive(Debug)]
pub struct MaskedBodies {
    /// (key, the key repeated over 8 bytes for the tag, body masked with the key, the body's
    /// first byte at key phase `phase`).
    sets: Vec<([u8; 4], u64, Vec<u8>)>,
    /// Key phase of the body's first byte (the length of the tag before it).
    phase: usize,
}

/// Bytes of pre-masked bodies kept at most (fewer keys for larger bodies, at least one). Small
/// enough to stay in cache: copying each 1 MiB message from one of 16 different bodies
/// measured about 45 µs more per message than copying from one, as the raw generator does.
const MASKED_BODIES_BUDGET: usize = 1 << 20;

/// Most keys drawn for a run (a power of two).
const MASKED_BODIES_KEYS: usize = 16;

impl MaskedBodies {
    /// Masks `body`, which follows `phase` bytes of per-message tag (at most [`TAG_LEN`]),
    /// under keys from `next_key`.
    pub fn new(body: &[u8], phase: usize, mut next_key: impl FnMut() -> [u8; 4]) -> Self {
        assert!(phase <= TAG_LEN, "tag of {phase} bytes");
        let fit = (MASKED_BODIES_BUDGET / body.len().max(1)).clamp(1, MASKED_BODIES_KEYS);
        // A power of two, so picking a key is a mask rather than a division.
        let keys = 1usize << fit.ilog2();
        let sets = (0..keys)
            .map(|_| {
                let key = next_key();
                let mut masked = body.to_vec();
                mask_in_place(&mut masked, key, phase);
                let mut key8 = [0u8; 8];
                mask_in_place(&mut key8, key, 0);
                (key, u64::from_ne_bytes(key8), masked)
            })
            .collect();
        MaskedBodies { sets, phase }
    }

    /// Appends one masked frame (FIN set) whose payload is the first `phase` bytes of `tag`
    /// followed by the body, under the key numbered `pick` (modulo the number of keys). The
    /// header and the masked tag go out in one `extend`, the body in a second: this runs once
    /// per message sent.
    pub fn push_frame(&self, out: &mut Vec<u8>, opcode: u8, tag: &[u8; TAG_LEN], pick: u64) {
        let (key, key8, body) = &self.sets[pick as usize & (self.sets.len() - 1)];
        let tag_len = self.phase;
        let mut head = [0u8; MAX_HEADER_LEN + TAG_LEN];
        let n = encode_header(&mut head, opcode, tag_len + body.len(), *key);
        // The tag starts at key phase 0: mask it as one word.
        let masked = u64::from_ne_bytes(*tag) ^ key8;
        head[n..n + TAG_LEN].copy_from_slice(&masked.to_ne_bytes());
        out.reserve(head.len() + body.len());
        push_prefix(out, &head, n + tag_len);
        out.extend_from_slice(body);
    }
}

/// Why a server frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The server masked a frame (servers must not, §5.1).
    Masked,
    /// RSV bits set without a negotiated extension.
    Reserved,
    /// An opcode from the reserved ranges.
    BadOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// Continuation without a message, or a new message inside a fragmented one.
    BadContinuation,
    /// A 64-bit length with the most significant bit set.
    BadLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Masked => write!(f, "server frame is masked"),
            FrameError::Reserved => write!(f, "RSV bits set"),
            FrameError::BadOpcode(o) => write!(f, "reserved opcode {o:#x}"),
            FrameError::BadControl => write!(f, "fragmented or oversized control frame"),
            FrameError::BadContinuation => write!(f, "unexpected continuation state"),
            FrameError::BadLength => write!(f, "64-bit length with MSB set"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One step of parsed server output.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A piece of a data message's payload. `start` marks the first piece of a message (with its
    /// opcode), `end` the last one; a zero-length message is one piece with both set.
    Data {
        /// Opcode of the message (text or binary).
        opcode: u8,
        /// First piece of the message.
        start: bool,
        /// Last piece of the message.
        end: bool,
        /// The bytes, borrowed from the input.
        payload: &'a [u8],
    },
    /// A complete control frame.
    Control {
        /// Close, ping or pong.
        opcode: u8,
        /// Its payload (at most 125 bytes).
        payload: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Payload,
}

/// Incremental parser for unmasked server frames. Feed it bytes with [`FrameParser::next`]
/// until the input is used up; data payloads are handed out as borrowed slices.
#[derive(Debug)]
pub struct FrameParser {
    state: State,
    hdr: [u8; 14],
    hdr_len: usize,
    remaining: u64,
    opcode: u8,
    fin: bool,
    msg_opcode: u8,
    in_message: bool,
    msg_fresh: bool,
    ctrl: Vec<u8>,
    /// RSV1 is allowed on a message's first frame (permessage-deflate was agreed).
    allow_rsv1: bool,
    /// The current message's first frame had RSV1 set (it is compressed).
    msg_compressed: bool,
}

impl Default for FrameParser {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameParser {
    /// A parser waiting for the first frame header.
    pub fn new() -> Self {
        FrameParser {
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            remaining: 0,
            opcode: 0,
            fin: false,
            msg_opcode: 0,
            in_message: false,
            msg_fresh: false,
            ctrl: Vec::new(),
            allow_rsv1: false,
            msg_compressed: false,
        }
    }

    /// Accepts RSV1 on the first frame of a message from now on (permessage-deflate).
    pub fn allow_compressed(&mut self) {
        self.allow_rsv1 = true;
    }

    /// Whether the current (or last) message had RSV1 on its first frame.
    pub fn compressed(&self) -> bool {
        self.msg_compressed
    }

    /// The common case, taken before [`FrameParser::next`]: a whole unfragmented text or
    /// binary message with a 7- or 16-bit length at the front of `data`, between frames.
    /// Returns the bytes it spans, its opcode and its payload; the parser's state is unchanged
    /// (it is still between frames). `None` means "use `next`", not "invalid".
    #[inline]
    pub fn whole_message<'a>(&self, data: &'a [u8]) -> Option<(usize, u8, &'a [u8])> {
        if self.state != State::Header || self.hdr_len != 0 || self.in_message {
            return None;
        }
        // 0x81 / 0x82: FIN, no RSV bits, text or binary. A second byte below 0x80 is unmasked.
        let (hdr, len) = match *data {
            [0x81 | 0x82, b1, ..] if b1 < 126 => (2, b1 as usize),
            [0x81 | 0x82, 126, hi, lo, ..] => (4, u16::from_be_bytes([hi, lo]) as usize),
            _ => return None,
        };
        let payload = data.get(hdr..hdr + len)?;
        Some((hdr + len, data[0] & 0x0F, payload))
    }

    /// Length of the header once its first two bytes are known.
    fn header_len(b1: u8) -> usize {
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
    }

    /// Consumes bytes from `data`; returns how many were used and at most one event.
    /// Call again with the rest until it is empty. `(0, None)` never happens for non-empty input.
    /// A frame whose header and payload are both in `data` takes one call: this runs once per
    /// echoed message, and the generator must stay cheaper than the servers it measures.
    pub fn next<'a>(&mut self, data: &'a [u8]) -> Result<(usize, Option<Event<'a>>), FrameError> {
        if self.state == State::Payload {
            return Ok(self.payload(data));
        }
        let whole_header = match data {
            [_, b1, ..] if self.hdr_len == 0 => Some(Self::header_len(*b1)),
            _ => None,
        }
        .filter(|&need| need <= data.len());
        let used = if let Some(need) = whole_header {
            // The whole header is in the input: read it where it lies.
            if let Some(ev) = self.finish_header(&data[..need])? {
                return Ok((need, Some(ev)));
            }
            need
        } else {
            // Gather the header across reads.
            let mut used = 0;
            let need = loop {
                let need = if self.hdr_len < 2 {
                    2
                } else {
                    Self::header_len(self.hdr[1])
                };
                if self.hdr_len >= need {
                    break need;
                }
                if used == data.len() {
                    return Ok((used, None));
                }
                let take = (need - self.hdr_len).min(data.len() - used);
                self.hdr[self.hdr_len..self.hdr_len + take]
                    .copy_from_slice(&data[used..used + take]);
                self.hdr_len += take;
                used += take;
            };
            let hdr = self.hdr;
            if let Some(ev) = self.finish_header(&hdr[..need])? {
                return Ok((used, Some(ev)));
            }
            used
        };
        // A payload follows: hand out what of it has arrived in this same call.
        if used == data.len() {
            return Ok((used, None));
        }
        let (n, ev) = self.payload(&data[used..]);
        Ok((used + n, ev))
    }

    /// Takes payload bytes of the current frame from the front of `data`.
    fn payload<'a>(&mut self, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let take = (self.remaining.min(data.len() as u64)) as usize;
        self.remaining -= take as u64;
        let done = self.remaining == 0;
        if done {
            self.state = State::Header;
        }
        if self.opcode >= 0x8 {
            self.ctrl.extend_from_slice(&data[..take]);
            if done {
                let payload = std::mem::take(&mut self.ctrl);
                return (
                    take,
                    Some(Event::Control {
                        opcode: self.opcode,
                        payload,
                    }),
                );
            }
            return (take, None);
        }
        let start = self.msg_fresh;
        self.msg_fresh = false;
        let end = done && self.fin;
        if end {
            self.in_message = false;
        }
        (
            take,
            Some(Event::Data {
                opcode: self.msg_opcode,
                start,
                end,
                payload: &data[..take],
            }),
        )
    }

    /// Checks a complete header `h` and moves to its payload; a frame with no payload is
    /// reported at once.
    fn finish_header(&mut self, h: &[u8]) -> Result<Option<Event<'static>>, FrameError> {
        self.hdr_len = 0;
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        if h[0] & 0x30 != 0
            || (rsv1 && !(self.allow_rsv1 && matches!(h[0] & 0x0F, OP_TEXT | OP_BINARY)))
        {
            return Err(FrameError::Reserved);
        }
        if h[1] & 0x80 != 0 {
            return Err(FrameError::Masked);
        }
        let opcode = h[0] & 0x0F;
        let len = match h[1] & 0x7F {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let l = u64::from_be_bytes(b);
                if l >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                l
            }
            l => l as u64,
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || len > 125 {
                    return Err(FrameError::BadControl);
                }
            }
            OP_CONT => {
                if !self.in_message {
                    return Err(FrameError::BadContinuation);
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.in_message {
                    return Err(FrameError::BadContinuation);
                }
                self.in_message = true;
                self.msg_fresh = true;
                self.msg_opcode = opcode;
                self.msg_compressed = rsv1;
            }
            o => return Err(FrameError::BadOpcode(o)),
        }
        self.opcode = opcode;
        self.fin = fin;
        self.remaining = len;
        if len > 0 {
            self.state = State::Payload;
            return Ok(None);
        }
        // Zero-length frame: report it right away.
        if opcode >= 0x8 {
            return Ok(Some(Event::Control {
                opcode,
                payload: Vec::new(),
            }));
        }
        let start = self.msg_fresh;
        self.msg_fresh = false;
        if fin {
            self.in_message = false;
        }
        Ok(Some(Event::Data {
            opcode: self.msg_opcode,
            start,
            end: fin,
            payload: &[],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8]) -> Vec<u8> {
        // Test helper: decode one masked client frame back to its payload.
        let b1 = frame[1] & 0x7F;
        let (len, mut pos) = match b1 {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&frame[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            l => (l as usize, 2),
        };
        let key = [frame[pos], frame[pos + 1], frame[pos + 2], frame[pos + 3]];
        pos += 4;
        let mut p = frame[pos..pos + len].to_vec();
        mask_in_place(&mut p, key, 0);
        p
    }

    #[test]
    fn rfc_masked_hello_vector() {
        let mut out = Vec::new();
        push_masked_frame(&mut out, OP_TEXT, &[b"Hello"], [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn masking_matches_byte_loop_at_every_phase_and_length() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            for phase in 0..4 {
                let src: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(31)).collect();
                let mut fast = src.clone();
                mask_in_place(&mut fast, key, phase);
                let slow: Vec<u8> = src
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[(i + phase) % 4])
                    .collect();
                assert_eq!(fast, slow, "len {len} phase {phase}");
            }
        }
    }

    #[test]
    fn pre_masked_bodies_give_the_same_frames_as_masking_each_message() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        for tag_len in 0..=8 {
            let full_tag = b"0000abcd";
            let tag = &full_tag[..tag_len];
            let mut keys = [[1, 2, 3, 4], [9, 8, 7, 6]].into_iter().cycle();
            let bodies = MaskedBodies::new(&body, tag_len, || keys.next().unwrap());
            for (pick, key) in [(0, [1, 2, 3, 4]), (1, [9, 8, 7, 6]), (3, [9, 8, 7, 6])] {
                let mut fast = Vec::new();
                bodies.push_frame(&mut fast, OP_BINARY, full_tag, pick);
                let mut slow = Vec::new();
                push_masked_frame(&mut slow, OP_BINARY, &[tag, &body], key);
                assert_eq!(fast, slow, "tag {tag_len}, pick {pick}");
            }
        }
    }

    #[test]
    fn parts_are_masked_as_one_payload() {
        let key = [1, 2, 3, 4];
        let mut a = Vec::new();
        push_masked_frame(&mut a, OP_BINARY, &[b"abc", b"defghij"], key);
        let mut b = Vec::new();
        push_masked_frame(&mut b, OP_BINARY, &[b"abcdefghij"], key);
        assert_eq!(a, b);
        assert_eq!(unmask(&a), b"abcdefghij");
    }

    #[test]
    fn header_length_forms() {
        let key = [9, 8, 7, 6];
        for (len, hdr_len, b1) in [
            (0usize, 2usize, 0x80u8),
            (125, 2, 0x80 | 125),
            (126, 4, 0x80 | 126),
            (65535, 4, 0x80 | 126),
            (65536, 10, 0x80 | 127),
        ] {
            let payload = vec![b'x'; len];
            let mut out = Vec::new();
            push_masked_frame(&mut out, OP_BINARY, &[&payload], key);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1], b1);
            assert_eq!(out.len(), hdr_len + 4 + len);
            assert_eq!(unmask(&out), payload);
        }
    }

    /// Feeds `bytes` in pieces of `step` and collects (opcode, start, end, payload) per message.
    fn parse_all(bytes: &[u8], step: usize) -> Result<Vec<(u8, Vec<u8>)>, FrameError> {
        let mut p = FrameParser::new();
        let mut msgs = Vec::new();
        let mut cur: Option<(u8, Vec<u8>)> = None;
        for chunk in bytes.chunks(step.max(1)) {
            let mut pos = 0;
            while pos < chunk.len() {
                let (n, ev) = p.next(&chunk[pos..])?;
                pos += n;
                match ev {
                    Some(Event::Data {
                        opcode,
                        start,
                        end,
                        payload,
                    }) => {
                        if start {
                            assert!(cur.is_none());
                            cur = Some((opcode, Vec::new()));
                        }
                        let c = cur.as_mut().expect("data without start");
                        c.1.extend_from_slice(payload);
                        if end {
                            msgs.extend(cur.take());
                        }
                    }
                    Some(Event::Control { opcode, payload }) => msgs.push((opcode, payload)),
                    None => assert!(n > 0 || pos == chunk.len()),
                }
            }
        }
        Ok(msgs)
    }

    #[test]
    fn parses_rfc_vectors_in_any_split() {
        let mut bytes = vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        bytes.extend_from_slice(&[
            0x01, 0x03, 0x48, 0x65, 0x6c, 0x89, 0x00, 0x80, 0x02, 0x6c, 0x6f,
        ]);
        bytes.extend_from_slice(&[0x82, 0x7e, 0x01, 0x00]);
        bytes.extend(std::iter::repeat(7u8).take(256));
        bytes.extend_from_slice(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        bytes.extend(std::iter::repeat(9u8).take(65536));
        bytes.extend_from_slice(&[0x82, 0x00]);
        for step in [1, 2, 3, 5, 7, 100, 1 << 20] {
            let msgs = parse_all(&bytes, step).expect("valid stream");
            assert_eq!(msgs.len(), 6, "step {step}");
            assert_eq!(msgs[0], (OP_TEXT, b"Hello".to_vec()));
            // The ping arrives between the fragments, so it completes first.
            assert_eq!(msgs[1], (OP_PING, Vec::new()));
            assert_eq!(msgs[2], (OP_TEXT, b"Hello".to_vec()));
            assert_eq!(msgs[3], (OP_BINARY, vec![7u8; 256]));
            assert_eq!(msgs[4].1.len(), 65536);
            assert_eq!(msgs[5], (OP_BINARY, Vec::new()));
        }
        // The trailing empty binary message.
        let mut p = FrameParser::new();
        let (n, ev) = p.next(&[0x82, 0x00]).expect("ok");
        assert_eq!(n, 2);
        assert_eq!(
            ev,
            Some(Event::Data {
                opcode: OP_BINARY,
                start: true,
                end: true,
                payload: &[]
            })
        );
    }

    #[test]
    fn whole_message_takes_only_complete_unfragmented_data_frames() {
        let mut p = FrameParser::new();
        assert_eq!(
            p.whole_message(&[0x81, 2, b'h', b'i', 0x82]),
            Some((4, OP_TEXT, &b"hi"[..]))
        );
        let mut long = vec![0x82, 126, 1, 0];
        long.extend_from_slice(&[7; 256]);
        assert_eq!(p.whole_message(&long), Some((260, OP_BINARY, &long[4..])));
        for not_here in [
            &[0x81, 2, b'h'][..],                    // payload not all here
            &[0x81],                                 // header not all here
            &[0x82, 126, 1],                         // extended length not all here
            &[0x01, 1, b'x'],                        // not FIN: a fragment
            &[0x89, 0],                              // control frame
            &[0x81, 0x81, 1, 2, 3, 4, 0],            // masked (the parser refuses it)
            &[0xC1, 1, b'x'],                        // RSV1
            &[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 0], // 64-bit length form
        ] {
            assert_eq!(p.whole_message(not_here), None, "{not_here:?}");
        }
        // Between a fragment and its continuation, or inside a header, it stays out of the way.
        let (n, _) = p.next(&[0x01, 1, b'a']).expect("fragment");
        assert_eq!(n, 3);
        assert_eq!(p.whole_message(&[0x81, 1, b'b']), None);
        let mut q = FrameParser::new();
        assert_eq!(q.next(&[0x81]).expect("half a header"), (1, None));
        assert_eq!(q.whole_message(&[0x81, 1, b'b']), None);
    }

    #[test]
    fn rsv1_only_when_allowed_and_only_on_a_first_data_frame() {
        let mut p = FrameParser::new();
        assert_eq!(p.next(&[0xC1, 1, b'x']), Err(FrameError::Reserved));
        let mut p = FrameParser::new();
        p.allow_compressed();
        let (_, ev) = p.next(&[0xC1, 1, b'x']).expect("compressed text");
        assert!(matches!(ev, Some(Event::Data { end: true, .. })));
        assert!(p.compressed());
        p.next(&[0x81, 1, b'y']).expect("plain text");
        assert!(!p.compressed());
        // Not on a continuation, not on a control frame, and never RSV2 or RSV3.
        p.next(&[0x41, 1, b'a']).expect("first fragment");
        assert_eq!(p.next(&[0xC0, 1, b'b']), Err(FrameError::Reserved));
        for bad in [&[0xC9, 0][..], &[0xA1, 0], &[0x91, 0]] {
            let mut q = FrameParser::new();
            q.allow_compressed();
            assert_eq!(q.next(bad), Err(FrameError::Reserved), "{bad:?}");
        }
    }

    #[test]
    fn a_frame_that_has_fully_arrived_takes_one_call() {
        let mut bytes = Vec::new();
        for i in 0..50u8 {
            bytes.extend_from_slice(&[0x81, 3, b'a', b'b', i]);
        }
        bytes.extend_from_slice(&[0x82, 126, 0, 200]);
        bytes.extend_from_slice(&[5u8; 200]);
        let mut p = FrameParser::new();
        let mut pos = 0;
        let mut calls = 0;
        while pos < bytes.len() {
            let (n, ev) = p.next(&bytes[pos..]).expect("valid");
            calls += 1;
            match ev {
                Some(Event::Data {
                    start: true,
                    end: true,
                    payload,
                    ..
                }) => assert_eq!(n, payload.len() + if payload.len() < 126 { 2 } else { 4 }),
                other => panic!("call {calls}: {other:?}"),
            }
            pos += n;
        }
        assert_eq!(calls, 51);
    }

    #[test]
    fn rejects_bad_server_frames() {
        let cases: [(&[u8], FrameError); 6] = [
            (&[0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0], FrameError::Masked),
            (&[0xC1, 0x00], FrameError::Reserved),
            (&[0x83, 0x00], FrameError::BadOpcode(3)),
            (&[0x09, 0x00], FrameError::BadControl),
            (&[0x80, 0x00], FrameError::BadContinuation),
            (
                &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
                FrameError::BadLength,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_all(bytes, 1), Err(want));
        }
    }
}
