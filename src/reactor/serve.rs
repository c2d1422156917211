//! The reactor's per-connection work: reading, writing, timers, work handed in from other
//! threads, and shutdown.
//!
//! Owns how a connection is served within a loop turn, and the rule that makes sends to other
//! connections safe: a connection being served is reached through its slot's cells while the
//! slab is borrowed shared (see [`Slot`]). Must not parse or frame anything: the connection
//! does that.

use super::*;

impl<H: Handler> Server<H> {
    // ---- read and write --------------------------------------------------------------------

    /// Serves slot `key`'s connection and transport with `f`, while every other connection
    /// is reachable through the slab as `f`'s peers.
    pub(super) fn lend<R>(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Connection, &mut SlotTransport, &mut Lent<'_, H>) -> R,
    ) -> Option<R> {
        let slots = &self.slots;
        let slot = slots.get(key)?;
        // SAFETY: the slab is borrowed shared for the whole call, so no slot is added, removed
        // or borrowed `&mut` through it; `SlabPeers` hands out connections of other keys only
        // (`lent`), one at a time, and never a transport. So these two references are the
        // only ones to this slot's cells while they live.
        let (conn, transport) = unsafe { (&mut *slot.conn.get(), &mut *slot.transport.get()) };
        let mut lent = Lent {
            id: slot.id(key),
            shared: &mut self.shared,
            peers: SlabPeers {
                slots,
                lent: Some(key),
                dirty: &mut self.dirty,
            },
        };
        Some(f(conn, transport, &mut lent))
    }

    /// Reads a ready connection until a short read (or its budget) and lets the connection
    /// handle the bytes. Written out rather than through [`lend`](Self::lend): this is the
    /// per-message path, and the closure's extra state cost about 13 instructions per read.
    pub(super) fn read_ready(&mut self, key: usize) {
        let Server {
            slots,
            shared,
            scratch,
            dirty,
            ready,
            shedding,
            ..
        } = self;
        let Some(slot) = slots.get(key) else {
            return;
        };
        let (id, peer_closed) = (slot.id(key), slot.peer_closed);
        // SAFETY: as in `lend`: the slab stays borrowed shared until `peers` is dropped, and
        // `peers` never hands out slot `key`.
        let (conn, transport) = unsafe { (&mut *slot.conn.get(), &mut *slot.transport.get()) };
        let mut peers = SlabPeers {
            slots,
            lent: Some(key),
            dirty,
        };
        let pause_above = shared.pool.account.pause_above();
        // One loop for every kind of transport, so that the connection's input handling has
        // one call site and stays inlined here (with a copy of the loop per kind it was no
        // longer inlined, and a plain message cost more: callgrind); the kind is a branch per
        // read, and TLS's own code stays out of line.
        let read = read_budget(
            conn,
            transport,
            shared,
            scratch,
            &mut peers,
            (id, peer_closed, pause_above),
        );
        if read == Read::HeldBack && peer_closed {
            // Its peer has closed its side, so what it holds back can only grow by what is
            // already on the way; waiting to read that would keep the memory (and, with every
            // holder held back, the whole budget) for a peer that may be gone. Shed it now.
            self.shed(key);
            return;
        }
        if read != Read::Drained {
            if let Some(slot) = slots.get_mut(key) {
                if !slot.queued {
                    slot.queued = true;
                    if read == Read::More {
                        ready.push(key);
                    } else {
                        // Read again when the budget allows (`budget_turn`).
                        shared.stats.budget_read_pauses.bump();
                        shared.pool.account.alert();
                        shedding.held_back.push(key);
                    }
                }
            }
        }
        self.flush(key);
    }

    /// Writes what the connection queued (one `write` in the common case) and drops the
    /// connection if it is finished. Only `on_drain` needs the connection lent out.
    pub(super) fn flush(&mut self, key: usize) {
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
        let (conn, transport) = (slot.conn.get_mut(), slot.transport.get_mut());
        let (mut resumed, mut failed) = write_out(conn, transport, shared);
        conn.recount(&mut shared.pool.account);
        // What a TLS transport holds of its own (records, handshake messages): written even
        // when the connection had nothing, as after a handshake message arrived. (An io_uring
        // transport answers whether its sends are done.)
        let mut flushed = true;
        if !matches!(transport, SlotTransport::Plain(_)) {
            if let SlotTransport::Tls(tls) = transport {
                if let Some(resumed) = tls.take_established() {
                    shared.stats.tls_handshakes[usize::from(resumed)].bump();
                }
            }
            if !failed {
                match transport.flush() {
                    Ok(all) => flushed = all,
                    Err(_) => failed = true,
                }
            }
            if let SlotTransport::Tls(tls) = transport {
                let (held, counted) = tls.recount();
                if held != counted {
                    shared.pool.account.refund(counted);
                    shared.pool.account.charge(held);
                }
            }
        }
        if slot.handshaking && !conn.is_handshaking() {
            slot.handshaking = false;
            *pending_handshakes -= 1;
        }
        // An early write during a publish may have drained it without resuming it.
        resumed = resumed || conn.resume_if_drained(&shared.config);
        if resumed && !slot.queued {
            slot.queued = true;
            ready.push(key);
        }
        // A finished connection waits for its transport's last bytes too (a writable edge
        // or, failing that, its close deadline: see `sweep_deadlines`).
        let mut done = conn.is_done() && (flushed || failed);
        if failed || resumed {
            self.lend(key, |conn, transport, lent| {
                let mut env = lent.env(transport);
                if failed {
                    conn.abort(CloseCause::Io, &mut env);
                } else {
                    conn.drained(&mut env);
                }
                done = conn.is_done();
            });
        }
        if done {
            self.remove(key, CloseCause::Io);
        }
    }

