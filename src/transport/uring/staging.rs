//! [`Staging`]: what the io_uring driver and the transports of one reactor thread share. The
//! received bytes being handed to the connection that is being read, bytes received that a
//! paused connection has not taken yet, and the bytes each connection gave to be sent in this
//! loop turn's submit (or already in flight). The driver owns the ring and decides when
//! requests are submitted; this module must not touch the ring. It lives in a thread-local
//! because one reactor runs on one thread and the `Transport` calls come from code shared
//! with the epoll backend, which has no place to pass it through; that keeps the slot's
//! transport at its epoll size (an fd, the slot's key and generation).
//!
//! Per connection nothing is held while it is idle: [`Extra`] exists only while the
//! connection has parked input, a send in flight or a stopped receive.

use std::cell::RefCell;
use std::io;

use super::{op, send_user_data, user_data, SEND_CAP};

/// The most of a parked-input buffer's capacity kept for reuse (one receive buffer).
const PARKED_KEPT: usize = 20 * 1024;

/// Where a connection's multishot receive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RecvState {
    /// Armed (or about to be): completions deliver its bytes.
    #[default]
    Armed,
    /// Cancelled because the connection stopped taking input; completions may still arrive
    /// until the one without `MORE`. `rearm`: the parked input was taken meanwhile.
    Stopping { rearm: bool },
    /// No receive is outstanding.
    Idle,
}

/// What a busy connection holds on the io_uring side.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    /// Received bytes the connection has not taken yet, from `parked_at` on.
    pub parked: Vec<u8>,
    pub parked_at: usize,
    /// The end of the stream once seen: 0 for EOF, else an errno.
    pub end: Option<i32>,
    pub recv: RecvState,
    /// Bytes given to be sent, `sent` of them already taken by the kernel.
    pub out: Vec<u8>,
    pub sent: usize,
    /// A send of `out[sent..]` is in the kernel's hands: `out` must not move until its
    /// completion, and the connection's next bytes wait.
    pub in_flight: bool,
    /// Listed in [`Staging::to_send`].
    pub staged: bool,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.parked_at >= self.parked.len()
            && self.end.is_none()
            && self.recv == RecvState::Armed
            && self.out.is_empty()
            && !self.in_flight
    }
}

/// What the driver and the transports of this thread share (see the module doc).
#[derive(Debug)]
pub(crate) struct Staging {
    /// The completion's bytes being handed to connection `input_key`: a receive buffer the
    /// driver holds until that connection's read returns, lent to it in place.
    input: *mut u8,
    input_len: usize,
    input_key: u32,
    /// Per slot key; `None` for every idle connection.
    extras: Vec<Option<Box<Extra>>>,
    #[allow(clippy::vec_box)] // moved in and out of `extras`, which holds boxes
    spare: Vec<Box<Extra>>,
    /// Connections with bytes to send in this turn's submit, and ones whose receive must be
    /// armed: (key, generation).
    pub to_send: Vec<(u32, u32)>,
    pub to_arm: Vec<(u32, u32)>,
    /// Sends in flight of connections already closed: their buffers live until completion.
    pub orphans: Vec<(u64, Vec<u8>)>,
    /// Requests to cancel, by their `user_data`: receives of connections that stopped taking
    /// input, and `POLLRDHUP` watches of ones that take it again.
    pub to_cancel: Vec<u64>,
    /// Bytes given to be sent, over all connections: what the driver counts in the memory
    /// budget for them (with epoll they would wait in the connection's output).
    pub held: usize,
    /// Bytes parked, over all connections; counted in the memory budget with `held`. (With
    /// epoll they would wait in the kernel's socket buffer: the receive cap and the stop of a
    /// connection's receive as soon as it does not take input keep them to about a buffer
    /// per connection: see the driver's `recv`.)
    pub parked_bytes: usize,
    /// The connection whose socket may be read directly now (`u32::MAX`: none). The driver
    /// sets it only after the turn's completions are all handled and before the next
    /// submit: a socket's next bytes are then its stream's next ones, since the ring takes
    /// bytes from a socket only while the driver waits in `io_uring_enter` (the ring is set
    /// up with `DEFER_TASKRUN`).
    pub direct_key: u32,
}

