//! `peer-raw`: a raw TCP echo server on `mio`, one thread, edge-triggered. For each readable
//! connection it reads into one shared scratch buffer until a short read, writing each batch
//! straight back (one `read` + one `write` per batch, no framing). Bytes the socket would not
//! take are kept per connection until it is writable again, and reading pauses meanwhile. An
//! idle connection owns no buffer. This is the ceiling for loopback echo in `load compare`.
//!
//! Usage: `peer-raw --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when ready and
//! exits on SIGTERM or SIGINT (default signal disposition).

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};

const LISTENER: Token = Token(usize::MAX);
const SCRATCH: usize = 256 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet written back; empty (unallocated) for an idle connection.
    pending: Vec<u8>,
}

/// Writes as much of `buf` as the socket takes; returns the count, or an error for a dead peer.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads and echoes until a short read (drained), WouldBlock, or the socket backs up.
/// Returns false when the connection must be closed.
fn pump(conn: &mut Conn, scratch: &mut [u8]) -> bool {
    loop {
        if !conn.pending.is_empty() {
            return true; // wait for WRITABLE before reading more
        }
        match conn.stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => {
                let wrote = match write_some(&mut conn.stream, &scratch[..n]) {
                    Ok(w) => w,
                    Err(_) => return false,
                };
                if wrote < n {
                    conn.pending.extend_from_slice(&scratch[wrote..n]);
                    return true;
                }
                if n < scratch.len() {
                    return true; // short read: drained, a new edge will come
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr = peers::listen_arg()
        .parse()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, format!("--listen: {e}")))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; SCRATCH];
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let idx = free.pop().unwrap_or(conns.len());
                            if idx == conns.len() {
                                conns.push(None);
                            }
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(idx),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                free.push(idx);
                                continue;
                            }
                            conns[idx] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break, // e.g. EMFILE: try again on the next event
                    }
                }
                continue;
            }
            let idx = ev.token().0;
            let Some(conn) = conns.get_mut(idx).and_then(|c| c.as_mut()) else {
                continue;
            };
            let mut alive = true;
            let was_paused = !conn.pending.is_empty();
            if ev.is_writable() && was_paused {
                match write_some(&mut conn.stream, &conn.pending) {
                    Ok(w) => {
                        conn.pending.drain(..w);
                        if conn.pending.is_empty() {
                            conn.pending = Vec::new(); // give the memory back
                        }
                    }
                    Err(_) => alive = false,
                }
            }
            // After a flush the readable edge may have passed while paused: read now.
            let resumed = was_paused && conn.pending.is_empty();
            if alive && (ev.is_readable() || ev.is_read_closed() || resumed) {
                alive = pump(conn, &mut scratch);
            }
            if !alive || ev.is_error() {
                if let Some(mut c) = conns[idx].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(idx);
            }
        }
    }
}
