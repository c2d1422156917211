//! A connection's slab entry, and the slab as the peers a callback reaches.
//!
//! Owns the one `unsafe` rule of the reactor: while a connection is served, the slab is
//! borrowed shared and other connections are reached through their cells, never the one
//! being served. Must not hold anything per connection that an idle connection would pay
//! for beyond its socket and state machine.

use super::*;
use crate::buffers::BusyPool;

/// A connection's slab entry: its transport next to its state machine.
///
/// While a connection is being served (its input handled, a timer, `on_drain`), the slab is
/// only borrowed shared, so that the handler can reach every other connection through it
/// ([`SlabPeers`]); the connection being served is reached through its cells, and `SlabPeers`
/// never hands it out ([`Server::lend`]). Everywhere else the slab is borrowed `&mut` and the
/// cells are plain fields (`get_mut`). Lending by moving the connection out of its slot
/// instead cost about 50 instructions per echoed message (callgrind).
pub(super) struct Slot {
    pub(super) transport: UnsafeCell<SlotTransport>,
    pub(super) conn: UnsafeCell<Connection>,
    pub(super) generation: u32,
    /// Counted in `pending_handshakes`.
    pub(super) handshaking: bool,
    /// Already in the `ready` list.
    pub(super) queued: bool,
    /// Already in the `dirty` list (set through a shared borrow of the slab).
    pub(super) dirty: Cell<bool>,
    /// The peer's FIN or RST was announced: a short read no longer means "drained", since
    /// the EOF (or error) behind the data raises no further edge.
    pub(super) peer_closed: bool,
}

impl Slot {
    pub(super) fn id(&self, key: usize) -> ConnId {
        ConnId {
            key: key as u32,
            generation: self.generation,
        }
    }
}

/// What a connection lent out of its slot works with: the reactor's shared parts and the
/// slab of every other connection.
pub(super) struct Lent<'a, H> {
    pub(super) id: ConnId,
    pub(super) shared: &'a mut Shared<H>,
    pub(super) peers: SlabPeers<'a>,
}

impl<H> Lent<'_, H> {
    pub(super) fn env<'e>(&'e mut self, transport: &'e SlotTransport) -> Env<'e, H> {
        self.shared
            .env(self.id, transport.transmitter(), &mut self.peers)
    }
}

/// The slab as a callback's [`Peers`]: a connection reached there is marked for a flush at
/// the end of the loop turn.
pub(super) struct SlabPeers<'a> {
    pub(super) slots: &'a Slab<Slot>,
    /// The slot being served, which is reached through its own references, never from here.
    pub(super) lent: Option<usize>,
    pub(super) dirty: &'a mut Vec<usize>,
}

impl Peers for SlabPeers<'_> {
    fn peer(&mut self, id: ConnId) -> Option<&mut Connection> {
        let key = id.key as usize;
        if self.lent == Some(key) {
            return None;
        }
        let slot = self.slots.get(key)?;
        if slot.generation != id.generation {
            return None; // gone: the id is stale
        }
        if !slot.dirty.get() {
            slot.dirty.set(true);
            self.dirty.push(key);
        }
        // SAFETY: the slab is borrowed shared (see `Server::lend`): nothing else references
        // this slot's connection, which is not the lent one, and the `&mut self` borrow keeps
        // this reference the only one handed out.
        Some(unsafe { &mut *slot.conn.get() })
    }

    fn write_now(&mut self, id: ConnId, pool: &mut BusyPool, stats: &Counters) -> usize {
        let key = id.key as usize;
        if self.lent == Some(key) {
            return 0;
        }
        let Some(slot) = self.slots.get(key) else {
            return 0;
        };
        if slot.generation != id.generation {
            return 0;
        }
        // SAFETY: as in `peer`: not the lent slot, and `&mut self` keeps these the only
        // references to this slot's cells while they live.
        let (conn, transport) = unsafe { (&mut *slot.conn.get(), &mut *slot.transport.get()) };
        let mut written = 0;
        while conn.pending_output() > 0 {
            let pending = conn.output();
            let total = pending.len();
            match transport.write(pending) {
                Ok(n) => {
                    stats.bytes_out.add(n as u64);
                    conn.consume_output(n, pool);
                    written += n;
                    if n < total {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        written
    }

    fn connection_count(&self) -> usize {
        self.slots.len()
    }

    fn open_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|&(key, _)| Some(key) != self.lent)
            // SAFETY: not the lent slot, and no `&mut` to another one is alive while `&self`.
            .filter(|(_, slot)| unsafe { &*slot.conn.get() }.is_open())
            .count()
    }
}
