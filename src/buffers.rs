//! Per-connection buffers that exist only while a connection is busy, and their pool.
//!
//! Owns [`Busy`] (the bytes a connection holds between reads: a partial request head, a partial
//! frame header, a message being assembled, output not yet written) and the pool that recycles
//! it. An idle connection owns no `Busy` at all, which is what keeps an idle open connection at
//! a few dozen bytes. Every box counts in its reactor's memory account ([`crate::budget`])
//! from the moment it is made until it is freed. This module does not interpret any of the
//! bytes it holds.

use crate::budget::Account;
use crate::deflate::{Codec, Inflater};
use crate::frame::{OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::utf8::Utf8Validator;

/// Buffers up to this capacity are always kept when a `Busy` returns to the pool.
const RETAIN_CAPACITY: usize = 256 * 1024;

/// Larger buffers are kept too while the pool's large buffers add up to at most this, so a
/// connection streaming 1 MiB messages reuses warm memory instead of faulting in fresh pages
/// for every message; beyond it they are freed, so a burst of 16 MiB messages does not pin
/// memory for the life of the process.
const LARGE_BUDGET: usize = 32 << 20;

/// Where a frame whose payload spans several reads has got to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub opcode: OpCode,
    pub fin: bool,
    pub remaining: u64,
    pub mask: [u8; 4],
    pub phase: u8,
}

/// Everything a connection holds while it has unfinished input or unwritten output.
#[derive(Debug)]
pub(crate) struct Busy {
    /// Output accepted but not yet written.
    pub out: OutBuf,
    /// A request head that arrived in pieces.
    pub head: Vec<u8>,
    /// The data message being assembled (fragments, or one frame split across reads).
    pub message: Vec<u8>,
    /// Text or Binary while a message is in progress.
    pub message_kind: Option<OpCode>,
    /// The message in progress had begun when reading paused for backpressure, so it is read
    /// to its end (see `Connection::wants_read`); one begun while paused is not.
    pub read_to_end: bool,
    /// Bytes of a message handled in parts already handed to the handler (nothing of it is
    /// kept; this is for `max_message_size`).
    pub streamed: u64,
    /// UTF-8 state of the text message in progress.
    pub utf8: Utf8Validator,
    /// The frame whose payload is still arriving.
    pub cursor: Option<Cursor>,
    /// A frame header that arrived in pieces.
    pub header: [u8; MAX_HEADER_LEN],
    pub header_len: u8,
    /// A control frame's payload that arrived in pieces.
    pub control: [u8; MAX_CONTROL_PAYLOAD],
    pub control_len: u8,
    /// The message in progress is compressed (RSV1 on its first frame).
    pub compressed: bool,
    /// The decompressor of the compressed message in progress, taken from the pool's
    /// [`Codec`] when it began; back to the pool with this `Busy`.
    pub inflater: Option<Box<Inflater>>,
    /// What this box counts in its reactor's memory [`Account`], as of its last recount.
    pub accounted: usize,
}

impl Busy {
    pub(crate) fn new() -> Self {
        Busy {
            out: OutBuf::default(),
            head: Vec::new(),
            message: Vec::new(),
            message_kind: None,
            read_to_end: false,
            streamed: 0,
            utf8: Utf8Validator::new(),
            cursor: None,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
            compressed: false,
            inflater: None,
            accounted: 0,
        }
    }

