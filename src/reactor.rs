//! The event loop: one thread, one `mio::Poll`, every connection in one `Slab`.
//!
//! Owns sockets, readiness, the clock and timers, and nothing about the protocol: it moves bytes
//! between sockets and [`Connection`] state machines. Per loop turn it reads each ready socket
//! until a short read (or a budget), lets the connection handle the bytes in place in one shared
//! read buffer, then writes everything the connection queued with a single `write`.
//!
//! Sockets are registered once for both READABLE and WRITABLE, edge-triggered: that costs no
//! `epoll_ctl` per message, and a writable edge only arrives after a write hit a full socket
//! buffer, which is exactly when a flush has to resume.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffers::BusyPool;
use crate::config::Config;
use crate::connection::{Conn, Connection, Env, Shared, Transmit};
use crate::frame::close_code;
use crate::handler::{ConnId, Handler};
use crate::stats::Stats;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// Reads per connection per loop turn before others get their turn.
const READ_BUDGET: usize = 16;
/// Accepts per loop turn before connections get their turn.
const ACCEPT_BUDGET: usize = 256;

/// A connection's slab entry: the socket next to its state machine.
struct Slot {
    stream: TcpStream,
    conn: Connection,
    generation: u32,
    /// Counted in `pending_handshakes`.
    handshaking: bool,
    /// Already in the `ready` list.
    queued: bool,
    /// The peer's FIN or RST was announced: a short read no longer means "drained", since
    /// the EOF (or error) behind the data raises no further edge.
    peer_closed: bool,
}

impl Slot {
    fn id(&self, key: usize) -> ConnId {
        ConnId {
            key: key as u32,
            generation: self.generation,
        }
    }
}

/// Asks a running [`Server`] to shut down gracefully, from any thread (a signal handler thread,
/// a test).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Stop accepting, send close 1001 to every client, wait up to the close timeout.
    ///
    /// Async-signal-safe (an atomic store and an eventfd write), so it may be called from a
    /// signal handler as well as from another thread.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::Release);
        // A failed wake only delays shutdown until the next timer tick.
        let _ = self.waker.wake();
    }
}

