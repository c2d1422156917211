//! Server-wide counters, cheap enough to bump on every message.
//!
//! Owns plain `u64` counters updated by the single reactor thread (no atomics needed). It does
//! not compute rates or format anything: readers (the stats push, the load harness) do.

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
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Requests refused (400, 403, 426, 431).
    pub refused: u64,
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
}
