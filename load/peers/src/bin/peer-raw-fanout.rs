//! `peer-raw-fanout`: the ceiling of fan-out, what writing the same bytes to every socket of a
//! room costs. `mio`, one thread, edge-triggered, no WebSocket work on the delivery side.
//!
//! It accepts the upgrade (so the load generator speaks to it exactly as to a real server):
//! `/room/NAME` joins room NAME, any other path gets its own messages back. A client frame is
//! unmasked once and framed once as an unmasked server frame, appended to its room's batch; at
//! the end of each loop turn every room's batch goes to every member with one `write` each
//! (the rule wsreactor also keeps: one write per subscriber per turn). Nothing is parsed,
//! checked, copied or queued per subscriber unless its socket is full: then the rest waits in
//! that member's own buffer, and a member more than [`MAX_PENDING`] behind is dropped. Only
//! single-frame text and binary messages are handled (what `wsrload fanout` sends); anything
//! else closes the connection. It validates nothing a real server must: a ceiling, not a
//! server.
//!
//! Usage: `peer-raw-fanout --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT (default signal disposition).

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const LISTENER: Token = Token(usize::MAX);
const SCRATCH: usize = 256 * 1024;
/// Largest request head.
const MAX_HEAD: usize = 8192;
/// Largest client frame payload.
const MAX_FRAME: usize = 16 << 20;
/// Unwritten bytes a member may hold before it is dropped.
const MAX_PENDING: usize = 8 << 20;

struct Conn {
    stream: TcpStream,
    /// The request head until the upgrade, then partial frames; empty between whole frames.
    inbuf: Vec<u8>,
    open: bool,
    room: Option<usize>,
    /// Bytes the socket would not take yet.
    pending: Vec<u8>,
}

#[derive(Default)]
struct Room {
    members: Vec<usize>,
    /// Server frames published in this turn.
    batch: Vec<u8>,
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

/// Appends an unmasked server frame (FIN set) of `opcode` around `payload`.
fn push_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// One whole masked client frame at the front of `buf`: (bytes it spans, FIN+opcode byte,
/// masking key, payload range). `Ok(None)`: more bytes needed.
type Frame = (usize, u8, [u8; 4], std::ops::Range<usize>);
fn client_frame(buf: &[u8]) -> Result<Option<Frame>, ()> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 == 0 {
        return Err(()); // clients must mask
    }
    let (ext, len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (2, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (8, usize::try_from(u64::from_be_bytes(a)).map_err(|_| ())?)
            }
            None => return Ok(None),
        },
        n => (0, n as usize),
    };
    if len > MAX_FRAME {
        return Err(());
    }
    let start = 2 + ext + 4;
    if buf.len() < start + len {
        return Ok(None);
    }
    let mut key = [0u8; 4];
    key.copy_from_slice(&buf[2 + ext..start]);
    Ok(Some((start + len, b0, key, start..start + len)))
}

/// `Some(response)` for a complete upgrade request in `head`, with the path it asked for.
fn upgrade(head: &[u8]) -> Option<(Vec<u8>, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    if request.next()? != "GET" {
        return None;
    }
    let path = request.next()?.to_string();
    let key = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    })?;
    let accept = derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Some((resp.into_bytes(), path))
}

struct Server {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    rooms: Vec<Room>,
    room_ids: HashMap<String, usize>,
    /// Rooms with a batch to send at the end of this turn.
    dirty: Vec<usize>,
}

impl Server {
    fn drop_conn(&mut self, poll: &Poll, idx: usize) {
        let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let _ = poll.registry().deregister(&mut c.stream);
        if let Some(r) = c.room {
            let members = &mut self.rooms[r].members;
            if let Some(at) = members.iter().position(|&m| m == idx) {
                members.swap_remove(at);
            }
        }
        self.free.push(idx);
    }

    /// Queues `bytes` to connection `idx` (writing now if nothing waits); false: drop it.
    fn send(conn: &mut Conn, bytes: &[u8]) -> bool {
        if !conn.pending.is_empty() {
            conn.pending.extend_from_slice(bytes);
            return conn.pending.len() <= MAX_PENDING;
        }
        match write_some(&mut conn.stream, bytes) {
            Ok(w) => {
                conn.pending.extend_from_slice(&bytes[w..]);
                true
            }
            Err(_) => false,
        }
    }

