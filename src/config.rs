//! Server configuration: every limit and timeout, with its default and what it bounds.
//!
//! Owns defaults and their consistency check. It does not parse the command line (that is the
//! binary's job, in `server/src/main.rs`) and holds no runtime state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::broker::BrokerUrl;
pub use crate::deflate::Compression;

/// Settings for one [`Server`](crate::Server). `Config::default()` is a sane production start.
///
/// Memory per connection is bounded by `max_request_head` during the handshake, then by
/// `max_message_size` (the message being assembled) plus `max_backlog` (bytes accepted for
/// sending but not yet written). An idle open connection owns none of these buffers. The sum
/// over all connections is bounded by `max_memory`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:9001`.
    pub listen: SocketAddr,
    /// Open connections (any state) at most; the listener stops accepting at the limit and
    /// resumes when a slot frees. Default 16,384 (a process here may hold 20,000 files). In
    /// a [`MultiServer`](crate::MultiServer) each reactor holds an equal share (rounded up).
    pub max_connections: usize,
    /// Connections still in their HTTP handshake at most; new ones are refused (dropped) above
    /// it, so a flood of silent sockets cannot take every slot. Default 1,024. Shared out
    /// among the reactors of a [`MultiServer`](crate::MultiServer) like `max_connections`.
    pub max_pending_handshakes: usize,
    /// Largest request head (request line and headers) in bytes; larger gets `431`. Default 8 KiB.
    pub max_request_head: usize,
    /// Most request headers; more gets `431`. At most 128. Default 64.
    pub max_headers: usize,
    /// Largest frame payload; larger fails the connection with close 1009 before any of it is
    /// buffered. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest message (all fragments together); larger fails with close 1009. Default 16 MiB.
    pub max_message_size: usize,
    /// Unwritten output above which the connection stops being read (backpressure) and `send`
    /// reports [`SendStatus::Backpressure`](crate::SendStatus::Backpressure). Default 1 MiB.
    pub backlog_high_water: usize,
    /// Unwritten output below which a paused connection is read again and the handler's
    /// `on_drain` runs. Default 256 KiB.
    pub backlog_low_water: usize,
    /// Unwritten output at which the connection is dropped instead of growing further.
    /// Must leave room for an echo of a maximal message. Default 40 MiB.
    pub max_backlog: usize,
    /// Time allowed from accept to a complete request head. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time without any input after which an open connection is pinged (with `auto_ping`) or
    /// closed with 1001. `None` never times out. Default 120 s.
    pub idle_timeout: Option<Duration>,
    /// Send a ping at the idle timeout instead of closing; close only if the next timeout
    /// passes with no input either. Default true.
    pub auto_ping: bool,
    /// Time a closing connection waits for the peer's close frame (or for its output to drain)
    /// before the socket is dropped. Default 5 s.
    pub close_timeout: Duration,
    /// Subprotocols this server speaks, in no particular order; the first of the client's
    /// offers found here is chosen. Empty: none is ever echoed.
    pub subprotocols: Vec<String>,
    /// Origins allowed to upgrade (exact `Origin` header values). Empty: every origin.
    pub allowed_origins: Vec<String>,
    /// Size of the reactor-wide read buffer. Default 256 KiB: one buffer for all connections,
    /// and a large message then takes a quarter of the reads (and writes back) it took at 64 KiB.
    pub read_buffer_size: usize,
    /// Interval of the handler's `on_tick` callback. `None`: never. Default `None`.
    pub tick_interval: Option<Duration>,
    /// Abort the process when a handler callback panics. Default false: the panic is caught at
    /// the callback boundary and only that connection is closed (1011).
    pub abort_on_panic: bool,
    /// A subscriber's unwritten output above which a published message is not queued to it
    /// (see [`slow_subscriber`](Self::slow_subscriber)). Checked before each message, so a
    /// batch of publishes never passes it. Default 1 MiB; at most `max_backlog`.
    pub max_subscriber_backlog: usize,
    /// What a subscriber over `max_subscriber_backlog` gets. Default
    /// [`SlowSubscriber::Close`].
    pub slow_subscriber: SlowSubscriber,
    /// Longest topic name in bytes. Default 256.
    pub max_topic_name: usize,
    /// Most topics one connection subscribes to. Default 64.
    pub max_topics_per_connection: usize,
    /// permessage-deflate (RFC 7692): [`Compression::Off`] never negotiates it;
    /// [`Compression::NoContextTakeover`] accepts the first offer it can honour, answering
    /// `server_no_context_takeover; client_no_context_takeover`, so no connection keeps
    /// compression state between messages (one compressor per window size and a few
    /// decompressors per reactor); [`Compression::ContextTakeover`] keeps each direction's
    /// window across messages where the client allows it (up to 2^bits + 4 KiB bytes per
    /// connection that used it, counted in `max_memory`). Default `Off` (the library's; the
    /// binary chooses its own).
    pub compression: Compression,
    /// With [`Compression::ContextTakeover`]: how many live compressors, and as many
    /// decompressors, a reactor keeps parked between messages for the connections that used
    /// them last (each about 270 KiB and 40 KiB at window 15). A connection whose state was
    /// not kept resumes from its window, which costs time, not correctness. Default 32.
    pub compression_live: usize,
    /// Messages shorter than this are sent uncompressed on a connection that negotiated
    /// compression (deflate costs more than it saves on them). Default 256 bytes.
    pub compression_threshold: usize,
    /// zlib compression level for what we send, 1 (fastest) to 9 (smallest). Default 1.
    pub compression_level: u32,
    /// Serve TLS (`wss://`, and `https://` for plain HTTP) with this certificate and key
    /// instead of plain TCP, on the same port. `None`: plain TCP. Default `None`.
    pub tls: Option<TlsFiles>,
    /// Serve plain TCP through io_uring instead of epoll: multishot accept and receive into a
    /// buffer ring the reactor's connections share, every send of a loop turn in one submit.
    /// Where the kernel refuses io_uring (or an operation it needs), and with `tls`, the
    /// server logs why and runs on epoll ([`Server::io_backend`](crate::Server::io_backend)
    /// tells which). Default `false`.
    pub io_uring: bool,
    /// The server-wide memory budget in bytes: what the server holds for all its connections
    /// together (output backlogs, messages being assembled, request heads, pooled buffers,
    /// decompressors in use, an estimate per TLS connection). Near it the server stops
    /// reading the connections that hold the most, then refuses new large messages (1009) and
    /// new connections, then closes the heaviest holders (1013); see the README's hardening
    /// section. The kernel's socket buffers are not counted. Default 1 GiB: the default
    /// `max_connections` (16,384) each holding 64 KiB, the most the budget never takes from a
    /// connection; at least 1 MiB.
    pub max_memory: usize,
    /// Answer `GET` of this path on the WebSocket port with the Prometheus exposition, before
    /// the handler's `on_http` sees the request. `None`: the port serves no metrics. Default
    /// `None`: a library's port serves what its handler decides (which may be a `/metrics` of
    /// its own), and figures about the server are not published to whoever reaches the port.
    pub metrics_path: Option<String>,
    /// Also serve `GET /metrics` on this address, from a small thread of its own (for a port
    /// that only the monitoring network reaches). `None`: no such listener. Default `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Attach to this pub/sub broker, so that topics span every server attached to it: each
    /// publish also goes to the broker, and messages other servers publish reach this
    /// server's subscribers (see [`crate::broker`] for the semantics). An unreachable broker
    /// does not stop the server from starting; it is connected to when it can be. `None`:
    /// topics are this server's own. Default `None`.
    pub broker: Option<BrokerUrl>,
}

