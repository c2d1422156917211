//! The payload transform: the one place where payload bytes change on their way in.
//!
//! Owns unmasking, fused with the UTF-8 check for text, for every way a payload arrives: a
//! whole frame in the read buffer, the next piece of a frame still arriving, a control frame.
//! permessage-deflate slots in here (unmask, inflate, then check what came out), so nothing
//! else in the connection may unmask, check or rewrite payload bytes. It turns bytes into a
//! `&str` only for a whole single-frame message, where the check it just ran proves it; the
//! assembler does so for everything assembled.

use super::*;

/// Unmasks `data`, the next bytes of a data message of `kind` (`None`: bytes that belong to no
/// message being read, such as a control frame's or a skipped frame's), starting at key phase
/// `phase`. Text is fed to `utf8` in the same pass. Returns the phase after `data` and the
/// text check's verdict.
pub(super) fn message_bytes(
    utf8: &mut utf8::Utf8Validator,
    kind: Option<OpCode>,
    data: &mut [u8],
    key: [u8; 4],
    phase: u8,
) -> (u8, Result<(), utf8::InvalidUtf8>) {
    let (phase, checked) = if kind == Some(OpCode::Text) {
        utf8.unmask_and_feed(data, key, phase as usize)
    } else {
        (apply_mask(data, key, phase as usize), Ok(()))
    };
    (phase as u8, checked)
}

/// A whole message in one frame, still masked with `key`: unmasked in place (text in the same
/// pass as its UTF-8 check) and borrowed as the message it is.
#[inline(always)]
pub(super) fn whole_message(
    opcode: OpCode,
    payload: &mut [u8],
    key: [u8; 4],
) -> Result<Message<'_>, utf8::InvalidUtf8> {
    if opcode == OpCode::Text {
        utf8::unmask_and_validate(payload, key).map(Message::Text)
    } else {
        apply_mask(payload, key, 0);
        Ok(Message::Binary(payload))
    }
}

/// A whole control frame's payload, still masked with `key`: unmasked in place.
pub(super) fn control_payload(payload: &mut [u8], key: [u8; 4]) {
    apply_mask(payload, key, 0);
}
