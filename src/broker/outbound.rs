//! The publisher thread: every message published on this server, to the broker.
//!
//! Owns the publishing connection: it takes what the reactors queued, as many as have
//! arrived (up to [`BATCH`]), and sends them as one pipeline of `PUBLISH`es, so a burst costs
//! one write and one round trip. Connects lazily (when there is something to publish) and
//! again, with backoff, after a failure; while it has no connection it drops what arrives,
//! counted. Must not retry a message: a batch that failed may have partly reached the broker,
//! and at most once is the promise.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::metrics::broker::{BrokerCounters, BrokerDrop};
use crate::threads::Carried;

use super::{channel, wire, Backoff, CONNECT_TIMEOUT};

/// Messages sent in one pipeline at most.
const BATCH: usize = 512;
/// How long the thread waits for a message before it looks at the stop flag again.
const IDLE: Duration = Duration::from_millis(100);
/// Longest a write to (or a reply from) the broker may take before the connection is given
/// up: meanwhile the queue fills and the reactors drop, counted.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Publisher {
    pub client: redis::Client,
    pub prefix: Vec<u8>,
    pub origin: u64,
    pub queue: mpsc::Receiver<Arc<Carried>>,
    pub queued_bytes: Arc<AtomicUsize>,
    pub counters: Arc<BrokerCounters>,
    pub stop: Arc<AtomicBool>,
    /// The subscriber's connection count: a change means the broker was lost and found.
    pub epoch: Arc<AtomicU64>,
}

/// The publishing connection and the subscriber epoch it was made in.
struct Link {
    connection: redis::Connection,
    epoch: u64,
}

impl Publisher {
    pub(super) fn run(self) {
        let mut link: Option<Link> = None;
        let mut backoff = Backoff::new();
        let mut retry_at = Instant::now();
        // The subscriber's epoch at the last failure: once it has reconnected, the broker is
        // back, and waiting out the backoff would only drop more.
        let mut failed_in = u64::MAX;
        let mut ever_connected = false;
        let mut batch: Vec<Arc<Carried>> = Vec::with_capacity(BATCH);
        let mut body = Vec::new();
        loop {
            match self.queue.recv_timeout(IDLE) {
                Ok(carried) => batch.push(carried),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            while batch.len() < BATCH {
                match self.queue.try_recv() {
                    Ok(carried) => batch.push(carried),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let taken: usize = batch.iter().map(|c| c.frame.len()).sum();
            self.queued_bytes.fetch_sub(taken, Ordering::Relaxed);
            let epoch = self.epoch.load(Ordering::Relaxed);
            if link.as_ref().is_some_and(|l| l.epoch != epoch) {
                link = None; // the broker came back since: this connection is to the old one
            }
            if link.is_none() && (Instant::now() >= retry_at || epoch != failed_in) {
                match self.connect() {
                    Ok(connection) => {
                        if ever_connected {
                            BrokerCounters::add(&self.counters.reconnects, 1);
                        }
                        ever_connected = true;
                        backoff.reset();
                        self.counters.publisher_up.store(true, Ordering::Relaxed);
                        link = Some(Link { connection, epoch });
                    }
                    Err(e) => {
                        log::debug!("broker: publisher cannot connect: {e}");
                        retry_at = Instant::now() + backoff.next();
                        failed_in = epoch;
                    }
                }
            }
            let n = batch.len() as u64;
            match link.as_mut() {
                Some(l) => match self.publish(&mut l.connection, &batch, &mut body) {
                    Ok(sent) => BrokerCounters::add(&self.counters.sent, sent),
                    Err(e) => {
                        log::warn!("broker: publishing failed, reconnecting: {e}");
                        self.counters.drop_messages(BrokerDrop::Disconnected, n);
                        self.counters.publisher_up.store(false, Ordering::Relaxed);
                        link = None;
                        retry_at = Instant::now() + backoff.next();
                        failed_in = epoch;
                    }
                },
                None => self.counters.drop_messages(BrokerDrop::Disconnected, n),
            }
            batch.clear();
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        connection.set_write_timeout(Some(IO_TIMEOUT))?;
        connection.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(connection)
    }

    /// One pipeline of `PUBLISH`es: how many messages it carried.
    fn publish(
        &self,
        connection: &mut redis::Connection,
        batch: &[Arc<Carried>],
        body: &mut Vec<u8>,
    ) -> redis::RedisResult<u64> {
        let mut pipe = redis::pipe();
        let mut sent = 0;
        for carried in batch {
            if wire::encode_frame(body, self.origin, &carried.frame) {
                pipe.cmd("PUBLISH")
                    .arg(channel(&self.prefix, &carried.topic))
                    .arg(&body[..])
                    .ignore();
                sent += 1;
            }
        }
        pipe.query::<()>(connection)?;
        Ok(sent)
    }
}
