//! The payload transform: the one place where payload bytes change on their way in.
//!
//! Owns unmasking, fused with the UTF-8 check for text, for every way a payload arrives: a
//! whole frame in the read buffer, the next piece of a frame still arriving, a control frame.
//! permessage-deflate slots in here (unmask, inflate, then check what came out), so nothing
//! else in the connection may unmask, check or rewrite payload bytes. It turns bytes into a
//! `&str` only for a whole single-frame message, where the check it just ran proves it; the
//! assembler does so for everything assembled.

use super::*;
use crate::deflate::{self, Inflater};
use crate::metrics::DEFLATE_IN;

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

/// Compressed payload bytes, still masked with `key`: unmasked in place, not checked (the
/// UTF-8 check runs on what they inflate to).
pub(super) fn compressed_payload(payload: &mut [u8], key: [u8; 4]) {
    apply_mask(payload, key, 0);
}

/// A whole control frame's payload, still masked with `key`: unmasked in place.
pub(super) fn control_payload(payload: &mut [u8], key: [u8; 4]) {
    apply_mask(payload, key, 0);
}

/// Why a compressed message cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InflateFailure {
    /// Inflated, it would pass `max_message_size`: 1009.
    TooBig,
    /// The deflate data is invalid: 1007.
    BadData,
    /// The inflated text is not UTF-8: 1007.
    BadText,
}

/// Inflate steps handed to a streaming handler are at most this large.
const PART_STEP: usize = 64 * 1024;

impl Connection {
    /// A compressed message begins (RSV1 on its first frame): its decompressor starts afresh.
    pub(super) fn start_compressed(busy: &mut Busy) {
        busy.compressed = true;
        if let Some(inflater) = busy.inflater.as_mut() {
            inflater.reset();
        }
    }

    /// The next bytes of a compressed message, already unmasked: inflated as they come (never
    /// the whole compressed message first), the inflated size held to `max_message_size`,
    /// text checked on what comes out. `end`: they end the message, which is then delivered.
    pub(super) fn compressed_piece<H: Handler>(
        &mut self,
        data: &[u8],
        end: bool,
        env: &mut Env<'_, H>,
    ) {
        env.stats.deflate_compressed[DEFLATE_IN].add(data.len() as u64);
        let mut inflater = match self.busy_mut(env.pool).inflater.take() {
            Some(inflater) => inflater,
            None => self.inflater_for_message(env.pool, env.stats),
        };
        let mut outcome = self.inflate_input(&mut inflater, data, env);
        if outcome.is_ok() && end && self.message_goes_on() {
            outcome = self.inflate_input(&mut inflater, &deflate::TAIL, env);
        }
        let inflated_whole = outcome.is_ok() && end && self.message_goes_on();
        let unparked = if inflated_whole {
            self.park_inflater(inflater, env.pool, env.config)
        } else {
            Some(inflater)
        };
        if let Some(inflater) = unparked {
            match self.busy.as_mut() {
                Some(busy) => busy.inflater = Some(inflater),
                None => env.pool.deflate.give_inflater(inflater),
            }
        }
        match outcome {
            Err(InflateFailure::TooBig) => {
                self.fail(close_code::TOO_BIG, "message too big once inflated", env)
            }
            Err(InflateFailure::BadData) => {
                self.fail(close_code::INVALID_PAYLOAD, "invalid deflate data", env)
            }
            Err(InflateFailure::BadText) => self.fail_bad_text(env),
            Ok(()) if end && self.message_goes_on() => {
                if self.flags & STREAM_IN != 0 {
                    self.stream_part(&[], true, env);
                } else {
                    self.deliver_assembled(env);
                }
                env.pool.deflate.trim();
            }
            Ok(()) => {}
        }
    }

    /// The message being inflated is still wanted (no failure, no close from the handler).
    fn message_goes_on(&self) -> bool {
        self.state == State::Open && self.busy.as_ref().is_some_and(|b| b.compressed)
    }

    /// Inflates all of `input`: into the message buffer, or, for a message handed over in
    /// parts, into the codec's scratch one step at a time, each step a part.
    fn inflate_input<H: Handler>(
        &mut self,
        inflater: &mut Inflater,
        input: &[u8],
        env: &mut Env<'_, H>,
    ) -> Result<(), InflateFailure> {
        let limit = env.config.max_message_size;
        let mut pos = 0;
        if self.flags & STREAM_IN == 0 {
            self.busy_mut(env.pool);
            let Some(busy) = self.busy.as_deref_mut() else {
                return Ok(()); // just made
            };
            let mut window = self.stream.as_deref_mut().and_then(|s| s.recv.as_mut());
            let text = busy.message_kind == Some(OpCode::Text);
            let out = &mut busy.message;
            loop {
                let before = out.len();
                let used = inflater
                    .inflate(&input[pos..], out, limit + 1)
                    .map_err(|_| InflateFailure::BadData)?;
                pos += used;
                if out.len() > limit {
                    return Err(InflateFailure::TooBig);
                }
                if text && busy.utf8.feed(&out[before..]).is_err() {
                    return Err(InflateFailure::BadText);
                }
                env.stats.deflate_plain[DEFLATE_IN].add((out.len() - before) as u64);
                if let Some(window) = window.as_mut() {
                    window.push(&out[before..]);
                }
                let produced = out.len() > before;
                if (used == 0 && !produced) || (pos == input.len() && out.len() < out.capacity()) {
                    return Ok(());
                }
            }
        }
        let mut parts = std::mem::take(&mut env.pool.deflate.parts);
        let result = loop {
            parts.clear();
            let used = match inflater.inflate(&input[pos..], &mut parts, PART_STEP) {
                Ok(used) => used,
                Err(_) => break Err(InflateFailure::BadData),
            };
            pos += used;
            let busy = self.busy_mut(env.pool);
            if busy.streamed + parts.len() as u64 > limit as u64 {
                break Err(InflateFailure::TooBig);
            }
            if busy.message_kind == Some(OpCode::Text) && busy.utf8.feed(&parts).is_err() {
                break Err(InflateFailure::BadText);
            }
            let produced = !parts.is_empty();
            if produced {
                env.stats.deflate_plain[DEFLATE_IN].add(parts.len() as u64);
                if let Some(window) = self.recv_window() {
                    window.push(&parts);
                }
                self.stream_part(&parts, false, env);
                if !(self.message_goes_on() && self.flags & STREAM_IN != 0) {
                    break Ok(());
                }
            }
            if (used == 0 && !produced) || (pos == input.len() && parts.len() < parts.capacity()) {
                break Ok(());
            }
        };
        parts.clear();
        env.pool.deflate.parts = parts;
        result
    }
}
