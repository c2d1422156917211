//! Reading frames: headers, the payload cursor, control frames and the close.
//!
//! Owns the RFC 6455 §5 framing rules on the way in: the four ways into a frame (a run of whole
//! short frames, the rest of a payload in progress, a header split across reads, a fresh
//! header), the checks on every header, where a large payload may be read to directly, and
//! the answers to pings and closes. Payload bytes go through [`transform`](super::transform)
//! and whole messages to the [`assembler`](super::assembler); this module must not unmask,
//! check UTF-8 or call `on_message` itself.

use super::*;

/// Payloads at least this large that are still arriving are read straight into the message
/// buffer by the reactor, instead of through the shared read buffer.
const DIRECT_READ_MIN: u64 = 16 * 1024;

impl Connection {
    pub(super) fn frame_input<H: Handler>(&mut self, mut input: &mut [u8], env: &mut Env<'_, H>) {
        if self.state == State::Open {
            self.flags &= !PING_SENT;
            if let Some(idle) = env.config.idle_timeout {
                self.deadline = env.now + ms(idle);
            }
        }
        while !input.is_empty() && self.reads_frames() {
            if self.nothing_in_progress() {
                input = self.short_messages(input, env);
                if input.is_empty() || !self.reads_frames() {
                    break;
                }
            }
            let used = if let Some(cursor) = self.busy.as_ref().and_then(|b| b.cursor) {
                self.set_ends_read(cursor.remaining >= input.len() as u64);
                self.continue_payload(input, env)
            } else if self.busy.as_ref().is_some_and(|b| b.header_len > 0) {
                self.complete_header(input, env)
            } else {
                match frame::decode_header(input) {
                    Err(frame::HeaderError::LengthTooLarge) => {
                        self.fail_unsynced(env);
                        return;
                    }
                    Ok(None) => {
                        let busy = self.busy_mut(env.pool);
                        busy.header[..input.len()].copy_from_slice(input);
                        busy.header_len = input.len() as u8;
                        return;
                    }
                    Ok(Some(header)) => {
                        let Some(opcode) = self.check_header(&header, env) else {
                            // Failed: its payload (if any) is skipped by a cursor.
                            input = &mut input[header.header_len..];
                            continue;
                        };
                        let total = header.header_len as u64 + header.payload_len;
                        if input.len() as u64 >= total {
                            self.set_ends_read(input.len() as u64 == total);
                            let payload = &mut input[header.header_len..total as usize];
                            let key = header.mask.unwrap_or_default();
                            let compressed = header.rsv != 0;
                            self.complete_frame(opcode, header.fin, compressed, payload, key, env);
                            total as usize
                        } else {
                            self.begin_payload(opcode, &header, env);
                            header.header_len
                        }
                    }
                }
            };
            input = &mut input[used..];
        }
    }

    /// No frame or message is part-way through: the next byte starts a frame, and a data frame
    /// must start a message.
    #[inline]
    pub(super) fn nothing_in_progress(&self) -> bool {
        self.busy
            .as_ref()
            .is_none_or(|b| b.cursor.is_none() && b.header_len == 0 && b.message_kind.is_none())
    }

