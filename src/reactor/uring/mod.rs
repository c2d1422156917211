//! The io_uring backend of the reactor: where completions come from and how bytes move, for
//! a [`Server`] whose `Config::io_uring` was granted.
//!
//! Owns the ring, the provided-buffer ring ([`bufring`]) and the loop that turns completions
//! into the calls the epoll loop makes: a receive completion becomes `read_ready` of its
//! connection (which takes the bytes through its [`UringTcp`] transport), a send completion
//! becomes `flush` (as a writable edge would), an accept completion becomes `admit`. What a
//! connection does with its bytes, timers, handed-in work, the memory budget and shutdown are
//! the reactor's shared code, not duplicated here. After a turn's completions, connections
//! whose frame in progress still needs much are read from their sockets directly (the
//! direct pass), in reads as large as epoll's. Every request of a loop turn (sends,
//! receives to arm, cancels) goes to the kernel in the one `io_uring_enter` that also waits
//! for the next completions, with the timer wheel's timeout.
//!
//! The wakers stay `mio::Waker`s on the reactor's `Poll`: the ring polls the epoll descriptor
//! itself, so a wake (a shutdown, handed-in work, a publish from another reactor) completes
//! that poll, and `ShutdownHandle`, `ServerHandle` and the thread group need no change.
//!
//! Must not hold anything per idle connection: the buffers are the reactor's, and a
//! connection's io_uring state exists only while it is busy ([`crate::transport::uring`]).

use std::os::fd::{AsRawFd, FromRawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::budget::Level;

use super::*;
use crate::transport::uring::{op, send_user_data, user_data, with_staging};
use crate::transport::UringTcp;

mod bufring;
mod recv;

use bufring::BufRing;

/// Set to make io_uring setup fail, so that the epoll fallback can be tested.
pub(crate) const REFUSE_ENV: &str = "WSREACTOR_IO_URING_REFUSE";

/// Receive buffers per reactor: a power of two. A completion takes one and the loop hands it
/// back in the same turn, so these only need to cover the receives of one turn.
const BUFFERS: u16 = 256;
/// Bytes per receive buffer at most (and at most `read_buffer_size`, so that one read takes a
/// whole completion). 20 KiB, so that a 16 KiB message and its header arrive in one buffer
/// and are handled in place, not assembled from two: 1.05-1.11x the rate of 16 KiB buffers
/// for 10 connections echoing 16 KiB (6 paired rounds). Larger buffers would raise what a
/// held-back connection parks (one buffer, see `recv`) and what an idle reactor keeps
/// published.
const BUFFER_SIZE: usize = 20 * 1024;
/// A connection whose frame in progress still needs at least this many bytes reads them
/// from its socket directly, in reads as large as epoll's, once the ring's completions of the
/// turn are handled (the driver's direct pass): for that much, the unit of a read and a send
/// costs more than a system call. (The ring's receives come in buffers of 20 KiB; a 1 MiB
/// message echoed in 16 KiB pieces measured 0.70-0.84x epoll's rate, as did the raw io_uring
/// echo, and 0.94-0.99x with this pass.) Smaller rests come through the ring, where they cost
/// no call.
const DIRECT_PASS_MIN: u64 = 64 * 1024;
/// How often the buffer ring is swept ([`BufRing::sweep`]), in ms.
const BUFFER_SWEEP_MS: u64 = 250;

/// A reactor's ring and what it has outstanding on it.
pub(crate) struct Ring {
    // Dropped before `bufs`: the kernel must be done with the buffers first.
    ring: IoUring,
    bufs: BufRing,
    /// The multishot accept is outstanding.
    accept_armed: bool,
    /// The kernel caps the bytes of one multishot receive ([`recv`]).
    capped: bool,
    /// When the buffer ring next follows demand down and gives back cold pages.
    next_buffer_sweep: u64,
    /// Connections accepted while accepting was paused, admitted when it resumes.
    held: Vec<mio::net::TcpStream>,
    /// What the memory account was charged for the bytes the staging holds.
    charged: usize,
    /// Connections to read from their sockets directly in this turn (`direct_pass`).
    direct: Vec<(u32, u32)>,
    completions: Vec<(u64, i32, u32)>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").finish_non_exhaustive()
    }
}

