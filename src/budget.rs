//! The server-wide memory budget: what the server holds for connections, summed over reactors,
//! and the shedding levels derived from that sum.
//!
//! Owns the accounting ([`Account`], one per reactor, plain integers on its own thread), the
//! shared sum ([`MemoryBudget`], one padded atomic per reactor, each written by its reactor
//! only) and the thresholds: from the total it says which connections are not read, whether a
//! new large message or a new connection is admitted, and whether the heaviest holders must
//! go. It does not touch sockets or connections: the reactor acts on what it says
//! (`src/reactor/shed.rs`), and the connection code asks it one question per new large
//! message.
//!
//! What is counted: every [`Busy`] box of the reactor, lent to a connection or pooled, as its
//! size plus the capacity of its buffers (output backlog, message being assembled, request
//! head) plus [`INFLATER_ESTIMATE`] while it holds a decompressor; [`TLS_CONNECTION_ESTIMATE`]
//! per TLS connection plus the TLS buffers it holds while bytes are in flight (recounted
//! after each flush); and a connection's context takeover windows (permessage-deflate, at
//! most 2^bits + 4 KiB bytes), recounted after each compressed message and refunded when
//! the connection goes. A box is recounted at a few points only: when the pool hands it out
//! or takes it back, and after each flush of its connection (the end of every read, write,
//! timer or send to it), never per byte. Not counted: the kernel's socket buffers, the
//! reactor's read buffer and slab, the reactor-wide deflate state (a fixed few MiB at most,
//! plus the live (de)compressors parked for context takeover: `compression_live` of each),
//! the TLS spare buffers (at most 16 × 32 KiB per reactor), the allocator's own overhead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::buffers::Busy;

/// A connection holding less than this is never paused, refused or closed by the budget: a
/// well-behaved connection between messages holds nothing at all, and one in the middle of a
/// small message holds a few KiB. A message announcing at least this much is "large".
pub(crate) const LITTLE: usize = 64 << 10;

/// What a decompressor in use is counted as: zlib-rs' inflate state and its 32 KiB window.
pub(crate) const INFLATER_ESTIMATE: usize = 40 << 10;

/// What a TLS connection is counted as, beyond its buffers: rustls' session state (keys,
/// sequence numbers, the handshake's state while it runs), which is not exposed. 4 KiB is
/// above the measured idle cost (about 3.6 KiB per connection, see the README's TLS
/// section). The ciphertext and plaintext buffers a TLS connection borrows while bytes are
/// in flight are counted as they are held, after each flush.
pub(crate) const TLS_CONNECTION_ESTIMATE: usize = 4 << 10;

/// A reactor publishes its total when it moved by at least this much since it last did (and
/// at most once per loop turn), so other reactors see it within this error.
pub(crate) const GRANULARITY: usize = 64 << 10;

/// One reactor's published total, alone on its cache line so that reactors do not contend.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot(AtomicUsize);

