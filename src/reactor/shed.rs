//! The reactor's side of the memory budget: once per loop turn it publishes its total, and as
//! the server-wide total nears the budget it sheds load in a fixed order.
//!
//! The order (levels in [`crate::budget`]):
//! 1. from half the budget: the pool gives back the boxes it keeps, and connections holding
//!    more than a threshold are not read (the threshold falls from 16 MiB at 50% to 64 KiB
//!    at 90%, so the heaviest holders stop first); they are read again when it rises;
//! 2. a new message announcing 64 KiB or more that would take the total past 90% is refused
//!    with 1009 (in the connection's header check), and from 90% no connection is accepted
//!    (the kernel's listen backlog holds newcomers until the total falls);
//! 3. at the budget: the heaviest holders, each holding at least 64 KiB, are closed with 1013
//!    until the total is back at 90%.
//!
//! A held-back connection whose peer closes its side is closed then (see `read_ready`): it could
//! only complete its message from bytes already on the way, and a crowd that leaves while held
//! back would otherwise keep the total above 90% (no one accepted) until its idle timeout.
//!
//! A connection holding less than 64 KiB is never paused or closed by the budget. Must not
//! read or write sockets other than through the reactor's own flush.

use super::*;
use crate::budget::{Level, LITTLE};
use crate::connection::Shed;

/// Held-back connections are read again at least this often (milliseconds), in case what they
/// hold fell while the threshold did not move.
const RETRY_MS: u64 = 50;

/// What the shedding keeps between loop turns.
#[derive(Debug)]
pub(super) struct Shedding {
    /// Connections not read because they held too much (each marked `queued`).
    pub(super) held_back: Vec<usize>,
    /// The pause threshold at the last turn.
    pause_above: usize,
    /// When the held-back connections are next read again regardless.
    next_retry: u64,
    /// Accepting is paused by the budget (counted once per pause).
    accept_paused: bool,
    /// Scratch for picking the heaviest holders.
    heaviest: Vec<(usize, usize)>,
}

impl Default for Shedding {
    fn default() -> Self {
        Shedding {
            held_back: Vec::new(),
            pause_above: usize::MAX,
            next_retry: 0,
            accept_paused: false,
            heaviest: Vec::new(),
        }
    }
}

impl Shedding {
    /// Whether accepting must pause for the budget (from 90% of it); counts each pause.
    pub(super) fn refuses_accept<H>(&mut self, shared: &mut Shared<H>) -> bool {
        if shared.pool.account.level() < Level::Refuse {
            return false;
        }
        if !self.accept_paused {
            self.accept_paused = true;
            shared.stats.budget_accept_pauses.bump();
        }
        shared.pool.account.alert();
        true
    }
}

impl<H: Handler> Server<H> {
    /// Once per loop turn: publishes this reactor's total, reads the others', and acts on the
    /// level. Below half the budget, with nothing held back and the total near what was last
    /// published, this is one comparison.
    #[inline]
    pub(super) fn budget_turn(&mut self) {
        if !self.shared.pool.account.quiet() {
            self.budget_turn_slow();
        }
    }

    #[inline(never)]
    fn budget_turn_slow(&mut self) {
        let account = &mut self.shared.pool.account;
        account.sync();
        let level = account.level();
        if level == Level::Normal && self.shedding.held_back.is_empty() {
            self.shedding.pause_above = usize::MAX;
            if self.shedding.accept_paused {
                self.resume_accepting();
            }
            return;
        }
        if level >= Level::Pause {
            self.shared.pool.trim();
        }
        if level == Level::Shed {
            self.shed_heaviest();
        }
        let pause_above = self.shared.pool.account.pause_above();
        let now = self.shared.now;
        let rose = pause_above > self.shedding.pause_above;
        self.shedding.pause_above = pause_above;
        if !self.shedding.held_back.is_empty() && (rose || now >= self.shedding.next_retry) {
            self.shedding.next_retry = now + RETRY_MS;
            // Still marked `queued`: they go to the ready list as they are, and whoever still
            // holds too much is held back again when it is read.
            self.ready.append(&mut self.shedding.held_back);
        }
        if self.shedding.accept_paused && level < Level::Refuse {
            self.resume_accepting();
        }
        if !self.shedding.held_back.is_empty() || self.shedding.accept_paused {
            self.shared.pool.account.alert();
        }
    }

    fn resume_accepting(&mut self) {
        self.shedding.accept_paused = false;
        if self.accept_paused {
            self.accept_paused = false;
            self.listener_ready = true;
        }
    }

    /// The total is at the budget: closes the connections holding the most, each holding at
    /// least [`LITTLE`], until what they held brings the total back to 90%.
    fn shed_heaviest(&mut self) {
        let account = &self.shared.pool.account;
        let target = account.limit() / 10 * 9;
        let excess = account.total().saturating_sub(target);
        let mut heaviest = std::mem::take(&mut self.shedding.heaviest);
        heaviest.clear();
        heaviest.extend(self.slots.iter_mut().filter_map(|(key, slot)| {
            let held = slot.conn.get_mut().held();
            (held >= LITTLE).then_some((held, key))
        }));
        heaviest.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0;
        for &(held, key) in &heaviest {
            if freed >= excess {
                break;
            }
            freed += held;
            self.shed(key);
        }
        self.shedding.heaviest = heaviest;
    }

    /// Closes connection `key` for the budget (with 1013, or dropped if it cannot be told).
    pub(super) fn shed(&mut self, key: usize) {
        let shed = self.lend(key, |conn, transport, lent| {
            conn.shed(&mut lent.env(transport))
        });
        match shed {
            Some(Shed::Closed) => self.shared.stats.budget_closes.bump(),
            Some(Shed::Dropped) => self.shared.stats.budget_drops.bump(),
            None => {}
        }
        // Recounts it, writes its close, or drops it.
        self.flush(key);
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.conn.get_mut().is_done() {
                self.remove(key, CloseCause::Budget);
            }
        }
    }
}
