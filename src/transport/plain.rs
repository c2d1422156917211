//! Plain TCP: a non-blocking `mio` socket, read and written with one system call each.
//!
//! Owns the plain-TCP fast paths: a large frame's payload is read straight into the message
//! buffer's spare capacity (no copy through the shared read buffer, no zeroing), and a large
//! send is written with one `writev` of header and payload. Must not hold buffers of its own:
//! an idle plain connection costs its socket only.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;

use super::{Transmit, Transport};

/// A plain TCP connection.
#[derive(Debug)]
pub(crate) struct PlainTcp {
    stream: TcpStream,
}

impl PlainTcp {
    pub(crate) fn new(stream: TcpStream) -> Self {
        PlainTcp { stream }
    }
}

impl Transport for PlainTcp {
    fn source(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    #[inline(always)]
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b mut [u8]> {
        let n = (&self.stream).read(buf)?;
        Ok(&mut buf[..n])
    }

    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        read_spare(self.stream.as_raw_fd(), buf, max)
    }

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        (&self.stream).write(bytes)
    }

    #[inline(always)]
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true) // nothing of its own
    }

    #[inline(always)]
    fn transmitter(&self) -> Option<&dyn Transmit> {
        Some(self)
    }
}

impl Transmit for PlainTcp {
    fn transmit(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.stream).write_vectored(bufs)
    }
}

/// Reads at most `max` bytes from socket `fd` straight into the spare capacity of `buf` (no
/// zeroing, no copy) and extends it by what was read.
pub(super) fn read_spare(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is valid for writes of `len` bytes; the kernel writes at most `len`.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the first `n` spare bytes were just initialised by `read`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
