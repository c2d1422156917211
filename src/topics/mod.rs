//! Topics: named sets of connections that a message is published to once.
//!
//! Owns the registry of one reactor (a publish reaches the other reactors of a
//! [`MultiServer`](crate::MultiServer) through its [`Link`]): which connections subscribe to which topic, the limits on
//! names and on topics per connection, and leaving every topic when a connection closes. It
//! holds ids, never connections, so a stale id (its connection gone, the slot reused) is
//! skipped by the generation check when a message is delivered. Delivery itself, and the
//! slow-subscriber policy, are in [`publish`]: this module must not touch a connection's
//! output.
//!
//! Memory: a subscription is one [`ConnId`] (8 bytes) in its topic's list and one topic index
//! (4 bytes) in its connection's list (plus the lists' spare capacity); a topic costs its name
//! and two small table entries. A connection with no subscriptions costs nothing here.

use std::collections::HashMap;

use slab::Slab;

use crate::handler::ConnId;
use crate::threads::{Carried, Link};

pub(crate) mod publish;

pub(crate) use publish::encode;
pub use publish::Published;

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is longer than `Config::max_topic_name`.
    NameTooLong,
    /// The connection already has `Config::max_topics_per_connection` topics.
    TooManyTopics,
    /// The connection is not open (closing, closed, or the id is stale).
    NotOpen,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TopicError::NameTooLong => "topic name longer than max_topic_name",
            TopicError::TooManyTopics => "connection at max_topics_per_connection",
            TopicError::NotOpen => "connection not open",
        })
    }
}

impl std::error::Error for TopicError {}

#[derive(Debug)]
struct Topic {
    name: Box<[u8]>,
    subscribers: Vec<ConnId>,
}

/// One reactor's topics.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Box<[u8]>, usize>,
    topics: Slab<Topic>,
    /// The topics of each connection that has any, by slab key: its generation and the
    /// topic indices.
    of_conn: HashMap<u32, (u32, Vec<u32>)>,
    /// A published message's frame, encoded once per publish (kept for its capacity).
    pub(crate) frame: Vec<u8>,
    /// The other reactors of a multi-threaded server, which a publish is handed to when they
    /// have subscribers of its topic.
    link: Option<Link>,
}

impl Topics {
    /// Subscribes `id` to `name`: `Ok(false)` if it already was.
    pub(crate) fn subscribe(
        &mut self,
        id: ConnId,
        name: &[u8],
        max_name: usize,
        max_topics: usize,
    ) -> Result<bool, TopicError> {
        if name.len() > max_name {
            return Err(TopicError::NameTooLong);
        }
        let index = self.by_name.get(name).copied();
        let mine = self
            .of_conn
            .get(&id.key)
            .filter(|(g, _)| *g == id.generation);
        if let (Some(index), Some((_, list))) = (index, mine) {
            if list.contains(&(index as u32)) {
                return Ok(false);
            }
        }
        if mine.map_or(0, |(_, list)| list.len()) >= max_topics {
            return Err(TopicError::TooManyTopics);
        }
        let index = index.unwrap_or_else(|| {
            let index = self.topics.insert(Topic {
                name: name.into(),
                subscribers: Vec::new(),
            });
            self.by_name.insert(name.into(), index);
            if let Some(link) = &self.link {
                link.announce(name, true);
            }
            index
        });
        self.topics[index].subscribers.push(id);
        let entry = self
            .of_conn
            .entry(id.key)
            .or_insert_with(|| (id.generation, Vec::new()));
        if entry.0 != id.generation {
            *entry = (id.generation, Vec::new()); // left over from the slot's last owner
        }
        entry.1.push(index as u32);
        Ok(true)
    }