    /// Drops the connection `key` now; `cause` tells its handler why, if it is still owed an
    /// `on_close`.
    pub(super) fn remove(&mut self, key: usize, cause: CloseCause) {
        let Some(slot) = self.slots.try_remove(key) else {
            return;
        };
        let id = slot.id(key);
        let mut conn = slot.conn.into_inner();
        if slot.handshaking {
            self.pending_handshakes -= 1;
        }
        let mut peers = SlabPeers {
            slots: &self.slots,
            lent: None,
            dirty: &mut self.dirty,
        };
        let mut env = self.shared.env(id, None, &mut peers);
        conn.abort(cause, &mut env);
        conn.release(&mut self.shared.pool);
        // Dropping the transport closes the socket, which also removes it from the epoll set.
        let mut transport = slot.transport.into_inner();
        if let SlotTransport::Tls(tls) = &mut transport {
            let (_, counted) = tls.recount();
            self.shared
                .pool
                .account
                .refund(TLS_CONNECTION_ESTIMATE + counted);
            match tls.take_established() {
                Some(resumed) => self.shared.stats.tls_handshakes[usize::from(resumed)].bump(),
                None if !tls.established() => self.shared.stats.tls_handshake_failures.bump(),
                None => {}
            }
        }
        transport.close();
        drop(transport);
        if self.accept_paused {
            self.accept_paused = false;
            self.listener_ready = true;
        }
    }

    pub(super) fn serve_ready_list(&mut self) {
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

    /// Writes what callbacks queued to connections other than their own (sends by id, ticks,
    /// work from other threads, shutdown): once per connection per loop turn.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.dirty.set(false);
                self.flush(key);
            }
        }
    }

    // ---- timers and work from other threads ------------------------------------------------

    pub(super) fn run_timers(&mut self) {
        if self.shared.now >= self.next_sweep {
            self.next_sweep = self.shared.now + self.tick_ms;
            self.sweep_deadlines();
            self.set_gauges();
            if self.accept_paused && self.slots.len() < self.shared.config.max_connections {
                self.accept_paused = false;
                self.accept_ready();
            }
        }
        if let (Some(at), Some(interval)) = (self.next_app_tick, self.shared.config.tick_interval) {
            if self.shared.now >= at {
                self.next_app_tick = Some(self.shared.now + (interval.as_millis() as u64).max(1));
                self.with_ctx(|handler, ctx| handler.on_tick(ctx));
            }
        }
    }

    /// Levels that would cost something per message to follow live are sampled here, once
    /// per timer tick, for `/metrics` to read.
    fn set_gauges(&mut self) {
        let mut busy = 0;
        for (_, slot) in self.slots.iter_mut() {
            busy += usize::from(slot.conn.get_mut().is_busy());
        }
        let shared = &self.shared;
        let stats = &shared.stats;
        stats.connections.set(self.slots.len());
        stats.buffers_busy.set(busy);
        stats.buffers_free.set(shared.pool.free_count());
        stats.topics.set(shared.topics.len());
        stats.subscribers.set(shared.topics.subscriber_count());
        stats.memory_held.set(shared.pool.account.held());
        let (compressors, inflaters) = shared.pool.deflate.parked();
        stats.deflate_parked[crate::metrics::DEFLATE_IN].set(inflaters);
        stats.deflate_parked[crate::metrics::DEFLATE_OUT].set(compressors);
        stats
            .deflate_free_inflaters
            .set(shared.pool.deflate.free_inflaters());
    }

    /// Runs the work other threads handed in through a [`ServerHandle`].
    pub(super) fn run_handed_work(&mut self) {
        while let Ok(work) = self.inbox.try_recv() {
            self.with_ctx(|handler, ctx| work(handler, ctx));
        }
        self.shared.topics.begin_drain();
        while let Some(carried) = self.shared.topics.next_arrival() {
            let mut peers = SlabPeers {
                slots: &self.slots,
                lent: None,
                dirty: &mut self.dirty,
            };
            let (_, mut ctx) = self.shared.ctx(&mut peers);
            ctx.deliver_arrival(&carried.topic, &carried.frame);
        }
    }

    /// Calls the handler about no connection in particular, with every connection reachable,
    /// under the same panic policy as every callback.
    pub(super) fn with_ctx(&mut self, f: impl FnOnce(&mut H, &mut Ctx<'_>)) {
        let mut peers = SlabPeers {
            slots: &self.slots,
            lent: None,
            dirty: &mut self.dirty,
        };
        let (handler, mut ctx) = self.shared.ctx(&mut peers);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(handler, &mut ctx)));
        if outcome.is_err() {
            crate::connection::handler_panicked(&self.shared.config, &self.shared.stats);
        }
    }

    /// O(1) per connection per tick: a connection's deadline is one integer, checked here.
    pub(super) fn sweep_deadlines(&mut self) {
        let now = self.shared.now;
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        expired.extend(self.slots.iter_mut().filter_map(|(key, slot)| {
            let deadline = slot.conn.get_mut().deadline();
            (deadline != 0 && deadline <= now).then_some(key)
        }));
        for &key in &expired {
            self.lend(key, |conn, transport, lent| {
                conn.handle_timeout(&mut lent.env(transport))
            });
            self.flush(key);
            // Timed out and finished, but its transport still holds bytes the peer does not
            // read: no longer waited for.
            if let Some(slot) = self.slots.get_mut(key) {
                if slot.conn.get_mut().is_done() {
                    self.remove(key, CloseCause::Timeout);
                }
            }
        }
        self.expired = expired;
    }

    // ---- shutdown --------------------------------------------------------------------------

    pub(super) fn begin_shutdown(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.listener_ready = false;
        self.shutdown_deadline =
            Some(self.shared.now + self.shared.config.close_timeout.as_millis() as u64);
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.lend(key, |conn, transport, lent| {
                let (code, cause) = (close_code::GOING_AWAY, CloseCause::Shutdown);
                let mut env = lent.env(transport);
                conn.start_close(code, "server shutting down", cause, &mut env)
            });
            self.flush(key);
        }
    }

    pub(super) fn drop_all(&mut self) {
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.remove(key, CloseCause::Timeout);
        }
    }
}

