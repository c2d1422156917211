//! Per-connection buffers that exist only while a connection is busy, and their pool.
//!
//! Owns [`Busy`] (the bytes a connection holds between reads: a partial request head, a partial
//! frame header, a message being assembled, output not yet written) and the pool that recycles
//! it. An idle connection owns no `Busy` at all, which is what keeps an idle open connection at
//! a few dozen bytes. This module does not interpret any of the bytes it holds.

use std::collections::VecDeque;

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
    /// Output accepted but not yet written: a ring, written with `writev` as two slices.
    pub out: VecDeque<u8>,
    /// A request head that arrived in pieces.
    pub head: Vec<u8>,
    /// The data message being assembled (fragments, or one frame split across reads).
    pub message: Vec<u8>,
    /// Text or Binary while a message is in progress.
    pub message_kind: Option<OpCode>,
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
}

impl Busy {
    fn new() -> Self {
        Busy {
            out: VecDeque::new(),
            head: Vec::new(),
            message: Vec::new(),
            message_kind: None,
            streamed: 0,
            utf8: Utf8Validator::new(),
            cursor: None,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
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
        self.streamed = 0;
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
            self.out = VecDeque::new();
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
            None => Box::new(Busy::new()),
        }
    }

    pub fn give(&mut self, mut busy: Box<Busy>) {
        if self.free.len() >= POOL_LIMIT {
            return;
        }
        busy.clear();
        let large = busy.large_capacity();
        if self.large_bytes + large > LARGE_BUDGET {
            busy.free_large();
        } else {
            self.large_bytes += large;
        }
        self.free.push(busy);
    }
}

/// Drops the first `n` bytes of a ring buffer (bytes that were written).
#[inline]
pub(crate) fn consume_front(ring: &mut VecDeque<u8>, n: usize) {
    if n >= ring.len() {
        ring.clear();
    } else {
        ring.drain(..n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keeps_large_buffers_only_within_its_budget() {
        let mut pool = BusyPool::default();
        let mut busy = pool.take();
        busy.message.reserve(RETAIN_CAPACITY * 4);
        busy.out.extend([1u8, 2, 3]);
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
    fn consume_front_keeps_order() {
        let mut ring: VecDeque<u8> = (0..10).collect();
        consume_front(&mut ring, 3);
        assert_eq!(
            ring.iter().copied().collect::<Vec<_>>(),
            (3..10).collect::<Vec<_>>()
        );
        consume_front(&mut ring, 100);
        assert!(ring.is_empty());
    }
}