    /// Nothing pending in either direction: the connection can give this back.
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
            && self.head.is_empty()
            && self.message_kind.is_none()
            && self.cursor.is_none()
            && self.header_len == 0
    }

    /// Starts a data message of `opcode`: whatever was assembled or counted before is dropped.
    pub fn start_message(&mut self, opcode: OpCode) {
        self.drop_message();
        self.message_kind = Some(opcode);
    }

    /// Forgets the data message in progress, if any (it ended, or failed).
    pub fn drop_message(&mut self) {
        self.message.clear();
        self.message_kind = None;
        self.read_to_end = false;
        self.streamed = 0;
        self.compressed = false;
        self.utf8.reset();
    }

    fn clear(&mut self) {
        self.out.clear();
        self.head.clear();
        self.drop_message();
        self.cursor = None;
        self.header_len = 0;
        self.control_len = 0;
    }

    /// Capacity held in buffers larger than `RETAIN_CAPACITY`.
    fn large_capacity(&self) -> usize {
        [
            self.out.capacity(),
            self.message.capacity(),
            self.head.capacity(),
        ]
        .into_iter()
        .filter(|&c| c > RETAIN_CAPACITY)
        .sum()
    }

    fn free_large(&mut self) {
        if self.out.capacity() > RETAIN_CAPACITY {
            self.out = OutBuf::default();
        }
        if self.message.capacity() > RETAIN_CAPACITY {
            self.message = Vec::new();
        }
        if self.head.capacity() > RETAIN_CAPACITY {
            self.head = Vec::new();
        }
    }
}

/// A free list of [`Busy`] boxes, so a connection that becomes busy and idle again on every
/// message does not allocate each time.
#[derive(Debug, Default)]
pub(crate) struct BusyPool {
    // Boxes, not values: a connection holds the box itself, so handing one out or taking it
    // back moves a pointer, not ~300 bytes.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Busy>>,
    /// Sum of `large_capacity` over `free`, at most `LARGE_BUDGET`.
    large_bytes: usize,
    /// The reactor's deflate state: compressors and free decompressors. Here because it is
    /// lent the same way as the buffers: to the connection being served, for one call.
    pub deflate: Codec,
    /// This reactor's share of the server's memory budget: every box counts in it from the
    /// moment it is made until it is freed, lent out or pooled.
    pub account: Account,
}

/// Free `Busy` boxes kept at most; beyond this they are freed.
const POOL_LIMIT: usize = 1024;

impl BusyPool {
    /// The most recently returned `Busy` (its buffers are the warmest), or a new one.
    pub fn take(&mut self) -> Box<Busy> {
        match self.free.pop() {
            Some(busy) => {
                self.large_bytes -= busy.large_capacity();
                busy
            }
            None => {
                let mut busy = Box::new(Busy::new());
                self.account.recount(&mut busy);
                busy
            }
        }
    }

    /// Idle `Busy` boxes kept for reuse.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn give(&mut self, mut busy: Box<Busy>) {
        if let Some(inflater) = busy.inflater.take() {
            self.deflate.give_inflater(inflater);
        }
        if self.free.len() >= POOL_LIMIT {
            self.account.forget(&busy);
            return;
        }
        busy.clear();
        let large = busy.large_capacity();
        if self.large_bytes + large > LARGE_BUDGET {
            busy.free_large();
        } else {
            self.large_bytes += large;
        }
        self.account.recount_cleared(&mut busy);
        self.free.push(busy);
    }

    /// Frees every pooled box: the memory budget is under pressure, and what the pool keeps
    /// warm is the cheapest memory to give back.
    pub fn trim(&mut self) {
        for busy in self.free.drain(..) {
            self.account.forget(&busy);
        }
        self.large_bytes = 0;
    }
}

/// Output accepted but not yet written, oldest first: `bytes[start..]`.
///
/// A `Vec` and a read position rather than a ring (`VecDeque`): appending a small frame is a
/// capacity check and a copy, which is most of what echoing a small message costs in user
/// space, and what is pending is always one slice, written with one `write`.
///
/// The written prefix is dropped when everything has been written. When an append does not
/// fit, the unwritten rest is moved to the front if it is no longer than the written prefix,
/// and the buffer grows otherwise. So every byte moved stands for at least one byte written
/// since the last move: a peer that reads a few bytes at a time cannot make the server copy
/// its whole backlog per message. The capacity stays within about four times the largest
/// backlog (the ring it replaces: two times).
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    bytes: Vec<u8>,
    start: usize,
    /// Bytes moved to the front so far, for the test that bounds it.
    #[cfg(test)]
    moved: usize,
}

