//! `peer-raw-uring`: the raw TCP echo of `peer-raw` on io_uring, the ceiling of the
//! `--io-uring` backend in `load compare`. One thread, one ring: a multishot accept, a
//! multishot receive per connection into a provided-buffer ring shared by all connections,
//! and each received buffer sent straight back from where the kernel put it (the buffer
//! returns to the ring when its send completes). Every request of a loop turn goes to the
//! kernel in the one `io_uring_enter` that waits for the next completions. While a send is
//! in flight, what arrives is kept per connection and sent next; an idle connection owns no
//! buffer. No backpressure beyond that: it is a loopback benchmark peer, not a server.
//!
//! Usage: `peer-raw-uring --listen 127.0.0.1:PORT`; prints `listening on ADDR` to stderr when
//! ready and exits on SIGTERM or SIGINT (default signal disposition).

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 16 * 1024;
const GROUP: u16 = 0;
const ACCEPT: u64 = u64::MAX;

/// One connection: its socket, the send in flight and what arrived meanwhile.
struct Conn {
    fd: OwnedFd,
    /// The send in flight: from a provided buffer (`Some(bid)`) or from `out`.
    sending: Option<Option<u16>>,
    /// Bytes of the send in flight already taken, and its length.
    sent: usize,
    len: usize,
    /// The bytes being sent when they are not a provided buffer's.
    out: Vec<u8>,
    /// Received while a send was in flight: sent next.
    pending: Vec<u8>,
}

struct Peer {
    ring: IoUring,
    entries: *mut BufRingEntry,
    memory: Vec<u8>,
    tail: u16,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Peer {
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer named by an entry lives until its completion (the provided
        // buffers for the process's life, `out` while its send is in flight).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `index < BUFFERS`; the kernel reads only descriptors below the tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(self.memory.as_ptr() as u64 + (usize::from(bid) * BUFFER_SIZE) as u64);
        entry.set_len(BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        // SAFETY: the tail overlays the first descriptor's last field, written only here.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16) -> *const u8 {
        // SAFETY: within the allocation.
        unsafe { self.memory.as_ptr().add(usize::from(bid) * BUFFER_SIZE) }
    }

    fn send(&mut self, key: usize, ptr: *const u8, len: usize) -> io::Result<()> {
        let fd: RawFd = match &self.conns[key] {
            Some(conn) => conn.fd.as_raw_fd(),
            None => return Ok(()),
        };
        self.push(
            opcode::Send::new(Fd(fd), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(key as u64 | 1 << 32),
        )
    }

    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns[key].take() {
            if let Some(Some(bid)) = conn.sending {
                // Its completion would name a key that may be reused by then, so the buffer
                // goes back now. The send may still read it after the shutdown below; what it
                // would send then goes to a socket being closed. A benchmark peer's trade-off:
                // connections close only when a run ends.
                self.give_back(bid);
            }
            // SAFETY: a plain call on a socket we own; ends the multishot receive, which
            // holds the socket open in the kernel.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            self.free.push(key);
        }
    }

    fn received(&mut self, key: usize, result: i32, flags: u32) -> io::Result<()> {
        let bid = cqueue::buffer_select(flags);
        if self.conns.get(key).is_none_or(Option::is_none) {
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            return Ok(());
        }
        if result <= 0 {
            if let Some(bid) = bid {
                self.give_back(bid);
            }
            if result == -libc::ENOBUFS {
                return self.arm_recv(key);
            }
            self.close(key);
            return Ok(());
        }
        let Some(bid) = bid else { return Ok(()) };
        let n = result as usize;
        let more = cqueue::more(flags);
        let ptr = self.buffer(bid);
        let conn = self.conns[key].as_mut().expect("checked");
        if conn.sending.is_some() {
            // SAFETY: the kernel wrote `n` bytes of buffer `bid`.
            conn.pending
                .extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, n) });
            self.give_back(bid);
        } else {
            conn.sending = Some(Some(bid));
            conn.sent = 0;
            conn.len = n;
            self.send(key, ptr, n)?;
        }
        if !more {
            self.arm_recv(key)?;
        }
        Ok(())
    }

    fn sent(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some(source) = conn.sending else {
            return Ok(());
        };
        if result <= 0 {
            self.close(key);
            return Ok(());
        }
        conn.sent += result as usize;
        if conn.sent < conn.len {
            let rest = conn.len - conn.sent;
            let ptr = match source {
                Some(bid) => self.buffer(bid),
                None => conn.out.as_ptr(),
            };
            // SAFETY: `sent < len` within the buffer being sent.
            let ptr = unsafe { ptr.add(self.conns[key].as_ref().expect("live").sent) };
            return self.send(key, ptr, rest);
        }
        conn.sending = None;
        if let Some(bid) = source {
            self.give_back(bid);
        }
        let conn = self.conns[key].as_mut().expect("live");
        if !conn.pending.is_empty() {
            std::mem::swap(&mut conn.out, &mut conn.pending);
            conn.pending.clear();
            conn.sending = Some(None);
            conn.sent = 0;
            conn.len = conn.out.len();
            let (ptr, len) = (conn.out.as_ptr(), conn.out.len());
            return self.send(key, ptr, len);
        }
        if conn.out.capacity() > 0 {
            conn.out = Vec::new(); // an idle connection owns no buffer
        }
        Ok(())
    }

    fn arm_recv(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = &self.conns[key] else {
            return Ok(());
        };
        let fd = conn.fd.as_raw_fd();
        self.push(
            opcode::RecvMulti::new(Fd(fd), GROUP)
                .build()
                .user_data(key as u64),
        )
    }

    fn accepted(&mut self, result: i32) -> io::Result<()> {
        if result < 0 {
            return Ok(()); // e.g. EMFILE: the multishot ends; re-armed by the caller
        }
        // SAFETY: the kernel just made this descriptor for us.
        let fd = unsafe { OwnedFd::from_raw_fd(result) };
        let one: libc::c_int = 1;
        // SAFETY: a plain setsockopt with a valid int.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let key = self.free.pop().unwrap_or(self.conns.len());
        if key == self.conns.len() {
            self.conns.push(None);
        }
        self.conns[key] = Some(Conn {
            fd,
            sending: None,
            sent: 0,
            len: 0,
            out: Vec::new(),
            pending: Vec::new(),
        });
        self.arm_recv(key)
    }
}