/// What [`Staging::take`] found for a read.
pub(super) enum Taken {
    /// Bytes of the receive buffer being handed over, lent in place.
    Offered(*mut u8, usize),
    /// Parked bytes, to be copied before the staging is let go.
    Parked(*const u8, usize),
    /// The end of the stream.
    End,
    /// Nothing received is waiting, and the socket may be read directly.
    Socket,
}

thread_local! {
    static STAGING: RefCell<Staging> = const {
        RefCell::new(Staging {
            input: std::ptr::null_mut(),
            input_len: 0,
            input_key: u32::MAX,
            extras: Vec::new(),
            spare: Vec::new(),
            to_send: Vec::new(),
            to_arm: Vec::new(),
            orphans: Vec::new(),
            to_cancel: Vec::new(),
            held: 0,
            parked_bytes: 0,
            direct_key: u32::MAX,
        })
    };
}

fn extra_in(extras: &mut [Option<Box<Extra>>], key: u32) -> Option<&mut Extra> {
    extras.get_mut(key as usize)?.as_deref_mut()
}

#[allow(clippy::vec_box)]
fn extra_new<'a>(
    extras: &'a mut Vec<Option<Box<Extra>>>,
    spare: &mut Vec<Box<Extra>>,
    key: u32,
) -> &'a mut Extra {
    let index = key as usize;
    if index >= extras.len() {
        extras.resize_with(index + 1, || None);
    }
    extras[index].get_or_insert_with(|| spare.pop().unwrap_or_default())
}

/// Runs `f` with this thread's staging. Never called re-entrantly: transports call it from
/// their own methods only, and the driver never holds it across a call into the reactor.
pub(crate) fn with_staging<R>(f: impl FnOnce(&mut Staging) -> R) -> R {
    STAGING.with_borrow_mut(f)
}

impl Staging {
    /// Forgets everything: a new `run` on this thread starts clean. `keys`: the most slot
    /// keys there will be, reserved up front as the slab is (pages never touched are never
    /// resident, and the table never doubles and copies under a connection storm).
    pub(crate) fn reset(&mut self, keys: usize) {
        self.extras = Vec::with_capacity(keys);
        self.input_len = 0;
        self.input_key = u32::MAX;
        self.to_send.clear();
        self.to_arm.clear();
        self.to_cancel.clear();
        self.held = 0;
        self.parked_bytes = 0;
        self.direct_key = u32::MAX;
    }

    pub(crate) fn extra(&mut self, key: u32) -> Option<&mut Extra> {
        extra_in(&mut self.extras, key)
    }

    /// Drops `key`'s extra if it holds nothing any more (its buffers kept for reuse).
    pub(crate) fn settle(&mut self, key: u32) {
        if let Some(slot) = self.extras.get_mut(key as usize) {
            if slot.as_ref().is_some_and(|e| e.is_empty()) {
                if let Some(mut extra) = slot.take() {
                    extra.parked.clear();
                    extra.parked_at = 0;
                    extra.out.clear();
                    extra.sent = 0;
                    extra.staged = false;
                    if extra.parked.capacity() > PARKED_KEPT {
                        extra.parked = Vec::new();
                    }
                    if self.spare.len() < 64 && extra.out.capacity() <= SEND_CAP {
                        self.spare.push(extra);
                    }
                }
            }
        }
    }

    /// The bytes of one receive completion, for connection `key` to take now (in place: see
    /// `input`).
    pub(crate) fn offer(&mut self, key: u32, bytes: &mut [u8]) {
        if let Some(extra) = extra_in(&mut self.extras, key) {
            if extra.parked_at < extra.parked.len() {
                // Behind what it has not taken yet.
                extra.parked.extend_from_slice(bytes);
                self.parked_bytes += bytes.len();
                return;
            }
        }
        self.input = bytes.as_mut_ptr();
        self.input_len = bytes.len();
        self.input_key = key;
    }

