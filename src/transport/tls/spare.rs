//! The reactor thread's spare ciphertext buffers, lent to TLS connections while they have
//! bytes in flight.
//!
//! Owns a few initialised buffers per thread. A TLS connection takes one when it reads from
//! its socket or encrypts, and gives it back as soon as nothing is left in it (no partial
//! record to keep, no record the socket did not take), so an idle TLS connection owns no
//! buffer at all and a busy reactor allocates none per read. Must not know TLS: these are
//! plain byte buffers.
//!
//! Thread-local rather than the reactor's pool because the transport is called through the
//! `Transport` seam, which does not carry the reactor; each reactor is one thread, so the
//! pool is still per reactor.

use std::cell::RefCell;

/// Length of a lent buffer: a whole TLS record (16 KiB of plaintext and its overhead) plus
/// room to read more behind a partial one.
pub(super) const BUFFER_LEN: usize = 32 * 1024;

/// Buffers kept per thread at most; more are freed when given back.
const KEPT: usize = 16;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An initialised buffer of at least [`BUFFER_LEN`] bytes (its `len`, not only capacity:
/// sockets and rustls write into initialised bytes only).
pub(super) fn take() -> Vec<u8> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUFFER_LEN])
}

/// Takes back a buffer whose contents are no longer needed. Buffers grown past
/// [`BUFFER_LEN`] (a large handshake message) are freed, not kept.
pub(super) fn give(buf: Vec<u8>) {
    if buf.len() != BUFFER_LEN {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}
