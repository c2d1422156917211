//! TLS over TCP with rustls' unbuffered API: a `rustls::server::UnbufferedServerConnection`
//! driven without blocking, with buffers that exist only while bytes are in flight.
//!
//! Owns the TLS session of one connection: ciphertext read from the socket is decrypted by
//! rustls and handed to the reactor as plaintext; plaintext the reactor writes (the
//! connection's whole out buffer, once per loop turn) is encrypted into as few records as
//! the 16 KiB record size allows and written to the socket. Must not know WebSocket frames
//! or HTTP, and must not implement anything rustls does (record layer, handshake, alerts,
//! tickets): this module only moves bytes in and out of rustls' state machine.
//!
//! Buffering, and why the unbuffered API: with rustls' buffered `ServerConnection` every
//! connection that had read anything kept a 4 KiB read buffer for good, about half of an
//! idle TLS connection's cost. Here the buffers are ours ([`Held`]): ciphertext read but not
//! yet a whole record, records the socket did not take yet, and plaintext of a record that
//! did not fit the reader's buffer. Each is lent from the thread's spare buffers
//! ([`spare`]) while it holds bytes and given back when it is empty, so an idle TLS
//! connection holds rustls' session state (keys, sequence numbers) and nothing else.
//! Unwritten records are bounded by [`SEND_LIMIT`]: `write` takes no more plaintext than
//! fits.

mod config;
mod spare;

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{HandshakeKind, ServerConfig};

pub(crate) use config::server_config;

use super::{Transmit, Transport};

/// Records encrypted but not yet written, at most: `write` accepts plaintext only while
/// the records it makes fit under this, so a peer that stops reading holds at most this much
/// here besides the connection's own backlog.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;

/// Plaintext moved into a message buffer per step of `read_into` (zeroed first: the
/// transport writes into initialised bytes only).
const INTO_STEP: usize = 64 * 1024;

/// Plaintext per record (TLS's maximum): what one `encrypt` call is given.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Ciphertext held while waiting for the rest of a record or handshake flight, at most.
/// rustls joins handshake messages of up to 64 KiB; beyond that (and a record's overhead)
/// the peer is not speaking TLS as a client would.
const INCOMING_LIMIT: usize = 80 * 1024;

/// Bytes held between calls, `buf[start..end]`. `buf` is lent from [`spare`] while it holds
/// anything and is empty (unallocated) otherwise.
#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// At least `need` initialised bytes after the held ones, for [`commit`](Self::commit):
    /// borrows a buffer, or moves the held bytes to its front, or grows it.
    fn room(&mut self, need: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = spare::take();
        }
        if self.buf.len() - self.end < need {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < need {
                self.buf.resize(self.end + need, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`room`](Self::room).
    fn commit(&mut self, n: usize) {
        self.end += n;
        self.release_if_empty();
    }

    /// Drops `n` bytes from the front.
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        self.release_if_empty();
    }

    fn extend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return; // called per record with what did not fit: usually nothing
        }
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Moves held bytes to the front of `out`: how many.
    fn take_into(&mut self, out: &mut [u8]) -> usize {
        let n = self.len().min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        n
    }

    fn release_if_empty(&mut self) {
        if self.start == self.end && !self.buf.is_empty() {
            self.start = 0;
            self.end = 0;
            spare::give(std::mem::take(&mut self.buf));
        }
    }
}

/// Writes into `held` through `produce` (an encode or encrypt call of rustls), growing the
/// room to what rustls says it needs when `first_need` is not enough. `produce` returns the
/// bytes written, `Err(Some(n))` for "needs `n` bytes", or `Err(None)` for nothing to write.
fn produce_into(
    held: &mut Held,
    first_need: usize,
    mut produce: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let mut need = first_need;
    loop {
        match produce(held.room(need)) {
            Ok(n) => {
                held.commit(n);
                return Ok(());
            }
            Err(Some(required)) if required > need => need = required,
            Err(_) => {
                held.commit(0); // gives the buffer back if nothing is held
                return Err(());
            }
        }
    }
}

fn encode_need(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(e) => Some(e.required_size),
        _ => None, // already encoded
    }
}

fn encrypt_need(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        _ => None, // the keys are exhausted
    }
}