    /// After the connection was served: what it did not take is parked, and its receive
    /// stopped if it did not take everything or does not take input now (`takes_input`:
    /// output backpressure, the memory budget), so that a connection that stopped reading
    /// does not make this side buffer for it. Its next read that finds nothing arms the
    /// receive again. False if the offered bytes were all taken.
    pub(crate) fn park_rest(&mut self, key: u32, alive: Option<u32>, takes_input: bool) -> bool {
        let (ptr, len) = (self.input, self.input_len);
        self.input_len = 0;
        self.input_key = u32::MAX;
        let Some(generation) = alive else {
            return false;
        };
        if len == 0 && takes_input {
            return false;
        }
        let extra = extra_new(&mut self.extras, &mut self.spare, key);
        if len > 0 {
            // SAFETY: `offer` set these from a provided buffer the driver hands back to the
            // kernel only after this call.
            extra
                .parked
                .extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
            self.parked_bytes += len;
        }
        if extra.recv == RecvState::Armed {
            extra.recv = RecvState::Stopping { rearm: false };
            self.to_cancel.push(user_data(op::RECV, key, generation));
        }
        len > 0
    }

    /// Whether `key`'s stream has ended (EOF or an error seen).
    pub(crate) fn ended(&mut self, key: u32) -> bool {
        self.extra(key).is_some_and(|e| e.end.is_some())
    }

    /// The receive of `key` ended (a completion without `MORE`): whether to arm it again.
    pub(crate) fn recv_ended(&mut self, key: u32) -> bool {
        match self.extra(key) {
            None => true,
            Some(extra) => {
                let again = match extra.recv {
                    RecvState::Armed => true,
                    RecvState::Stopping { rearm } => rearm,
                    RecvState::Idle => false,
                };
                let again = again && extra.end.is_none();
                extra.recv = if again {
                    RecvState::Armed
                } else {
                    RecvState::Idle
                };
                self.settle(key);
                again
            }
        }
    }

    /// The stream of `key` ended (0: EOF, else an errno), behind what is parked.
    pub(crate) fn end(&mut self, key: u32, errno: i32) {
        let extra = extra_new(&mut self.extras, &mut self.spare, key);
        extra.end.get_or_insert(errno);
    }

