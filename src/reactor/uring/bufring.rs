//! The provided-buffer ring every multishot receive of one reactor draws from.
//!
//! Owns the buffers' memory and the ring of their descriptors shared with the kernel: the
//! kernel takes a buffer for each receive completion, the driver hands it back (the ring's
//! tail) once the connection has taken the bytes. Must not outlive the ring it is registered
//! with (the driver drops the ring first). Pages of buffers never used are never resident.

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
    memory: Vec<u8>,
    size: usize,
    count: u16,
    /// Our copy of the tail: the next descriptor to fill.
    tail: u16,
}

// SAFETY: the descriptors are reached only through `&mut self` (and by the kernel); the
// ring moves with its reactor to the reactor's thread.
unsafe impl Send for BufRing {}

impl BufRing {
    /// `count` (a power of two) buffers of `size` bytes, registered with `ring`.
    pub(super) fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let entries_bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked below.
        let entries = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if entries == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut bufs = BufRing {
            entries: entries.cast(),
            entries_bytes,
            memory: Vec::with_capacity(usize::from(count) * size),
            size,
            count,
            tail: 0,
        };
        for bid in 0..count {
            bufs.push(bid);
        }
        bufs.publish();
        // SAFETY: `entries` is page-aligned, holds `count` entries and lives (in `self`) until
        // after the ring is dropped (the driver's field order).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.entries as u64, count, GROUP, 0)?;
        }
        Ok(bufs)
    }

    /// The first `len` bytes of buffer `bid`, as the kernel wrote them.
    pub(super) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid % self.count) * self.size;
        let len = len.min(self.size);
        // SAFETY: within the allocation (capacity `count * size`); the kernel wrote these
        // `len` bytes before posting the completion that names `bid`.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(start), len) }
    }

    /// Hands buffer `bid` back to the kernel (visible at the next [`publish`](Self::publish)).
    pub(super) fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        let index = usize::from(self.tail & mask);
        // SAFETY: `index < count`; the kernel only reads descriptors below the published tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        let addr = self.memory.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers pushed so far the kernel's.
    pub(super) fn publish(&mut self) {
        // SAFETY: the ring's tail field overlays the first descriptor's last field; it is only
        // written here and read by the kernel, so an atomic release store orders the
        // descriptors before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer registered (the ring is gone).
        unsafe { libc::munmap(self.entries.cast(), self.entries_bytes) };
    }
}
