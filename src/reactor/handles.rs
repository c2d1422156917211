//! Handles on a running server from other threads: graceful shutdown (async-signal-safe)
//! and work handed to the reactor's thread.
//!
//! Owns what crosses threads: an atomic flag, a channel and the poll's waker. Must not reach
//! a connection from another thread: work runs on the reactor's thread, with a [`Ctx`].

use super::*;

/// Asks a running [`Server`] to shut down gracefully, from any thread (a signal handler thread,
/// a test).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(super) requested: Arc<AtomicBool>,
    pub(super) wakers: Arc<[Arc<Waker>]>,
}

impl ShutdownHandle {
    /// Stop accepting, send close 1001 to every client, wait up to the close timeout.
    ///
    /// Async-signal-safe (an atomic store and an eventfd write), so it may be called from a
    /// signal handler as well as from another thread.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::Release);
        for waker in self.wakers.iter() {
            // A failed wake only delays shutdown until the next timer tick.
            let _ = waker.wake();
        }
    }
}

/// Work for the reactor's thread, handed in from another one.
pub(super) type Work<H> = Box<dyn FnOnce(&mut H, &mut Ctx<'_>) + Send>;

/// Hands work to a running [`Server`] from any thread: the work runs on the reactor's thread,
/// between two loop turns, with the handler and every connection in reach (a [`Ctx`]), and
/// what it sends is written in that turn. Cloning is cheap; the server holds a queue of
/// handed-in work, so hand in work at the rate it can be done.
pub struct ServerHandle<H> {
    pub(super) sender: mpsc::Sender<Work<H>>,
    pub(super) waker: Arc<Waker>,
}

impl<H> Clone for ServerHandle<H> {
    fn clone(&self) -> Self {
        ServerHandle {
            sender: self.sender.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<H> std::fmt::Debug for ServerHandle<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

/// The server a [`ServerHandle`] points to has stopped: the work was not handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server has stopped")
    }
}

impl std::error::Error for Stopped {}

impl<H> ServerHandle<H> {
    /// Runs `work` on the reactor's thread with the handler and every connection. A panic in
    /// it is counted like a handler's panic and harms no connection.
    pub fn run(
        &self,
        work: impl FnOnce(&mut H, &mut Ctx<'_>) + Send + 'static,
    ) -> Result<(), Stopped> {
        self.sender.send(Box::new(work)).map_err(|_| Stopped)?;
        // The work is queued; a failed wake only delays it to the next timer tick.
        let _ = self.waker.wake();
        Ok(())
    }
}
