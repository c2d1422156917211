//! The format of a message on the broker: what one server publishes and every other reads.
//!
//! A message on channel `PREFIX:TOPIC` is a 10-byte header and the payload:
//!
//! | bytes | what |
//! | --- | --- |
//! | 0 | format version, 1 |
//! | 1..9 | origin: the publishing process's id, big-endian (random per process start) |
//! | 9 | kind: 1 text (the payload is UTF-8), 2 binary (the WebSocket opcodes) |
//! | 10.. | the payload, as the subscribers receive it |
//!
//! Owns encoding and checking that format. Anything read from the broker is untrusted input
//! (any client of the broker may publish on our channels): a message that is not this
//! format, a text payload that is not UTF-8 or one larger than `max_message_size` is refused
//! here, never passed on. Must not frame for WebSocket delivery: that is the caller's, once
//! per arrival.

use crate::frame::OpCode;
use crate::handler::Message;

/// The version byte this server writes and reads.
const VERSION: u8 = 1;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 10;
const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// What a message read from the broker is to this server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read<'a> {
    /// Another server's message, for local subscribers.
    Foreign(Message<'a>),
    /// This process published it: its local subscribers already have it.
    Own,
    /// Not a message this server reads.
    Invalid,
}

/// Writes the broker message for a WebSocket `frame` (unmasked, whole, as `topics::encode`
/// makes it) published by `origin` into `out` (cleared first): false, and nothing written,
/// if `frame` is not such a frame.
pub(crate) fn encode_frame(out: &mut Vec<u8>, origin: u64, frame: &[u8]) -> bool {
    let Some((kind, payload)) = split_frame(frame) else {
        return false;
    };
    out.clear();
    out.reserve(HEADER_LEN + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&origin.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    true
}

/// Reads a message from the broker, for a server whose own id is `me`.
pub(crate) fn read(body: &[u8], me: u64, max_message: usize) -> Read<'_> {
    if body.len() < HEADER_LEN || body[0] != VERSION {
        return Read::Invalid;
    }
    let mut origin = [0u8; 8];
    origin.copy_from_slice(&body[1..9]);
    if u64::from_be_bytes(origin) == me {
        return Read::Own;
    }
    let payload = &body[HEADER_LEN..];
    if payload.len() > max_message {
        return Read::Invalid;
    }
    match body[9] {
        TEXT => match simdutf8::basic::from_utf8(payload) {
            Ok(text) => Read::Foreign(Message::Text(text)),
            Err(_) => Read::Invalid,
        },
        BINARY => Read::Foreign(Message::Binary(payload)),
        _ => Read::Invalid,
    }
}

/// The kind byte and payload of an unmasked, unfragmented text or binary frame.
fn split_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = frame.split_first()?;
    let kind = match first & 0x0f {
        k if k == OpCode::Text as u8 => TEXT,
        k if k == OpCode::Binary as u8 => BINARY,
        _ => return None,
    };
    let (&second, rest) = rest.split_first()?;
    if first & 0x80 == 0 || second & 0x80 != 0 {
        return None; // fragmented or masked: not one this server frames for publishing
    }
    let (len, payload) = match second & 0x7f {
        126 => {
            let (len, payload) = rest.split_at_checked(2)?;
            (u64::from(u16::from_be_bytes([len[0], len[1]])), payload)
        }
        127 => {
            let (len, payload) = rest.split_at_checked(8)?;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(len);
            (u64::from_be_bytes(bytes), payload)
        }
        n => (u64::from(n), rest),
    };
    (payload.len() as u64 == len).then_some((kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: Message<'_>) -> Vec<u8> {
        let mut frame = Vec::new();
        crate::topics::encode(&mut frame, message);
        frame
    }

    #[test]
    fn what_one_server_writes_another_reads_back_and_the_writer_skips() {
        let mut body = Vec::new();
        for message in [
            Message::Text("hello"),
            Message::Binary(&[0, 1, 2]),
            Message::Text(&"x".repeat(300)),
            Message::Binary(&[7; 70_000]),
        ] {
            assert!(encode_frame(&mut body, 42, &framed(message)));
            assert_eq!(body.len(), HEADER_LEN + message.as_bytes().len());
            assert_eq!(read(&body, 7, 1 << 20), Read::Foreign(message));
            assert_eq!(read(&body, 42, 1 << 20), Read::Own);
        }
    }

    #[test]
    fn what_is_not_this_format_is_refused() {
        let mut body = Vec::new();
        assert!(encode_frame(&mut body, 1, &framed(Message::Text("hi"))));
        let mut bad_version = body.clone();
        bad_version[0] = 2;
        let mut bad_kind = body.clone();
        bad_kind[9] = 9;
        let mut bad_utf8 = body.clone();
        bad_utf8.extend_from_slice(&[0xff, 0xfe]);
        for bad in [&b""[..], &body[..5], &bad_version, &bad_kind, &bad_utf8] {
            assert_eq!(read(bad, 7, 1 << 20), Read::Invalid);
        }
        assert_eq!(read(&body, 7, 1), Read::Invalid, "over max_message_size");
        // Frames the publish path never makes are not encoded.
        assert!(!encode_frame(&mut body, 1, &[0x89, 0x00])); // a ping
        assert!(!encode_frame(&mut body, 1, &[0x01, 0x01, b'a'])); // not FIN
        assert!(!encode_frame(&mut body, 1, &[0x81, 0x05, b'a'])); // short
    }
}