    /// Unsubscribes `id` from `name`: false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, id: ConnId, name: &[u8]) -> bool {
        let Some(&index) = self.by_name.get(name) else {
            return false;
        };
        let Some((generation, list)) = self.of_conn.get_mut(&id.key) else {
            return false;
        };
        let Some(at) = list.iter().position(|&t| t as usize == index) else {
            return false;
        };
        if *generation != id.generation {
            return false;
        }
        list.swap_remove(at);
        if list.is_empty() {
            self.of_conn.remove(&id.key);
        }
        self.remove_subscriber(index, id);
        true
    }

    /// `id` leaves every topic (it is closing).
    pub(crate) fn leave_all(&mut self, id: ConnId) {
        let Some((generation, list)) = self.of_conn.remove(&id.key) else {
            return;
        };
        if generation == id.generation {
            for index in list {
                self.remove_subscriber(index as usize, id);
            }
        }
    }

    /// The subscribers of `name`, in the order they subscribed (some may be stale).
    pub(crate) fn subscribers(&self, name: &[u8]) -> &[ConnId] {
        self.by_name
            .get(name)
            .map_or(&[], |&index| &self.topics[index].subscribers)
    }

    /// The reusable frame buffer, the subscribers of `name` and (when another thread has
    /// subscribers of it) the link to the other threads, borrowed together.
    pub(crate) fn publish_parts(
        &mut self,
        name: &[u8],
    ) -> (&mut Vec<u8>, &[ConnId], Option<&Link>) {
        let subscribers = match self.by_name.get(name) {
            Some(&index) => &self.topics[index].subscribers[..],
            None => &[],
        };
        let others = self
            .link
            .as_ref()
            .filter(|link| link.wanted_elsewhere(name));
        (&mut self.frame, subscribers, others)
    }

    /// Joins this reactor's topics to the other reactors of a [`MultiServer`](crate::MultiServer).
    pub(crate) fn link(&mut self, link: Link) {
        self.link = Some(link);
    }

    /// The next message another thread published, if one has arrived (see [`Link`]).
    pub(crate) fn next_arrival(&mut self) -> Option<std::sync::Arc<Carried>> {
        self.link.as_mut()?.next_arrival()
    }

    /// Every reactor's counter block, when this reactor is one of several.
    pub(crate) fn server_blocks(&self) -> Option<&crate::metrics::Blocks> {
        self.link.as_ref().map(Link::blocks)
    }

    /// Whether another thread sent this reactor something since it last drained.
    #[inline]
    pub(crate) fn arrived(&self) -> bool {
        self.link.as_ref().is_some_and(Link::arrived)
    }

    /// Clears the wake flag before the arrivals are drained.
    pub(crate) fn begin_drain(&self) {
        if let Some(link) = &self.link {
            link.begin_drain();
        }
    }

    /// How many topics `id` subscribes to.
    pub(crate) fn topic_count(&self, id: ConnId) -> usize {
        self.of_conn
            .get(&id.key)
            .filter(|(g, _)| *g == id.generation)
            .map_or(0, |(_, list)| list.len())
    }

    /// Topics with at least one subscriber.
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }

    /// Connections subscribed to at least one topic.
    pub(crate) fn subscriber_count(&self) -> usize {
        self.of_conn.len()
    }

    fn remove_subscriber(&mut self, index: usize, id: ConnId) {
        let Some(topic) = self.topics.get_mut(index) else {
            return;
        };
        if let Some(at) = topic.subscribers.iter().position(|&s| s == id) {
            // Order among the others does not matter for delivery: per-publisher order is
            // kept by each connection's own output queue.
            topic.subscribers.swap_remove(at);
        }
        if topic.subscribers.is_empty() {
            let topic = self.topics.remove(index);
            self.by_name.remove(&topic.name);
            if let Some(link) = &self.link {
                link.announce(&topic.name, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: u32, generation: u32) -> ConnId {
        ConnId { key, generation }
    }

    #[test]
    fn subscribe_unsubscribe_and_leave_all_keep_both_sides_in_step() {
        let mut topics = Topics::default();
        let (a, b) = (id(1, 1), id(2, 1));
        assert_eq!(topics.subscribe(a, b"room", 8, 2), Ok(true));
        assert_eq!(topics.subscribe(a, b"room", 8, 2), Ok(false));
        assert_eq!(topics.subscribe(b, b"room", 8, 2), Ok(true));
        assert_eq!(topics.subscribe(a, b"other", 8, 2), Ok(true));
        assert_eq!(
            topics.subscribe(a, b"third", 8, 2),
            Err(TopicError::TooManyTopics)
        );
        assert_eq!(
            topics.subscribe(b, b"much too long", 8, 2),
            Err(TopicError::NameTooLong)
        );
        assert_eq!(topics.subscribers(b"room"), &[a, b]);
        assert_eq!((topics.topic_count(a), topics.len()), (2, 2));
        assert!(topics.unsubscribe(a, b"room"));
        assert!(!topics.unsubscribe(a, b"room"));
        assert_eq!(topics.subscribers(b"room"), &[b]);
        topics.leave_all(a);
        assert_eq!((topics.topic_count(a), topics.len()), (0, 1));
        assert!(topics.subscribers(b"other").is_empty());
        topics.leave_all(b);
        assert_eq!(topics.len(), 0);
        assert!(topics.by_name.is_empty() && topics.of_conn.is_empty());
    }

    #[test]
    fn a_reused_slot_does_not_inherit_the_old_owners_topics() {
        let mut topics = Topics::default();
        let (old, new) = (id(7, 1), id(7, 2));
        topics.subscribe(old, b"room", 8, 4).unwrap();
        assert_eq!(topics.topic_count(new), 0);
        assert!(!topics.unsubscribe(new, b"room"));
        topics.leave_all(new);
        assert_eq!(topics.subscribers(b"room"), &[old]);
    }
}
