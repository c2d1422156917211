//! Publishing: a message framed once and queued to every subscriber of a topic, under the
//! slow-subscriber policy.
//!
//! Owns the publish path from a handler's call to each subscriber's out buffer: the frame is
//! encoded once per publish (header and payload, into one reusable buffer), then the same
//! bytes are copied into each subscriber's output, where they are corked with everything else
//! queued to it in the loop turn and written with its one write. What is shared per message is
//! the encoding; what is copied is the frame's bytes, once per subscriber (a copy of a small
//! frame costs less than counting references to it). The limit on a subscriber's unwritten
//! output (`Config::max_subscriber_backlog`) is checked before each message is queued, so a
//! batch of publishes never overshoots it, and a subscriber closed for it is sent nothing more.
//! Must not decide who subscribes: that is the registry's ([`super::Topics`]).

use crate::config::{Config, SlowSubscriber};
use crate::connection::{Conn, Ctx, Peers};
use crate::frame::{self, close_code, OpCode, MAX_HEADER_LEN};
use crate::handler::{ConnId, Message};
use crate::metrics::Counters;

use super::{TopicError, Topics};

/// What one publish did, counted over the topic's subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Subscribers the message was queued to.
    pub delivered: usize,
    /// Subscribers over `max_subscriber_backlog` that missed it
    /// ([`SlowSubscriber::Drop`]).
    pub dropped: usize,
    /// Subscribers over the limit that were closed with 1008 instead
    /// ([`SlowSubscriber::Close`]).
    pub closed: usize,
    /// Subscribers skipped: the sender (when left out), closing ones, and ones in the middle
    /// of a message sent in parts.
    pub skipped: usize,
    /// Other reactor threads the message was handed to ([`MultiServer`](crate::MultiServer)):
    /// each delivers it to its own subscribers in its next loop turn, under the same policy;
    /// those deliveries are not counted above.
    pub threads: usize,
}

/// The answer for one subscriber.
pub(crate) enum Delivery {
    Delivered,
    Dropped,
    Closed,
    Skipped,
}

impl Published {
    fn count(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Delivered => self.delivered += 1,
            Delivery::Dropped => self.dropped += 1,
            Delivery::Closed => self.closed += 1,
            Delivery::Skipped => self.skipped += 1,
        }
    }
}

/// Encodes `message` as one unmasked frame into `frame` (cleared first).
pub(crate) fn encode(frame: &mut Vec<u8>, message: Message<'_>) {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes()),
        Message::Binary(data) => (OpCode::Binary, data),
    };
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = frame::encode_header(&mut header, true, opcode, None, payload.len() as u64);
    frame.clear();
    frame.reserve(n + payload.len());
    frame.extend_from_slice(&header[..n]);
    frame.extend_from_slice(payload);
}

/// The slow-subscriber rule for one subscriber with `pending` bytes unwritten: deliver, or
/// what to do instead.
pub(crate) fn admit(
    pending: usize,
    frame_len: usize,
    config: &Config,
    stats: &Counters,
) -> Option<Delivery> {
    if pending + frame_len <= config.max_subscriber_backlog {
        return None;
    }
    Some(match config.slow_subscriber {
        SlowSubscriber::Drop => {
            stats.publish_drops.bump();
            Delivery::Dropped
        }
        SlowSubscriber::Close => {
            stats.slow_subscriber_closes.bump();
            Delivery::Closed
        }
    })
}

/// Why the close policy closes: the subscriber broke the server's policy on unread output.
pub(crate) const SLOW_CLOSE: (u16, &str) = (close_code::POLICY, "subscriber too slow");

impl<'a> Ctx<'a> {
    /// Subscribes the connection `id` to `topic`: `Ok(false)` if it already was.
    pub fn subscribe(&mut self, id: ConnId, topic: &[u8]) -> Result<bool, TopicError> {
        if !self.conn(id).is_some_and(|c| c.is_open()) {
            return Err(TopicError::NotOpen);
        }
        let config = self.config;
        self.topics.subscribe(
            id,
            topic,
            config.max_topic_name,
            config.max_topics_per_connection,
        )
    }