/// The budget shared by every reactor of a server: the limit and each reactor's last
/// published total. Made once per server; each reactor gets an [`Account`] on it.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    reactors: Box<[Slot]>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes shared by `reactors` reactors.
    pub(crate) fn new(limit: usize, reactors: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            reactors: (0..reactors.max(1)).map(|_| Slot::default()).collect(),
        })
    }

    /// The account of reactor `index` (0..reactors), to be used by that reactor only.
    pub(crate) fn account(self: &Arc<Self>, index: usize) -> Account {
        Account::new(Arc::clone(self), index)
    }

    /// The last published server-wide total (for figures read off the reactors' threads).
    #[allow(dead_code)] // read by tests now, and by the multi-reactor server's figures
    pub(crate) fn total(&self) -> usize {
        self.reactors
            .iter()
            .map(|slot| slot.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// How close the total is to the budget: each level includes what the ones below do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Below half the budget: nothing is restricted.
    Normal,
    /// From half the budget: connections holding the most are not read (see
    /// [`Account::pause_above`]), and the pool gives back what it keeps.
    Pause,
    /// From 90%: no new connection is accepted (new large messages that would pass 90% are
    /// refused at any level).
    Refuse,
    /// At the budget or above: the heaviest holders are closed.
    Shed,
}

/// One reactor's share of the budget, kept in plain integers on the reactor's thread.
#[derive(Debug)]
pub(crate) struct Account {
    /// Bytes this reactor holds now (boxes, estimates), as of their last recount.
    held: usize,
    /// What was last published for this reactor.
    published: usize,
    /// The other reactors' published totals, as of this reactor's last loop turn.
    others: usize,
    /// Half the budget: from here connections are paused.
    soft: usize,
    /// While `held - quiet_low < quiet_span` (wrapping), a loop turn owes the budget nothing:
    /// no publish is due and the level is Normal (see [`quiet`](Self::quiet)).
    quiet_low: usize,
    quiet_span: usize,
    limit: usize,
    index: usize,
    shared: Arc<MemoryBudget>,
}

impl Default for Account {
    /// An account on a budget of its own that nothing ever reaches (in-memory endpoints).
    fn default() -> Self {
        MemoryBudget::new(usize::MAX, 1).account(0)
    }
}

impl Account {
    fn new(shared: Arc<MemoryBudget>, index: usize) -> Self {
        let limit = shared.limit;
        Account {
            held: 0,
            published: 0,
            others: 0,
            soft: limit / 2,
            quiet_low: 0,
            quiet_span: 0,
            limit,
            index: index.min(shared.reactors.len() - 1),
            shared,
        }
    }

    /// Brings `busy`'s share up to date: its size and its buffers' capacity now.
    #[inline]
    pub(crate) fn recount(&mut self, busy: &mut Busy) {
        let now = footprint(busy);
        self.held = self.held - busy.accounted + now;
        busy.accounted = now;
    }

    /// As [`recount`](Self::recount), for a box just cleared for the pool: no decompressor.
    #[inline]
    pub(crate) fn recount_cleared(&mut self, busy: &mut Busy) {
        debug_assert!(busy.inflater.is_none());
        let now = std::mem::size_of::<Busy>()
            + busy.out.capacity()
            + busy.message.capacity()
            + busy.head.capacity();
        self.held = self.held - busy.accounted + now;
        busy.accounted = now;
    }

    /// `busy` is freed: its share goes.
    #[inline]
    pub(crate) fn forget(&mut self, busy: &Busy) {
        self.held -= busy.accounted;
    }

    /// Counts `bytes` held outside any box (a TLS connection's estimate).
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.held += bytes;
    }

    /// Gives back what [`charge`](Self::charge) counted.
    pub(crate) fn refund(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Bytes this reactor holds.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The server-wide total as this reactor knows it: its own exactly, the others' as
    /// published at its last loop turn.
    #[inline]
    pub(crate) fn total(&self) -> usize {
        self.held + self.others
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether this loop turn owes the budget nothing: the total moved by less than the
    /// granularity since it was last published, and it is below half the budget. One
    /// subtraction and one comparison, on every loop turn.
    #[inline]
    pub(crate) fn quiet(&self) -> bool {
        self.held.wrapping_sub(self.quiet_low) < self.quiet_span
    }

    /// Makes [`quiet`](Self::quiet) false until the next [`sync`](Self::sync): the reactor
    /// has something to do at its next turn (connections held back, accepting paused).
    pub(crate) fn alert(&mut self) {
        self.quiet_span = 0;
    }

    /// Once per loop turn unless [`quiet`](Self::quiet): publishes this reactor's total if it
    /// moved by the granularity, and reads the others'.
    pub(crate) fn sync(&mut self) {
        if self.held.abs_diff(self.published) >= GRANULARITY {
            self.published = self.held;
            self.shared.reactors[self.index]
                .0
                .store(self.held, Ordering::Relaxed);
        }
        if self.shared.reactors.len() > 1 {
            self.others = self
                .shared
                .reactors
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != self.index)
                .map(|(_, slot)| slot.0.load(Ordering::Relaxed))
                .sum();
            // The others move without this reactor seeing it: it syncs every turn.
            self.quiet_span = 0;
            return;
        }
        self.quiet_low = self.published.saturating_sub(GRANULARITY - 1);
        let high = (self.published + GRANULARITY).min(self.soft);
        self.quiet_span = high.saturating_sub(self.quiet_low);
    }

    /// Where the total stands.
    pub(crate) fn level(&self) -> Level {
        let total = self.total();
        if total < self.soft {
            Level::Normal
        } else if total < self.limit / 10 * 9 {
            Level::Pause
        } else if total < self.limit {
            Level::Refuse
        } else {
            Level::Shed
        }
    }

    /// A connection holding at least this many bytes is not read now; `usize::MAX` below half
    /// the budget. From half the budget it is 16 MiB, halved for every further 5% of the
    /// budget, down to [`LITTLE`] from 90% on: the heaviest holders stop first.
    #[inline]
    pub(crate) fn pause_above(&self) -> usize {
        let total = self.total();
        if total < self.soft {
            return usize::MAX;
        }
        self.pause_above_slow(total)
    }

    #[cold]
    fn pause_above_slow(&self, total: usize) -> usize {
        let twentieths = (total / (self.limit / 20).max(1)).saturating_sub(10);
        (16usize << 20 >> twentieths.min(8)).max(LITTLE)
    }

    /// Whether a new message announcing `len` bytes may begin: a large one only while the
    /// total with it stays below 90% of the budget. (Its buffer is reserved at once, so this
    /// is what it will hold.)
    #[inline]
    pub(crate) fn admits_message(&self, len: u64) -> bool {
        len < LITTLE as u64
            || (self.total() as u64).saturating_add(len) < (self.limit / 10 * 9) as u64
    }
}

/// What `busy` holds now: the box and its buffers' capacity, and a decompressor if it has one.
#[inline]
pub(crate) fn footprint(busy: &Busy) -> usize {
    std::mem::size_of::<Busy>()
        + busy.out.capacity()
        + busy.message.capacity()
        + busy.head.capacity()
        + if busy.inflater.is_some() {
            INFLATER_ESTIMATE
        } else {
            0
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_pause_thresholds_follow_the_total() {
        let budget = MemoryBudget::new(100 << 20, 1);
        let mut account = budget.account(0);
        assert_eq!(account.level(), Level::Normal);
        assert_eq!(account.pause_above(), usize::MAX);
        account.charge(50 << 20);
        assert_eq!(account.level(), Level::Pause);
        assert_eq!(account.pause_above(), 16 << 20);
        account.charge(5 << 20);
        assert_eq!(account.pause_above(), 8 << 20);
        account.charge(35 << 20);
        assert_eq!(account.level(), Level::Refuse);
        assert_eq!(account.pause_above(), LITTLE);
        account.charge(10 << 20);
        assert_eq!(account.level(), Level::Shed);
        assert_eq!(account.pause_above(), LITTLE);
        account.refund(100 << 20);
        assert_eq!(account.level(), Level::Normal);
    }

    #[test]
    fn large_messages_are_admitted_only_below_ninety_percent() {
        let budget = MemoryBudget::new(100 << 20, 1);
        let mut account = budget.account(0);
        assert!(account.admits_message(80 << 20));
        assert!(!account.admits_message(90 << 20));
        account.charge(89 << 20);
        assert!(
            account.admits_message(LITTLE as u64 - 1),
            "small ones always"
        );
        assert!(!account.admits_message(2 << 20));
    }

    #[test]
    fn reactors_see_each_others_totals_after_a_sync() {
        let budget = MemoryBudget::new(100 << 20, 2);
        let mut first = budget.account(0);
        let mut second = budget.account(1);
        first.charge(GRANULARITY - 1);
        first.sync();
        assert_eq!(
            budget.total(),
            0,
            "below the granularity: not yet published"
        );
        first.charge(60 << 20);
        first.sync();
        second.sync();
        assert_eq!(second.total(), first.held());
        assert_eq!(second.level(), Level::Pause);
        assert_eq!(budget.total(), first.held());
    }

    #[test]
    fn a_turn_is_quiet_only_near_the_published_total_and_below_half() {
        let budget = MemoryBudget::new(100 << 20, 1);
        let mut account = budget.account(0);
        account.sync();
        assert!(account.quiet());
        account.charge(GRANULARITY - 1);
        assert!(account.quiet(), "not yet worth publishing");
        account.charge(1);
        assert!(!account.quiet());
        account.sync();
        assert_eq!(budget.total(), GRANULARITY);
        assert!(account.quiet());
        account.refund(GRANULARITY);
        assert!(!account.quiet(), "a fall is published too");
        account.sync();
        account.charge(50 << 20);
        account.sync();
        assert!(!account.quiet(), "from half the budget every turn acts");
        account.refund(50 << 20);
        account.sync();
        assert!(account.quiet());
        account.alert();
        assert!(!account.quiet());
    }

    #[test]
    fn a_box_is_counted_by_its_capacity_and_forgotten_whole() {
        let mut account = Account::default();
        let mut busy = Box::new(Busy::new());
        account.recount(&mut busy);
        let empty = account.held();
        assert_eq!(empty, std::mem::size_of::<Busy>());
        busy.message.reserve_exact(1 << 20);
        account.recount(&mut busy);
        assert!(account.held() >= empty + (1 << 20));
        account.forget(&busy);
        assert_eq!(account.held(), 0);
    }
}