/// What [`TlsTcp::drive`] is asked to do with rustls' state machine.
enum Want<'a> {
    /// Decrypt into `out` from position `filled` on; a record that does not fit goes on to
    /// the held plaintext.
    Read { out: &'a mut [u8], filled: usize },
    /// Encrypt from `data` as much as fits under [`SEND_LIMIT`]; `taken` says how much.
    Encrypt { data: &'a [u8], taken: usize },
    /// Queue a `close_notify`.
    CloseNotify,
}

/// Where [`TlsTcp::drive`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing more can happen without more bytes from the peer (or, for a write, before
    /// the handshake has finished).
    NeedBytes,
    /// The read buffer is full, or the encryption or close that was asked for is done.
    Done,
}

/// A TLS connection over a non-blocking socket.
pub(crate) struct TlsTcp {
    stream: TcpStream,
    tls: UnbufferedServerConnection,
    /// Ciphertext read but not yet processed: part of a record or a handshake flight.
    incoming: Held,
    /// Records (and handshake messages, alerts) not yet written to the socket, in order.
    outgoing: Held,
    /// Plaintext of a record that did not fit the reader's buffer, or that arrived while
    /// encrypting: handed out first by the next read.
    plain: Held,
    /// The peer sent `close_notify` (or the socket ended): reads end after `plain`.
    peer_ended: bool,
    /// The handshake's completion was reported by [`take_established`](Self::take_established).
    reported: bool,
    /// What the memory budget was last told this connection's buffers hold.
    counted: usize,
}

