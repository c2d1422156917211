//! A WebSocket client in memory: the other end of an [`Endpoint`](super::Endpoint).
//!
//! Owns the client's side of the wire: the upgrade request, masked frames (fragmented as a
//! test asks), and reading the server's frames back into messages, pongs and the close. It is
//! deliberately strict about what the server sends (unmasked frames, no RSV bits, control
//! frames whole and short, fragments in order, text valid UTF-8), so that a test driving a
//! [`Pair`](super::Pair) checks the server's output as a real client would, and more.
//! It is for tests, benches and fuzz targets, not a client library.

use crate::frame::{self, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;

/// What the client read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A whole text message (assembled from its fragments).
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A ping's payload.
    Ping(Vec<u8>),
    /// A pong's payload.
    Pong(Vec<u8>),
    /// The server's close: its code (`None` for an empty close) and reason.
    Close(Option<u16>, String),
}

/// The server broke the protocol, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub &'static str);

/// The client half of an in-memory connection.
#[derive(Debug, Default)]
pub struct Client {
    /// Bytes the client wrote and the server has not read yet.
    pub(super) outgoing: Vec<u8>,
    incoming: Vec<u8>,
    /// A message being assembled: its opcode and bytes so far.
    partial: Option<(OpCode, Vec<u8>)>,
    closed: bool,
    key_seed: u32,
}

/// The request head every pair opens with (the RFC 6455 §1.3 key).
pub const UPGRADE_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: pair\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The answer the server must give to [`UPGRADE_REQUEST`] without a subprotocol.
pub const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

impl Client {
    /// Queues a frame, masked with a key that changes from frame to frame.
    pub fn frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.key_seed = self
            .key_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let key = self.key_seed.to_le_bytes();
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = frame::encode_header(&mut header, fin, opcode, Some(key), payload.len() as u64);
        self.outgoing.extend_from_slice(&header[..n]);
        let start = self.outgoing.len();
        self.outgoing.extend_from_slice(payload);
        apply_mask(&mut self.outgoing[start..], key, 0);
    }

    /// Queues a data message, cut into fragments after each of the byte offsets in `cuts`
    /// (offsets past the end are ignored; an offset may repeat to send an empty fragment).
    pub fn message(&mut self, text: bool, payload: &[u8], cuts: &[usize]) {
        let mut opcode = if text { OpCode::Text } else { OpCode::Binary };
        let mut at = 0;
        for &cut in cuts.iter().filter(|&&c| c <= payload.len()) {
            let cut = cut.max(at);
            self.frame(false, opcode, &payload[at..cut]);
            opcode = OpCode::Continuation;
            at = cut;
        }
        self.frame(true, opcode, &payload[at..]);
    }

    /// Reads the server's bytes and returns everything complete in them, in order. Bytes of a
    /// frame still arriving are kept for the next call.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Received>, Violation> {
        self.incoming.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(header) = frame::decode_header(&self.incoming[at..])
            .map_err(|_| Violation("frame length over 2^63"))?
        {
            let total = header.header_len as u64 + header.payload_len;
            if ((self.incoming.len() - at) as u64) < total {
                break;
            }
            let payload = self.incoming[at + header.header_len..at + total as usize].to_vec();
            if let Some(received) = self.frame_in(&header, &payload)? {
                out.push(received);
            }
            at += total as usize;
        }
        self.incoming.drain(..at);
        Ok(out)
    }

    /// The server's close has been read: nothing may follow it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn frame_in(
        &mut self,
        header: &frame::FrameHeader,
        payload: &[u8],
    ) -> Result<Option<Received>, Violation> {
        if self.closed {
            return Err(Violation("a frame after the close"));
        }
        if header.mask.is_some() {
            return Err(Violation("a masked server frame"));
        }
        if header.rsv != 0 {
            return Err(Violation("RSV bits set"));
        }
        let opcode = OpCode::from_u8(header.opcode).ok_or(Violation("a reserved opcode"))?;
        if opcode.is_control() {
            if !header.fin || payload.len() > frame::MAX_CONTROL_PAYLOAD {
                return Err(Violation("a control frame fragmented or too long"));
            }
            return Ok(Some(match opcode {
                OpCode::Ping => Received::Ping(payload.to_vec()),
                OpCode::Pong => Received::Pong(payload.to_vec()),
                _ => self.close_in(payload)?,
            }));
        }
        let (kind, mut bytes) = match (opcode, self.partial.take()) {
            (OpCode::Continuation, Some(partial)) => partial,
            (OpCode::Continuation, None) => return Err(Violation("a continuation of nothing")),
            (_, Some(_)) => return Err(Violation("a new message inside a fragmented one")),
            (opcode, None) => (opcode, Vec::new()),
        };
        bytes.extend_from_slice(payload);
        if !header.fin {
            self.partial = Some((kind, bytes));
            return Ok(None);
        }
        Ok(Some(if kind == OpCode::Text {
            Received::Text(String::from_utf8(bytes).map_err(|_| Violation("invalid UTF-8"))?)
        } else {
            Received::Binary(bytes)
        }))
    }

    fn close_in(&mut self, payload: &[u8]) -> Result<Received, Violation> {
        self.closed = true;
        match payload {
            [] => Ok(Received::Close(None, String::new())),
            [_] => Err(Violation("a close payload of one byte")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !frame::is_valid_close_code(code) {
                    return Err(Violation("an invalid close code"));
                }
                let reason = String::from_utf8(reason.to_vec())
                    .map_err(|_| Violation("a close reason that is not UTF-8"))?;
                Ok(Received::Close(Some(code), reason))
            }
        }
    }
}