    /// Reads for connection `key`: the offered bytes, else parked ones, else the end, else
    /// (in the driver's direct pass, `direct_key`) the socket itself.
    pub(super) fn take(&mut self, key: u32, generation: u32, max: usize) -> io::Result<Taken> {
        let direct = self.direct_key == key;
        if self.input_key == key && self.input_len > 0 {
            let n = self.input_len.min(max);
            let ptr = self.input;
            // SAFETY: `n` is within the offered bytes.
            self.input = unsafe { self.input.add(n) };
            self.input_len -= n;
            return Ok(Taken::Offered(ptr, n));
        }
        let Some(extra) = self
            .extras
            .get_mut(key as usize)
            .and_then(|e| e.as_deref_mut())
        else {
            // Nothing parked and the receive armed.
            return if direct {
                Ok(Taken::Socket)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        };
        if extra.parked_at < extra.parked.len() {
            let n = (extra.parked.len() - extra.parked_at).min(max);
            // SAFETY: within `parked`, which the caller copies from before anything else can
            // touch this staging (it holds the borrow). `parked` is only cleared by a later
            // call, never this one.
            let ptr = unsafe { extra.parked.as_ptr().add(extra.parked_at) };
            extra.parked_at += n;
            self.parked_bytes -= n;
            if extra.parked_at == extra.parked.len() {
                // All taken: receive again now, since a short read is not followed by another.
                match extra.recv {
                    RecvState::Idle if extra.end.is_none() => {
                        extra.recv = RecvState::Armed;
                        self.to_arm.push((key, generation));
                    }
                    RecvState::Stopping { .. } => extra.recv = RecvState::Stopping { rearm: true },
                    _ => {}
                }
            }
            return Ok(Taken::Parked(ptr, n));
        }
        if !extra.parked.is_empty() {
            extra.parked.clear();
            extra.parked_at = 0;
        }
        match extra.end {
            Some(0) => Ok(Taken::End),
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            // With the receive armed, what comes next is on the socket or on the way to the
            // ring; a stopped receive is armed again by a read that finds nothing instead.
            None if direct && extra.recv == RecvState::Armed => {
                self.settle(key);
                Ok(Taken::Socket)
            }
            None => {
                // Nothing here, and the connection asks: it takes input again.
                match extra.recv {
                    RecvState::Idle => {
                        extra.recv = RecvState::Armed;
                        self.to_arm.push((key, generation));
                        // The watch for its peer's FIN is the receive's job again.
                        self.to_cancel.push(user_data(op::HANGUP, key, generation));
                    }
                    RecvState::Stopping { .. } => extra.recv = RecvState::Stopping { rearm: true },
                    RecvState::Armed => {}
                }
                self.settle(key);
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    /// Takes bytes connection `key` gives to be sent, up to the send cap: how many, or
    /// `WouldBlock` while a send of its is in flight (its completion flushes the connection
    /// again, as a writable edge would).
    pub(super) fn give(&mut self, key: u32, generation: u32, bytes: &[u8]) -> io::Result<usize> {
        let extra = extra_new(&mut self.extras, &mut self.spare, key);
        let room = SEND_CAP.saturating_sub(extra.out.len());
        if extra.in_flight || room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(room);
        extra.out.extend_from_slice(&bytes[..n]);
        self.held += n;
        if !extra.staged {
            extra.staged = true;
            self.to_send.push((key, generation));
        }
        Ok(n)
    }

    /// Connection `key` is closed: what it held is forgotten, except a send in flight, whose
    /// bytes live until its completion.
    pub(super) fn forget(&mut self, key: u32, generation: u32) {
        let Some(mut extra) = self.extras.get_mut(key as usize).and_then(Option::take) else {
            return;
        };
        self.parked_bytes -= extra.parked.len() - extra.parked_at;
        self.held -= extra.out.len();
        if extra.in_flight {
            let user_data = send_user_data(key, generation);
            self.orphans
                .push((user_data, std::mem::take(&mut extra.out)));
        }
    }

    /// A send of `key` completed with `result`: `Ok(true)` when everything given was sent
    /// and the connection may write again, `Ok(false)` when the rest must be sent, `Err` when
    /// the socket failed (or the send was an orphan's: `None`).
    pub(crate) fn sent(
        &mut self,
        key: u32,
        user_data: u64,
        result: i32,
    ) -> Option<io::Result<bool>> {
        if let Some(at) = self.orphans.iter().position(|(ud, _)| *ud == user_data) {
            self.orphans.swap_remove(at);
            return None;
        }
        let extra = extra_in(&mut self.extras, key)?;
        extra.in_flight = false;
        if result < 0 {
            self.held -= extra.out.len();
            extra.out.clear();
            extra.sent = 0;
            self.settle(key);
            return Some(Err(io::Error::from_raw_os_error(-result)));
        }
        extra.sent += result as usize;
        if extra.sent < extra.out.len() && result > 0 {
            return Some(Ok(false));
        }
        let done = extra.sent >= extra.out.len();
        if done {
            self.held -= extra.out.len();
            extra.out.clear();
            extra.sent = 0;
        }
        self.settle(key);
        Some(if done {
            Ok(true)
        } else {
            Err(io::ErrorKind::WriteZero.into())
        })
    }

    /// The bytes of `key` to send now, marking them in flight: pointer and length.
    pub(crate) fn begin_send(&mut self, key: u32) -> Option<(*const u8, usize)> {
        let extra = extra_in(&mut self.extras, key)?;
        extra.staged = false;
        if extra.in_flight || extra.sent >= extra.out.len() {
            return None;
        }
        extra.in_flight = true;
        // SAFETY: `sent` is within `out`, which does not move while `in_flight`.
        Some((
            unsafe { extra.out.as_ptr().add(extra.sent) },
            extra.out.len() - extra.sent,
        ))
    }
}
