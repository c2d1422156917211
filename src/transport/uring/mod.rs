//! Plain TCP on the io_uring backend ([`crate::reactor`]'s `uring` driver): the transport
//! side of a connection whose bytes move through the ring instead of `read`/`write` calls.
//!
//! Owns how the bytes reach the connection: a receive buffer is lent to it in place (no
//! copy), a large send that nothing queued on the ring precedes is written with one `writev`
//! ([`Transmit`]), and in the driver's direct pass (`Staging::direct_key`) the rest of a
//! large frame is read from the socket itself. What the transports share with the driver is
//! [`staging`]'s. Must not touch the ring: the driver owns it.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;

use super::{Transmit, Transport};

mod staging;

pub(crate) use staging::with_staging;
use staging::Taken;

/// What one send takes at most: the rest stays in the connection's own output (counted by
/// the memory budget, subject to backpressure) until this send completes.
pub(crate) const SEND_CAP: usize = 64 * 1024;

/// A plain TCP connection served through io_uring.
#[derive(Debug)]
pub(crate) struct UringTcp {
    stream: TcpStream,
    key: u32,
    generation: u32,
}

impl UringTcp {
    /// A newly accepted connection in slot `key`: its receive is armed at the end of the turn.
    pub(crate) fn new(stream: TcpStream, key: usize, generation: u32) -> Self {
        let key = key as u32;
        with_staging(|s| s.to_arm.push((key, generation)));
        UringTcp {
            stream,
            key,
            generation,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }
}

impl Transport for UringTcp {
    fn source(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    #[inline]
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b mut [u8]> {
        let (key, generation, max) = (self.key, self.generation, buf.len());
        // The receive buffer's bytes are lent; parked ones are copied into `buf`.
        let got = with_staging(|s| -> io::Result<_> {
            Ok(match s.take(key, generation, max)? {
                Taken::Offered(ptr, n) => Got::Lent(ptr, n),
                Taken::Parked(ptr, n) => {
                    // SAFETY: `take` returned `n` readable bytes that stay valid while `s` is
                    // held.
                    buf[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, n) });
                    Got::Copied(n)
                }
                Taken::End => Got::Copied(0),
                Taken::Socket => Got::Socket,
            })
        })?;
        match got {
            // SAFETY: the receive buffer `offer` named is the driver's until this
            // connection's read returns, and nothing else reads or writes it meanwhile: the
            // contract of `Transport::read`.
            Got::Lent(ptr, n) => Ok(unsafe { std::slice::from_raw_parts_mut(ptr, n) }),
            Got::Copied(n) => Ok(&mut buf[..n]),
            Got::Socket => {
                let n = read_socket((&self.stream).read(buf))?;
                Ok(&mut buf[..n])
            }
        }
    }

    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let copied = with_staging(|s| -> io::Result<_> {
            let (ptr, n) = match s.take(self.key, self.generation, max)? {
                Taken::Offered(ptr, n) => (ptr.cast_const(), n),
                Taken::Parked(ptr, n) => (ptr, n),
                Taken::End => return Ok(Some(0)),
                Taken::Socket => return Ok(None),
            };
            // SAFETY: `take` returned `n` readable bytes that stay valid while `s` is held.
            buf.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, n) });
            Ok(Some(n))
        })?;
        match copied {
            Some(n) => Ok(n),
            None => read_socket(super::plain::read_spare(self.stream.as_raw_fd(), buf, max)),
        }
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        with_staging(|s| s.give(self.key, self.generation, bytes))
    }

    fn flush(&mut self) -> io::Result<bool> {
        // Not flushed while bytes given to the ring are unsent: a finished connection waits
        // for the completion, as a TLS one waits for its records.
        with_staging(|s| Ok(s.extra(self.key).is_none_or(|e| e.out.is_empty())))
    }

    fn close(&mut self) {
        with_staging(|s| s.forget(self.key, self.generation));
        // Ends the multishot receive (which holds the socket open in the kernel) and any send
        // in flight; dropping the stream then closes the descriptor.
        // SAFETY: a plain call on a descriptor this transport owns.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
    }

    fn transmitter(&self) -> Option<&dyn Transmit> {
        Some(self)
    }
}

/// A large send written at once with `writev`, as on epoll: for a message that large one
/// system call costs less than the two copies the ring's send needs (into the connection's
/// output, then into the staging). Small sends still go through the ring, batched per turn.
impl Transmit for UringTcp {
    fn transmit(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Bytes written now must not overtake ones already given to the ring.
        let queued = with_staging(|s| {
            s.extra(self.key)
                .is_some_and(|e| e.in_flight || !e.out.is_empty())
        });
        if queued {
            return Ok(0);
        }
        (&self.stream).write_vectored(bufs)
    }
}

/// Where [`UringTcp::read`]'s bytes are.
enum Got {
    Lent(*mut u8, usize),
    Copied(usize),
    Socket,
}

/// A direct read's outcome: bytes, or `WouldBlock`. The end of the stream and errors are left
/// for the ring's receive to report, so that they reach the connection in one way only.
fn read_socket(outcome: io::Result<usize>) -> io::Result<usize> {
    match outcome {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Kinds of request, in a completion's `user_data`.
pub(crate) mod op {
    pub const ACCEPT: u64 = 1;
    pub const RECV: u64 = 2;
    pub const SEND: u64 = 3;
    pub const WAKE: u64 = 4;
    pub const CANCEL: u64 = 5;
    pub const HANGUP: u64 = 6;
}

/// `user_data`: the kind in the top byte, the generation's low 24 bits, the key.
pub(crate) fn user_data(kind: u64, key: u32, generation: u32) -> u64 {
    kind << 56 | u64::from(generation & 0xff_ffff) << 32 | u64::from(key)
}

pub(crate) fn send_user_data(key: u32, generation: u32) -> u64 {
    user_data(op::SEND, key, generation)
}