/// The policy for a subscriber that does not keep up with what is published to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlowSubscriber {
    /// It misses the messages that do not fit (counted in `Stats::publish_drops` and in each
    /// publish's [`Published::dropped`](crate::Published::dropped)); it stays open and gets
    /// later messages once it has read.
    Drop,
    /// It is closed with 1008 (policy violation: the server's limit on unread output) and
    /// gets nothing after the close frame, so what it did receive has no gaps. The default:
    /// a client that reconnects knows it missed something; one that silently misses messages
    /// does not.
    #[default]
    Close,
}

/// Where a TLS server's certificate chain and private key are: PEM files, read once by
/// [`Server::bind`](crate::Server::bind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`CERTIFICATE` sections).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            max_connections: 16_384,
            max_pending_handshakes: 1_024,
            max_request_head: 8 * 1024,
            max_headers: 64,
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            backlog_high_water: 1 << 20,
            backlog_low_water: 256 << 10,
            max_backlog: 40 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            auto_ping: true,
            close_timeout: Duration::from_secs(5),
            subprotocols: Vec::new(),
            allowed_origins: Vec::new(),
            read_buffer_size: 256 * 1024,
            tick_interval: None,
            abort_on_panic: false,
            max_subscriber_backlog: 1 << 20,
            slow_subscriber: SlowSubscriber::Close,
            max_topic_name: 256,
            max_topics_per_connection: 64,
            compression: Compression::Off,
            compression_threshold: 256,
            compression_level: 1,
            compression_live: 32,
            tls: None,
            io_uring: false,
            max_memory: 1 << 30,
            metrics_path: None,
            metrics_listen: None,
            broker: None,
        }
    }
}

/// Headers parsed per request at most, whatever `max_headers` says (the parser's stack array).
pub const HEADER_ARRAY: usize = 128;

