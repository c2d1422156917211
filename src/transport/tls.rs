//! TLS over TCP with rustls: a `rustls::ServerConnection` driven without blocking.
//!
//! Owns the TLS session of one connection: ciphertext read from the socket is decrypted by
//! rustls and handed to the reactor as plaintext; plaintext the reactor writes (the
//! connection's whole out buffer, once per loop turn) is turned into as few records as
//! rustls' fragment size allows and written with `write_tls`. Also owns loading the
//! certificate chain and key (`rustls-pki-types`' PEM parsing) into one shared
//! `ServerConfig`. Must not know WebSocket frames or HTTP, and must not implement anything
//! rustls does (record layer, handshake, alerts, tickets).
//!
//! Buffering: rustls keeps its own buffers inside the `ServerConnection` (a read buffer of
//! at least 4 KiB once anything was read, records not yet written, plaintext not yet read).
//! Plaintext never waits in it between loop turns: `read` drains it into the reactor's
//! buffer, and `write` moves records to the socket until it would block. Unwritten records
//! are bounded by rustls' buffer limit ([`SEND_LIMIT`]): `write` takes no more plaintext
//! than fits.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::{Transmit, Transport};
use crate::config::TlsError;

/// Records encrypted but not yet written, at most (rustls' buffer limit): `write` accepts
/// plaintext only while the records it makes fit under this, so a peer that stops reading
/// holds at most this much here besides the connection's own backlog.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;

/// Plaintext moved into a message buffer per step of `read_into` (zeroed first: rustls
/// writes into initialised bytes only).
const INTO_STEP: usize = 64 * 1024;

/// A TLS connection over a non-blocking socket.
pub(crate) struct TlsTcp {
    stream: TcpStream,
    tls: ServerConnection,
}

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTcp")
            .field("handshaking", &self.tls.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsTcp {
    pub(crate) fn new(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(SEND_LIMIT));
        Ok(TlsTcp { stream, tls })
    }

    /// Fills `out` with plaintext: what rustls already decrypted, then whatever the socket
    /// holds, until `out` is full or the socket would block. So a count below `out.len()`
    /// means the socket was drained (the reactor's short-read rule), and `WouldBlock` that
    /// nothing at all was there. `Ok(0)` is the end of the stream (a `close_notify`, or the
    /// socket's end, reported once the plaintext before it was taken).
    fn fill(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.tls.reader().read(&mut out[filled..]) {
                Ok(0) if filled == out.len() => return Ok(filled),
                Ok(0) => return Ok(filled), // close_notify: the end, after what was read
                Ok(n) => {
                    filled += n;
                    if filled == out.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: the end too, after the plaintext.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert for the peer: a best-effort write, then fail.
                let _ = self.tls.write_tls(&mut self.stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Writes queued records until none are left (`Ok(true)`) or the socket would block
    /// (`Ok(false)`: a writable edge follows).
    fn write_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl Transport for TlsTcp {
    fn source(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    #[inline(never)] // kept out of the reactor's loop: the plain path stays small
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill(buf)
    }

    #[inline(never)] // kept out of the reactor's loop: the plain path stays small
    fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let mut total = 0;
        while total < max {
            let step = (max - total).min(INTO_STEP);
            let start = buf.len();
            buf.resize(start + step, 0);
            let got = self.fill(&mut buf[start..]);
            let n = *got.as_ref().unwrap_or(&0);
            buf.truncate(start + n);
            match got {
                Ok(n) => {
                    total += n;
                    if n < step {
                        break; // drained, or the end
                    }
                }
                Err(e) if total > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Encrypts from `bytes` as much as fits under [`SEND_LIMIT`] (one record per 16 KiB,
    /// not one per call) and writes the records, repeating until all of `bytes` is taken or
    /// the socket would block. Fewer bytes than offered therefore means the socket is full.
    #[inline(never)] // kept out of the reactor's loop: the plain path stays small
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if taken < bytes.len() {
                taken += self.tls.writer().write(&bytes[taken..])?;
            }
            if !self.write_records()? {
                return if taken == 0 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(taken)
                };
            }
            if taken == bytes.len() {
                return Ok(taken);
            }
        }
    }

    #[inline(never)] // kept out of the reactor's loop: the plain path stays small
    fn flush(&mut self) -> io::Result<bool> {
        self.write_records()
    }

    fn transmitter(&self) -> Option<&dyn Transmit> {
        None // everything goes through rustls
    }

    fn close(&mut self) {
        self.tls.send_close_notify();
        let _ = self.write_records();
    }
}

/// Loads the certificate chain and private key (PEM files) into the configuration every TLS
/// connection of a server shares: TLS 1.3 and 1.2 with `ring`, ALPN `http/1.1`, session
/// resumption by tickets (and by session id, rustls' default cache).
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::new(cert, "no CERTIFICATE section in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(cert, format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::new(
                key,
                format!("does not match the certificate in {}", cert.display()),
            ),
            e => TlsError::new(key, format!("not usable with the certificate: {e}")),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError::new(cert, format!("session tickets: {e}")))?;
    Ok(Arc::new(config))
}

fn pem_error(path: &Path, what: &str, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(e) => TlsError::new(path, format!("cannot read the {what} file: {e}")),
        pem::Error::NoItemsFound => TlsError::new(path, format!("no {what} in the file")),
        e => TlsError::new(path, format!("not a valid PEM {what} file: {e}")),
    }
}
