//! Assembling messages: whole, assembled from fragments, or handed over in parts.
//!
//! Owns a message's kind and UTF-8 state from its first frame to its last, the choice between
//! assembling and streaming (`Handler::stream_from`), and delivery to `on_message` and
//! `on_message_part`. The only place that turns assembled, checked bytes into `&str`. Must not
//! parse frames or touch payload bytes: the reader and the transform do.

use super::*;

impl Connection {
    /// Whether a message whose first frame announces `len` bytes, and cannot be handed over
    /// whole now, is to be handed to the handler in parts.
    pub(super) fn streams<H: Handler>(&mut self, len: u64, env: &mut Env<'_, H>) -> bool {
        self.state == State::Open
            && guard(env, |handler| handler.stream_from())
                .flatten()
                .is_some_and(|from| len >= from.max(1))
    }

    /// Hands the handler the next bytes of a message handled in parts: unmasked and, if text,
    /// already fed to the validator. `last`: they end the message.
    pub(super) fn stream_part<H: Handler>(
        &mut self,
        data: &[u8],
        last: bool,
        env: &mut Env<'_, H>,
    ) {
        let busy = self.busy_mut(env.pool);
        let Some(opcode) = busy.message_kind else {
            return;
        };
        let kind = if opcode == OpCode::Text {
            if last && busy.utf8.finish().is_err() {
                return self.fail_bad_text(env);
            }
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let first = busy.streamed == 0;
        busy.streamed += data.len() as u64;
        if last {
            busy.drop_message();
            self.flags &= !STREAM_IN;
            env.stats.messages_in[kind_index(opcode)].bump();
        }
        let part = MessagePart {
            kind,
            data,
            first,
            last,
        };
        self.call(env, |handler, conn| handler.on_message_part(conn, part));
    }

    /// A whole message in one frame (text or binary, FIN set, no message in progress, the
    /// connection open), still masked with `key`: unmasked in place (text in the same pass as
    /// its UTF-8 check) and handed to the handler as a borrowed slice, no copy. Inlined into
    /// the short-frame path of [`frame_input`](Self::frame_input), where most messages go.
    #[inline(always)]
    pub(super) fn deliver_whole<H: Handler>(
        &mut self,
        opcode: OpCode,
        payload: &mut [u8],
        key: [u8; 4],
        env: &mut Env<'_, H>,
    ) {
        env.stats.messages_in[kind_index(opcode)].bump();
        let Ok(message) = transform::whole_message(opcode, payload, key) else {
            return self.fail_bad_text(env);
        };
        self.call(env, |handler, conn| handler.on_message(conn, message));
    }

    /// Hands the handler the message assembled in the message buffer.
    pub(super) fn deliver_assembled<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        let busy = self.busy_mut(env.pool);
        let Some(kind) = busy.message_kind.take() else {
            return;
        };
        if kind == OpCode::Text && busy.utf8.finish().is_err() {
            self.fail_bad_text(env);
            return;
        }
        let mut message = std::mem::take(&mut busy.message);
        env.stats.messages_in[kind_index(kind)].bump();
        let msg = if kind == OpCode::Text {
            // SAFETY: every byte of this message went through `Utf8Validator::feed`, which
            // accepted it, and `finish` confirmed no code point was left unfinished.
            Message::Text(unsafe { std::str::from_utf8_unchecked(&message) })
        } else {
            Message::Binary(&message)
        };
        self.call(env, |handler, conn| handler.on_message(conn, msg));
        message.clear();
        if let Some(busy) = self.busy.as_mut() {
            busy.message = message;
        } else {
            let mut busy = env.pool.take();
            busy.message = message;
            self.busy = Some(busy);
        }
    }

    pub(super) fn fail_bad_text<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.fail(close_code::INVALID_PAYLOAD, "invalid UTF-8 in text", env);
    }
}
