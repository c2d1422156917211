//! The reactors of one server, as each of them sees the others: where a published message is
//! handed so that subscribers on every thread receive it.
//!
//! Owns the crossing between threads: per reactor, a channel of published frames and topic
//! interest, its poll's waker and a flag that keeps a burst of crossings to one wake; and, per
//! reactor, which other reactors have subscribers of which topic, so that a publish crosses
//! only to the threads that want it. Must not touch a connection: a frame that crosses is
//! delivered by the receiving reactor, on its thread, to its own subscribers
//! (`topics::publish`).
//!
//! Interest: a reactor announces a topic to every other one when the topic gets its first
//! local subscriber, and withdraws it when the last one leaves. Each channel is FIFO, so a
//! reactor's announcements arrive in the order it made them, and a subscriber that has been
//! told it is subscribed (anything its reactor wrote after the subscribe) is reached by every
//! publish that another reactor reads after that: a reactor drains its channel at the start
//! of each loop turn in which the wake flag is set, before it reads any socket.
//!
//! With a broker attached ([`crate::broker`]) the group holds its end too: every publish
//! and every announcement also goes there, and what arrives from other servers is handed to
//! the reactors that want it ([`Group::hand_to`]). Without one, nothing here changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use mio::Waker;

use crate::broker::BrokerEnd;
use crate::metrics::Blocks;

/// A message published on one thread (or from outside every reactor) on its way to the
/// others: framed once, shared by every reactor it is handed to.
#[derive(Debug)]
pub(crate) struct Carried {
    pub topic: Box<[u8]>,
    /// The whole unmasked frame, header and payload.
    pub frame: Box<[u8]>,
}

/// What crosses from one reactor (or a [`Publisher`](crate::Publisher)) to another.
#[derive(Debug)]
pub(crate) enum Crossing {
    /// A message for the receiver's subscribers of its topic.
    Publish(Arc<Carried>),
    /// Reactor `from` has subscribers of `topic` now (`wanted`), or no longer has any.
    Interest {
        topic: Box<[u8]>,
        from: usize,
        wanted: bool,
    },
}

/// One reactor as the others reach it.
#[derive(Debug)]
struct Member {
    publishes: mpsc::Sender<Crossing>,
    waker: Arc<Waker>,
    /// Set by the first hand-over since the reactor last looked: later ones skip the wake
    /// (an `eventfd` write each), since that reactor is already going to drain its channel.
    wake_pending: AtomicBool,
}

/// Every reactor of one server.
#[derive(Debug)]
pub(crate) struct Group {
    members: Box<[Member]>,
    /// Every reactor's counter block, for figures about the whole server.
    blocks: Blocks,
    /// Where publishes and interest also go when a broker is attached.
    broker: Option<BrokerEnd>,
}

/// What one reactor keeps of its group: the group, its own place in it, its end of its
/// channel, and which other reactors want which topic.
#[derive(Debug)]
pub(crate) struct Link {
    group: Arc<Group>,
    index: usize,
    arrivals: mpsc::Receiver<Crossing>,
    /// The other reactors with subscribers, by topic (a topic no other reactor wants is
    /// absent).
    wanted: HashMap<Box<[u8]>, Vec<u32>>,
    /// Whether a broker is attached: then every publish leaves this reactor.
    to_broker: bool,
}

