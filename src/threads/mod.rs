//! Every core: one reactor per thread, each with its own listener on the same address, its
//! own connections, buffers and timers, and nothing shared on the per-message path.
//!
//! Owns starting and stopping the reactors of a [`MultiServer`]: the listeners
//! (`SO_REUSEPORT`, so the kernel spreads new connections over them), the thread per reactor,
//! the descriptor table sized before a second thread exists, the shutdown of all at once, and
//! what passes between reactors (published messages, [`group`]). A connection lives and dies
//! on the thread that accepted it; this module must not move one or share one.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use mio::{Poll, Waker};
use socket2::{Domain, Socket, Type};

use crate::config::{Config, Error};
use crate::handler::{Handler, Message};
use crate::metrics::Counters;
use crate::reactor::{Parts, Server, ServerHandle, ShutdownHandle, WAKER};
use crate::stats::Stats;

mod group;

pub(crate) use group::{Carried, Group, Link};

/// Connections the kernel queues per listener before the reactor accepts them: a storm of
/// connects waits here rather than being refused.
const LISTEN_BACKLOG: i32 = 1024;

/// A WebSocket server on several threads: one [`Server`] (a reactor) per thread, each with a
/// handler of its own, made by the factory given to [`bind`](Self::bind).
///
/// Each reactor has its own listener on the same address (`SO_REUSEPORT`): the kernel hands
/// each new connection to one of them, and the connection stays on that thread for its life.
/// Nothing is shared on the per-message path. A publish on any thread reaches the subscribers
/// on every thread (framed once, then handed to each other reactor through a channel and its
/// poll's waker, to the reactors that have subscribers of the topic), under the same
/// slow-subscriber policy, in the order each publisher published; [`Publisher`] publishes
/// from threads that are not reactors.
///
/// Application state the threads must share is the application's to share: give each
/// handler an `Arc` of it from the factory (a `Mutex` for what changes on open and close, an
/// atomic for counters), and keep per-message work on the handler's own fields.
pub struct MultiServer<H: Handler> {
    servers: Vec<Server<H>>,
    group: Arc<Group>,
    local_addr: SocketAddr,
    /// The `metrics_listen` thread, which sums every reactor's counters; stopped when the
    /// server is dropped (after `run` returns).
    metrics_listener: Option<crate::metrics::MetricsListener>,
    /// The broker's threads, if `Config::broker` is set; stopped after `run` returns.
    broker: Option<crate::broker::Attachment>,
}

impl<H: Handler> std::fmt::Debug for MultiServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiServer")
            .field("local_addr", &self.local_addr)
            .field("threads", &self.servers.len())
            .finish_non_exhaustive()
    }
}

impl<H: Handler + Send + 'static> MultiServer<H> {
    /// Binds `threads` listeners to `config.listen` (0: one per available core) and prepares
    /// a reactor for each, with the handler `make_handler(index)` returns for it; nothing is
    /// served until [`run`](Self::run).
    pub fn bind(
        config: Config,
        threads: usize,
        mut make_handler: impl FnMut(usize) -> H,
    ) -> Result<Self, Error> {
        config.validate()?;
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut listeners = Vec::with_capacity(threads);
        let first = listen(config.listen, true)?;
        // With port 0 the first listener picks the port; the others join it.
        let local_addr = first.local_addr()?;
        listeners.push(first);
        for _ in 1..threads {
            listeners.push(listen(local_addr, true)?);
        }
        if threads > 1 {
            presize_descriptor_table(listeners[0].as_raw_fd(), config.max_connections);
        }
        let mut polls = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            polls.push((poll, waker));
        }
        let wakers: Vec<Arc<Waker>> = polls.iter().map(|(_, w)| Arc::clone(w)).collect();
        let all_wakers: Arc<[Arc<Waker>]> = wakers.clone().into();
        let mut blocks = crate::metrics::Blocks::new(threads);
        let (broker_end, broker) = match &config.broker {
            Some(url) => {
                let (end, unstarted) = crate::broker::prepare(url);
                blocks = blocks.with_broker(unstarted.counters());
                (Some(end), Some(unstarted))
            }
            None => (None, None),
        };
        let (group, links) = Group::new(wakers, blocks.clone(), broker_end);
        let requested = Arc::new(AtomicBool::new(false));
        // The connection limits are the server's: each reactor gets an equal share, rounded
        // up (the kernel spreads connections evenly, so no reactor fills long before another).
        let share = Config {
            max_connections: config.max_connections.div_ceil(threads),
            max_pending_handshakes: config.max_pending_handshakes.div_ceil(threads),
            ..config.clone()
        };
        let budget = crate::budget::MemoryBudget::new(config.max_memory, threads);
        let mut servers = Vec::with_capacity(threads);
        for (index, (((poll, waker), listener), link)) in
            polls.into_iter().zip(listeners).zip(links).enumerate()
        {
            let parts = Parts {
                poll,
                waker,
                listener,
                requested: Arc::clone(&requested),
                all_wakers: Arc::clone(&all_wakers),
                index,
                threads,
                link: Some(link),
                budget: Arc::clone(&budget),
                blocks: blocks.clone(),
            };
            servers.push(Server::assemble(share.clone(), make_handler(index), parts)?);
        }
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(crate::metrics::spawn_listener(addr, blocks)?),
            None => None,
        };
        let broker = match broker {
            Some(unstarted) => Some(unstarted.start(Arc::clone(&group), config.max_message_size)?),
            None => None,
        };
        Ok(MultiServer {
            servers,
            group,
            local_addr,
            metrics_listener,
            broker,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reactor threads.
    pub fn threads(&self) -> usize {
        self.servers.len()
    }

    /// How the reactors move bytes: `"io_uring"` or `"epoll"` (see [`Server::io_backend`]).
    pub fn io_backend(&self) -> &'static str {
        self.servers[0].io_backend()
    }

    /// A handle that stops every reactor gracefully (see [`ShutdownHandle::shutdown`]).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.servers[0].shutdown_handle()
    }

    /// A handle per reactor, in thread order, for work run on that reactor's thread.
    pub fn handles(&self) -> Vec<ServerHandle<H>> {
        self.servers.iter().map(Server::handle).collect()
    }

    /// The address the metrics listener is bound to, if `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(crate::metrics::MetricsListener::local_addr)
    }

    /// A handle that publishes to topics from any thread.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            group: Arc::clone(&self.group),
        }
    }

    /// Serves on every thread until a graceful shutdown completes on all of them; returns the
    /// reactors (their handlers and counters) in thread order. The first reactor runs on the
    /// calling thread. A panic that escapes the handler's guard on any reactor ends the
    /// process with a message, rather than leave a thread's connections unserved.
    pub fn run(self) -> io::Result<Vec<Server<H>>> {
        let shutdown = self.shutdown_handle();
        // Kept until every reactor has stopped.
        let _metrics_listener = self.metrics_listener;
        let _broker = self.broker;
        let mut servers = self.servers.into_iter();
        let Some(mut first) = servers.next() else {
            return Ok(Vec::new());
        };
        let mut threads = Vec::new();
        for (index, mut server) in servers.enumerate() {
            let stop_all = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("wsreactor-{}", index + 1))
                .spawn(move || {
                    let _abort = AbortOnPanic(index + 1);
                    let outcome = server.run();
                    if outcome.is_err() {
                        stop_all.shutdown(); // one reactor failing stops them all
                    }
                    outcome.map(|()| server)
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    shutdown.shutdown();
                    return Err(e);
                }
            }
        }
        let outcome = {
            let _abort = AbortOnPanic(0);
            first.run()
        };
        if outcome.is_err() {
            shutdown.shutdown();
        }
        let mut stopped = vec![first];
        let mut error = outcome.err();
        for thread in threads {
            // A panicking reactor aborts the process first, so joining cannot fail.
            match thread.join() {
                Ok(Ok(server)) => stopped.push(server),
                Ok(Err(e)) => error = error.or(Some(e)),
                Err(_) => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(stopped),
        }
    }
}