    /// Unsubscribes the connection `id` from `topic`: false if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &[u8]) -> bool {
        self.topics.unsubscribe(id, topic)
    }

    /// Publishes `message` to every subscriber of `topic` but `except`: framed once, queued
    /// to each, written in this loop turn. A callback's own connection is reached only through
    /// [`Conn::publish`]; from a `Ctx`, it is skipped.
    pub fn publish(
        &mut self,
        topic: &[u8],
        message: Message<'_>,
        except: Option<ConnId>,
    ) -> Published {
        self.publish_with(topic, message, except, |_, _, _| None)
    }

    /// Subscribers of `topic` (connections closing may still be among them this turn).
    pub fn subscriber_count(&self, topic: &[u8]) -> usize {
        self.topics.subscribers(topic).len()
    }

    /// Topics the connection `id` subscribes to.
    pub fn topic_count(&self, id: ConnId) -> usize {
        self.topics.topic_count(id)
    }

    /// Topics with at least one subscriber.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    /// The publish path: frame once, hand over to the other threads, deliver here. `own`
    /// delivers to the connection a `Conn` is about (see [`deliver_all`]).
    pub(crate) fn publish_with(
        &mut self,
        topic: &[u8],
        message: Message<'_>,
        except: Option<ConnId>,
        own: impl FnMut(ConnId, &[u8], &mut Reach<'_>) -> Option<Delivery>,
    ) -> Published {
        let (topics, mut reach, peers) = self.split_for_delivery();
        let (frame, subscribers, link) = topics.publish_parts(topic);
        if subscribers.is_empty() && link.is_none() {
            return Published::default();
        }
        encode(frame, message);
        reach.stats.publishes.bump();
        // Handed over first: the other threads deliver while this one copies to its own.
        let threads = link.map_or(0, |link| link.hand_over(topic, frame));
        let mut published = deliver_all(subscribers, frame, except, own, peers, &mut reach);
        published.threads = threads;
        published
    }

    /// Delivers a frame another reactor published to this one's subscribers of its topic.
    pub(crate) fn deliver_arrival(&mut self, topic: &[u8], frame: &[u8]) -> Published {
        let (topics, mut reach, peers) = self.split_for_delivery();
        let (_, subscribers, _) = topics.publish_parts(topic);
        deliver_all(subscribers, frame, None, |_, _, _| None, peers, &mut reach)
    }

    /// The registry, what queueing to a subscriber borrows, and the peers, apart.
    fn split_for_delivery(&mut self) -> (&mut Topics, Reach<'_>, Option<&mut (dyn Peers + 'a)>) {
        let reach = Reach {
            pool: &mut *self.pool,
            config: self.config,
            stats: self.stats,
            now: self.now,
        };
        (&mut *self.topics, reach, self.peers.as_deref_mut())
    }
}

/// Queues `frame` to every one of `subscribers` but `except`. `own` delivers to the connection
/// a `Conn` is about (which the peers do not reach) and returns `None` for any other id.
fn deliver_all<'p>(
    subscribers: &[ConnId],
    frame: &[u8],
    except: Option<ConnId>,
    mut own: impl FnMut(ConnId, &[u8], &mut Reach<'_>) -> Option<Delivery>,
    mut peers: Option<&mut (dyn Peers + 'p)>,
    reach: &mut Reach<'_>,
) -> Published {
    let mut published = Published::default();
    for &id in subscribers {
        if Some(id) == except {
            published.skipped += 1;
            continue;
        }
        let delivery = match own(id, frame, reach) {
            Some(delivery) => delivery,
            None => match peers.as_deref_mut() {
                Some(peers) => deliver(peers, id, frame, reach),
                None => Delivery::Skipped,
            },
        };
        published.count(delivery);
    }
    published
}

/// Queues `frame` to the subscriber `id`. One whose backlog would pass the limit is first
/// written to now, so that a batch of publishes within one loop turn counts against a
/// subscriber only what its socket would not take.
fn deliver(peers: &mut dyn Peers, id: ConnId, frame: &[u8], reach: &mut Reach<'_>) -> Delivery {
    let Some(conn) = peers.peer(id) else {
        return Delivery::Skipped;
    };
    if conn.pending_output() + frame.len() <= reach.config.max_subscriber_backlog {
        return conn.send_published(frame, reach); // the common case: one lookup
    }
    peers.write_now(id, reach.pool, reach.stats);
    match peers.peer(id) {
        Some(conn) => conn.send_published(frame, reach),
        None => Delivery::Skipped,
    }
}

/// What queueing a published frame to one subscriber borrows.
pub(crate) struct Reach<'a> {
    pub pool: &'a mut crate::buffers::BusyPool,
    pub config: &'a Config,
    pub stats: &'a Counters,
    pub now: u64,
}

impl<'a> Conn<'a> {
    /// Subscribes this connection to `topic`: `Ok(false)` if it already was.
    pub fn subscribe(&mut self, topic: &[u8]) -> Result<bool, TopicError> {
        if !self.is_open() {
            return Err(TopicError::NotOpen);
        }
        let (id, ctx) = (self.id(), self.ctx());
        let config = ctx.config;
        ctx.topics.subscribe(
            id,
            topic,
            config.max_topic_name,
            config.max_topics_per_connection,
        )
    }

    /// Unsubscribes this connection from `topic`: false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &[u8]) -> bool {
        let id = self.id();
        self.ctx().topics.unsubscribe(id, topic)
    }

    /// Topics this connection subscribes to.
    pub fn topic_count(&mut self) -> usize {
        let id = self.id();
        self.ctx().topic_count(id)
    }

    /// Publishes `message` to every subscriber of `topic`, this connection included when it
    /// subscribes and `include_self` is set: framed once, queued to each, written in this loop
    /// turn (see the module docs for what is shared and what is copied).
    pub fn publish(&mut self, topic: &[u8], message: Message<'_>, include_self: bool) -> Published {
        let me = self.id();
        let except = (!include_self).then_some(me);
        let (conn, ctx) = self.split_for_publish();
        ctx.publish_with(topic, message, except, |id, frame, reach| {
            (id == me).then(|| conn.send_published(frame, reach))
        })
    }
}