impl OutBuf {
    /// Bytes not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Nothing left to write.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.bytes.len()
    }

    /// Capacity held, written prefix included.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The bytes not yet written, oldest first.
    #[inline]
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Forgets everything, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.start = 0;
    }

    /// Makes room for `more` bytes by dropping the written prefix, when the append would
    /// not fit and the prefix is at least as long as what is still pending.
    #[inline]
    fn make_room(&mut self, more: usize) {
        if self.bytes.capacity() - self.bytes.len() < more && self.start >= self.len() {
            #[cfg(test)]
            {
                self.moved += self.len();
            }
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends `data`.
    #[inline]
    pub fn extend(&mut self, data: &[u8]) {
        self.make_room(data.len());
        self.bytes.extend_from_slice(data);
    }

    /// Appends a frame: the first `header_len` bytes of `header`, then `payload`. The whole
    /// header array is copied into the spare capacity (a fixed-size copy, not a call to
    /// `memcpy`) and the payload is written over its unused tail; a payload of up to 32 bytes
    /// is copied inline as well (see [`copy_short`]).
    #[inline(always)]
    pub fn push_frame(&mut self, header: &[u8; MAX_HEADER_LEN], header_len: usize, payload: &[u8]) {
        let header_len = header_len.min(MAX_HEADER_LEN);
        let more = MAX_HEADER_LEN + payload.len();
        self.make_room(more);
        self.bytes.reserve(more);
        let at = self.bytes.len();
        // SAFETY: `reserve` left room for `MAX_HEADER_LEN + payload.len()` bytes after `at`.
        // The header array is copied whole into that room, then the payload from
        // `at + header_len` (`header_len <= MAX_HEADER_LEN`), so every byte up to the new
        // length is written before `set_len` exposes it; sources and the spare capacity
        // cannot overlap (the caller's borrows are not of `self`).
        unsafe {
            let dst = self.bytes.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(header.as_ptr(), dst, MAX_HEADER_LEN);
            copy_short(payload, dst.add(header_len));
            self.bytes.set_len(at + header_len + payload.len());
        }
    }

    /// For code that appends to a `Vec` (the HTTP responses). Appending is the only thing
    /// the caller may do with it.
    pub fn appender(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Records that the first `n` pending bytes were written.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.bytes.len() {
            self.clear();
        }
    }
}

/// Copies `src` to `dst`. Up to 32 bytes, two fixed-size copies that overlap in the middle
/// (16, 8, 4 or 1 bytes each) instead of a call to `memcpy`, which costs more than the copy
/// for the small messages most echoes carry; longer, `memcpy`.
///
/// # Safety
/// `dst` must be valid for writing `src.len()` bytes and must not overlap `src`.
#[inline(always)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    use std::ptr::copy_nonoverlapping as copy;
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: in each branch both copies lie within the first `n` bytes of `src` and `dst`
    // (the second one ends exactly at `n`), which the caller guarantees are valid and
    // disjoint.
    unsafe {
        match n {
            16..=32 => {
                copy(s, dst, 16);
                copy(s.add(n - 16), dst.add(n - 16), 16);
            }
            8..=15 => {
                copy(s, dst, 8);
                copy(s.add(n - 8), dst.add(n - 8), 8);
            }
            4..=7 => {
                copy(s, dst, 4);
                copy(s.add(n - 4), dst.add(n - 4), 4);
            }
            1..=3 => {
                copy(s, dst, 1);
                copy(s.add(n / 2), dst.add(n / 2), 1);
                copy(s.add(n - 1), dst.add(n - 1), 1);
            }
            0 => {}
            _ => copy(s, dst, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_frame_appends_the_header_and_any_payload_exactly() {
        let header: [u8; MAX_HEADER_LEN] = std::array::from_fn(|i| 0xA0 + i as u8);
        let source: Vec<u8> = (0..100u8).collect();
        for header_len in [2, 4, 10, MAX_HEADER_LEN] {
            for len in 0..=70 {
                let mut out = OutBuf::default();
                out.extend(b"before");
                out.push_frame(&header, header_len, &source[..len]);
                out.extend(b"after");
                let mut expected = b"before".to_vec();
                expected.extend_from_slice(&header[..header_len]);
                expected.extend_from_slice(&source[..len]);
                expected.extend_from_slice(b"after");
                assert_eq!(
                    out.pending(),
                    &expected[..],
                    "header {header_len} payload {len}"
                );
            }
        }
    }

    #[test]
    fn pool_keeps_large_buffers_only_within_its_budget() {
        let mut pool = BusyPool::default();
        let mut busy = pool.take();
        busy.message.reserve(RETAIN_CAPACITY * 4);
        busy.out.extend(&[1u8, 2, 3]);
        assert!(!busy.is_idle());
        pool.give(busy);
        let busy = pool.take();
        assert!(busy.is_idle());
        assert!(
            busy.message.capacity() >= RETAIN_CAPACITY * 4,
            "warm buffer reused"
        );
        assert_eq!(pool.large_bytes, 0);

        let mut huge: Vec<Box<Busy>> = (0..3).map(|_| pool.take()).collect();
        for busy in &mut huge {
            busy.message.reserve(LARGE_BUDGET / 2 + 1);
        }
        for busy in huge {
            pool.give(busy);
        }
        assert!(pool.large_bytes <= LARGE_BUDGET);
        let kept = pool.free.iter().filter(|b| b.large_capacity() > 0).count();
        assert_eq!(kept, 1, "only what fits the budget is kept");
    }

    #[test]
    fn out_buf_keeps_order_across_partial_writes_and_reuse_of_the_written_prefix() {
        let mut out = OutBuf::default();
        let mut model: Vec<u8> = Vec::new();
        let mut next = 0u8;
        let mut most_pending = 0;
        // Append, then write part of what is pending, many times over, with appends that fit
        // the capacity, that fit once the written prefix is dropped, and that do not fit.
        for round in 0..200usize {
            let size = [1, 7, 30, 200, 3000][round % 5];
            let chunk: Vec<u8> = (0..size)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            if round % 3 == 0 {
                let mut header = [0u8; MAX_HEADER_LEN];
                header[..2].copy_from_slice(&[0x82, 0x7e]);
                out.push_frame(&header, 2, &chunk);
                model.extend_from_slice(&header[..2]);
            } else {
                out.extend(&chunk);
            }
            model.extend_from_slice(&chunk);
            most_pending = most_pending.max(model.len());
            let written = (round * 37) % (out.len() + 1);
            assert_eq!(&out.pending()[..written], &model[..written]);
            out.consume(written);
            model.drain(..written);
            assert_eq!(out.pending(), &model[..], "round {round}");
            assert!(
                out.capacity() <= 4 * (most_pending + MAX_HEADER_LEN),
                "round {round}: capacity {} for at most {most_pending} pending",
                out.capacity()
            );
        }
        out.consume(usize::MAX);
        assert!(out.is_empty());
        assert_eq!(out.len(), 0);
    }

    #[test]
    fn out_buf_stays_bounded_for_a_peer_that_reads_a_little_at_a_time() {
        let mut out = OutBuf::default();
        let backlog = 1 << 20;
        out.extend(&vec![1u8; backlog]);
        let rounds = 50_000;
        for i in 0..rounds {
            out.consume(100);
            out.extend(&[(i % 251) as u8; 100]);
            assert_eq!(out.len(), backlog);
        }
        assert!(out.capacity() <= 4 * backlog, "capacity {}", out.capacity());
        assert!(out.moved <= rounds * 100, "moved {} bytes", out.moved);
        let tail = &out.pending()[backlog - 100..];
        assert!(tail.iter().all(|&b| b == ((rounds - 1) % 251) as u8));
    }
}