/// A WebSocket server on one thread.
pub struct Server<H: Handler> {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    slots: Slab<Slot>,
    /// Handler, configuration, buffer pool, counters and clock: what connections borrow.
    shared: Shared<H>,
    scratch: Vec<u8>,
    /// Connections that stopped at their read budget (or resumed after backpressure) and may
    /// have unread data that no new edge will announce.
    ready: Vec<usize>,
    /// Connections given output outside their own read (ticks, shutdown): flush them.
    dirty: Vec<usize>,
    expired: Vec<usize>,
    pending_handshakes: usize,
    next_generation: u32,
    listener_ready: bool,
    accept_paused: bool,
    start: Instant,
    tick_ms: u64,
    next_sweep: u64,
    next_app_tick: Option<u64>,
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    shutdown_deadline: Option<u64>,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.slots.len())
            .field("stats", &self.shared.stats)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// Binds the listener and prepares the loop; nothing is served until [`run`](Self::run).
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        config
            .validate()
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let tick_ms = (config.timer_tick().as_millis() as u64).max(1);
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            // Reserved up front: pages never touched are never resident, and the slab then
            // never doubles (and copies) under a connection storm.
            slots: Slab::with_capacity(config.max_connections),
            scratch: vec![0; config.read_buffer_size],
            ready: Vec::new(),
            dirty: Vec::new(),
            expired: Vec::new(),
            pending_handshakes: 0,
            next_generation: 0,
            listener_ready: false,
            accept_paused: false,
            start: Instant::now(),
            tick_ms,
            next_sweep: tick_ms,
            next_app_tick: config.tick_interval.map(|t| t.as_millis() as u64),
            requested: Arc::new(AtomicBool::new(false)),
            waker,
            shutdown_deadline: None,
            shared: Shared::new(config, handler),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops [`run`](Self::run) gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The handler (for example to read what it collected after `run` returns).
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// Serves until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.requested.load(Ordering::Acquire) && self.shutdown_deadline.is_none() {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.is_empty() || self.shared.now >= deadline {
                    self.drop_all();
                    return Ok(());
                }
            }
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.shared.now = self.start.elapsed().as_millis() as u64;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready(),
                    WAKER => {}
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(slot) = self.slots.get_mut(key) {
                                slot.peer_closed = true;
                            }
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_ready(key);
                        } else if event.is_writable() {
                            self.flush(key);
                        }
                    }
                }
            }
            self.serve_ready_list();
            if self.listener_ready {
                self.accept_ready();
            }
            self.run_timers();
        }
    }

    fn poll_timeout(&self) -> Duration {
        if self.listener_ready || !self.ready.is_empty() {
            return Duration::ZERO;
        }
        let mut next = self.next_sweep;
        if let Some(tick) = self.next_app_tick {
            next = next.min(tick);
        }
        if let Some(deadline) = self.shutdown_deadline {
            next = next.min(deadline);
        }
        Duration::from_millis(next.saturating_sub(self.shared.now))
    }

    // ---- accept ----------------------------------------------------------------------------

    fn accept_ready(&mut self) {
        self.listener_ready = false;
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            if self.slots.len() >= self.shared.config.max_connections {
                // Resumed when a slot frees; until then the kernel's backlog holds the rest.
                self.accept_paused = true;
                return;
            }
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or similar: try again at the next timer sweep rather
                    // than spin.
                    eprintln!("wsreactor: accept failed: {e}");
                    self.accept_paused = true;
                    return;
                }
            };
            if self.pending_handshakes >= self.shared.config.max_pending_handshakes {
                self.shared.stats.refused += 1;
                continue; // dropped: too many connections still silent
            }
            let _ = stream.set_nodelay(true);
            let entry = self.slots.vacant_entry();
            let key = entry.key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            self.next_generation = self.next_generation.wrapping_add(1);
            entry.insert(Slot {
                stream,
                conn: Connection::new(self.shared.now, &self.shared.config),
                generation: self.next_generation,
                handshaking: true,
                queued: false,
                peer_closed: false,
            });
            self.pending_handshakes += 1;
            self.shared.stats.accepted += 1;
        }
        self.listener_ready = true;
    }

    // ---- read and write --------------------------------------------------------------------

    fn read_ready(&mut self, key: usize) {
        let Server {
            slots,
            shared,
            scratch,
            ready,
            ..
        } = self;
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let mut env = shared.env(slot.id(key), Some(&slot.stream));
        let mut drained = false;
        for _ in 0..READ_BUDGET {
            if !slot.conn.wants_read() {
                drained = true; // reading resumes (and is re-queued) when output drains
                break;
            }
            let outcome = if let Some((buf, room)) = slot.conn.direct_read_target() {
                read_into_spare(&slot.stream, buf, room).map(|n| {
                    if n > 0 {
                        slot.conn.handle_direct_input(n, &mut env);
                    }
                    (n, n < room)
                })
            } else {
                (&slot.stream).read(scratch).map(|n| {
                    if n > 0 {
                        slot.conn.handle_input(&mut scratch[..n], &mut env);
                    }
                    // Fewer bytes than asked for: the socket was empty at that moment, and
                    // new data raises a new edge, so the read that would say WouldBlock is
                    // skipped.
                    (n, n < scratch.len())
                })
            };
            match outcome {
                Ok((0, _)) => {
                    slot.conn.handle_eof(&mut env);
                    drained = true;
                    break;
                }
                Ok((_, short)) if short && !slot.peer_closed => {
                    drained = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    slot.conn.abort(&mut env);
                    drained = true;
                    break;
                }
            }
        }
        if !drained && !slot.queued {
            slot.queued = true;
            ready.push(key);
        }
        self.flush(key);
    }

    /// Writes what the connection queued (one `write` in the common case) and drops the
    /// connection if it is finished.
    fn flush(&mut self, key: usize) {
        let Server {
            slots,
            shared,
            ready,
            pending_handshakes,
            ..
        } = self;
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let mut env = shared.env(slot.id(key), None);
        while slot.conn.pending_output() > 0 {
            let pending = slot.conn.output();
            let total = pending.len();
            let result = (&slot.stream).write(pending);
            match result {
                Ok(n) => {
                    env.stats.bytes_out += n as u64;
                    if slot.conn.wrote(n, &mut env) && !slot.queued {
                        slot.queued = true;
                        ready.push(key);
                    }
                    if n < total {
                        break; // the socket buffer is full: a writable edge will follow
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    slot.conn.abort(&mut env);
                    break;
                }
            }
        }
        if slot.handshaking && !slot.conn.is_handshaking() {
            slot.handshaking = false;
            *pending_handshakes -= 1;
        }
        if slot.conn.is_done() {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: usize) {
        let Some(mut slot) = self.slots.try_remove(key) else {
            return;
        };
        if slot.handshaking {
            self.pending_handshakes -= 1;
        }
        let id = slot.id(key);
        let mut env = self.shared.env(id, None);
        slot.conn.abort(&mut env);
        slot.conn.release(&mut self.shared.pool);
        // Dropping the stream closes the socket, which also removes it from the epoll set.
        drop(slot.stream);
        if self.accept_paused {
            self.accept_paused = false;
            self.listener_ready = true;
        }
    }

    fn serve_ready_list(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.ready);
        for &key in &keys {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.queued = false;
                self.read_ready(key);
            }
        }
        // Keep the allocation for the next turn.
        let mut keys = keys;
        keys.clear();
        if self.ready.is_empty() {
            self.ready = keys;
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            self.flush(key);
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    fn run_timers(&mut self) {
        if self.shared.now >= self.next_sweep {
            self.next_sweep = self.shared.now + self.tick_ms;
            self.sweep_deadlines();
            if self.accept_paused && self.slots.len() < self.shared.config.max_connections {
                self.accept_paused = false;
                self.accept_ready();
            }
        }
        if let (Some(at), Some(interval)) = (self.next_app_tick, self.shared.config.tick_interval) {
            if self.shared.now >= at {
                self.next_app_tick = Some(self.shared.now + (interval.as_millis() as u64).max(1));
                let mut ctx = Ctx {
                    slots: &mut self.slots,
                    pool: &mut self.shared.pool,
                    config: &self.shared.config,
                    stats: &mut self.shared.stats,
                    dirty: &mut self.dirty,
                    now: self.shared.now,
                };
                let handler = &mut self.shared.handler;
                let ticked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler.on_tick(&mut ctx)
                }));
                if ticked.is_err() {
                    crate::connection::handler_panicked(
                        &self.shared.config,
                        &mut self.shared.stats,
                    );
                }
                self.flush_dirty();
            }
        }
    }

    /// O(1) per connection per tick: a connection's deadline is one integer, checked here.
    fn sweep_deadlines(&mut self) {
        let now = self.shared.now;
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        expired.extend(
            self.slots
                .iter()
                .filter(|(_, slot)| {
                    let deadline = slot.conn.deadline();
                    deadline != 0 && deadline <= now
                })
                .map(|(key, _)| key),
        );
        for &key in &expired {
            self.with_env(key, |conn, env| conn.handle_timeout(env));
            self.flush(key);
        }
        self.expired = expired;
    }

    fn with_env(&mut self, key: usize, f: impl FnOnce(&mut Connection, &mut Env<'_, H>)) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let id = slot.id(key);
        let mut env = self.shared.env(id, None);
        f(&mut slot.conn, &mut env);
    }

    // ---- shutdown --------------------------------------------------------------------------

    fn begin_shutdown(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.listener_ready = false;
        self.shutdown_deadline =
            Some(self.shared.now + self.shared.config.close_timeout.as_millis() as u64);
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.with_env(key, |conn, env| {
                conn.start_close(close_code::GOING_AWAY, "server shutting down", env)
            });
            self.flush(key);
        }
    }

    fn drop_all(&mut self) {
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove(key);
        }
    }
}

