//! The event loop: one thread, one `mio::Poll`, every connection in one `Slab`.
//!
//! Owns sockets, readiness, the clock and timers, and nothing about the protocol: it moves bytes
//! between sockets and [`Connection`] state machines. Per loop turn it reads each ready socket
//! until a short read (or a budget), lets the connection handle the bytes in place in one shared
//! read buffer, then writes everything the connection queued with a single `write`.
//!
//! A listener configured for TLS gives every connection a TLS transport; the loop is the
//! same, except that a transport may hold bytes of its own to write (handshake messages,
//! records the socket did not take), which every flush writes too.
//!
//! Sockets are registered once for both READABLE and WRITABLE, edge-triggered: that costs no
//! `epoll_ctl` per message, and a writable edge only arrives after a write hit a full socket
//! buffer, which is exactly when a flush has to resume.

use std::cell::{Cell, UnsafeCell};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::budget::{MemoryBudget, TLS_CONNECTION_ESTIMATE};
use crate::config::{Config, Error};
use crate::connection::{Connection, Ctx, Env, Peers, Shared};
use crate::frame::close_code;
use crate::handler::{CloseCause, ConnId, Handler};
use crate::metrics::{Blocks, Counters, MetricsListener, RefusedBy};
use crate::stats::Stats;
use crate::transport::{PlainTcp, SlotTransport, TlsTcp, Transport};

const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);
/// Reads per connection per loop turn before others get their turn.
const READ_BUDGET: usize = 16;
/// Accepts per loop turn before connections get their turn.
const ACCEPT_BUDGET: usize = 256;

mod handles;
mod serve;
mod shed;
mod slot;
mod uring;

use handles::Work;
pub use handles::{ServerHandle, ShutdownHandle, Stopped};
use slot::{Lent, SlabPeers, Slot};

/// What [`Server::assemble`] builds a reactor from.
pub(crate) struct Parts {
    pub poll: Poll,
    pub waker: Arc<Waker>,
    pub listener: std::net::TcpListener,
    /// The shutdown flag, one for every reactor of a server.
    pub requested: Arc<AtomicBool>,
    pub all_wakers: Arc<[Arc<Waker>]>,
    /// This reactor's place among `threads`.
    pub index: usize,
    pub threads: usize,
    pub link: Option<crate::threads::Link>,
    /// The memory budget every reactor of the server shares ([`crate::budget`]): each keeps
    /// its own account and the budget holds their sum.
    pub budget: Arc<MemoryBudget>,
    /// Every reactor's counter block: this one writes block `index` and answers a scrape on
    /// its port with the sum of all.
    pub blocks: Blocks,
}

