//! The send timer of a fixed rate: a Linux `timerfd` in the reactor's poll set, armed for the
//! earliest moment a paced connection is due to send. `epoll_wait` counts its timeout in whole
//! milliseconds, so without this a paced message went out up to a millisecond after it was due,
//! and since latency counts from when a message is due, that lateness was the generator's and
//! not the server's (100 connections at 1,000 msg/s against wsreactor, pinned: a median round
//! trip of 584 µs with the millisecond poll, 61–93 µs with this timer). It owns the descriptor
//! and its arming; it must not decide who sends.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The shortest wait the timer is armed for: sends due closer together than this go out in one
/// turn, at most this late, so that at high rates the loop does not wake once per message.
pub(crate) const MIN_WAIT: Duration = Duration::from_micros(50);
/// Every turn of a paced run looks at every connection for what is due (a few ns each): the
/// wait is at least this per live connection too, so that look stays a small share of the
/// loop's time (10,000 connections: 200 µs).
pub(crate) const WAIT_PER_CONN: Duration = Duration::from_nanos(20);

/// The poll token of the timer (no connection has it: connections are indexed from 0).
pub(crate) const TIMER: Token = Token(usize::MAX);

/// A one-shot timerfd registered for readability.
pub(crate) struct SendTimer {
    fd: RawFd,
    /// The deadline it is armed for, if it is armed and has not fired.
    armed: Option<Instant>,
}

impl SendTimer {
    /// Creates the timer and registers it; lowers the process's timer slack to 1 µs so the
    /// kernel does not round wake-ups up by its default 50 µs.
    pub(crate) fn new(registry: &Registry) -> io::Result<SendTimer> {
        // SAFETY: plain syscalls on arguments we own; the fd is checked before use.
        let fd = unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let t = SendTimer { fd, armed: None };
        registry.register(&mut SourceFd(&fd), TIMER, Interest::READABLE)?;
        Ok(t)
    }

    /// Arms the timer for `deadline` (at least `min_wait` from `now`) unless it is already
    /// armed for an earlier one still ahead (an early wake-up only costs a turn that finds
    /// nothing due).
    pub(crate) fn arm(&mut self, deadline: Instant, now: Instant, min_wait: Duration) {
        let min_wait = min_wait.max(Duration::from_nanos(1));
        let deadline = deadline.max(now + min_wait);
        if self.armed.is_some_and(|a| a > now && a <= deadline) {
            return;
        }
        // Never zero: a zero it_value would disarm the timerfd.
        let wait = deadline.saturating_duration_since(now).max(min_wait);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a fully initialised itimerspec.
        let rc = unsafe { libc::timerfd_settime(self.fd, 0, &spec, std::ptr::null_mut()) };
        self.armed = (rc == 0).then_some(deadline);
    }

    /// Clears the expiry after the timer's readiness event.
    pub(crate) fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading at most 8 bytes into a local buffer from our non-blocking fd; an
        // EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len());
        }
        self.armed = None;
    }
}

impl Drop for SendTimer {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns, once.
        unsafe {
            libc::close(self.fd);
        }
    }
}