/// Counters summed over reactors, for example those [`MultiServer::run`] returns.
pub fn total_stats<H: Handler>(servers: &[Server<H>]) -> Stats {
    let blocks: Vec<_> = servers.iter().map(Server::counters).collect();
    Counters::total(&blocks)
}

/// Publishes to topics from any thread, to the subscribers on every reactor of a
/// [`MultiServer`]. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Publisher {
    group: Arc<Group>,
}

impl Publisher {
    /// Frames `message` once and hands it to every reactor, which queues it to its own
    /// subscribers of `topic` in its next loop turn: how many reactors took it. Messages
    /// published through one `Publisher` (or its clones, from one thread) arrive in order.
    pub fn publish(&self, topic: &[u8], message: Message<'_>) -> usize {
        let mut frame = Vec::new();
        crate::topics::encode(&mut frame, message);
        let carried = Arc::new(Carried {
            topic: topic.into(),
            frame: frame.into_boxed_slice(),
        });
        self.group.hand_to_all(&carried)
    }
}

/// Ends the process if the reactor thread it lives on unwinds: the handler's own panics are
/// caught by its guard, so one that gets here is the server's bug, and a process with a dead
/// reactor would keep accepting connections (on the other listeners) it half serves.
struct AbortOnPanic(usize);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "wsreactor: reactor thread {} panicked outside the handler's guard; \
                 aborting the process rather than leave its connections unserved",
                self.0
            );
            std::process::abort();
        }
    }
}

/// A listener on `addr`, which other reactors' listeners may share when `shared`
/// (`SO_REUSEPORT`).
pub(crate) fn listen(addr: SocketAddr, shared: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Grows the process's descriptor table once, now, to hold `max_connections` per reactor.
///
/// The kernel grows the table by doubling when a new descriptor does not fit, and while more
/// than one thread shares it each growth waits for an RCU grace period (milliseconds) with
/// the table locked: every reactor's `accept` stalls behind it, several times during a
/// connection storm. A table grown before the storm is never shrunk, so the storm pays
/// nothing. Best effort: bounded by the open-files limit, and failure only costs those stalls.
fn presize_descriptor_table(any_fd: RawFd, max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = max_connections.saturating_add(64) as u64;
    let highest = wanted.min(limit.rlim_cur.saturating_sub(1));
    let Ok(target) = libc::c_int::try_from(highest) else {
        return;
    };
    // SAFETY: duplicating an open descriptor to a number nothing uses yet, then closing that
    // number: no descriptor the process uses is touched.
    unsafe {
        if libc::fcntl(target, libc::F_GETFD) == -1 && libc::dup2(any_fd, target) == target {
            libc::close(target);
        }
    }
}