fn main() -> io::Result<()> {
    let addr: std::net::SocketAddr = peers::listen_arg()
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("--listen: {e}")))?;
    let listener = TcpListener::bind(addr)?;
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(8192)
        .build(1024)?;
    let entries_bytes = usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>();
    // SAFETY: an anonymous mapping, checked below; it lives for the process.
    let entries = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            entries_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if entries == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut peer = Peer {
        ring,
        entries: entries.cast(),
        memory: Vec::with_capacity(usize::from(BUFFERS) * BUFFER_SIZE),
        tail: 0,
        conns: Vec::new(),
        free: Vec::new(),
    };
    for bid in 0..BUFFERS {
        peer.give_back(bid);
    }
    peer.publish();
    // SAFETY: page-aligned descriptors that live as long as the process.
    unsafe {
        peer.ring
            .submitter()
            .register_buf_ring_with_flags(entries as u64, BUFFERS, GROUP, 0)?;
    }
    let accept = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    peer.push(accept.clone())?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut completions = Vec::with_capacity(1024);
    loop {
        match peer.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        completions.extend(
            peer.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, result, flags) in &completions {
            if data == ACCEPT {
                peer.accepted(result)?;
                if !cqueue::more(flags) {
                    peer.push(accept.clone())?;
                }
            } else if data >> 32 == 1 {
                peer.sent(data as u32 as usize, result)?;
            } else {
                peer.received(data as usize, result, flags)?;
            }
        }
        completions.clear();
        peer.publish();
    }
}