    /// Handles the bytes in `conn.inbuf`; false when the connection must go.
    fn consume(&mut self, idx: usize) -> bool {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return true;
        };
        let mut buf = std::mem::take(&mut conn.inbuf);
        let mut pos = 0;
        if !conn.open {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                conn.inbuf = buf;
                return conn.inbuf.len() <= MAX_HEAD;
            };
            let Some((resp, path)) = upgrade(&buf[..end]) else {
                return false;
            };
            if !Self::send(conn, &resp) {
                return false;
            }
            conn.open = true;
            let room_name = path
                .split(['?', '#'])
                .next()
                .and_then(|p| p.strip_prefix("/room/"));
            if let Some(name) = room_name.filter(|n| !n.is_empty()) {
                let next = self.rooms.len();
                let r = *self.room_ids.entry(name.to_string()).or_insert(next);
                if r == next {
                    self.rooms.push(Room::default());
                }
                self.rooms[r].members.push(idx);
                conn.room = Some(r);
            }
            pos = end + 4;
        }
        loop {
            let (n, b0, key, range) = match client_frame(&buf[pos..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(()) => return false,
            };
            let payload = &mut buf[pos + range.start..pos + range.end];
            pos += n;
            match b0 {
                0x81 | 0x82 => {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= key[i & 3];
                    }
                    match conn.room {
                        Some(r) => {
                            let room = &mut self.rooms[r];
                            if room.batch.is_empty() {
                                self.dirty.push(r);
                            }
                            push_server_frame(&mut room.batch, b0 & 0x0F, payload);
                        }
                        None => {
                            let mut frame = Vec::with_capacity(payload.len() + 10);
                            push_server_frame(&mut frame, b0 & 0x0F, payload);
                            if !Self::send(conn, &frame) {
                                return false;
                            }
                        }
                    }
                }
                0x89 | 0x8A => {} // ping, pong: not answered (a ceiling, not a server)
                _ => return false, // close, fragments, reserved bits
            }
        }
        buf.drain(..pos);
        conn.inbuf = buf;
        true
    }

    /// Sends every room's batch of this turn to each of its members.
    fn deliver(&mut self, poll: &Poll) {
        let mut gone = Vec::new();
        for r in std::mem::take(&mut self.dirty) {
            let batch = std::mem::take(&mut self.rooms[r].batch);
            for &m in &self.rooms[r].members {
                let Some(conn) = self.conns.get_mut(m).and_then(Option::as_mut) else {
                    continue;
                };
                if !Self::send(conn, &batch) {
                    gone.push(m);
                }
            }
            let mut batch = batch;
            batch.clear();
            self.rooms[r].batch = batch; // keep its capacity for the next turn
        }
        for m in gone {
            self.drop_conn(poll, m);
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

    let mut srv = Server {
        conns: Vec::new(),
        free: Vec::new(),
        rooms: Vec::new(),
        room_ids: HashMap::new(),
        dirty: Vec::new(),
    };
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
                            let idx = srv.free.pop().unwrap_or(srv.conns.len());
                            if idx == srv.conns.len() {
                                srv.conns.push(None);
                            }
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            if poll
                                .registry()
                                .register(&mut stream, Token(idx), interest)
                                .is_err()
                            {
                                srv.free.push(idx);
                                continue;
                            }
                            srv.conns[idx] = Some(Conn {
                                stream,
                                inbuf: Vec::new(),
                                open: false,
                                room: None,
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
            let Some(conn) = srv.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let mut alive = !ev.is_error();
            if alive && ev.is_writable() && !conn.pending.is_empty() {
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
            if alive && (ev.is_readable() || ev.is_read_closed()) {
                loop {
                    match conn.stream.read(&mut scratch) {
                        Ok(0) => {
                            alive = false;
                            break;
                        }
                        Ok(n) => {
                            conn.inbuf.extend_from_slice(&scratch[..n]);
                            if n < scratch.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                alive = srv.consume(idx) && alive;
            }
            if !alive {
                srv.drop_conn(&poll, idx);
            }
        }
        srv.deliver(&poll);
    }
}
