//! The RFC 6455 §5.2 frame header: decoding what a peer sent, encoding what we send.
//!
//! Owns the wire layout of headers and the close-code rules. It does not look at payloads (that
//! is `mask` and `utf8`) and does not decide what a frame means for a connection (that is
//! `connection`), so every function here is a pure function over a few bytes.

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// A further fragment of the message in progress.
    Continuation = 0x0,
    /// The first (or only) frame of a UTF-8 text message.
    Text = 0x1,
    /// The first (or only) frame of a binary message.
    Binary = 0x2,
    /// Close frame.
    Close = 0x8,
    /// Ping frame.
    Ping = 0x9,
    /// Pong frame.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a raw 4-bit value, `None` for the reserved values 0x3-0x7 and 0xB-0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// Control frames carry at most this many payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN bit: the last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// The raw opcode (may be reserved: the caller decides what to do with it).
    pub opcode: u8,
    /// The masking key, if the MASK bit was set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Bytes taken by the header itself (2 to 14).
    pub header_len: usize,
}

/// A header that no valid frame can have, whatever follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The 64-bit length has its most significant bit set (RFC 6455 §5.2).
    LengthTooLarge,
}

/// Header length implied by the first two bytes (valid once two bytes are available).
#[inline]
pub fn header_len(second_byte: u8) -> usize {
    let mask = if second_byte & 0x80 != 0 { 4 } else { 0 };
    2 + mask
        + match second_byte & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        }
}

/// Header of a masked frame with a 7-bit length: 2 bytes and the key.
pub const SHORT_MASKED_HEADER_LEN: usize = 6;

/// The frame clients send most, recognised without building a [`FrameHeader`]: FIN, no RSV
/// bits, text or binary, masked, a 7-bit length, and the whole frame in `buf`. Returns its
/// opcode, masking key and total length (header and payload). `None` means "decode it the
/// general way", never "invalid". This is on the per-message path of every small echo, where
/// the general decode and the per-field checks after it were a fifth of the server's own work.
#[inline]
pub fn short_data_frame(buf: &[u8]) -> Option<(OpCode, [u8; 4], usize)> {
    let head: &[u8; SHORT_MASKED_HEADER_LEN] = buf.first_chunk()?;
    // 0x81 / 0x82: FIN | text / binary. 0x80..=0xFD: MASK | 0..=125.
    let opcode = match head[0] {
        0x81 => OpCode::Text,
        0x82 => OpCode::Binary,
        _ => return None,
    };
    if !(0x80..=0xFD).contains(&head[1]) {
        return None;
    }
    let total = SHORT_MASKED_HEADER_LEN + (head[1] & 0x7F) as usize;
    // The key taken as an array compiles to one 4-byte load; built from four bytes, it did not.
    let &[_, _, ref key @ ..] = head;
    (buf.len() >= total).then_some((opcode, *key, total))
}

/// Decodes a header from the start of `buf`. `Ok(None)` means more bytes are needed.
#[inline]
pub fn decode_header(buf: &[u8]) -> Result<Option<FrameHeader>, HeaderError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let header_len = header_len(b1);
    if buf.len() < header_len {
        return Ok(None);
    }
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(len);
            if len >> 63 != 0 {
                return Err(HeaderError::LengthTooLarge);
            }
            (len, 10)
        }
        short => (short as u64, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(key)
    } else {
        None
    };
    debug_assert_eq!(at, header_len);
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        mask,
        payload_len,
        header_len,
    }))
}

/// Encodes a header into `out` and returns its length. Servers pass `mask: None`; the tests and
/// benches use the same function for client frames (the load generator has its own framing
/// code and does not use it).
#[inline]
pub fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut at = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u16::MAX as u64 {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(key) = mask {
        out[at..at + 4].copy_from_slice(&key);
        at += 4;
    }
    at
}