impl Transmit for TcpStream {
    fn transmit(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
}

/// Reads at most `max` bytes from the socket into `buf`'s spare capacity, without first
/// zeroing it, and extends `buf` by what was read.
fn read_into_spare(stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is valid for writes of `len` bytes; the kernel writes at most `len`.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the first `n` spare bytes were just initialised by `read`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Access to every connection by id, during [`Handler::on_tick`].
pub struct Ctx<'a> {
    slots: &'a mut Slab<Slot>,
    pool: &'a mut BusyPool,
    config: &'a Config,
    stats: &'a mut Stats,
    dirty: &'a mut Vec<usize>,
    now: u64,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    /// A handle on the connection `id`, if it still exists. What it sends is written at the end
    /// of the tick.
    pub fn conn(&mut self, id: ConnId) -> Option<Conn<'_>> {
        let key = id.key as usize;
        let slot = self.slots.get_mut(key)?;
        if slot.generation != id.generation {
            return None;
        }
        self.dirty.push(key);
        Some(Conn::new(
            id,
            &mut slot.conn,
            self.pool,
            self.config,
            self.stats,
            self.now,
            None,
        ))
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats
    }

    /// TCP connections held (any state).
    pub fn connection_count(&self) -> usize {
        self.slots.len()
    }

    /// Open WebSocket connections.
    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|(_, s)| s.conn.is_open()).count()
    }

    /// Milliseconds since the server started.
    pub fn uptime_ms(&self) -> u64 {
        self.now
    }
}
