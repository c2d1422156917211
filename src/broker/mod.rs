//! Topics across server processes: a Redis pub/sub broker that every server attaches to, so
//! that a room's members on different servers receive each other's messages.
//!
//! Owns the attachment: the broker's address ([`BrokerUrl`]), the end of it the reactors hand
//! to ([`BrokerEnd`], held by the [`Group`]), and two threads of its own, each with its own
//! connection to Redis (a connection in subscribed mode cannot publish):
//!
//! - the publisher ([`outbound`]) takes every message published on this server from a bounded
//!   queue and `PUBLISH`es it on `PREFIX:TOPIC`, in batches (one pipeline per wake);
//! - the subscriber ([`inbound`]) keeps the server's interest (a topic is wanted while any
//!   reactor has a subscriber of it: reactors announce first and last subscribers, as they do
//!   to each other), `SUBSCRIBE`s to exactly those topics and `UNSUBSCRIBE`s from the rest,
//!   and hands each message from another server, framed once, to the reactors that want it
//!   through their channels and wakers.
//!
//! Semantics: at most once across servers (nothing is stored or retried); per publisher, the
//! order kept (one queue, one connection, Redis keeps a connection's order, one subscriber
//! connection, FIFO channels to the reactors); a message a server published is not delivered
//! twice to its own subscribers (each carries the process's random origin id, see [`wire`]).
//! While the broker is away the server serves local traffic as before; what is published
//! meanwhile does not reach other servers and is counted as dropped; both connections are
//! retried with backoff, and every wanted topic is subscribed again when the broker returns.
//!
//! Must not block a reactor: a reactor only ever `try_send`s to the bounded queue (and drops,
//! counted, when it is full) and sends interest on an unbounded channel (one message per first
//! or last subscriber of a topic, never per message). Without a broker none of this exists
//! and a publish costs nothing more than before.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::metrics::broker::{BrokerCounters, BrokerDrop};
use crate::threads::{Carried, Group};

mod inbound;
mod outbound;
pub(crate) mod wire;

/// Messages queued for the publisher at most; a reactor drops (and counts) beyond it.
const QUEUE_MESSAGES: usize = 16_384;
/// Bytes of frames queued for the publisher at most (frames are shared with the reactors'
/// own delivery, so this bounds what the queue keeps alive).
const QUEUE_BYTES: usize = 64 << 20;
/// Longest wait for a connection to the broker, so a black-holed address does not stall a
/// thread for the kernel's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to reach the broker.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the broker is: `redis://[USER:PASSWORD@]HOST:PORT[/PREFIX]`. Channels are named
/// `PREFIX:TOPIC` (prefix `wsreactor` if none is given), so that several applications can
/// share one Redis; the database number of a Redis URL means nothing to pub/sub and is not
/// accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// What the Redis client connects to: the URL without the prefix.
    connect: String,
    /// The channel prefix, with its `:`.
    prefix: String,
    /// The URL as logged: the password, if any, left out.
    shown: String,
}

impl BrokerUrl {
    /// Parses and checks a broker URL (nothing is connected to).
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        if url.starts_with("nats://") {
            return Err(
                "NATS brokers are not supported: the maintained NATS client needs an \
                        async runtime (see the README, Several servers)"
                    .into(),
            );
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(format!("{url}: a broker URL starts with redis://"));
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{url}: the prefix has spaces or control characters"
            ));
        }
        let connect = format!("redis://{authority}/");
        redis::Client::open(connect.as_str()).map_err(|e| format!("{url}: {e}"))?;
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let prefix = if prefix.is_empty() {
            "wsreactor"
        } else {
            prefix
        };
        Ok(BrokerUrl {
            connect,
            prefix: format!("{prefix}:"),
            shown: format!("redis://{host}/{prefix}"),
        })
    }

    /// The channel prefix, `:` included.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrl({})", self.shown)
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        BrokerUrl::parse(url)
    }
}

/// A reactor's first or last subscriber of a topic, on its way to the subscriber thread.
#[derive(Debug)]
pub(crate) struct Interest {
    pub topic: Box<[u8]>,
    pub from: u32,
    pub wanted: bool,
}

/// What the [`Group`] holds of the broker: where reactors hand published messages and
/// interest. Every method is non-blocking.
#[derive(Debug)]
pub(crate) struct BrokerEnd {
    publishes: mpsc::SyncSender<Arc<Carried>>,
    interest: mpsc::Sender<Interest>,
    /// Bytes of frames in `publishes`, added by the reactors, taken off by the publisher.
    queued_bytes: Arc<AtomicUsize>,
    counters: Arc<BrokerCounters>,
}