impl Ring {
    /// Sets up a ring and probes every operation the backend needs; the error says why not.
    pub(crate) fn new(config: &Config) -> io::Result<Ring> {
        if std::env::var_os(REFUSE_ENV).is_some() {
            return Err(io::Error::other(format!("{REFUSE_ENV} is set")));
        }
        let entries = 1024;
        let ring = IoUring::builder()
            .setup_cqsize(entries * 8)
            // The thread that runs the reactor enables it (`run`): it is then the ring's only
            // submitter, and completions' task work runs only when it asks for completions.
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(entries)?;
        if !ring.params().is_feature_ext_arg() || !ring.params().is_feature_nodrop() {
            return Err(io::Error::other("the kernel lacks EXT_ARG or NODROP"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let needed = [
            ("accept", opcode::AcceptMulti::CODE),
            ("recv", opcode::RecvMulti::CODE),
            ("send", opcode::Send::CODE),
            ("poll_add", opcode::PollAdd::CODE),
            ("async_cancel", opcode::AsyncCancel::CODE),
        ];
        for (name, code) in needed {
            if !probe.is_supported(code) {
                return Err(io::Error::other(format!("the kernel refuses {name}")));
            }
        }
        // Whole pages, so that a buffer's pages can be given back alone (`BufRing`).
        // SAFETY: a plain query.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = (BUFFER_SIZE.min(config.read_buffer_size) / page).max(1) * page;
        let bufs = BufRing::new(&ring, BUFFERS, size)?;
        Ok(Ring {
            ring,
            bufs,
            accept_armed: false,
            capped: false,
            next_buffer_sweep: 0,
            held: Vec::new(),
            charged: 0,
            direct: Vec::new(),
            completions: Vec::with_capacity(entries as usize),
        })
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry's buffers (send bytes, the buffer ring) outlive its completion:
        // see `Staging` and `BufRing`.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    fn arm_accept(&mut self, listener: RawFd) -> io::Result<()> {
        self.accept_armed = true;
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        self.push(
            opcode::AcceptMulti::new(types::Fd(listener))
                .flags(flags)
                .build()
                .user_data(user_data(op::ACCEPT, 0, 0)),
        )
    }

    fn arm_wake(&mut self, epoll: RawFd) -> io::Result<()> {
        self.push(
            opcode::PollAdd::new(types::Fd(epoll), libc::POLLIN as u32)
                .build()
                .user_data(user_data(op::WAKE, 0, 0)),
        )
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        self.push(
            opcode::AsyncCancel::new(target)
                .build()
                .user_data(user_data(op::CANCEL, 0, 0)),
        )
    }
}

use std::os::fd::RawFd;

impl<H: Handler> Server<H> {
    /// [`Server::run`] on the ring.
    pub(super) fn run_uring(&mut self) -> io::Result<()> {
        let mut ring = self.uring.take().expect("run_uring without a ring");
        let keys = self.shared.config.max_connections;
        with_staging(|s| s.reset(keys));
        let outcome = self.serve_uring(&mut ring);
        self.uring = Some(ring);
        outcome
    }

    fn serve_uring(&mut self, ring: &mut Ring) -> io::Result<()> {
        ring.ring.submitter().register_enable_rings()?;
        ring.capped = recv::probe(&mut ring.ring, &mut ring.bufs).unwrap_or_else(|e| {
            log::warn!("io_uring: probing the receive cap failed: {e}");
            false
        });
        if !ring.capped {
            log::warn!(
                "io_uring: this kernel does not cap a multishot receive's bytes, so a \
                 connection that stops reading may park what one wake-up received (up to \
                 about 512 KiB)"
            );
        }
        let epoll = self.poll.as_raw_fd();
        let mut events = Events::with_capacity(64);
        ring.arm_wake(epoll)?;
        self.listener_ready = true;
        loop {
            if self.requested.load(Ordering::Acquire) && self.shutdown_deadline.is_none() {
                self.begin_shutdown();
                if ring.accept_armed {
                    ring.cancel(user_data(op::ACCEPT, 0, 0))?;
                }
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() || self.shared.now >= deadline {
                    self.drop_all();
                    return Ok(());
                }
            }
            self.accept_turn(ring)?;
            self.submit_staged(ring)?;
            let mut timeout = self.poll_timeout();
            if ring.bufs.sweep_pending() {
                let until = ring.next_buffer_sweep.saturating_sub(self.shared.now);
                timeout = timeout.min(Duration::from_millis(until));
            }
            let outcome = if timeout.is_zero() {
                ring.ring.submit()
            } else {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.ring.submitter().submit_with_args(1, &args)
            };
            match outcome {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            self.shared.now = self.start.elapsed().as_millis() as u64;
            if self.shared.topics.arrived() {
                self.run_handed_work();
            }
            let mut completions = std::mem::take(&mut ring.completions);
            completions.extend(
                ring.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, result, flags) in &completions {
                let key = data as u32;
                let generation = (data >> 32) as u32 & 0xff_ffff;
                match data >> 56 {
                    op::RECV => self.received(ring, key, generation, result, flags),
                    op::SEND => self.sent(key, generation, data, result),
                    op::ACCEPT => self.accepted(ring, result, flags),
                    op::HANGUP if result > 0 => {
                        if let Some(slot) = self.slots.get_mut(key as usize) {
                            if slot.generation & 0xff_ffff == generation {
                                slot.peer_closed = true;
                                self.read_ready(key as usize);
                            }
                        }
                    }
                    op::WAKE => {
                        // Drains the waker's edge so that the epoll descriptor reads as idle.
                        let _ = self.poll.poll(&mut events, Some(Duration::ZERO));
                        self.run_handed_work();
                        ring.arm_wake(epoll)?;
                    }
                    _ => {} // a cancel's own completion
                }
            }
            completions.clear();
            ring.completions = completions;
            ring.bufs.publish();
            self.direct_pass(ring);
            self.serve_ready_list();
            self.run_timers();
            if self.shared.now >= ring.next_buffer_sweep {
                ring.next_buffer_sweep = self.shared.now + BUFFER_SWEEP_MS;
                ring.bufs.sweep(self.shared.now);
            }
            self.flush_dirty();
            self.charge_staged(ring);
            self.budget_turn();
        }
    }

    /// Counts what the staging holds (parked input, bytes being sent) in the memory budget.
    fn charge_staged(&mut self, ring: &mut Ring) {
        let held = with_staging(|s| s.held + s.parked_bytes);
        let account = &mut self.shared.pool.account;
        if held > ring.charged {
            account.charge(held - ring.charged);
        } else {
            account.refund(ring.charged - held);
        }
        ring.charged = held;
    }

    /// Whether connection `key` reads now: not paused by output backpressure or held back by
    /// the memory budget (the checks `read_ready` makes before each read).
    fn takes_input(&mut self, key: usize) -> bool {
        let pause_above = self.shared.pool.account.pause_above();
        self.slots.get_mut(key).is_some_and(|slot| {
            let conn = slot.conn.get_mut();
            conn.wants_read() && !super::serve::held_back(conn, pause_above)
        })
    }

    /// The live generation of slot `key` if it is the one `generation` names.
    fn live(&self, key: u32, generation: u32) -> Option<u32> {
        let slot = self.slots.get(key as usize)?;
        (slot.generation & 0xff_ffff == generation).then_some(slot.generation)
    }

    fn received(&mut self, ring: &mut Ring, key: u32, generation: u32, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let more = cqueue::more(flags);
        let live = self.live(key, generation);
        if let Some(full) = live {
            if result > 0 {
                if let Some(bid) = bid {
                    let bytes = ring.bufs.bytes(bid, result as usize);
                    with_staging(|s| s.offer(key, bytes));
                    self.read_ready(key as usize);
                    let alive = self.live(key, generation).map(|_| full);
                    let takes_input = self.takes_input(key as usize);
                    let parked = with_staging(|s| s.park_rest(key, alive, takes_input));
                    if alive.is_some() && takes_input && !parked {
                        self.want_direct(ring, key, full);
                    }
                }
            } else if result == 0 || (result != -libc::ENOBUFS && result != -libc::ECANCELED) {
                // The end of the stream (or an error), behind whatever is parked.
                with_staging(|s| s.end(key, -result));
                if let Some(slot) = self.slots.get_mut(key as usize) {
                    slot.peer_closed = true;
                }
                self.read_ready(key as usize);
            }
        }
        if let Some(bid) = bid {
            ring.bufs.give_back(bid, self.shared.now);
        }
        if result == -libc::ENOBUFS {
            ring.bufs.starved();
        }
        if more || self.live(key, generation).is_none() {
            return;
        }
        let full = live.unwrap_or(0);
        if with_staging(|s| s.recv_ended(key)) {
            with_staging(|s| s.to_arm.push((key, full)));
        } else if !with_staging(|s| s.ended(key)) {
            // Stopped while the connection does not take input: the peer's FIN or RST must
            // still be seen, as an epoll edge would announce it.
            if let Some(fd) = self.uring_fd(key, full) {
                let events = (libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
                let _ = ring.push(
                    opcode::PollAdd::new(types::Fd(fd), events)
                        .build()
                        .user_data(user_data(op::HANGUP, key, full)),
                );
            }
        }
    }

    /// Lists connection `key` for this turn's direct pass if its frame in progress still
    /// needs [`DIRECT_PASS_MIN`] bytes or more.
    fn want_direct(&mut self, ring: &mut Ring, key: u32, generation: u32) {
        let rest = self
            .slots
            .get_mut(key as usize)
            .map_or(0, |slot| slot.conn.get_mut().frame_rest());
        if rest >= DIRECT_PASS_MIN && ring.direct.last() != Some(&(key, generation)) {
            ring.direct.push((key, generation));
        }
    }

    /// Reads the connections listed by `want_direct` from their sockets directly, after every
    /// completion of the turn was handled (see `Staging::direct_key`).
    fn direct_pass(&mut self, ring: &mut Ring) {
        if ring.direct.is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut ring.direct);
        for &(key, generation) in &keys {
            if self.live(key, generation & 0xff_ffff).is_some() {
                with_staging(|s| s.direct_key = key);
                self.read_ready(key as usize);
                with_staging(|s| s.direct_key = u32::MAX);
            }
        }
        keys.clear();
        ring.direct = keys;
    }

    fn sent(&mut self, key: u32, generation: u32, data: u64, result: i32) {
        let Some(outcome) = with_staging(|s| s.sent(key, data, result)) else {
            return;
        };
        let Some(full) = self.live(key, generation) else {
            return;
        };
        match outcome {
            Ok(true) => self.flush(key as usize),
            Ok(false) => with_staging(|s| s.to_send.push((key, full))),
            Err(_) => self.remove(key as usize, CloseCause::Io),
        }
    }

    fn accepted(&mut self, ring: &mut Ring, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            ring.accept_armed = false;
            // Ended (cancelled for a pause, or by the kernel): armed again by `accept_turn`
            // unless accepting is paused, which re-arms it when it resumes. A resume that came
            // before this completion found it still armed.
            self.listener_ready = true;
        }
        if result < 0 {
            if result != -libc::ECANCELED {
                // Out of descriptors or similar: retried at the next timer sweep.
                log::error!("accept failed: {}", io::Error::from_raw_os_error(-result));
                self.accept_paused = true;
            }
            return;
        }
        // SAFETY: the kernel just made this descriptor for us; nothing else owns it.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(result) };
        if self.listener.is_none() {
            return; // shutting down: dropped
        }
        let stream = mio::net::TcpStream::from_std(stream);
        if self.accept_paused || self.refuses_more() {
            self.accept_paused = true;
            ring.held.push(stream);
            if ring.accept_armed {
                // Until a slot frees, the kernel's backlog holds the rest, as with epoll.
                let _ = ring.cancel(user_data(op::ACCEPT, 0, 0));
            }
            return;
        }
        self.admit(stream);
    }

    /// Resumes accepting when the shared code says the listener may have more (`listener_ready`).
    fn accept_turn(&mut self, ring: &mut Ring) -> io::Result<()> {
        if !std::mem::take(&mut self.listener_ready) || self.accept_paused {
            return Ok(());
        }
        while !ring.held.is_empty() {
            if self.refuses_more() {
                self.accept_paused = true;
                return Ok(());
            }
            let stream = ring.held.remove(0);
            self.admit(stream);
        }
        if let Some(listener) = &self.listener {
            if !ring.accept_armed {
                let fd = listener.as_raw_fd();
                ring.arm_accept(fd)?;
            }
        }
        Ok(())
    }

    /// Pushes what the turn staged: receives to arm, receives to cancel, sends.
    fn submit_staged(&mut self, ring: &mut Ring) -> io::Result<()> {
        let (mut arm, mut cancel, mut send) = with_staging(|s| {
            (
                std::mem::take(&mut s.to_arm),
                std::mem::take(&mut s.to_cancel),
                std::mem::take(&mut s.to_send),
            )
        });
        // Above half the budget an arming delivers one buffer, so that a connection held back
        // meanwhile parks at most that.
        let limit = match (ring.capped, self.shared.pool.account.level()) {
            (false, _) => 0,
            (true, Level::Normal) => recv::LIMIT,
            (true, _) => ring.bufs.size() as u32,
        };
        for &(key, generation) in &arm {
            if let Some(fd) = self.uring_fd(key, generation) {
                let entry =
                    recv::recv_multi(fd, limit).user_data(user_data(op::RECV, key, generation));
                ring.push(entry)?;
            }
        }
        for &target in &cancel {
            ring.cancel(target)?;
        }
        for &(key, generation) in &send {
            let Some(fd) = self.uring_fd(key, generation) else {
                continue;
            };
            let Some((ptr, len)) = with_staging(|s| s.begin_send(key)) else {
                continue;
            };
            let entry = opcode::Send::new(types::Fd(fd), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(send_user_data(key, generation));
            ring.push(entry)?;
        }
        // Keep the allocations.
        arm.clear();
        cancel.clear();
        send.clear();
        with_staging(|s| {
            if s.to_arm.is_empty() {
                s.to_arm = arm;
            }
            if s.to_cancel.is_empty() {
                s.to_cancel = cancel;
            }
            if s.to_send.is_empty() {
                s.to_send = send;
            }
        });
        Ok(())
    }

    /// The socket of slot `key` if it is still the connection `generation` names.
    fn uring_fd(&mut self, key: u32, generation: u32) -> Option<RawFd> {
        let slot = self.slots.get_mut(key as usize)?;
        match slot.transport.get_mut() {
            SlotTransport::Uring(t) if t.generation() == generation => Some(t.fd()),
            _ => None,
        }
    }
}

pub(super) fn transport(stream: mio::net::TcpStream, key: usize, generation: u32) -> SlotTransport {
    SlotTransport::Uring(UringTcp::new(stream, key, generation))
}
