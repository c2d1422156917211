//! The subscriber thread: the server's interest at the broker, and what arrives from it.
//!
//! Owns the subscribing connection and the table of which reactors want which topic. A topic
//! is subscribed at the broker when its first reactor announces it and unsubscribed when
//! its last one withdraws; every wanted topic is subscribed again on each new connection.
//! Between reads (each waits at most [`POLL`]) it applies the interest that arrived, so a
//! new room is subscribed within about that long. A message from another server is checked
//! ([`wire::read`]), framed once, and handed to exactly the reactors that want its topic.
//! Must not deliver to a connection: the reactors do, each on its own thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::metrics::broker::{BrokerCounters, BrokerDrop};
use crate::threads::{Carried, Group};

use super::{channel, wire, Backoff, Interest, CONNECT_TIMEOUT};

/// Longest a read from the broker waits before interest and the stop flag are looked at.
const POLL: Duration = Duration::from_millis(10);
/// Longest the broker may take to confirm a (un)subscribe before the connection is given up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Channels per `SUBSCRIBE` when subscribing again to everything.
const CHUNK: usize = 512;

pub(super) struct Parts {
    pub client: redis::Client,
    pub prefix: Vec<u8>,
    pub origin: u64,
    pub group: Arc<Group>,
    pub interest: mpsc::Receiver<Interest>,
    pub counters: Arc<BrokerCounters>,
    pub stop: Arc<AtomicBool>,
    pub epoch: Arc<AtomicU64>,
    pub max_message: usize,
}

pub(super) struct Subscriber {
    parts: Parts,
    /// The reactors with subscribers, by topic (a topic none wants is absent).
    wanted: HashMap<Box<[u8]>, Vec<u32>>,
    /// Encoded frames are built here, then copied once into the shared [`Carried`].
    frame: Vec<u8>,
}

/// What one announcement changed at the broker.
enum Change {
    Subscribe,
    Unsubscribe,
    None,
}

/// Why the subscriber stopped serving a connection.
enum Ended {
    Stop,
    Lost(redis::RedisError),
}

impl From<redis::RedisError> for Ended {
    fn from(e: redis::RedisError) -> Self {
        Ended::Lost(e)
    }
}

impl Subscriber {
    pub(super) fn new(parts: Parts) -> Self {
        Subscriber {
            parts,
            wanted: HashMap::new(),
            frame: Vec::new(),
        }
    }

