//! One reactor's counter block and its snapshot as the public [`Stats`].
//!
//! Owns the fields and the single-writer discipline: only the reactor that owns a block
//! writes it (`bump`, `add`, `set`); everyone else only loads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Histogram;
use crate::frame::{close_code, OpCode};
use crate::handler::CloseCause;
use crate::stats::{Closes, Refusals, Stats};

/// A monotonic count written by one thread and read by any.
///
/// `bump` and `add` are a relaxed load and a relaxed store, not a `fetch_add`: with a single
/// writer no increment can be lost, and on x86-64 they compile to a plain load, add and store,
/// without the `lock` prefix an atomic read-modify-write costs on every message.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn bump(&self) {
        self.add(1);
    }

    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A level (connections held, buffers in use) set by its one writer.
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicU64);

impl Gauge {
    #[inline]
    pub fn set(&self, value: usize) {
        self.0.store(value as u64, Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Why an upgrade (or a connection before its request) was refused: the `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusedBy {
    BadRequest = 0,
    Forbidden,
    UpgradeRequired,
    HeadTooLarge,
    /// Dropped at accept: `max_pending_handshakes` connections were still silent.
    PendingLimit,
}

impl RefusedBy {
    pub const ALL: [RefusedBy; 5] = [
        RefusedBy::BadRequest,
        RefusedBy::Forbidden,
        RefusedBy::UpgradeRequired,
        RefusedBy::HeadTooLarge,
        RefusedBy::PendingLimit,
    ];

    pub fn from_status(status: u16) -> Self {
        match status {
            403 => RefusedBy::Forbidden,
            426 => RefusedBy::UpgradeRequired,
            431 => RefusedBy::HeadTooLarge,
            _ => RefusedBy::BadRequest,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RefusedBy::BadRequest => "400",
            RefusedBy::Forbidden => "403",
            RefusedBy::UpgradeRequired => "426",
            RefusedBy::HeadTooLarge => "431",
            RefusedBy::PendingLimit => "limit",
        }
    }
}

/// Close causes in label order; `cause_index` maps a [`CloseCause`] into it.
pub(crate) const CAUSES: [(CloseCause, &str); 9] = [
    (CloseCause::Peer, "peer"),
    (CloseCause::Local, "local"),
    (CloseCause::Shutdown, "shutdown"),
    (CloseCause::Protocol, "protocol"),
    (CloseCause::Timeout, "timeout"),
    (CloseCause::Backlog, "backlog"),
    (CloseCause::Io, "io"),
    (CloseCause::Panic, "panic"),
    (CloseCause::Budget, "budget"),
];

fn cause_index(cause: CloseCause) -> usize {
    match cause {
        CloseCause::Peer => 0,
        CloseCause::Local => 1,
        CloseCause::Shutdown => 2,
        CloseCause::Protocol => 3,
        CloseCause::Timeout => 4,
        CloseCause::Backlog => 5,
        CloseCause::Io => 6,
        CloseCause::Panic => 7,
        CloseCause::Budget => 8,
    }
}

/// The close codes counted one by one; any other (3000-4999 and the rest) is `other`, so a
/// peer choosing codes cannot grow the label set.
pub(crate) struct CloseCodeBucket;

impl CloseCodeBucket {
    pub const CODES: [u16; 12] = [
        close_code::NORMAL,
        close_code::GOING_AWAY,
        close_code::PROTOCOL_ERROR,
        close_code::UNSUPPORTED,
        close_code::NO_STATUS,
        close_code::ABNORMAL,
        close_code::INVALID_PAYLOAD,
        close_code::POLICY,
        close_code::TOO_BIG,
        1010,
        close_code::INTERNAL_ERROR,
        close_code::TRY_AGAIN_LATER,
    ];
    /// Buckets: one per code above, then `other`.
    pub const LEN: usize = Self::CODES.len() + 1;

    fn index(code: u16) -> usize {
        Self::CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(Self::CODES.len())
    }
}

/// One reactor's figures. Fields are bumped where the event happens (see each); gauges are
/// set at the reactor's timer sweep.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// TCP connections accepted.
    pub accepted: Counter,
    /// Successful upgrades.
    pub opened: Counter,
    /// Plain HTTP requests answered by the handler.
    pub http_requests: Counter,
    /// Scrapes of `/metrics` answered on the WebSocket port.
    pub scrapes: Counter,
    /// Refusals, indexed by [`RefusedBy`].
    pub refused: [Counter; 5],
    /// Closes of open WebSockets, indexed like [`CAUSES`].
    pub closes: [Counter; CAUSES.len()],
    /// Closes by code, indexed by [`CloseCodeBucket`].
    pub close_codes: [Counter; CloseCodeBucket::LEN],
    pub protocol_errors: Counter,
    /// Data messages received, indexed by opcode (see [`ByOpcode`]).
    pub messages_in: ByOpcode,
    /// Data messages queued for sending, indexed by opcode.
    pub messages_out: ByOpcode,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Times a connection stopped being read because its output passed the high-water mark.
    pub backpressure_pauses: Counter,
    pub backlog_drops: Counter,
    pub handler_panics: Counter,
    pub publishes: Counter,
    pub publish_drops: Counter,
    pub slow_subscriber_closes: Counter,
    /// The memory budget's steps ([`crate::budget`]): reads held back, new large messages
    /// refused (1009), accept pauses, closes (1013) and drops of the heaviest holders.
    pub budget_read_pauses: Counter,
    pub budget_refused_messages: Counter,
    pub budget_accept_pauses: Counter,
    pub budget_closes: Counter,
    pub budget_drops: Counter,
    /// TLS handshakes completed, `[full, resumed]` (a ticket or a cached session).
    pub tls_handshakes: [Counter; 2],
    /// TLS connections that ended before their handshake completed: timeouts, garbage,
    /// plain HTTP on the TLS port, a peer that refused our certificate.
    pub tls_handshake_failures: Counter,
    /// Bytes this reactor holds for its connections, as the budget counts them.
    pub memory_held: Gauge,
    /// permessage-deflate, indexed by [`DEFLATE_IN`] (received) and [`DEFLATE_OUT`] (sent):
    /// compressed payload bytes, and the bytes they inflate to (or were compressed from).
    pub deflate_compressed: [Counter; 2],
    pub deflate_plain: [Counter; 2],
    /// Messages of a context takeover stream whose (de)compressor had to be primed from the
    /// window (none was parked for it), by direction.
    pub deflate_resumes: [Counter; 2],
    /// Live decompressors ([`DEFLATE_IN`]) and compressors ([`DEFLATE_OUT`]) parked for
    /// context takeover streams, and free decompressors (sampled at the timer sweep).
    pub deflate_parked: [Gauge; 2],
    pub deflate_free_inflaters: Gauge,
    /// From accept (or the previous plain HTTP answer) to the `101`.
    pub handshake: Histogram,
    /// TCP connections held, any state.
    pub connections: Gauge,
    /// Connections holding a busy buffer set.
    pub buffers_busy: Gauge,
    /// Idle buffer sets kept in the pool.
    pub buffers_free: Gauge,
    /// Topics with at least one subscriber.
    pub topics: Gauge,
    /// Connections subscribed to at least one topic.
    pub subscribers: Gauge,
}

/// The index of what was received in the per-direction deflate counters.
pub(crate) const DEFLATE_IN: usize = 0;
/// The index of what was sent.
pub(crate) const DEFLATE_OUT: usize = 1;

/// Counters indexed by a frame's 4-bit opcode, of which only text (1) and binary (2) are
/// used: the bump then costs no compare and no bounds check (an opcode is below 16), which
/// mattered on the per-message path (3 instructions per counter, measured with callgrind).
pub(crate) type ByOpcode = [Counter; 16];

/// The [`ByOpcode`] index of a data frame's opcode.
#[inline(always)]
pub(crate) fn kind_index(opcode: OpCode) -> usize {
    opcode as usize
}

/// The [`ByOpcode`] indices of text and binary, in label order.
pub(crate) const KINDS: [(usize, &str); 2] = [
    (OpCode::Text as usize, "text"),
    (OpCode::Binary as usize, "binary"),
];

impl Counters {
    /// Counts a refusal.
    #[cold]
    pub fn refuse(&self, by: RefusedBy) {
        self.refused[by as usize].bump();
    }

    /// Counts the close of an open WebSocket.
    pub fn close(&self, code: u16, cause: CloseCause) {
        self.closes[cause_index(cause)].bump();
        self.close_codes[CloseCodeBucket::index(code)].bump();
    }

    /// The figures of this block alone.
    pub fn snapshot(&self) -> Stats {
        Self::total(std::slice::from_ref(self))
    }

    /// The figures of several reactors' blocks, summed (each read live).
    pub fn total<B: std::borrow::Borrow<Counters>>(blocks: &[B]) -> Stats {
        let sum = |read: &dyn Fn(&Counters) -> u64| -> u64 {
            blocks.iter().map(|b| read(b.borrow())).sum()
        };
        let refused = |by: RefusedBy| sum(&|b| b.refused[by as usize].get());
        let closes = |cause: CloseCause| sum(&|b| b.closes[cause_index(cause)].get());
        let refusals = Refusals {
            bad_request: refused(RefusedBy::BadRequest),
            forbidden: refused(RefusedBy::Forbidden),
            upgrade_required: refused(RefusedBy::UpgradeRequired),
            head_too_large: refused(RefusedBy::HeadTooLarge),
            pending_limit: refused(RefusedBy::PendingLimit),
        };
        let closes = Closes {
            peer: closes(CloseCause::Peer),
            local: closes(CloseCause::Local),
            shutdown: closes(CloseCause::Shutdown),
            protocol: closes(CloseCause::Protocol),
            timeout: closes(CloseCause::Timeout),
            backlog: closes(CloseCause::Backlog),
            io: closes(CloseCause::Io),
            panic: closes(CloseCause::Panic),
            budget: closes(CloseCause::Budget),
        };
        let (text, binary) = (OpCode::Text as usize, OpCode::Binary as usize);
        let text_in = sum(&|b| b.messages_in[text].get());
        let binary_in = sum(&|b| b.messages_in[binary].get());
        let text_out = sum(&|b| b.messages_out[text].get());
        let binary_out = sum(&|b| b.messages_out[binary].get());
        Stats {
            opened: sum(&|b| b.opened.get()),
            closed: sum(&|b| b.closes.iter().map(Counter::get).sum()),
            accepted: sum(&|b| b.accepted.get()),
            messages_in: text_in + binary_in,
            messages_out: text_out + binary_out,
            text_messages_in: text_in,
            text_messages_out: text_out,
            bytes_in: sum(&|b| b.bytes_in.get()),
            bytes_out: sum(&|b| b.bytes_out.get()),
            http_requests: sum(&|b| b.http_requests.get()),
            refused: sum(&|b| b.refused.iter().map(Counter::get).sum()),
            refusals,
            closes,
            protocol_errors: sum(&|b| b.protocol_errors.get()),
            backpressure_pauses: sum(&|b| b.backpressure_pauses.get()),
            backlog_drops: sum(&|b| b.backlog_drops.get()),
            handler_panics: sum(&|b| b.handler_panics.get()),
            publishes: sum(&|b| b.publishes.get()),
            publish_drops: sum(&|b| b.publish_drops.get()),
            slow_subscriber_closes: sum(&|b| b.slow_subscriber_closes.get()),
            budget_read_pauses: sum(&|b| b.budget_read_pauses.get()),
            budget_refused_messages: sum(&|b| b.budget_refused_messages.get()),
            budget_accept_pauses: sum(&|b| b.budget_accept_pauses.get()),
            budget_closes: sum(&|b| b.budget_closes.get()),
            budget_drops: sum(&|b| b.budget_drops.get()),
            tls_handshakes: sum(&|b| b.tls_handshakes.iter().map(Counter::get).sum()),
            tls_handshake_failures: sum(&|b| b.tls_handshake_failures.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_what_was_bumped() {
        let block = Counters::default();
        block.messages_in[kind_index(OpCode::Text)].bump();
        block.messages_in[kind_index(OpCode::Binary)].add(2);
        block.close(1000, CloseCause::Peer);
        block.close(4321, CloseCause::Local);
        block.refuse(RefusedBy::from_status(431));
        let stats = block.snapshot();
        assert_eq!((stats.messages_in, stats.text_messages_in), (3, 1));
        assert_eq!(
            (stats.closed, stats.closes.peer, stats.closes.local),
            (2, 1, 1)
        );
        assert_eq!((stats.refused, stats.refusals.head_too_large), (1, 1));
        let other = CloseCodeBucket::CODES.len();
        assert_eq!(block.close_codes[other].get(), 1, "4321 lands in `other`");
        assert_eq!(block.close_codes[0].get(), 1, "1000 has its own bucket");
    }
}
