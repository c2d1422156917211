//! What the server counts, and how anyone reads it: per-reactor counter blocks, the handshake
//! histogram, the Prometheus text exposition and the optional metrics listener.
//!
//! Owns the counters' layout and the rule that makes them free to bump: each [`Counters`] block
//! is written by one reactor thread only, so a bump is a relaxed load and store of an atomic
//! (plain moves, no lock prefix), while any thread may read every block live through the
//! `Arc` it is held in. Readers ([`Counters::snapshot`], the exposition) sum blocks at read
//! time. Gauges that follow the slab, the pool and the topics are set by the reactor at its
//! timer sweep, never per message.
//!
//! Must not allocate, lock or format on the message path, and holds no connection state.

pub(crate) mod broker;
mod counters;
mod exposition;
mod histogram;
mod listener;

pub(crate) use counters::{
    kind_index, CloseCodeBucket, Counter, Counters, RefusedBy, DEFLATE_IN, DEFLATE_OUT,
};
pub(crate) use exposition::render;
pub(crate) use histogram::Histogram;
pub(crate) use listener::{spawn_listener, MetricsListener};

use std::sync::Arc;

/// Every reactor's counter block, in a fixed order: what one scrape sums. A single-threaded
/// [`Server`](crate::Server) builds a list of one; a multi-threaded server builds one list
/// with a block per reactor and gives every reactor (and the metrics listener) a clone.
/// With a broker attached ([`crate::broker`]), its counters too.
#[derive(Debug, Clone)]
pub(crate) struct Blocks(Arc<[Arc<Counters>]>, Option<Arc<broker::BrokerCounters>>);

impl Blocks {
    /// A fresh block for each of `reactors` reactors.
    pub(crate) fn new(reactors: usize) -> Self {
        Blocks((0..reactors.max(1)).map(|_| Arc::default()).collect(), None)
    }

    /// The same blocks, and the broker's counters, which a scrape shows after them.
    pub(crate) fn with_broker(self, counters: Arc<broker::BrokerCounters>) -> Self {
        Blocks(self.0, Some(counters))
    }

    /// The whole exposition: every reactor's block summed, then the broker's counters.
    pub(crate) fn render(&self, out: &mut Vec<u8>) {
        render(&self.0, out);
        if let Some(counters) = &self.1 {
            broker::render(counters, out);
        }
    }

    /// Reactor `index`'s block, the one it alone writes.
    pub(crate) fn block(&self, index: usize) -> Arc<Counters> {
        Arc::clone(&self.0[index.min(self.0.len() - 1)])
    }

    pub(crate) fn all(&self) -> &[Arc<Counters>] {
        &self.0
    }
}

/// What a reactor needs to answer a scrape on the WebSocket port itself.
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    /// The path served, if the WebSocket port serves metrics at all.
    pub path: Option<Box<str>>,
    pub blocks: Blocks,
}

impl Scrape {
    /// The exposition, if `request` asks for it (`GET` or `HEAD` of the path, any query).
    pub(crate) fn answer(&self, request: &crate::Request<'_>) -> Option<Vec<u8>> {
        let path = self.path.as_deref()?;
        let target = request.path.split('?').next().unwrap_or("");
        if target != path || !matches!(request.method, "GET" | "HEAD") {
            return None;
        }
        let mut body = Vec::with_capacity(4096);
        self.blocks.render(&mut body);
        Some(body)
    }
}

/// The exposition's `Content-Type` (text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