impl BrokerEnd {
    /// Queues a message published on this server for the broker; drops and counts it if the
    /// queue is full.
    pub(crate) fn offer(&self, carried: &Arc<Carried>) {
        let len = carried.frame.len();
        if self.queued_bytes.load(Ordering::Relaxed) + len > QUEUE_BYTES {
            self.counters.drop_messages(BrokerDrop::QueueFull, 1);
            return;
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.publishes.try_send(Arc::clone(carried)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counters.drop_messages(BrokerDrop::QueueFull, 1);
        }
    }

    /// Tells the subscriber thread that reactor `from` has subscribers of `topic` now
    /// (`wanted`), or no longer has any.
    pub(crate) fn announce(&self, topic: &[u8], from: usize, wanted: bool) {
        // A stopped subscriber thread closes the channel: nothing is left to tell.
        let _ = self.interest.send(Interest {
            topic: topic.into(),
            from: from as u32,
            wanted,
        });
    }
}

/// The two threads' ends, between making the [`BrokerEnd`] and starting them with the
/// group it went into.
#[derive(Debug)]
pub(crate) struct Unstarted {
    url: BrokerUrl,
    publishes: mpsc::Receiver<Arc<Carried>>,
    interest: mpsc::Receiver<Interest>,
    queued_bytes: Arc<AtomicUsize>,
    counters: Arc<BrokerCounters>,
}

/// The running attachment: its threads stop (within a fraction of a second) when it is
/// dropped.
#[derive(Debug)]
pub(crate) struct Attachment {
    stop: Arc<AtomicBool>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The end the group holds and the threads' ends, for the broker at `url`.
pub(crate) fn prepare(url: &BrokerUrl) -> (BrokerEnd, Unstarted) {
    let (publishes, publish_queue) = mpsc::sync_channel(QUEUE_MESSAGES);
    let (interest, interest_queue) = mpsc::channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(BrokerCounters::default());
    let end = BrokerEnd {
        publishes,
        interest,
        queued_bytes: Arc::clone(&queued_bytes),
        counters: Arc::clone(&counters),
    };
    let unstarted = Unstarted {
        url: url.clone(),
        publishes: publish_queue,
        interest: interest_queue,
        queued_bytes,
        counters,
    };
    (end, unstarted)
}

impl Unstarted {
    /// The counters a scrape shows.
    pub(crate) fn counters(&self) -> Arc<BrokerCounters> {
        Arc::clone(&self.counters)
    }

    /// Starts both threads, handing arrivals to `group`'s reactors; a message larger than
    /// `max_message` from the broker is refused. The broker need not be reachable: each
    /// thread connects when it can.
    pub(crate) fn start(
        self,
        group: Arc<Group>,
        max_message: usize,
    ) -> std::io::Result<Attachment> {
        let stop = Arc::new(AtomicBool::new(false));
        // Each thread has a client of its own; opening one only parses the URL, checked at
        // parse time, so this cannot fail here.
        let client =
            || redis::Client::open(self.url.connect.as_str()).map_err(std::io::Error::other);
        let origin = process_origin();
        // Bumped by the subscriber at each connection, so the publisher notices a broker
        // that went away and came back before it writes into a dead connection.
        let epoch = Arc::new(AtomicU64::new(0));
        let publisher = outbound::Publisher {
            client: client()?,
            prefix: self.url.prefix.clone().into_bytes(),
            origin,
            queue: self.publishes,
            queued_bytes: self.queued_bytes,
            counters: Arc::clone(&self.counters),
            stop: Arc::clone(&stop),
            epoch: Arc::clone(&epoch),
        };
        let subscriber = inbound::Subscriber::new(inbound::Parts {
            client: client()?,
            prefix: self.url.prefix.clone().into_bytes(),
            origin,
            group,
            interest: self.interest,
            counters: self.counters,
            stop: Arc::clone(&stop),
            epoch,
            max_message,
        });
        log::info!(
            "broker {}: this server's origin id is {origin:016x}",
            self.url
        );
        std::thread::Builder::new()
            .name("wsreactor-broker-pub".into())
            .spawn(move || publisher.run())?;
        std::thread::Builder::new()
            .name("wsreactor-broker-sub".into())
            .spawn(move || subscriber.run())?;
        Ok(Attachment { stop })
    }
}

/// This process's origin id: random per start (the standard library's hasher keys are drawn
/// from the OS), so two servers' ids collide with probability 2^-64.
fn process_origin() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

/// Waits between attempts to reach the broker: doubling from [`BACKOFF_FIRST`] to
/// [`BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(BACKOFF_FIRST)
    }

    /// The wait before the next attempt; the one after is longer.
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }
}

/// The channel of `topic`: `prefix` (with its `:`) and the topic's bytes.
fn channel(prefix: &[u8], topic: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(prefix.len() + topic.len());
    name.extend_from_slice(prefix);
    name.extend_from_slice(topic);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_bad_ones_refused() {
        let url = BrokerUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(url.prefix(), "wsreactor:");
        assert_eq!(url.connect, "redis://127.0.0.1:6379/");
        let url = BrokerUrl::parse("redis://:secret@10.0.0.1:7000/chat").unwrap();
        assert_eq!(url.prefix(), "chat:");
        assert_eq!(url.to_string(), "redis://10.0.0.1:7000/chat");
        assert!(!format!("{url:?}").contains("secret"));
        for bad in [
            "http://127.0.0.1:6379",
            "redis://",
            "redis:///x",
            "redis://host:notaport",
            "redis://host:1/a b",
            "nats://127.0.0.1:4222",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_limit_and_starts_over() {
        let mut backoff = Backoff::new();
        let waits: Vec<_> = (0..8).map(|_| backoff.next()).collect();
        assert_eq!(waits[0], BACKOFF_FIRST);
        assert_eq!(waits[1], BACKOFF_FIRST * 2);
        assert_eq!(waits[7], BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next(), BACKOFF_FIRST);
    }
}