impl Group {
    /// A group of one reactor per waker, and each reactor's [`Link`], in the same order.
    pub(crate) fn new(
        wakers: Vec<Arc<Waker>>,
        blocks: Blocks,
        broker: Option<BrokerEnd>,
    ) -> (Arc<Group>, Vec<Link>) {
        let to_broker = broker.is_some();
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
            blocks,
            broker,
        });
        let links = receivers
            .into_iter()
            .enumerate()
            .map(|(index, arrivals)| Link {
                group: Arc::clone(&group),
                index,
                arrivals,
                wanted: HashMap::new(),
                to_broker,
            })
            .collect();
        (group, links)
    }

    /// Reactors in the group.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Hands `carried` to every reactor (and the broker, if attached): how many reactors
    /// took it (a stopped reactor's channel is closed and is skipped).
    pub(crate) fn hand_to_all(&self, carried: &Arc<Carried>) -> usize {
        if let Some(broker) = &self.broker {
            broker.offer(carried);
        }
        (0..self.members.len())
            .filter(|&to| self.send(to, Crossing::Publish(Arc::clone(carried))))
            .count()
    }

    /// Hands a message that came from the broker to reactor `to`: whether it took it.
    pub(crate) fn hand_to(&self, to: usize, carried: &Arc<Carried>) -> bool {
        to < self.members.len() && self.send(to, Crossing::Publish(Arc::clone(carried)))
    }

    /// Sends `crossing` to reactor `to` and wakes it unless a wake is already owed: whether
    /// its channel took it.
    fn send(&self, to: usize, crossing: Crossing) -> bool {
        let member = &self.members[to];
        if member.publishes.send(crossing).is_err() {
            return false;
        }
        // SeqCst pairs with the receiver's clear-then-drain (`Link::begin_drain`): what was
        // sent before this swap saw `true` is drained after the clear that follows.
        if !member.wake_pending.swap(true, Ordering::SeqCst) {
            // A failed wake only delays delivery to the receiver's next timer sweep.
            let _ = member.waker.wake();
        }
        true
    }
}

impl Link {
    /// Every reactor's counter block.
    pub(crate) fn blocks(&self) -> &Blocks {
        &self.group.blocks
    }

    /// Whether a publish of `topic` must leave this reactor: another reactor has
    /// subscribers of it, or a broker is attached.
    pub(crate) fn wanted_elsewhere(&self, topic: &[u8]) -> bool {
        self.to_broker || (!self.wanted.is_empty() && self.wanted.contains_key(topic))
    }

    /// Hands a frame published on this reactor to every other one with subscribers of
    /// `topic`, and to the broker if one is attached: how many reactors took it. Nothing is
    /// allocated when none wants it.
    pub(crate) fn hand_over(&self, topic: &[u8], frame: &[u8]) -> usize {
        let wanting = self.wanted.get(topic);
        let broker = self.group.broker.as_ref();
        if wanting.is_none() && broker.is_none() {
            return 0;
        }
        let carried = Arc::new(Carried {
            topic: topic.into(),
            frame: frame.into(),
        });
        if let Some(broker) = broker {
            broker.offer(&carried);
        }
        wanting.map_or(0, |wanting| {
            wanting
                .iter()
                .filter(|&&to| {
                    self.group
                        .send(to as usize, Crossing::Publish(Arc::clone(&carried)))
                })
                .count()
        })
    }

    /// Tells every other reactor that this one has subscribers of `topic` now (`wanted`), or
    /// no longer has any.
    pub(crate) fn announce(&self, topic: &[u8], wanted: bool) {
        if let Some(broker) = &self.group.broker {
            broker.announce(topic, self.index, wanted);
        }
        for to in (0..self.group.len()).filter(|&to| to != self.index) {
            let interest = Crossing::Interest {
                topic: topic.into(),
                from: self.index,
                wanted,
            };
            self.group.send(to, interest);
        }
    }

    /// Whether another thread has sent something since the last drain: one load of a flag
    /// that only changes when something crosses, cheap enough for every loop turn.
    pub(crate) fn arrived(&self) -> bool {
        self.group.members[self.index]
            .wake_pending
            .load(Ordering::Relaxed)
    }

    /// Clears the wake flag: call once before draining with [`next_arrival`](Self::next_arrival).
    pub(crate) fn begin_drain(&self) {
        self.group.members[self.index]
            .wake_pending
            .store(false, Ordering::SeqCst);
    }

    /// The next message another thread published, if any has arrived; interest that
    /// arrives before it is recorded on the way.
    pub(crate) fn next_arrival(&mut self) -> Option<Arc<Carried>> {
        loop {
            match self.arrivals.try_recv().ok()? {
                Crossing::Publish(carried) => return Some(carried),
                Crossing::Interest {
                    topic,
                    from,
                    wanted,
                } => self.record(topic, from as u32, wanted),
            }
        }
    }

    fn record(&mut self, topic: Box<[u8]>, from: u32, wanted: bool) {
        if wanted {
            let wanting = self.wanted.entry(topic).or_default();
            if !wanting.contains(&from) {
                wanting.push(from);
            }
        } else if let Some(wanting) = self.wanted.get_mut(&topic) {
            wanting.retain(|&t| t != from);
            if wanting.is_empty() {
                self.wanted.remove(&topic);
            }
        }
    }
}
