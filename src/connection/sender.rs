//! Sending: frame heads, corked output, large writes straight to the transport, the close.
//!
//! Owns the path of every outgoing frame: the backlog limits (`backlog_high_water`,
//! `max_backlog`) and backpressure, the choice between corking a frame in the out buffer and
//! writing it at once, and our close frame. Must not read input or call the handler.

use super::*;

/// Messages at least this large, sent while nothing else is waiting to be written, go straight
/// to the socket (header and payload in one `writev`) instead of being copied into the out
/// buffer: for a 1 MiB echo that copy costs as much as the unmasking. Smaller ones are corked,
/// unless [`DIRECT_WRITE_ALONE_MIN`] applies.
const DIRECT_WRITE_MIN: usize = 64 * 1024;

/// The same for a frame whose write would not be shared anyway: a fragment of a message sent
/// in parts (each comes from one read), or the reply to the frame that ends a read when
/// nothing is queued ahead of it. Writing it at once costs no extra syscall, while corking it
/// costs a copy. (With 8 messages of 16 KiB in flight, writing every message at once measured
/// 20-30% fewer messages/s than corking them; the reply that ends a read does not have that
/// cost.)
const DIRECT_WRITE_ALONE_MIN: usize = 4 * 1024;

/// The first byte of an outgoing frame, as its parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHead {
    pub opcode: OpCode,
    /// The frame ends its message (always, for control frames).
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate; first frame only).
    pub rsv1: bool,
}

impl FrameHead {
    /// A frame that is a whole message, or a control frame.
    pub(crate) fn whole(opcode: OpCode) -> Self {
        FrameHead {
            opcode,
            fin: true,
            rsv1: false,
        }
    }
}

impl Connection {
    /// Appends one unmasked frame to the output, no questions asked.
    pub(super) fn queue_frame(&mut self, opcode: OpCode, payload: &[u8], pool: &mut BusyPool) {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = frame::encode_header(&mut header, true, opcode, None, payload.len() as u64);
        self.busy_mut(pool).out.push_frame(&header, n, payload);
    }

    /// Sends a frame if the connection is open, enforcing the backlog limits. Small frames,
    /// which are most of them, take the inlined path: one size check, the header, one append.
    #[inline]
    pub(crate) fn send_frame(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        pool: &mut BusyPool,
        config: &Config,
        stats: &Counters,
        direct: Option<&dyn Transmit>,
    ) -> SendStatus {
        if self.state != State::Open {
            return SendStatus::Closed;
        }
        let pending = self.pending_output();
        if pending + payload.len() + MAX_HEADER_LEN > config.max_backlog {
            return self.drop_for_backlog(stats);
        }
        if matches!(head.opcode, OpCode::Text | OpCode::Binary) {
            stats.messages_out[kind_index(head.opcode)].bump();
        }
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = frame::encode_header(
            &mut header,
            head.fin,
            head.opcode,
            None,
            payload.len() as u64,
        );
        if head.rsv1 {
            header[0] |= 0x40;
        }
        let written = match direct {
            // Nothing is queued ahead of it, so writing now keeps the order.
            Some(socket) if payload.len() >= DIRECT_WRITE_ALONE_MIN && pending == 0 => {
                self.write_now(socket, head, &header[..header_len], payload, stats)
            }
            _ => 0,
        };
        let backlog = if written < header_len + payload.len() {
            // Only now is a buffer taken: a frame written whole needs none.
            let out = &mut self.busy_mut(pool).out;
            if written == 0 {
                out.push_frame(&header, header_len, payload);
            } else if written < header_len {
                out.extend(&header[written..header_len]);
                out.extend(payload);
            } else {
                out.extend(&payload[written - header_len..]);
            }
            out.len()
        } else {
            pending // written whole, so nothing was queued before it either
        };
        if backlog > config.backlog_high_water {
            self.pause_reading(stats);
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Writes a large frame to the socket at once, if it is large enough for that to beat
    /// copying it into the out buffer; returns the bytes written (0: queue it all). A failed
    /// write leaves it all queued: the next flush meets the same error and drops the socket.
    #[inline(never)]
    pub(super) fn write_now(
        &self,
        socket: &dyn Transmit,
        head: FrameHead,
        header: &[u8],
        payload: &[u8],
        stats: &Counters,
    ) -> usize {
        let part = !head.fin || head.opcode == OpCode::Continuation;
        let direct_min = if part || self.flags & ENDS_READ != 0 {
            DIRECT_WRITE_ALONE_MIN
        } else {
            DIRECT_WRITE_MIN
        };
        if payload.len() < direct_min {
            return 0;
        }
        let written = socket
            .transmit(&[IoSlice::new(header), IoSlice::new(payload)])
            .unwrap_or(0);
        stats.bytes_out.add(written as u64);
        written
    }

    /// Output passed the high-water mark: stop reading at the end of the message arriving now,
    /// if any (see [`wants_read`](Self::wants_read)).
    #[cold]
    pub(super) fn pause_reading(&mut self, stats: &Counters) {
        if self.flags & READ_PAUSED == 0 {
            self.flags |= READ_PAUSED;
            stats.backpressure_pauses.bump();
            if let Some(busy) = self.busy.as_mut() {
                busy.read_to_end = busy.message_kind.is_some();
            }
        }
    }

    /// Queues a published frame (encoded once for every subscriber) under the slow-subscriber
    /// policy: skipped if the connection is not open or is sending a message in parts (a
    /// whole message cannot go between its fragments), dropped or closed with 1008 if it
    /// would pass `max_subscriber_backlog`.
    pub(crate) fn send_published(&mut self, frame: &[u8], reach: &mut Reach<'_>) -> Delivery {
        if self.state != State::Open || self.flags & PARTS_OUT != 0 {
            return Delivery::Skipped;
        }
        let pending = self.pending_output();
        if let Some(refused) = admit(pending, frame.len(), reach.config, reach.stats) {
            if matches!(refused, Delivery::Closed) {
                let (code, reason) = SLOW_CLOSE;
                self.send_close(code, reason, reach.pool, reach.config);
                self.deadline = reach.now + ms(reach.config.close_timeout);
                self.flags |= BACKLOG_DROPPED;
            }
            return refused;
        }
        // The frame's first byte: FIN and the opcode.
        let opcode = frame.first().map_or(0, |b| b & 0x0f);
        reach.stats.messages_out[usize::from(opcode)].bump();
        let out = &mut self.busy_mut(reach.pool).out;
        out.extend(frame);
        if out.len() > reach.config.backlog_high_water {
            self.pause_reading(reach.stats);
        }
        Delivery::Delivered
    }

    /// The peer is not reading: give up on it rather than grow without bound.
    #[cold]
    pub(super) fn drop_for_backlog(&mut self, stats: &Counters) -> SendStatus {
        self.state = State::Closed;
        self.flags |= ABORT | BACKLOG_DROPPED;
        stats.backlog_drops.bump();
        SendStatus::Dropped
    }

    /// Queues our close frame and moves to `Closing`.
    pub(super) fn send_close(
        &mut self,
        code: u16,
        reason: &str,
        pool: &mut BusyPool,
        config: &Config,
    ) {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        if self.pending_output() + MAX_CONTROL_PAYLOAD + MAX_HEADER_LEN <= config.max_backlog {
            self.queue_frame(OpCode::Close, &payload[..2 + cut], pool);
        }
        self.state = State::Closing;
        // Reading resumes so that the peer's close can be seen.
        self.flags &= !READ_PAUSED;
    }
}
