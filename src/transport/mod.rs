//! The seam between a socket and a connection: what carries a connection's bytes.
//!
//! Owns reading and writing bytes for one connection's slot; knows nothing of WebSocket
//! frames, which live in [`crate::connection`]. The reactor moves bytes between a
//! [`Transport`] and the sans-IO connection, and the connection never learns which transport
//! carries it: plain TCP ([`PlainTcp`], with its direct-read and direct-write fast paths)
//! and TLS ([`TlsTcp`], rustls), and plain TCP through io_uring ([`UringTcp`]), as
//! implementations of the same trait. [`SlotTransport`] is what a slot holds: one of them, chosen at accept by the
//! listener's configuration.

use std::io::{self, IoSlice};

mod plain;
mod tls;
pub(crate) mod uring;

pub(crate) use plain::PlainTcp;
pub(crate) use tls::{server_config, TlsTcp};
pub(crate) use uring::UringTcp;

/// The transport every slot holds: one of the transports a listener can carry. The TLS one
/// is boxed, so a plain slot pays one word for its existence, not rustls' state.
#[derive(Debug)]
pub(crate) enum SlotTransport {
    Plain(PlainTcp),
    Tls(Box<TlsTcp>),
    Uring(UringTcp),
}

impl Transport for SlotTransport {
    #[inline(always)]
    fn source(&mut self) -> &mut mio::net::TcpStream {
        match self {
            SlotTransport::Plain(t) => t.source(),
            SlotTransport::Tls(t) => t.source(),
            SlotTransport::Uring(t) => t.source(),
        }
    }

    #[inline(always)]
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b mut [u8]> {
        match self {
            SlotTransport::Plain(t) => t.read(buf),
            SlotTransport::Tls(t) => t.read(buf),
            SlotTransport::Uring(t) => t.read(buf),
        }
    }

    #[inline(always)]
    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self {
            SlotTransport::Plain(t) => t.read_into(buf, max),
            SlotTransport::Tls(t) => t.read_into(buf, max),
            SlotTransport::Uring(t) => t.read_into(buf, max),
        }
    }

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            SlotTransport::Plain(t) => t.write(bytes),
            SlotTransport::Tls(t) => t.write(bytes),
            SlotTransport::Uring(t) => t.write(bytes),
        }
    }

    #[inline(always)]
    fn flush(&mut self) -> io::Result<bool> {
        match self {
            SlotTransport::Plain(_) => Ok(true),
            SlotTransport::Tls(t) => t.flush(),
            SlotTransport::Uring(t) => t.flush(),
        }
    }

    #[inline(always)]
    fn transmitter(&self) -> Option<&dyn Transmit> {
        match self {
            SlotTransport::Plain(t) => t.transmitter(),
            SlotTransport::Uring(t) => t.transmitter(),
            SlotTransport::Tls(_) => None,
        }
    }

    fn close(&mut self) {
        match self {
            SlotTransport::Plain(t) => t.close(),
            SlotTransport::Tls(t) => t.close(),
            SlotTransport::Uring(t) => t.close(),
        }
    }
}

/// What carries one connection's bytes.
pub(crate) trait Transport {
    /// The readiness source to register with the poll.
    fn source(&mut self) -> &mut mio::net::TcpStream;

    /// Reads the next bytes: the ones to handle (and unmask in place), empty at the end of
    /// the stream. Read into `buf` (the reactor's shared read buffer), or, by a transport that
    /// already holds them in memory of its own (io_uring's receive buffer), lent from there
    /// instead of copied. Lent bytes stay valid and unshared for as long as `buf` is borrowed
    /// within the reactor's read of this connection (the receive buffer is handed back to the
    /// kernel only after it).
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b mut [u8]>;

    /// Reads at most `max` bytes straight to the end of `buf` (a message buffer that a large
    /// frame is being read into), and extends it by what was read. A transport that cannot
    /// do better reads into a buffer of its own and copies.
    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;

    /// Writes from the start of `bytes`: how many were taken. Fewer than offered (or
    /// `WouldBlock`) only when the socket is full, so that a writable edge follows.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;

    /// Writes bytes the transport holds of its own (TLS records, handshake messages, alerts):
    /// `Ok(true)` when none are left, `Ok(false)` when the socket is full (a writable edge
    /// follows). Called after every read and with every flush, even when the connection has
    /// no output. A transport without buffers of its own has nothing to do.
    fn flush(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// The connection is being dropped: a last word to the peer if the transport has one
    /// (TLS's `close_notify`), written only if the socket takes it now.
    fn close(&mut self) {}

    /// Where a large send may be written at once, during a call into the connection, instead
    /// of being copied into its out buffer; `None` for a transport that must frame or encrypt
    /// everything it writes.
    fn transmitter(&self) -> Option<&dyn Transmit>;
}

/// A transport lent to the connection for one immediate write; the connection never sees its
/// type.
pub(crate) trait Transmit {
    /// Writes from `bufs` now, as `writev` does: the bytes taken, possibly fewer than offered.
    fn transmit(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}