/// How a connection's reads of one turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// No further edge is owed a read: the socket was drained, or reading paused for
    /// backpressure (re-queued when the output drains).
    Drained,
    /// The read budget ran out: there may be more.
    More,
    /// The memory budget holds this connection back: it holds at least the current
    /// threshold (see [`crate::budget::Account::pause_above`]).
    HeldBack,
}

/// Reads one connection until a short read, the end, an error or the read budget, and feeds
/// the connection. `pause_above`: the memory budget's threshold, as of this call.
#[inline(always)]
fn read_budget<T: Transport, H: Handler>(
    conn: &mut Connection,
    transport: &mut T,
    shared: &mut Shared<H>,
    scratch: &mut [u8],
    peers: &mut SlabPeers<'_>,
    (id, peer_closed, pause_above): (ConnId, bool, usize),
) -> Read {
    let mut drained = false;
    for _ in 0..READ_BUDGET {
        if !conn.wants_read() {
            drained = true; // reading resumes (and is re-queued) when output drains
            break;
        }
        if held_back(conn, pause_above) {
            return Read::HeldBack;
        }
        let outcome = if let Some((buf, room)) = conn.direct_read_target() {
            transport.read_into(buf, room).map(|n| {
                if n > 0 {
                    let mut env = shared.env(id, transport.transmitter(), peers);
                    conn.handle_direct_input(n, &mut env);
                }
                (n, n < room)
            })
        } else {
            let room = scratch.len();
            transport.read(scratch).map(|input| {
                let n = input.len();
                if n > 0 {
                    let mut env = shared.env(id, transport.transmitter(), peers);
                    conn.handle_input(input, &mut env);
                }
                // Fewer bytes than asked for: the socket was empty at that moment, and
                // new data raises a new edge, so the read that would say WouldBlock is
                // skipped.
                (n, n < room)
            })
        };
        match outcome {
            Ok((0, _)) => {
                conn.handle_eof(&mut shared.env(id, transport.transmitter(), peers));
                drained = true;
                break;
            }
            Ok((_, short)) if short && !peer_closed => {
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
                let mut env = shared.env(id, transport.transmitter(), peers);
                conn.abort(CloseCause::Io, &mut env);
                drained = true;
                break;
            }
        }
    }
    if drained {
        Read::Drained
    } else {
        Read::More
    }
}

/// Whether the memory budget holds `conn` back from reading: it holds at least `pause_above`
/// (`usize::MAX` while the budget pauses no one).
#[inline(always)]
pub(super) fn held_back(conn: &Connection, pause_above: usize) -> bool {
    pause_above != usize::MAX && conn.holding() >= pause_above
}

/// Writes the connection's output through `transport` until it is all written or the socket
/// is full: whether the backlog fell to its low water (`resumed`) and whether the socket
/// failed.
#[inline(always)]
fn write_out<T: Transport, H>(
    conn: &mut Connection,
    transport: &mut T,
    shared: &mut Shared<H>,
) -> (bool, bool) {
    let mut resumed = false;
    let mut failed = false;
    while conn.pending_output() > 0 {
        let pending = conn.output();
        let total = pending.len();
        match transport.write(pending) {
            Ok(n) => {
                shared.stats.bytes_out.add(n as u64);
                resumed |= conn.wrote(n, &shared.config, &mut shared.pool);
                if n < total {
                    break; // the socket buffer is full: a writable edge will follow
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (resumed, failed)
}