/// A WebSocket server on one thread.
pub struct Server<H: Handler> {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// Set when the listener serves TLS: the configuration every TLS connection shares.
    tls: Option<Arc<rustls::ServerConfig>>,
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
    /// Threads in the server: the stride between this reactor's generations.
    generation_step: u32,
    listener_ready: bool,
    accept_paused: bool,
    start: Instant,
    tick_ms: u64,
    next_sweep: u64,
    next_app_tick: Option<u64>,
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Every reactor's waker, for a shutdown handle that stops them all.
    all_wakers: Arc<[Arc<Waker>]>,
    shutdown_deadline: Option<u64>,
    /// Work handed in by [`ServerHandle`]s, and the sending side they are cloned from.
    inbox: mpsc::Receiver<Work<H>>,
    outbox: mpsc::Sender<Work<H>>,
    /// What the memory budget's shedding keeps between loop turns.
    shedding: shed::Shedding,
    /// The `metrics_listen` thread, stopped when the server is dropped.
    metrics_listener: Option<MetricsListener>,
    /// The broker's threads (`Config::broker` on a one-thread server), stopped when the
    /// server is dropped.
    broker: Option<crate::broker::Attachment>,
    /// Connections are served through io_uring ([`uring`]), with this ring (taken out of
    /// here while `run` uses it).
    on_uring: bool,
    uring: Option<Box<uring::Ring>>,
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
    /// Binds the listener (and the metrics listener, if configured) and prepares the loop;
    /// nothing is served until [`run`](Self::run).
    pub fn bind(config: Config, handler: H) -> Result<Self, Error> {
        config.validate()?;
        let listener = crate::threads::listen(config.listen, false)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut blocks = Blocks::new(1);
        let metrics_listen = config.metrics_listen;
        let max_message = config.max_message_size;
        // A broker needs a group for its arrivals to cross into: a group of one reactor.
        let (link, broker) = match &config.broker {
            Some(url) => {
                let (end, unstarted) = crate::broker::prepare(url);
                blocks = blocks.with_broker(unstarted.counters());
                let (group, mut links) =
                    crate::threads::Group::new(vec![Arc::clone(&waker)], blocks.clone(), Some(end));
                (links.pop(), Some((unstarted, group)))
            }
            None => (None, None),
        };
        let parts = Parts {
            poll,
            waker: Arc::clone(&waker),
            listener,
            requested: Arc::new(AtomicBool::new(false)),
            all_wakers: Arc::new([waker]),
            index: 0,
            threads: 1,
            link,
            budget: MemoryBudget::new(config.max_memory, 1),
            blocks: blocks.clone(),
        };
        let mut server = Server::assemble(config, handler, parts)?;
        if let Some(addr) = metrics_listen {
            server.metrics_listener = Some(crate::metrics::spawn_listener(addr, blocks)?);
        }
        if let Some((unstarted, group)) = broker {
            server.broker = Some(unstarted.start(group, max_message)?);
        }
        Ok(server)
    }