impl std::fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTcp")
            .field("handshaking", &self.tls.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsTcp {
    pub(crate) fn new(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let tls = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsTcp {
            stream,
            tls,
            incoming: Held::default(),
            outgoing: Held::default(),
            plain: Held::default(),
            peer_ended: false,
            reported: false,
            counted: 0,
        })
    }

    /// Bytes of buffers held now (lent while bytes are in flight, none when idle), and what
    /// was held at the previous call: the memory budget is told the difference.
    pub(crate) fn recount(&mut self) -> (usize, usize) {
        let held = self.incoming.buf.len() + self.outgoing.buf.len() + self.plain.buf.len();
        (held, std::mem::replace(&mut self.counted, held))
    }

    /// Whether the TLS handshake has finished.
    pub(crate) fn established(&self) -> bool {
        !self.tls.is_handshaking()
    }

    /// Once, when the handshake has finished: `Some(resumed)`, whether it resumed an earlier
    /// session (a ticket or a cached session id) rather than making a new one.
    pub(crate) fn take_established(&mut self) -> Option<bool> {
        if self.reported || self.tls.is_handshaking() {
            return None;
        }
        self.reported = true;
        Some(self.tls.handshake_kind() == Some(HandshakeKind::Resumed))
    }

    /// Runs rustls' state machine over the ciphertext held until `want` is done or more
    /// bytes from the peer are needed. Handshake messages rustls produces on the way are
    /// queued in `outgoing` (written by [`write_records`](Self::write_records)), plaintext
    /// that arrives on the way goes to `out` or `plain`, and a `close_notify` from the peer
    /// is remembered in `peer_ended`.
    fn drive(&mut self, want: &mut Want<'_>) -> io::Result<Stop> {
        let TlsTcp {
            tls,
            incoming,
            outgoing,
            plain,
            peer_ended,
            ..
        } = self;
        loop {
            if let Want::Read { out, filled } = want {
                if *filled == out.len() {
                    return Ok(Stop::Done);
                }
            }
            let status = tls.process_tls_records(incoming.bytes_mut());
            let mut discard = status.discard;
            let stop = match status.state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        let payload = record.payload;
                        match want {
                            Want::Read { out, filled } => {
                                let n = payload.len().min(out.len() - *filled);
                                out[*filled..*filled + n].copy_from_slice(&payload[..n]);
                                *filled += n;
                                plain.extend(&payload[n..]);
                                if *filled == out.len() {
                                    break; // the rest stays decrypted in rustls
                                }
                            }
                            _ => plain.extend(payload),
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let _ = produce_into(outgoing, 4096, |room| {
                        encode.encode(room).map_err(encode_need)
                    });
                    None
                }
                // The bytes stay queued in `outgoing`, in order, until the socket takes
                // them: rustls only needs to know it may go on.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Stop::NeedBytes),
                ConnectionState::PeerClosed => {
                    *peer_ended = true;
                    None
                }
                ConnectionState::Closed => {
                    *peer_ended = true;
                    Some(match want {
                        Want::Read { .. } => Stop::NeedBytes,
                        _ => Stop::Done, // nothing more may be sent
                    })
                }
                ConnectionState::WriteTraffic(mut traffic) => match want {
                    Want::Read { .. } => Some(Stop::NeedBytes),
                    Want::Encrypt { data, taken } => {
                        while *taken < data.len() && outgoing.len() < SEND_LIMIT {
                            let end = data.len().min(*taken + RECORD_PLAINTEXT);
                            let part = &data[*taken..end];
                            produce_into(outgoing, part.len() + 64, |room| {
                                traffic.encrypt(part, room).map_err(encrypt_need)
                            })
                            .map_err(|()| io::Error::other("TLS keys exhausted"))?;
                            *taken = end;
                        }
                        Some(Stop::Done)
                    }
                    Want::CloseNotify => {
                        let _ = produce_into(outgoing, 64, |room| {
                            traffic.queue_close_notify(room).map_err(encrypt_need)
                        });
                        Some(Stop::Done)
                    }
                },
                // Early data is off (rustls' default), and later states are not ours.
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS state",
                    ))
                }
            };
            incoming.consume(discard);
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// After rustls failed the session: writes the alert it queued, if the socket takes it.
    /// One step of the state machine, over no input: a queued alert comes out before rustls
    /// looks at input again, and looking again would only fail again.
    fn send_alert(&mut self) {
        let TlsTcp { tls, outgoing, .. } = self;
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            tls.process_tls_records(&mut []).state
        {
            let _ = produce_into(outgoing, 64, |room| {
                encode.encode(room).map_err(encode_need)
            });
        }
        let _ = self.write_records();
    }

    /// Fills `out` with plaintext: what was decrypted before, then whatever the socket holds,
    /// until `out` is full or the socket would block. So a count below `out.len()` means the
    /// socket was drained (the reactor's short-read rule), and `WouldBlock` that nothing at
    /// all was there. `Ok(0)` is the end of the stream (a `close_notify`, or the socket's
    /// end, reported once the plaintext before it was taken).
    fn fill(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let filled = self.plain.take_into(out);
        let mut want = Want::Read { out, filled };
        loop {
            let stop = match self.drive(&mut want) {
                Ok(stop) => stop,
                Err(e) => {
                    self.send_alert();
                    return Err(e);
                }
            };
            let Want::Read { filled, .. } = &want else {
                unreachable!("a read stays a read");
            };
            if stop == Stop::Done || self.peer_ended {
                return Ok(*filled);
            }
            if self.incoming.len() >= INCOMING_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS data held past its limit",
                ));
            }
            match self.stream.read(self.incoming.room(spare::BUFFER_LEN / 2)) {
                Ok(0) => {
                    self.incoming.commit(0);
                    self.peer_ended = true; // the socket ended, with or without close_notify
                    return Ok(*filled);
                }
                Ok(n) => self.incoming.commit(n),
                Err(e) => {
                    self.incoming.commit(0); // gives the buffer back if nothing is held
                    match e.kind() {
                        io::ErrorKind::WouldBlock if *filled > 0 => return Ok(*filled),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// Writes queued records until none are left (`Ok(true)`) or the socket would block
    /// (`Ok(false)`: a writable edge follows).
    fn write_records(&mut self) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match self.stream.write(self.outgoing.bytes()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outgoing.consume(n),
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
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b mut [u8]> {
        let n = self.fill(buf)?;
        Ok(&mut buf[..n])
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
            // Nothing could be encrypted although there was room: the handshake has not ended.
            let mut stuck = false;
            if taken < bytes.len() && self.outgoing.len() < SEND_LIMIT {
                let mut want = Want::Encrypt {
                    data: &bytes[taken..],
                    taken: 0,
                };
                let stop = self.drive(&mut want);
                if let Want::Encrypt { taken: more, .. } = want {
                    taken += more;
                    stuck = more == 0;
                }
                if let Err(e) = stop {
                    self.send_alert();
                    return Err(e);
                }
            }
            let all_written = self.write_records()?;
            // Records the socket did not take stay queued; `flush` writes them.
            if taken == bytes.len() {
                return Ok(taken);
            }
            // The socket is full, or nothing can be encrypted before the handshake ends.
            if !all_written || stuck {
                return if taken == 0 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(taken)
                };
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
        if self.established() {
            let _ = self.drive(&mut Want::CloseNotify);
        }
        let _ = self.write_records();
    }
}
