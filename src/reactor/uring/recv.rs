//! A connection's receive request: a multishot receive into the buffer ring, capped in the
//! bytes one arming may deliver where the kernel offers the cap.
//!
//! Why the cap: a multishot receive keeps taking whatever the socket holds (up to 32
//! completions of a buffer each per wake-up) before the loop sees any of it, and bytes taken from
//! the kernel are this process's memory. A connection that stops taking input meanwhile
//! (output backpressure, the memory budget) must park them, where epoll would have left them
//! in the socket. With the cap, an arming ends once it has delivered [`LIMIT`] bytes (one
//! buffer when the budget is above half; the receive that reaches the cap may overshoot it by
//! up to a buffer), the driver arms it again only while the connection takes input, and what
//! one connection can park is bounded by the cap plus a buffer. The cap is the kernel's
//! `mshot_total_len` (the SQE's `optlen` field); [`probe`] checks at start that the kernel
//! honours it (older kernels refuse the field with `EINVAL`).
//!
//! Must not decide when to arm: that is the staging's and the driver's.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::{self, BufRing};

/// Bytes one arming may deliver while the budget is below half.
pub(super) const LIMIT: u32 = 64 * 1024;

/// The multishot receive of socket `fd`, delivering at most `limit` bytes (0: no cap).
pub(super) fn recv_multi(fd: RawFd, limit: u32) -> squeue::Entry {
    let entry = opcode::RecvMulti::new(types::Fd(fd), bufring::GROUP).build();
    if limit == 0 {
        return entry;
    }
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte `io_uring_sqe` (the
    // transmutes check the size), and bytes 44..48 of that are the `optlen` member of its
    // fifth union, which a multishot receive reads as its total byte cap.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[44..48].copy_from_slice(&limit.to_ne_bytes());
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Whether the kernel caps a multishot receive's bytes: arms a receive capped at one byte on
/// one end of a socket pair, writes two to the other, and reads the completions. (The cap
/// ends the arming after the receive that reaches it, which may overshoot it by up to one
/// buffer.) Runs on the
/// enabled ring before anything else is submitted, and leaves nothing outstanding.
pub(super) fn probe(ring: &mut IoUring, bufs: &mut BufRing) -> io::Result<bool> {
    const PROBE: u64 = u64::MAX;
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair()?;
    let entry = recv_multi(ours.as_raw_fd(), 1).user_data(PROBE);
    // SAFETY: the receive's buffers are the buffer ring's, which outlives the ring.
    unsafe { ring.submission().push(&entry) }.map_err(io::Error::other)?;
    theirs.write_all(b"ab")?;
    let mut capped = None;
    let mut ended = false;
    while !ended {
        ring.submit_and_wait(1)?;
        for cqe in ring.completion() {
            if cqe.user_data() != PROBE {
                continue;
            }
            if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                bufs.give_back(bid, 0);
            }
            let more = cqueue::more(cqe.flags());
            // Honoured: the arming ends once it has delivered its byte (the receive that
            // reaches the cap is not cut short: both bytes come). Refused: EINVAL. Ignored:
            // the arming goes on (`MORE`).
            capped.get_or_insert(cqe.result() > 0 && !more);
            if more {
                // SAFETY: a plain call on a socket this function owns; it ends the receive.
                unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_RDWR) };
            }
            ended = !more;
        }
    }
    bufs.publish();
    Ok(capped == Some(true))
}
