//! The reactors of one server, as each of them sees the others: where a published message is
//! handed so that subscribers on every thread receive it.
//!
//! Owns the crossing between threads: per reactor, a channel of published frames, its poll's
//! waker and a flag that keeps a burst of publishes to one wake. Must not touch a connection:
//! a frame that crosses is delivered by the receiving reactor, on its thread, to its own
//! subscribers (`topics::publish`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use mio::Waker;

/// A message published on one thread (or from outside every reactor) on its way to the
/// others: framed once, shared by every reactor it is handed to.
#[derive(Debug)]
pub(crate) struct Carried {
    pub topic: Box<[u8]>,
    /// The whole unmasked frame, header and payload.
    pub frame: Box<[u8]>,
}

/// One reactor as the others reach it.
#[derive(Debug)]
struct Member {
    publishes: mpsc::Sender<Arc<Carried>>,
    waker: Arc<Waker>,
    /// Set by the first hand-over since the reactor last looked: later ones skip the wake
    /// (an `eventfd` write each), since that reactor is already going to drain its channel.
    wake_pending: AtomicBool,
}

/// Every reactor of one server.
#[derive(Debug)]
pub(crate) struct Group {
    members: Box<[Member]>,
}

/// What one reactor keeps of its group: the group, its own place in it, and its end of its
/// channel.
#[derive(Debug)]
pub(crate) struct Link {
    group: Arc<Group>,
    index: usize,
    arrivals: mpsc::Receiver<Arc<Carried>>,
}

impl Group {
    /// A group of one reactor per waker, and each reactor's [`Link`], in the same order.
    pub(crate) fn new(wakers: Vec<Arc<Waker>>) -> (Arc<Group>, Vec<Link>) {
        let (members, receivers): (Vec<_>, Vec<_>) = wakers
            .into_iter()
            .map(|waker| {
                let (publishes, arrivals) = mpsc::channel();
                let member = Member {
                    publishes,
                    waker,
                    wake_pending: AtomicBool::new(false),
                };
                (member, arrivals)
            })
            .unzip();
        let group = Arc::new(Group {
            members: members.into_boxed_slice(),
        });
        let links = receivers
            .into_iter()
            .enumerate()
            .map(|(index, arrivals)| Link {
                group: Arc::clone(&group),
                index,
                arrivals,
            })
            .collect();
        (group, links)
    }

    /// Reactors in the group.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Hands `carried` to every reactor but `from`: how many took it (a stopped reactor's
    /// channel is closed and is skipped).
    pub(crate) fn hand_over(&self, carried: &Arc<Carried>, from: Option<usize>) -> usize {
        let mut handed = 0;
        for (index, member) in self.members.iter().enumerate() {
            if Some(index) == from || member.publishes.send(Arc::clone(carried)).is_err() {
                continue;
            }
            handed += 1;
            // SeqCst pairs with the receiver's clear-then-drain in `Link::next_arrival`: a
            // frame sent before this swap saw `true` is drained after the clear that follows.
            if !member.wake_pending.swap(true, Ordering::SeqCst) {
                // A failed wake only delays delivery to the receiver's next timer sweep.
                let _ = member.waker.wake();
            }
        }
        handed
    }
}

impl Link {
    /// Whether the group has reactors other than this one.
    pub(crate) fn has_others(&self) -> bool {
        self.group.len() > 1
    }

    /// Hands a frame published on this reactor to every other one.
    pub(crate) fn hand_over(&self, topic: &[u8], frame: &[u8]) -> usize {
        let carried = Arc::new(Carried {
            topic: topic.into(),
            frame: frame.into(),
        });
        self.group.hand_over(&carried, Some(self.index))
    }

    /// Clears the wake flag: call once before draining with [`next_arrival`](Self::next_arrival).
    pub(crate) fn begin_drain(&self) {
        self.group.members[self.index]
            .wake_pending
            .store(false, Ordering::SeqCst);
    }

    /// The next frame another thread published, if any has arrived.
    pub(crate) fn next_arrival(&self) -> Option<Arc<Carried>> {
        self.arrivals.try_recv().ok()
    }
}
