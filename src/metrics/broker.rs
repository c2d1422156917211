//! What the broker attachment counts ([`crate::broker`]), and its part of the exposition.
//!
//! Owns the broker's counters. Unlike a reactor's block these have several writers (the
//! broker's two threads, and any reactor that finds the broker's queue full), so each is
//! bumped with a `fetch_add`: none of them is on a path without a broker, and with one a
//! message costs a channel send and a `PUBLISH` anyway. Must not be written by anything but
//! the broker attachment.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Why a message did not cross the broker: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerDrop {
    /// A reactor found the queue to the broker full (the broker is slow or away).
    QueueFull = 0,
    /// The publishing connection to the broker was down (or failed while sending it).
    Disconnected,
    /// A message from the broker that is not one this format reads (see `broker::wire`).
    Invalid,
}

impl BrokerDrop {
    const ALL: [BrokerDrop; 3] = [
        BrokerDrop::QueueFull,
        BrokerDrop::Disconnected,
        BrokerDrop::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            BrokerDrop::QueueFull => "queue_full",
            BrokerDrop::Disconnected => "disconnected",
            BrokerDrop::Invalid => "invalid",
        }
    }
}

/// The broker attachment's counters, shared by its threads, the reactors and every scrape.
#[derive(Debug, Default)]
pub(crate) struct BrokerCounters {
    /// The subscribing connection is up and subscribed to every wanted topic.
    pub subscriber_up: AtomicBool,
    /// The publishing connection is up (as far as its last command knows).
    pub publisher_up: AtomicBool,
    /// Messages this server published to the broker.
    pub sent: AtomicU64,
    /// Messages from other servers handed to this server's reactors.
    pub received: AtomicU64,
    /// This server's own messages that came back from the broker and were skipped.
    pub echoes: AtomicU64,
    /// Topics this server is subscribed to at the broker.
    pub subscribed: AtomicU64,
    /// Connections to the broker made again after one was lost (either connection).
    pub reconnects: AtomicU64,
    dropped: [AtomicU64; 3],
}

impl BrokerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn drop_messages(&self, reason: BrokerDrop, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }

    pub(crate) fn dropped(&self, reason: BrokerDrop) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    /// Whether both connections are up.
    pub(crate) fn connected(&self) -> bool {
        self.subscriber_up.load(Relaxed) && self.publisher_up.load(Relaxed)
    }
}

/// Writes the broker's metrics into `out` (after the reactors' own).
pub(crate) fn render(counters: &BrokerCounters, out: &mut Vec<u8>) {
    let simple: [(&str, &str, &str, u64); 6] = [
        (
            "wsreactor_broker_connected",
            "gauge",
            "1 while both connections to the broker (subscribing and publishing) are up.",
            u64::from(counters.connected()),
        ),
        (
            "wsreactor_broker_sent_total",
            "counter",
            "Messages published to the broker.",
            counters.sent.load(Relaxed),
        ),
        (
            "wsreactor_broker_received_total",
            "counter",
            "Messages from other servers, through the broker, handed to local subscribers.",
            counters.received.load(Relaxed),
        ),
        (
            "wsreactor_broker_echoes_total",
            "counter",
            "This server's own messages the broker sent back (skipped, not delivered twice).",
            counters.echoes.load(Relaxed),
        ),
        (
            "wsreactor_broker_topics",
            "gauge",
            "Topics this server is subscribed to at the broker.",
            counters.subscribed.load(Relaxed),
        ),
        (
            "wsreactor_broker_reconnects_total",
            "counter",
            "Connections to the broker made again after one was lost.",
            counters.reconnects.load(Relaxed),
        ),
    ];
    // Writing into a Vec cannot fail.
    for (name, kind, help, value) in simple {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    let name = "wsreactor_broker_dropped_total";
    let _ = write!(
        out,
        "# HELP {name} Messages that did not cross the broker, by reason.\n# TYPE {name} counter\n"
    );
    for reason in BrokerDrop::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            reason.label(),
            counters.dropped(reason)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_series() {
        let counters = BrokerCounters::default();
        counters.drop_messages(BrokerDrop::Disconnected, 3);
        counters.drop_messages(BrokerDrop::QueueFull, 1);
        BrokerCounters::add(&counters.sent, 5);
        counters.subscriber_up.store(true, Relaxed);
        let mut out = Vec::new();
        render(&counters, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("wsreactor_broker_dropped_total{reason=\"disconnected\"} 3\n"));
        assert!(text.contains("wsreactor_broker_dropped_total{reason=\"queue_full\"} 1\n"));
        assert!(text.contains("wsreactor_broker_dropped_total{reason=\"invalid\"} 0\n"));
        assert!(text.contains("wsreactor_broker_sent_total 5\n"));
        // Only one of the two connections is up.
        assert!(text.contains("wsreactor_broker_connected 0\n"));
    }
}