    pub(super) fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut ever_connected = false;
        let mut away_logged = false;
        while !self.parts.stop.load(Ordering::Relaxed) {
            match self
                .parts
                .client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
            {
                Ok(mut connection) => {
                    if ever_connected {
                        BrokerCounters::add(&self.parts.counters.reconnects, 1);
                    }
                    ever_connected = true;
                    away_logged = false;
                    backoff.reset();
                    self.parts.epoch.fetch_add(1, Ordering::Relaxed);
                    let ended = self.serve(&mut connection);
                    self.parts
                        .counters
                        .subscriber_up
                        .store(false, Ordering::Relaxed);
                    self.parts.counters.subscribed.store(0, Ordering::Relaxed);
                    match ended {
                        Ended::Stop => return,
                        Ended::Lost(e) => log::warn!("broker: subscriber connection lost: {e}"),
                    }
                }
                Err(e) if !away_logged => {
                    log::warn!("broker: cannot reach it (retrying with backoff): {e}");
                    away_logged = true;
                }
                Err(_) => {}
            }
            // Keep the table current while away, so the next connection subscribes to what
            // is wanted then.
            let until = Instant::now() + backoff.next();
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if self.parts.stop.load(Ordering::Relaxed) {
                    return;
                }
                match self
                    .parts
                    .interest
                    .recv_timeout(left.min(Duration::from_millis(100)))
                {
                    Ok(interest) => {
                        self.record(interest);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }

    /// Subscribes to every wanted topic, then reads until the connection fails or the
    /// server stops.
    fn serve(&mut self, connection: &mut redis::Connection) -> Ended {
        let mut pubsub = connection.as_pubsub();
        if let Err(e) = pubsub.set_read_timeout(Some(REPLY_TIMEOUT)) {
            return e.into();
        }
        let every: Vec<Vec<u8>> = self
            .wanted
            .keys()
            .map(|topic| channel(&self.parts.prefix, topic))
            .collect();
        for chunk in every.chunks(CHUNK) {
            if let Err(e) = pubsub.subscribe(chunk) {
                return e.into();
            }
        }
        if let Err(e) = pubsub.set_read_timeout(Some(POLL)) {
            return e.into();
        }
        let counters = &self.parts.counters;
        counters
            .subscribed
            .store(self.wanted.len() as u64, Ordering::Relaxed);
        counters.subscriber_up.store(true, Ordering::Relaxed);
        loop {
            if self.parts.stop.load(Ordering::Relaxed) {
                return Ended::Stop;
            }
            if let Err(e) = self.apply_interest(&mut pubsub) {
                return e.into();
            }
            // A read that times out keeps what it had read (the parser resumes), so the
            // short timeout only bounds how late interest is applied.
            let message = pubsub.get_message();
            match message {
                Ok(message) => self.arrive(&message),
                Err(e) if e.is_timeout() => {}
                Err(e) => return e.into(),
            }
        }
    }

    /// Applies the interest that arrived since the last read, with the longer timeout for
    /// the broker's confirmations.
    fn apply_interest(&mut self, pubsub: &mut redis::PubSub<'_>) -> redis::RedisResult<()> {
        let Ok(first) = self.parts.interest.try_recv() else {
            return Ok(());
        };
        pubsub.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut next = Some(first);
        while let Some(interest) = next {
            let name = channel(&self.parts.prefix, &interest.topic);
            match self.record(interest) {
                Change::Subscribe => pubsub.subscribe(&name[..])?,
                Change::Unsubscribe => pubsub.unsubscribe(&name[..])?,
                Change::None => {}
            }
            next = self.parts.interest.try_recv().ok();
        }
        let counters = &self.parts.counters;
        counters
            .subscribed
            .store(self.wanted.len() as u64, Ordering::Relaxed);
        pubsub.set_read_timeout(Some(POLL))
    }

    /// Records an announcement: whether the broker must now be told.
    fn record(&mut self, interest: Interest) -> Change {
        let Interest {
            topic,
            from,
            wanted,
        } = interest;
        if wanted {
            let wanting = self.wanted.entry(topic).or_default();
            let first = wanting.is_empty();
            if !wanting.contains(&from) {
                wanting.push(from);
            }
            return if first {
                Change::Subscribe
            } else {
                Change::None
            };
        }
        let Some(wanting) = self.wanted.get_mut(&topic) else {
            return Change::None;
        };
        wanting.retain(|&r| r != from);
        if wanting.is_empty() {
            self.wanted.remove(&topic);
            return Change::Unsubscribe;
        }
        Change::None
    }

    /// A message from the broker: to the reactors that want its topic, unless it is this
    /// server's own or not one this server reads.
    fn arrive(&mut self, message: &redis::Msg) {
        let counters = &self.parts.counters;
        let Ok(name) = message.get_channel::<Vec<u8>>() else {
            counters.drop_messages(BrokerDrop::Invalid, 1);
            return;
        };
        let Some(topic) = name.strip_prefix(&self.parts.prefix[..]) else {
            counters.drop_messages(BrokerDrop::Invalid, 1);
            return;
        };
        // A message on a topic no reactor wants any more (it left while the unsubscribe
        // was on its way): nobody to deliver to.
        let Some(wanting) = self.wanted.get(topic) else {
            return;
        };
        let body = message.get_payload_bytes();
        match wire::read(body, self.parts.origin, self.parts.max_message) {
            wire::Read::Own => BrokerCounters::add(&counters.echoes, 1),
            wire::Read::Invalid => counters.drop_messages(BrokerDrop::Invalid, 1),
            wire::Read::Foreign(payload) => {
                crate::topics::encode(&mut self.frame, payload);
                let carried = Arc::new(Carried {
                    topic: topic.into(),
                    frame: self.frame.as_slice().into(),
                });
                for &to in wanting {
                    self.parts.group.hand_to(to as usize, &carried);
                }
                BrokerCounters::add(&counters.received, 1);
            }
        }
    }
}