/// A [`Config`] whose limits do not fit together: what [`Config::validate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_connections` is 0.
    NoConnections,
    /// `max_headers` is 0 or above [`HEADER_ARRAY`].
    MaxHeadersOutOfRange,
    /// `max_request_head` is below 64 bytes.
    RequestHeadTooSmall,
    /// `max_frame_size` is above `max_message_size`.
    FrameOverMessage,
    /// `backlog_low_water` is above `backlog_high_water`.
    LowWaterOverHighWater,
    /// `max_backlog` is below `backlog_high_water`, or below `max_message_size` plus a frame
    /// header (the echo of one whole message must fit).
    BacklogTooSmall,
    /// `read_buffer_size` is below 1 KiB.
    ReadBufferTooSmall,
    /// `max_subscriber_backlog` is above `max_backlog`.
    SubscriberBacklogOverMax,
    /// `compression_level` is not 1..=9.
    CompressionLevelOutOfRange,
    /// The context takeover window is not 9..=15 bits.
    CompressionWindowOutOfRange,
    /// `max_memory` is below 1 MiB.
    MemoryBudgetTooSmall,
    /// `metrics_path` does not start with `/`.
    MetricsPathNotAbsolute,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigError::NoConnections => "max_connections must be at least 1",
            ConfigError::MaxHeadersOutOfRange => "max_headers must be 1..=128",
            ConfigError::RequestHeadTooSmall => "max_request_head must be at least 64 bytes",
            ConfigError::FrameOverMessage => "max_frame_size must not exceed max_message_size",
            ConfigError::LowWaterOverHighWater => {
                "backlog_low_water must not exceed backlog_high_water"
            }
            ConfigError::BacklogTooSmall => {
                "max_backlog must be at least backlog_high_water and max_message_size + 14"
            }
            ConfigError::ReadBufferTooSmall => "read_buffer_size must be at least 1 KiB",
            ConfigError::SubscriberBacklogOverMax => {
                "max_subscriber_backlog must not exceed max_backlog"
            }
            ConfigError::CompressionLevelOutOfRange => "compression_level must be 1..=9",
            ConfigError::CompressionWindowOutOfRange => {
                "the compression window must be 9..=15 bits"
            }
            ConfigError::MemoryBudgetTooSmall => "max_memory must be at least 1 MiB",
            ConfigError::MetricsPathNotAbsolute => "metrics_path must start with /",
        })
    }
}

impl std::error::Error for ConfigError {}

/// Why a [`Server`](crate::Server) could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration's limits do not fit together.
    Config(ConfigError),
    /// The listener could not be bound or the poll set up.
    Io(std::io::Error),
    /// The TLS certificate or key is missing, unreadable, malformed or does not match.
    Tls(TlsError),
}

/// Why the TLS certificate and key could not be used: which file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    path: PathBuf,
    problem: String,
}

impl TlsError {
    pub(crate) fn new(path: &Path, problem: impl Into<String>) -> Self {
        TlsError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    /// The file at fault.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsError {}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::Tls(e) => Some(e),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Config {
    /// Checks that the limits fit together; the server refuses to start otherwise. Reports
    /// the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        let checks = [
            (self.max_connections == 0, NoConnections),
            (
                self.max_headers == 0 || self.max_headers > HEADER_ARRAY,
                MaxHeadersOutOfRange,
            ),
            (self.max_request_head < 64, RequestHeadTooSmall),
            (
                self.max_frame_size > self.max_message_size,
                FrameOverMessage,
            ),
            (
                self.backlog_low_water > self.backlog_high_water,
                LowWaterOverHighWater,
            ),
            (
                self.max_backlog < self.backlog_high_water
                    || self.max_backlog < self.max_message_size + crate::frame::MAX_HEADER_LEN,
                BacklogTooSmall,
            ),
            (self.read_buffer_size < 1024, ReadBufferTooSmall),
            (
                self.max_subscriber_backlog > self.max_backlog,
                SubscriberBacklogOverMax,
            ),
            (
                !(1..=9).contains(&self.compression_level),
                CompressionLevelOutOfRange,
            ),
            (
                matches!(self.compression, Compression::ContextTakeover { window_bits }
                    if !(9..=15).contains(&window_bits)),
                CompressionWindowOutOfRange,
            ),
            (self.max_memory < 1 << 20, MemoryBudgetTooSmall),
            (
                self.metrics_path
                    .as_ref()
                    .is_some_and(|p| !p.starts_with('/')),
                MetricsPathNotAbsolute,
            ),
        ];
        match checks.into_iter().find(|(failed, _)| *failed) {
            Some((_, problem)) => Err(problem),
            None => Ok(()),
        }
    }

    /// Timer resolution: a quarter of the shortest timeout, between 10 ms and 1 s, so a
    /// deadline fires at most 25% late while the sweep stays rare.
    pub(crate) fn timer_tick(&self) -> Duration {
        let mut shortest = self.handshake_timeout.min(self.close_timeout);
        if let Some(idle) = self.idle_timeout {
            shortest = shortest.min(idle);
        }
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn inconsistent_limits_are_refused() {
        let config = Config {
            max_backlog: 1024,
            ..Config::default()
        };
        assert!(config.validate().is_err());
        let config = Config {
            max_frame_size: 2 << 20,
            max_message_size: 1 << 20,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn timer_tick_follows_the_shortest_timeout() {
        let config = Config {
            handshake_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        assert_eq!(config.timer_tick(), Duration::from_millis(50));
        assert_eq!(Config::default().timer_tick(), Duration::from_secs(1));
    }
}
