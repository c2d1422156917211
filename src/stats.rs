//! The public snapshot of the server's counters.
//!
//! Owns the [`Stats`] type handlers read. The live counters are per-reactor blocks of atomics
//! in `crate::metrics`; a `Stats` is a copy of them taken on demand. It does not compute rates
//! or format anything: readers (the stats push, `/metrics`, the load harness) do.

/// Totals since the server started. Read them from [`Handler::on_tick`](crate::Handler::on_tick)
/// through [`Ctx::stats`](crate::Ctx::stats).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// WebSocket connections opened (successful upgrades).
    pub opened: u64,
    /// WebSocket connections closed.
    pub closed: u64,
    /// TCP connections accepted.
    pub accepted: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending.
    pub messages_out: u64,
    /// Of `messages_in`, the text ones.
    pub text_messages_in: u64,
    /// Of `messages_out`, the text ones.
    pub text_messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Requests refused (400, 403, 426, 431) and connections dropped at the pending-handshake
    /// limit: the sum of `refusals`.
    pub refused: u64,
    /// `refused`, by status.
    pub refusals: Refusals,
    /// `closed`, by cause.
    pub closes: Closes,
    /// Times a connection stopped being read because its output passed `backlog_high_water`.
    pub backpressure_pauses: u64,
    /// Connections failed for a protocol violation (1002, 1007, 1009).
    pub protocol_errors: u64,
    /// Connections dropped because their output backlog hit `max_backlog`.
    pub backlog_drops: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
    /// Messages published to a topic with at least one subscriber.
    pub publishes: u64,
    /// Published messages a slow subscriber missed ([`SlowSubscriber::Drop`](crate::config::SlowSubscriber)).
    pub publish_drops: u64,
    /// Subscribers closed for being slow ([`SlowSubscriber::Close`](crate::config::SlowSubscriber)).
    pub slow_subscriber_closes: u64,
    /// Times a connection was not read because the memory budget was under pressure and it
    /// held more than the current threshold (`Config::max_memory`).
    pub budget_read_pauses: u64,
    /// New large messages refused with 1009 because they would have passed 90% of the budget.
    pub budget_refused_messages: u64,
    /// Times accepting new connections paused at 90% of the budget.
    pub budget_accept_pauses: u64,
    /// Connections closed with 1013 to bring the total back under the budget.
    pub budget_closes: u64,
    /// Connections dropped without a close frame to bring the total back under the budget
    /// (their unread backlog left no room for one).
    pub budget_drops: u64,
    /// TLS handshakes completed (full or resumed).
    pub tls_handshakes: u64,
    /// TLS connections that ended before their handshake completed.
    pub tls_handshake_failures: u64,
}

/// Refused requests by HTTP status, and connections dropped before their request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusals {
    /// `400`: malformed, or not a valid upgrade.
    pub bad_request: u64,
    /// `403`: the origin is not allowed (or the handler's `accept` said no).
    pub forbidden: u64,
    /// `426`: a WebSocket version other than 13.
    pub upgrade_required: u64,
    /// `431`: request head over `max_request_head` or `max_headers`.
    pub head_too_large: u64,
    /// Dropped at accept: `max_pending_handshakes` connections were still in their handshake.
    pub pending_limit: u64,
}

/// Closed WebSockets by [`CloseCause`](crate::CloseCause).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Closes {
    /// The peer sent a close frame first.
    pub peer: u64,
    /// The application closed it.
    pub local: u64,
    /// The server shut down.
    pub shutdown: u64,
    /// Failed for a protocol violation or a limit.
    pub protocol: u64,
    /// Idle timeout, or the close handshake timed out.
    pub timeout: u64,
    /// Dropped for its backlog (or a slow subscriber closed).
    pub backlog: u64,
    /// The TCP connection ended or failed without a close handshake.
    pub io: u64,
    /// A handler callback panicked.
    pub panic: u64,
    /// Closed (1013) or dropped to bring the memory budget's total back under it.
    pub budget: u64,
}