    /// One reactor from its parts: a listener already bound (and, in a [`MultiServer`],
    /// shared with the other reactors through `SO_REUSEPORT`), a poll with its waker, and
    /// its place among the other reactors.
    pub(crate) fn assemble(config: Config, handler: H, parts: Parts) -> Result<Self, Error> {
        let tls = match &config.tls {
            Some(files) => {
                Some(crate::transport::server_config(&files.cert, &files.key).map_err(Error::Tls)?)
            }
            None => None,
        };
        let Parts {
            poll,
            waker,
            listener,
            requested,
            all_wakers,
            index,
            threads,
            link,
            budget,
            blocks,
        } = parts;
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let local_addr = listener.local_addr()?;
        let uring = match (config.io_uring, &tls) {
            (false, _) => None,
            (true, Some(_)) => {
                log::warn!("io_uring serves plain TCP only: serving TLS on epoll");
                None
            }
            (true, None) => match uring::Ring::new(&config) {
                Ok(ring) => Some(Box::new(ring)),
                Err(e) => {
                    log::warn!("io_uring unavailable ({e}): serving on epoll");
                    None
                }
            },
        };
        if uring.is_none() {
            poll.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
        }
        let tick_ms = (config.timer_tick().as_millis() as u64).max(1);
        let (outbox, inbox) = mpsc::channel();
        let mut shared = Shared::new(config, handler, &blocks, index);
        shared.pool.account = budget.account(index);
        if let Some(link) = link {
            shared.topics.link(link);
        }
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            tls,
            // Reserved up front: pages never touched are never resident, and the slab then
            // never doubles (and copies) under a connection storm.
            slots: Slab::with_capacity(shared.config.max_connections),
            scratch: vec![0; shared.config.read_buffer_size],
            ready: Vec::new(),
            dirty: Vec::new(),
            expired: Vec::new(),
            pending_handshakes: 0,
            // Generations are this reactor's index plus multiples of the thread count, so a
            // connection id from one reactor never names a connection of another.
            next_generation: index as u32,
            generation_step: threads as u32,
            listener_ready: false,
            accept_paused: false,
            start: Instant::now(),
            tick_ms,
            next_sweep: tick_ms,
            next_app_tick: shared.config.tick_interval.map(|t| t.as_millis() as u64),
            requested,
            waker,
            all_wakers,
            shutdown_deadline: None,
            inbox,
            outbox,
            shared,
            shedding: shed::Shedding::default(),
            metrics_listener: None,
            broker: None,
            on_uring: uring.is_some(),
            uring,
        })
    }

    /// How this reactor moves bytes: `"io_uring"` or `"epoll"` (where `Config::io_uring`
    /// was asked for but refused, the log says why).
    pub fn io_backend(&self) -> &'static str {
        if self.on_uring {
            "io_uring"
        } else {
            "epoll"
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops [`run`](Self::run) gracefully from another thread (in a
    /// [`MultiServer`](crate::MultiServer), every reactor).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.requested),
            wakers: Arc::clone(&self.all_wakers),
        }
    }

    /// A handle that hands work to the reactor's thread from any other thread (see
    /// [`ServerHandle::run`]).
    pub fn handle(&self) -> ServerHandle<H> {
        ServerHandle {
            sender: self.outbox.clone(),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// This reactor's counter block.
    pub(crate) fn counters(&self) -> &crate::metrics::Counters {
        &self.shared.stats
    }

    /// The address the metrics listener is bound to, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(MetricsListener::local_addr)
    }

    /// The handler (for example to read what it collected after `run` returns).
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// Serves until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        if self.uring.is_some() {
            return self.run_uring();
        }
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
            if self.shared.topics.arrived() {
                // Before any socket: interest another reactor announced before its subscriber
                // learnt it is subscribed must count for what this turn reads.
                self.run_handed_work();
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready(),
                    WAKER => self.run_handed_work(),
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
            self.flush_dirty();
            self.budget_turn();
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
        if self.listener.is_none() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            if self.refuses_more() {
                // Resumed when a slot frees; until then the kernel's backlog holds the rest.
                self.accept_paused = true;
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or similar: try again at the next timer sweep rather
                    // than spin.
                    log::error!("accept failed: {e}");
                    self.accept_paused = true;
                    return;
                }
            };
            self.admit(stream);
        }
        self.listener_ready = true;
    }

    /// No connection is to be accepted now: the slab is full or the memory budget refuses.
    fn refuses_more(&mut self) -> bool {
        self.slots.len() >= self.shared.config.max_connections
            || self.shedding.refuses_accept(&mut self.shared)
    }

    /// Gives an accepted connection its slot (or drops it, past the pending-handshake limit).
    fn admit(&mut self, stream: mio::net::TcpStream) {
        if self.pending_handshakes >= self.shared.config.max_pending_handshakes {
            self.shared.stats.refuse(RefusedBy::PendingLimit);
            return; // dropped: too many connections still silent
        }
        let _ = stream.set_nodelay(true);
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let generation = self.next_generation.wrapping_add(self.generation_step);
        let mut transport = match &self.tls {
            None if self.on_uring => uring::transport(stream, key, generation),
            None => SlotTransport::Plain(PlainTcp::new(stream)),
            Some(config) => match TlsTcp::new(stream, Arc::clone(config)) {
                Ok(tls) => SlotTransport::Tls(Box::new(tls)),
                Err(_) => return, // dropped: rustls could not start a session
            },
        };
        if !self.on_uring
            && self
                .poll
                .registry()
                .register(
                    transport.source(),
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
        {
            return;
        }
        if let SlotTransport::Tls(_) = transport {
            self.shared.pool.account.charge(TLS_CONNECTION_ESTIMATE);
        }
        self.next_generation = generation;
        entry.insert(Slot {
            transport: UnsafeCell::new(transport),
            conn: UnsafeCell::new(Connection::new(self.shared.now, &self.shared.config)),
            generation,
            handshaking: true,
            queued: false,
            dirty: Cell::new(false),
            peer_closed: false,
        });
        self.pending_handshakes += 1;
        self.shared.stats.accepted.bump();
    }
}
