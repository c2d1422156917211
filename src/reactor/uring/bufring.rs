//! The provided-buffer ring every multishot receive of one reactor draws from.
//!
//! Owns the buffers' memory and the ring of their descriptors shared with the kernel: the
//! kernel takes a buffer for each receive completion, the driver gives it back once the
//! connection has taken the bytes. Must not outlive the ring it is registered with (the driver
//! drops the ring first).
//!
//! Which buffers the kernel gets: the ring is a queue, so every buffer in it is used in turn,
//! and a ring holding all of them would touch (and keep resident, and keep cycling through
//! the cache) every page of every buffer. So only as many are published as recent turns
//! needed (twice the most taken in one turn, at least [`MIN_PUBLISHED`]; doubled when a
//! receive found none), the rest wait in a stack whose top, the buffers given back last, is
//! published first, and the pages of buffers that have waited in it for [`COLD_MS`] are given
//! back to the kernel (`MADV_DONTNEED`): an idle reactor keeps about `MIN_PUBLISHED` buffers'
//! worth, not the whole ring.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the ring.
pub(super) const GROUP: u16 = 0;

pub(super) struct BufRing {
    /// `count` descriptors, page-aligned (mmap), shared with the kernel.
    entries: *mut BufRingEntry,
    entries_bytes: usize,
    /// `count` buffers of `size` bytes, page-aligned (mmap), so that a buffer's pages can be
    /// given back alone.
    memory: *mut u8,
    size: usize,
    count: u16,
    /// Our copy of the tail: the next descriptor to fill.
    tail: u16,
    /// Buffers published and not yet taken by a completion.
    published: u16,
    /// How many to keep published.
    target: u16,
    /// Buffers given back this turn, and the most in one turn since the last sweep.
    taken: u16,
    most_taken: u16,
    /// Buffers not published, the last given back on top.
    free: Vec<u16>,
    /// `free[..released]` have had their pages given back.
    released: usize,
    /// When each buffer was last given back (the driver's clock, ms).
    given_at: Vec<u64>,
}

/// The fewest buffers kept published.
pub(super) const MIN_PUBLISHED: u16 = 16;
/// A buffer not published for this long has its pages given back (ms).
pub(super) const COLD_MS: u64 = 500;

// SAFETY: the descriptors are reached only through `&mut self` (and by the kernel); the
// ring moves with its reactor to the reactor's thread.
unsafe impl Send for BufRing {}

impl BufRing {
    /// `count` (a power of two) buffers of `size` bytes (a multiple of the page size, so that
    /// each buffer's pages are its own), registered with `ring`.
    pub(super) fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let entries_bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let entries = map(entries_bytes)?;
        let memory = match map(usize::from(count) * size) {
            Ok(memory) => memory,
            Err(e) => {
                // SAFETY: the mapping just made, not yet registered.
                unsafe { libc::munmap(entries.cast(), entries_bytes) };
                return Err(e);
            }
        };
        let mut bufs = BufRing {
            entries: entries.cast(),
            entries_bytes,
            memory,
            size,
            count,
            tail: 0,
            published: 0,
            target: MIN_PUBLISHED.min(count),
            taken: 0,
            most_taken: 0,
            // Popped from the top: buffer 0 first. None has been touched yet.
            free: (0..count).rev().collect(),
            released: usize::from(count),
            given_at: vec![0; usize::from(count)],
        };
        bufs.publish();
        // SAFETY: `entries` is page-aligned, holds `count` entries and lives (in `self`) until
        // after the ring is dropped (the driver's field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.entries as u64, count, GROUP, 0)?;
        }
        Ok(bufs)
    }

    /// Bytes per buffer.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as the kernel wrote them.
    pub(super) fn bytes(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let start = usize::from(bid % self.count) * self.size;
        let len = len.min(self.size);
        // SAFETY: within the allocation (capacity `count * size`); the kernel wrote these
        // `len` bytes before posting the completion that names `bid`, and does not touch the
        // buffer again until it is published anew (after `give_back`).
        unsafe { std::slice::from_raw_parts_mut(self.memory.add(start), len) }
    }

    /// Buffer `bid`, named by a completion, is done with: it waits on top of the stack.
    pub(super) fn give_back(&mut self, bid: u16, now: u64) {
        let bid = bid % self.count;
        self.published = self.published.saturating_sub(1);
        self.taken = self.taken.saturating_add(1);
        self.given_at[usize::from(bid)] = now;
        self.free.push(bid);
    }

    /// A receive found no buffer: publish twice as many from now on.
    pub(super) fn starved(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.count);
    }

    /// End of a turn: follows the turn's demand, and publishes buffers from the top of the
    /// stack until `target` are the kernel's.
    pub(super) fn publish(&mut self) {
        self.most_taken = self.most_taken.max(self.taken);
        if self.taken > self.target / 2 {
            self.target = self.taken.saturating_mul(2).min(self.count);
        }
        self.taken = 0;
        let mask = self.count - 1;
        let pushed = self.published < self.target && !self.free.is_empty();
        while self.published < self.target {
            let Some(bid) = self.free.pop() else {
                break;
            };
            let index = usize::from(self.tail & mask);
            // SAFETY: `index < count`; the kernel only reads descriptors below the published
            // tail, and at most `count` buffers are published, so this one is not the kernel's.
            let entry = unsafe { &mut *self.entries.add(index) };
            let addr = self.memory as u64 + (usize::from(bid) * self.size) as u64;
            entry.set_addr(addr);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            self.published += 1;
        }
        self.released = self.released.min(self.free.len());
        if pushed {
            // SAFETY: the ring's tail field overlays the first descriptor's last field; it is
            // only written here and read by the kernel, so an atomic release store orders the
            // descriptors before it.
            unsafe {
                let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
                (*tail).store(self.tail, Ordering::Release);
            }
        }
    }

    /// Whether a [`sweep`](Self::sweep) would have something to do: more published than the
    /// fewest, or buffers whose pages may still be resident.
    pub(super) fn sweep_pending(&self) -> bool {
        self.target > MIN_PUBLISHED.min(self.count) || self.released < self.free.len()
    }

    /// Every few hundred ms (the driver's buffer sweep): lowers `target` if recent turns took far
    /// fewer, and gives back the pages of buffers that have waited unpublished for
    /// [`COLD_MS`]. Returns how many buffers' pages it gave back.
    pub(super) fn sweep(&mut self, now: u64) -> usize {
        if self.most_taken.saturating_mul(4) < self.target {
            self.target = (self.target / 2).max(MIN_PUBLISHED.min(self.count));
        }
        self.most_taken = 0;
        let mut given = 0;
        // The stack is in the order buffers were given back: the coldest at the bottom.
        while let Some(&bid) = self.free.get(self.released) {
            if self.given_at[usize::from(bid)] + COLD_MS > now {
                break;
            }
            let start = usize::from(bid) * self.size;
            // SAFETY: within the allocation, and not published, so the kernel does not write
            // it; the pages read as zeros until next written.
            unsafe {
                libc::madvise(
                    self.memory.add(start).cast(),
                    self.size,
                    libc::MADV_DONTNEED,
                );
            }
            self.released += 1;
            given += 1;
        }
        given
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer registered (the ring is gone).
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_bytes);
            libc::munmap(self.memory.cast(), usize::from(self.count) * self.size);
        }
    }
}

