//! The wire pieces every test harness shares, built here independently of the server's own
//! encoder: the upgrade request, masked client frames, and a pure parser for server frames and
//! HTTP response heads over a byte buffer.
#![allow(dead_code)]

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upgrade request for `path` with the headers in `extra` (each ending in `\r\n`).
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The fixed, non-trivial key [`masked_frame`] masks with.
pub const MASK_KEY: [u8; 4] = [0xa1, 0x5b, 0x3c, 0xe7];

/// A client frame, masked with [`MASK_KEY`].
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame_with_key(fin, opcode, MASK_KEY, payload)
}

/// A client frame masked with `key`.
pub fn masked_frame_with_key(fin: bool, opcode: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    masked_frame_from_first_byte(u8::from(fin) << 7 | opcode, key, payload)
}

/// A masked frame whose first byte (FIN, RSV1-3, opcode) is given whole.
pub fn masked_frame_from_first_byte(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(first);
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// A close frame's payload: code then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame that carries one; `None` for any other frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The status code of what must be a close frame (1005 when empty); panics otherwise.
    pub fn expect_close_code(&self) -> u16 {
        assert_eq!(self.opcode, 0x8, "expected a close frame, got {self:?}");
        match self.payload.as_slice() {
            [] => 1005,
            [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            _ => panic!("close payload of one byte"),
        }
    }
}

/// The server frame at the start of `buf` and the bytes it takes, or `None` while it is
/// incomplete. Panics on a masked frame (server frames are never masked).
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() - at < len {
        return None;
    }
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload: buf[at..at + len].to_vec(),
    };
    Some((frame, at + len))
}

/// Removes and returns the complete server frame at the start of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    let (frame, used) = parse_frame(buf)?;
    buf.drain(..used);
    Some(frame)
}

/// The length of the HTTP head at the start of `buf`, blank line included, once it is complete.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Removes and returns the complete HTTP head at the start of `buf`, if there is one.
pub fn take_head(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = head_len(buf)?;
    Some(buf.drain(..len).collect())
}
