//! The seam between a socket and a connection: what carries a connection's bytes.
//!
//! Owns reading and writing bytes for one connection's slot; knows nothing of WebSocket
//! frames, which live in [`crate::connection`]. The reactor moves bytes between a
//! [`Transport`] and the sans-IO connection, and the connection never learns which transport
//! carries it: plain TCP today ([`PlainTcp`], with its direct-read and direct-write fast
//! paths), TLS or io_uring later, as other implementations of the same trait.

use std::io::{self, IoSlice};

mod plain;

pub(crate) use plain::PlainTcp;

/// The transport every slot holds. TLS makes this an enum of the transports a listener can
/// carry; the reactor's code does not change.
pub(crate) type SlotTransport = PlainTcp;

/// What carries one connection's bytes.
pub(crate) trait Transport {
    /// The readiness source to register with the poll.
    fn source(&mut self) -> &mut mio::net::TcpStream;

    /// Reads the next bytes into `buf` (the reactor's shared read buffer): how many, `0` at
    /// the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads at most `max` bytes straight to the end of `buf` (a message buffer that a large
    /// frame is being read into), and extends it by what was read. A transport that cannot
    /// do better reads into a buffer of its own and copies.
    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;

    /// Writes from the start of `bytes`: how many were taken.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;

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