/// An anonymous private mapping of `bytes` (page-aligned; pages never touched never resident).
fn map(bytes: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping; checked below.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(at.cast())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use io_uring::{cqueue, opcode, types, IoUring};

    use super::*;

    fn resident(bufs: &BufRing, bid: u16) -> bool {
        let mut pages = vec![0u8; bufs.size.div_ceil(4096)];
        // SAFETY: within the buffer mapping; `pages` has a byte per page.
        let ok = unsafe {
            libc::mincore(
                bufs.memory.add(usize::from(bid) * bufs.size).cast(),
                bufs.size,
                pages.as_mut_ptr(),
            )
        };
        assert_eq!(ok, 0, "mincore: {}", io::Error::last_os_error());
        pages.iter().any(|p| p & 1 == 1)
    }

    /// Against the kernel: one message at a time through a multishot receive uses only the
    /// few buffers published, not the whole ring, and a buffer left unpublished for `COLD_MS`
    /// leaves memory.
    #[test]
    fn a_quiet_ring_cycles_few_buffers_and_gives_cold_pages_back() {
        let Ok(ring) = IoUring::new(16) else {
            eprintln!("io_uring refused here: the epoll backend serves instead");
            return;
        };
        let mut ring = ring;
        let mut bufs = BufRing::new(&ring, 64, 4096).expect("buffer ring");
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), GROUP).build();
        // SAFETY: the buffers are the buffer ring's, which outlives the receive (dropped last).
        unsafe { ring.submission().push(&recv.user_data(1)) }.expect("room");
        let mut used = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            theirs.write_all(&i.to_le_bytes()).expect("write");
            ring.submit_and_wait(1).expect("enter");
            let done: Vec<_> = ring.completion().map(|c| (c.result(), c.flags())).collect();
            for (result, flags) in done {
                assert_eq!(result, 4, "one message per completion");
                assert!(cqueue::more(flags), "the receive goes on");
                let bid = cqueue::buffer_select(flags).expect("a buffer");
                assert_eq!(bufs.bytes(bid, 4), i.to_le_bytes());
                used.insert(bid);
                bufs.give_back(bid, u64::from(i));
            }
            bufs.publish();
        }
        assert!(
            used.len() <= usize::from(MIN_PUBLISHED) + 1,
            "{} distinct buffers for one message at a time",
            used.len()
        );
        // A buffer that was written and then waited unpublished: its pages go.
        let &cold = bufs.free.last().expect("unpublished buffers");
        // SAFETY: an unpublished buffer: the kernel does not write it.
        unsafe {
            bufs.memory
                .add(usize::from(cold) * bufs.size)
                .write_bytes(9, bufs.size)
        };
        bufs.given_at[usize::from(cold)] = 1_000;
        bufs.released = bufs.free.len() - 1;
        assert!(resident(&bufs, cold));
        assert_eq!(bufs.sweep(1_000 + COLD_MS - 1), 0, "not cold yet");
        assert!(bufs.sweep(1_000 + COLD_MS) > 0);
        assert!(!resident(&bufs, cold), "a cold buffer's pages stayed");
        drop(ours);
        drop(ring);
    }
}