/// Close status codes (RFC 6455 §7.4).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown, idle timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Received a type of data it cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// The connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// Text that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (for example an output backlog over its hard limit).
    pub const POLICY: u16 = 1008;
    /// A frame or message larger than the configured maximum.
    pub const TOO_BIG: u16 = 1009;
    /// The server met an unexpected condition (for example a panicking handler).
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is overloaded: try again later (RFC 6455's registry, 1013).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4 and the IANA registry).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For every first and second byte, and every length of input up to a whole frame:
    /// `short_data_frame` takes exactly the frames it claims, and agrees with `decode_header`.
    #[test]
    fn short_data_frame_agrees_with_the_general_decode() {
        let mut buf = [0u8; SHORT_MASKED_HEADER_LEN + 126];
        buf[2..6].copy_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
        let mut taken = 0;
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                buf[0] = b0;
                buf[1] = b1;
                for have in 0..=buf.len() {
                    let input = &buf[..have];
                    let fast = short_data_frame(input);
                    let general = decode_header(input).ok().flatten();
                    let want = general.and_then(|h| {
                        let opcode = OpCode::from_u8(h.opcode)?;
                        let total = h.header_len + h.payload_len as usize;
                        (h.fin
                            && h.rsv == 0
                            && matches!(opcode, OpCode::Text | OpCode::Binary)
                            && h.header_len == SHORT_MASKED_HEADER_LEN
                            && have >= total)
                            .then_some((opcode, h.mask?, total))
                    });
                    assert_eq!(fast, want, "{b0:#x} {b1:#x}, {have} bytes");
                    taken += usize::from(fast.is_some());
                }
            }
        }
        // Text and binary, lengths 0-125, each with every input length from the whole frame
        // up to the buffer's end.
        let expected: usize = (0..=125).map(|len| 2 * (buf.len() - (6 + len) + 1)).sum();
        assert_eq!(taken, expected);
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc_vectors_decode() {
        let unmasked = hex("81 05 48 65 6c 6c 6f");
        let h = decode_header(&unmasked).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, h.header_len),
            (true, 1, None, 5, 2)
        );

        let masked = hex("81 85 37 fa 21 3d 7f 9f 4d 51 58");
        let h = decode_header(&masked).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.header_len, 6);

        let first = decode_header(&hex("01 03 48 65 6c")).unwrap().unwrap();
        assert_eq!((first.fin, first.opcode), (false, 1));
        let last = decode_header(&hex("80 02 6c 6f")).unwrap().unwrap();
        assert_eq!((last.fin, last.opcode), (true, 0));

        let ping = decode_header(&hex("89 05 48 65 6c 6c 6f"))
            .unwrap()
            .unwrap();
        assert_eq!(ping.opcode, 9);
        let pong = decode_header(&hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58"))
            .unwrap()
            .unwrap();
        assert_eq!(pong.opcode, 0xA);

        let h = decode_header(&hex("82 7e 01 00")).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (256, 4));
        let h = decode_header(&hex("82 7f 00 00 00 00 00 01 00 00"))
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
    }

    #[test]
    fn rfc_vectors_encode() {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut out, true, OpCode::Text, None, 5);
        assert_eq!(&out[..n], &hex("81 05")[..]);
        let n = encode_header(&mut out, true, OpCode::Binary, None, 256);
        assert_eq!(&out[..n], &hex("82 7e 01 00")[..]);
        let n = encode_header(&mut out, true, OpCode::Binary, None, 65536);
        assert_eq!(&out[..n], &hex("82 7f 00 00 00 00 00 01 00 00")[..]);
        let n = encode_header(
            &mut out,
            true,
            OpCode::Text,
            Some([0x37, 0xfa, 0x21, 0x3d]),
            5,
        );
        assert_eq!(&out[..n], &hex("81 85 37 fa 21 3d")[..]);
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let full = hex("82 ff 00 00 00 00 00 01 00 00 01 02 03 04");
        for len in 0..full.len() {
            assert_eq!(decode_header(&full[..len]), Ok(None), "prefix {len}");
        }
        assert!(decode_header(&full).unwrap().is_some());
    }

    #[test]
    fn length_with_top_bit_is_refused() {
        let bad = hex("82 ff 80 00 00 00 00 00 00 00 01 02 03 04");
        assert_eq!(decode_header(&bad), Err(HeaderError::LengthTooLarge));
    }

    #[test]
    fn close_codes_follow_the_registry() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn reserved_opcodes_have_no_name() {
        for raw in 0u8..16 {
            let known = OpCode::from_u8(raw).is_some();
            assert_eq!(known, matches!(raw, 0 | 1 | 2 | 8 | 9 | 10), "{raw}");
        }
    }
}