    /// Takes the run of whole short data frames at the start of `input` (see
    /// [`frame::short_data_frame`]), the frames most messages come in, and returns the rest.
    /// Nothing may be in progress when it is called, and handling such a frame leaves nothing
    /// in progress (the handler cannot start an incoming message), so each frame costs only
    /// the checks [`Connection::check_header`] would make that the pattern does not: the
    /// connection is open, and the payload is within both size limits.
    #[inline]
    pub(super) fn short_messages<'b, H: Handler>(
        &mut self,
        mut input: &'b mut [u8],
        env: &mut Env<'_, H>,
    ) -> &'b mut [u8] {
        let limit = env.config.max_frame_size.min(env.config.max_message_size);
        while self.state == State::Open {
            let Some((opcode, key, total)) = frame::short_data_frame(input)
                .filter(|&(_, _, total)| total - frame::SHORT_MASKED_HEADER_LEN <= limit)
            else {
                break;
            };
            self.set_ends_read(total == input.len());
            let (this, rest) = input.split_at_mut(total);
            self.deliver_whole(
                opcode,
                &mut this[frame::SHORT_MASKED_HEADER_LEN..],
                key,
                env,
            );
            input = rest;
        }
        input
    }

    /// Records whether the frame about to be handled ends the current read.
    #[inline]
    pub(super) fn set_ends_read(&mut self, ends: bool) {
        if ends {
            self.flags |= ENDS_READ;
        } else {
            self.flags &= !ENDS_READ;
        }
    }

    pub(super) fn reads_frames(&self) -> bool {
        matches!(self.state, State::Open | State::Closing) && self.flags & DISCARD_INPUT == 0
    }

    /// Completes a header that began in an earlier read; returns the bytes of `input` used.
    pub(super) fn complete_header<H: Handler>(
        &mut self,
        input: &[u8],
        env: &mut Env<'_, H>,
    ) -> usize {
        let busy = self.busy_mut(env.pool);
        let have = busy.header_len as usize;
        let mut used = 0;
        if have < 2 {
            used = (2 - have).min(input.len());
            busy.header[have..have + used].copy_from_slice(&input[..used]);
        }
        let have = have + used;
        if have < 2 {
            busy.header_len = have as u8;
            return used;
        }
        let need = frame::header_len(busy.header[1]);
        let more = (need - have).min(input.len() - used);
        busy.header[have..have + more].copy_from_slice(&input[used..used + more]);
        used += more;
        busy.header_len = (have + more) as u8;
        if (busy.header_len as usize) < need {
            return used;
        }
        let bytes = busy.header;
        busy.header_len = 0;
        match frame::decode_header(&bytes[..need]) {
            Ok(Some(header)) => {
                if let Some(opcode) = self.check_header(&header, env) {
                    self.begin_payload(opcode, &header, env);
                }
            }
            Ok(None) => debug_assert!(false, "a full header decodes"),
            Err(frame::HeaderError::LengthTooLarge) => self.fail_unsynced(env),
        }
        used
    }

    /// RFC 6455 §5 checks on a header. Fails the connection and returns `None` on a violation.
    pub(super) fn check_header<H: Handler>(
        &mut self,
        header: &frame::FrameHeader,
        env: &mut Env<'_, H>,
    ) -> Option<OpCode> {
        use close_code::{PROTOCOL_ERROR, TOO_BIG};
        let violation = 'check: {
            if header.rsv & 0b011 != 0 {
                break 'check Some((PROTOCOL_ERROR, "reserved bits set"));
            }
            let Some(opcode) = OpCode::from_u8(header.opcode) else {
                break 'check Some((PROTOCOL_ERROR, "reserved opcode"));
            };
            if header.mask.is_none() {
                break 'check Some((PROTOCOL_ERROR, "client frames must be masked"));
            }
            // RSV1 marks a compressed message (RFC 7692 §6): only when negotiated, and only
            // on a message's first frame.
            if header.rsv != 0
                && (self.deflate_bits().is_none()
                    || opcode.is_control()
                    || opcode == OpCode::Continuation)
            {
                break 'check Some((PROTOCOL_ERROR, "RSV1 set where no compression applies"));
            }
            if opcode.is_control() {
                if !header.fin || header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                    break 'check Some((PROTOCOL_ERROR, "control frames must be whole and short"));
                }
                return Some(opcode);
            }
            if self.state == State::Closing {
                return Some(opcode); // discarded anyway
            }
            let (in_progress, assembled) = self.busy.as_ref().map_or((false, 0), |b| {
                // A compressed message's inflated size is checked as it is inflated.
                let assembled = if b.compressed {
                    0
                } else {
                    b.message.len() as u64 + b.streamed
                };
                (b.message_kind.is_some(), assembled)
            });
            if opcode == OpCode::Continuation && !in_progress {
                break 'check Some((PROTOCOL_ERROR, "continuation without a message"));
            }
            if opcode != OpCode::Continuation && in_progress {
                break 'check Some((PROTOCOL_ERROR, "new message inside a fragmented one"));
            }
            if header.payload_len > env.config.max_frame_size as u64 {
                break 'check Some((TOO_BIG, "frame too big"));
            }
            if assembled + header.payload_len > env.config.max_message_size as u64 {
                break 'check Some((TOO_BIG, "message too big"));
            }
            if opcode != OpCode::Continuation
                && !env.pool.account.admits_message(header.payload_len)
            {
                env.stats.budget_refused_messages.bump();
                break 'check Some((TOO_BIG, "server memory budget"));
            }
            return Some(opcode);
        };
        if let Some((code, reason)) = violation {
            self.fail(code, reason, env);
            if header.opcode == OpCode::Close as u8 {
                // A malformed close is still the peer closing: no second close will come.
                self.state = State::Closed;
            } else if self.reads_frames() && header.payload_len > 0 {
                // The header was parsed, so its payload can be skipped and the stream stays
                // in sync: the peer's close that should follow is still seen.
                self.busy_mut(env.pool).cursor = Some(Cursor {
                    opcode: OpCode::Binary,
                    fin: false,
                    remaining: header.payload_len,
                    mask: [0; 4],
                    phase: 0,
                });
            }
        }
        None
    }

    /// A frame whose payload is still arriving: remember where it is.
    pub(super) fn begin_payload<H: Handler>(
        &mut self,
        opcode: OpCode,
        header: &frame::FrameHeader,
        env: &mut Env<'_, H>,
    ) {
        let closing = self.state == State::Closing;
        let starts_message = !opcode.is_control() && !closing && opcode != OpCode::Continuation;
        if starts_message && self.streams(header.payload_len, env) {
            self.flags |= STREAM_IN;
        }
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        if starts_message {
            busy.start_message(opcode);
            if header.rsv != 0 {
                Self::start_compressed(busy);
            }
        }
        let compressed = busy.compressed && !opcode.is_control() && !closing;
        if !opcode.is_control() && !closing && !streaming && !compressed {
            // Bounded by max_frame_size, checked above. Capacity that is never written to
            // costs address space, not memory.
            busy.message.reserve(header.payload_len as usize);
        }
        busy.control_len = 0;
        busy.cursor = Some(Cursor {
            opcode,
            fin: header.fin,
            remaining: header.payload_len,
            mask: header.mask.unwrap_or_default(),
            phase: 0,
        });
        if header.payload_len == 0 {
            if compressed {
                busy.cursor = None;
                self.compressed_piece(&[], header.fin, env);
            } else if streaming && !opcode.is_control() && !closing {
                // An empty fragment of a message handled in parts (its header came in pieces).
                busy.cursor = None;
                self.stream_part(&[], header.fin, env);
            } else {
                self.finish_payload(env);
            }
        }
    }

    /// Takes the next bytes of a frame in progress from `input`; returns how many it used.
    pub(super) fn continue_payload<H: Handler>(
        &mut self,
        input: &mut [u8],
        env: &mut Env<'_, H>,
    ) -> usize {
        let closing = self.state == State::Closing;
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        let Some(mut cursor) = busy.cursor else {
            return 0;
        };
        let take = cursor.remaining.min(input.len() as u64) as usize;
        let chunk = &mut input[..take];
        let message_data = !cursor.opcode.is_control() && !closing;
        let compressed = message_data && busy.compressed;
        let kind = if message_data && !compressed {
            busy.message_kind
        } else {
            None // compressed bytes are checked once inflated
        };
        let (phase, checked) =
            transform::message_bytes(&mut busy.utf8, kind, chunk, cursor.mask, cursor.phase);
        cursor.phase = phase;
        cursor.remaining -= take as u64;
        busy.cursor = Some(cursor);
        if checked.is_err() {
            self.fail_bad_text(env);
            return take;
        }
        if compressed {
            if cursor.remaining == 0 {
                busy.cursor = None;
            }
            self.compressed_piece(chunk, cursor.remaining == 0 && cursor.fin, env);
            return take;
        }
        if streaming && message_data {
            // Handed over in place: no copy, no buffer.
            if cursor.remaining == 0 {
                busy.cursor = None;
            }
            self.stream_part(chunk, cursor.remaining == 0 && cursor.fin, env);
            return take;
        }
        if cursor.opcode.is_control() {
            let at = busy.control_len as usize;
            busy.control[at..at + take].copy_from_slice(chunk);
            busy.control_len += take as u8;
        } else if !closing {
            busy.message.extend_from_slice(chunk);
        }
        if cursor.remaining == 0 {
            self.finish_payload(env);
        }
        take
    }

    /// The bytes the frame in progress still needs (0 with none in progress).
    pub(crate) fn frame_rest(&self) -> u64 {
        self.busy
            .as_ref()
            .and_then(|busy| busy.cursor)
            .map_or(0, |cursor| cursor.remaining)
    }

    /// Where the reactor may read the rest of a large frame in progress directly: the message
    /// buffer and how many bytes the frame still needs.
    pub(crate) fn direct_read_target(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        if self.state != State::Open || self.flags & (DISCARD_INPUT | STREAM_IN) != 0 {
            return None;
        }
        let busy = self.busy.as_mut()?;
        let cursor = busy.cursor?;
        if cursor.opcode.is_control() || cursor.remaining < DIRECT_READ_MIN || busy.compressed {
            return None;
        }
        let room = cursor.remaining.min(usize::MAX as u64) as usize;
        Some((&mut busy.message, room))
    }

    /// The reactor appended `n` bytes read from the socket to the message buffer (see
    /// [`direct_read_target`](Self::direct_read_target)): unmask and check them in place.
    pub(crate) fn handle_direct_input<H: Handler>(&mut self, n: usize, env: &mut Env<'_, H>) {
        env.stats.bytes_in.add(n as u64);
        if let Some(idle) = env.config.idle_timeout {
            self.deadline = env.now + ms(idle);
        }
        self.flags &= !PING_SENT;
        let busy = self.busy_mut(env.pool);
        let Some(mut cursor) = busy.cursor else {
            return;
        };
        let start = busy.message.len() - n;
        let chunk = &mut busy.message[start..];
        let (phase, checked) = transform::message_bytes(
            &mut busy.utf8,
            busy.message_kind,
            chunk,
            cursor.mask,
            cursor.phase,
        );
        cursor.phase = phase;
        cursor.remaining -= n as u64;
        busy.cursor = Some(cursor);
        if checked.is_err() {
            self.fail_bad_text(env);
        } else if cursor.remaining == 0 {
            // The read was sized to the frame: nothing follows it.
            self.set_ends_read(true);
            self.finish_payload(env);
        }
    }

    /// The frame in progress has all its payload.
    pub(super) fn finish_payload<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        let busy = self.busy_mut(env.pool);
        let Some(cursor) = busy.cursor.take() else {
            return;
        };
        if cursor.opcode.is_control() {
            let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
            let len = busy.control_len as usize;
            payload[..len].copy_from_slice(&busy.control[..len]);
            busy.control_len = 0;
            self.control_frame(cursor.opcode, &payload[..len], env);
        } else if cursor.fin && self.state == State::Open {
            if self.busy.as_ref().is_some_and(|b| b.compressed) {
                self.compressed_piece(&[], true, env);
            } else {
                self.deliver_assembled(env);
            }
        }
    }

    /// A whole frame in the caller's buffer, still masked with `key`: unmasked here, text in the
    /// same pass as its UTF-8 check.
    pub(super) fn complete_frame<H: Handler>(
        &mut self,
        opcode: OpCode,
        fin: bool,
        compressed: bool,
        payload: &mut [u8],
        key: [u8; 4],
        env: &mut Env<'_, H>,
    ) {
        if opcode.is_control() {
            transform::control_payload(payload, key);
            self.control_frame(opcode, payload, env);
            return;
        }
        if self.state != State::Open {
            return; // closing: data is discarded
        }
        if fin && opcode != OpCode::Continuation && !compressed {
            return self.deliver_whole(opcode, payload, key, env);
        }
        if opcode != OpCode::Continuation && self.streams(payload.len() as u64, env) {
            // The first of several fragments, large enough to be handed over in parts.
            self.flags |= STREAM_IN;
            self.busy_mut(env.pool).start_message(opcode);
        }
        let streaming = self.flags & STREAM_IN != 0;
        let busy = self.busy_mut(env.pool);
        if opcode != OpCode::Continuation && !streaming {
            busy.start_message(opcode);
        }
        if opcode != OpCode::Continuation && compressed {
            Self::start_compressed(busy);
        }
        if busy.compressed {
            transform::compressed_payload(payload, key);
            return self.compressed_piece(payload, fin, env);
        }
        let (_, checked) =
            transform::message_bytes(&mut busy.utf8, busy.message_kind, payload, key, 0);
        if checked.is_err() {
            return self.fail_bad_text(env);
        }
        if streaming {
            return self.stream_part(payload, fin, env);
        }
        busy.message.extend_from_slice(payload);
        if fin {
            self.deliver_assembled(env);
        }
    }

    pub(super) fn control_frame<H: Handler>(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        env: &mut Env<'_, H>,
    ) {
        match opcode {
            OpCode::Ping if self.state == State::Open => {
                let pong = FrameHead::whole(OpCode::Pong);
                let _ = self.send_frame(pong, payload, env.pool, env.config, env.stats, None);
            }
            OpCode::Pong => {}
            OpCode::Close => self.close_frame(payload, env),
            _ => {}
        }
    }

    /// The peer's close frame: check it, answer it, and finish.
    pub(super) fn close_frame<H: Handler>(&mut self, payload: &[u8], env: &mut Env<'_, H>) {
        let parsed = match payload {
            [] => Ok((close_code::NO_STATUS, "")),
            [_] => Err((close_code::PROTOCOL_ERROR, "close payload of one byte")),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !frame::is_valid_close_code(code) {
                    Err((close_code::PROTOCOL_ERROR, "invalid close code"))
                } else {
                    utf8::validate(reason)
                        .map(|reason| (code, reason))
                        .map_err(|_| (close_code::INVALID_PAYLOAD, "invalid UTF-8 in close reason"))
                }
            }
        };
        let (code, reason) = match parsed {
            Ok(close) => close,
            Err((code, reason)) => {
                // The peer has closed, badly: answer with the error, then close the TCP side
                // ourselves rather than wait for a second close.
                self.fail(code, reason, env);
                self.state = State::Closed;
                return;
            }
        };
        if self.state == State::Open {
            // Echo the peer's code; an empty close is answered with an empty close.
            let echo: &[u8] = if code == close_code::NO_STATUS {
                &[]
            } else {
                &payload[..2]
            };
            self.queue_frame(OpCode::Close, echo, env.pool);
        }
        let cause = if self.flags & BACKLOG_DROPPED != 0 {
            CloseCause::Backlog // closed as a slow subscriber
        } else if self.state == State::Closing {
            CloseCause::Local // the peer answered the close we sent
        } else {
            CloseCause::Peer
        };
        self.notify_closed(code, reason, cause, env);
        // The server closes the TCP connection first, once the reply is written.
        self.state = State::Closed;
        self.deadline = env.now + ms(env.config.close_timeout);
    }

    /// A failure after which frame boundaries are lost (a length over 2^63).
    pub(super) fn fail_unsynced<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.fail(close_code::PROTOCOL_ERROR, "frame length over 2^63", env);
        self.flags |= DISCARD_INPUT;
    }
}
