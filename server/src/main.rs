//! The `wsreactor` binary: an echo server with a live demo page, and every limit and timeout
//! on the command line.
//!
//! Owns argument parsing, signal handling and logging of start/stop. The protocol and the
//! event loop live in the library, and what is served (echo, the page, the stats push) in
//! [`wsreactor_server::app`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use wsreactor::{BrokerUrl, Compression, Config, MultiServer, SlowSubscriber, TlsFiles};
use wsreactor_server::app::{self, App};
use wsreactor_server::logger::{self, Filter, LogFormat};
use wsreactor_server::rooms::RoomCounts;
use wsreactor_server::static_files::StaticFiles;

/// Milliseconds between stats pushes unless `--stats-interval-ms` says otherwise: the one
/// default that is the binary's own (the library's `Config::tick_interval` is off by default).
const DEFAULT_STATS_INTERVAL_MS: u64 = 1_000;

/// A WebSocket echo server: one mio reactor per thread. Plain HTTP on the same port serves a
/// live demo page; a WebSocket on /stats receives the server's figures every interval.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value_t = Config::default().listen)]
    listen: SocketAddr,
    /// Reactor threads, each with its own listener on the address (SO_REUSEPORT); 0: one per
    /// core this process may run on (its CPU affinity: `taskset -c 1` means one).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Most connections held at once (any state).
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Most connections still in their HTTP handshake.
    #[arg(long, default_value_t = Config::default().max_pending_handshakes)]
    max_pending_handshakes: usize,
    /// Largest request head in bytes (larger: 431).
    #[arg(long, default_value_t = Config::default().max_request_head)]
    max_request_head: usize,
    /// Most request headers (more: 431).
    #[arg(long, default_value_t = Config::default().max_headers)]
    max_headers: usize,
    /// Largest frame payload in bytes (larger: close 1009).
    #[arg(long, default_value_t = Config::default().max_frame_size)]
    max_frame_size: usize,
    /// Largest message in bytes (larger: close 1009).
    #[arg(long, default_value_t = Config::default().max_message_size)]
    max_message_size: usize,
    /// Unwritten output (bytes) above which a connection stops being read.
    #[arg(long, default_value_t = Config::default().backlog_high_water)]
    backlog_high_water: usize,
    /// Unwritten output (bytes) below which a paused connection is read again.
    #[arg(long, default_value_t = Config::default().backlog_low_water)]
    backlog_low_water: usize,
    /// Unwritten output (bytes) at which a connection is dropped.
    #[arg(long, default_value_t = Config::default().max_backlog)]
    max_backlog: usize,
    /// Server-wide memory budget in bytes for what all connections hold together; near it the
    /// heaviest holders are paused, then refused, then closed (1013).
    #[arg(long, default_value_t = Config::default().max_memory)]
    max_memory: usize,
    /// Milliseconds allowed for the request head.
    #[arg(long, default_value_t = millis(Config::default().handshake_timeout))]
    handshake_timeout_ms: u64,
    /// Seconds without input before an open connection is pinged, then closed (0: never).
    #[arg(long, default_value_t = Config::default().idle_timeout.map_or(0, |t| t.as_secs()))]
    idle_timeout_s: u64,
    /// Close at the idle timeout instead of pinging first.
    #[arg(long)]
    no_auto_ping: bool,
    /// Milliseconds to wait for the peer's close frame.
    #[arg(long, default_value_t = millis(Config::default().close_timeout))]
    close_timeout_ms: u64,
    /// A subprotocol to accept (repeatable); the first the client offers wins.
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// An Origin allowed to connect (repeatable); none given: any origin.
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// Size of the shared read buffer in bytes.
    #[arg(long, default_value_t = Config::default().read_buffer_size)]
    read_buffer_size: usize,
    /// Serve this folder over plain HTTP instead of the built-in demo page.
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Milliseconds between stats pushes to WebSockets on /stats (0: no push).
    #[arg(long, default_value_t = DEFAULT_STATS_INTERVAL_MS)]
    stats_interval_ms: u64,
    /// Echo messages whose first frame announces at least this many bytes, and is still
    /// arriving, in parts as they arrive (one fragment per read) instead of whole (0: always
    /// echo whole messages).
    #[arg(long, value_name = "BYTES", default_value_t = app::DEFAULT_STREAM_FROM)]
    stream_from: u64,
    /// A room member's (topic subscriber's) unwritten output, in bytes, above which a message
    /// published to it is not queued (see --slow-subscriber).
    #[arg(long, default_value_t = Config::default().max_subscriber_backlog)]
    max_subscriber_backlog: usize,
    /// What a subscriber over --max-subscriber-backlog gets: `close` (1008, nothing after it)
    /// or `drop` (it misses those messages).
    #[arg(long, value_enum, default_value_t = SlowPolicy::from(Config::default().slow_subscriber))]
    slow_subscriber: SlowPolicy,
    /// Longest topic (room) name in bytes.
    #[arg(long, default_value_t = Config::default().max_topic_name)]
    max_topic_name: usize,
    /// Most topics one connection subscribes to.
    #[arg(long, default_value_t = Config::default().max_topics_per_connection)]
    max_topics_per_connection: usize,
    /// permessage-deflate: `no-context-takeover` negotiates it (each message compressed on
    /// its own; no per-connection compression state), `context-takeover` keeps each
    /// direction's window across messages where the client allows it (up to
    /// 2^--compression-window-bits + 4 KiB bytes per connection), `off` never negotiates it.
    /// The binary's default is on: the library's is off.
    #[arg(long, value_enum, default_value_t = CompressionArg::NoContextTakeover)]
    compression: CompressionArg,
    /// With `--compression context-takeover`: the largest LZ77 window either side may use,
    /// 9..=15 bits.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    compression_window_bits: u8,
    /// With `--compression context-takeover`: live compressors (and as many decompressors)
    /// each reactor keeps parked between messages; a connection without one resumes its
    /// stream from its window.
    #[arg(long, default_value_t = Config::default().compression_live)]
    compression_live: usize,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = Config::default().compression_threshold)]
    compression_threshold: usize,
    /// zlib level for what is sent, 1 (fastest) to 9 (smallest).
    #[arg(long, default_value_t = Config::default().compression_level)]
    compression_level: u32,
    /// Serve TLS (wss:// and the page over https://) with this certificate chain (PEM, leaf
    /// first) on the same port; needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain TCP through io_uring (multishot accept and receive, one submit per loop
    /// turn) instead of epoll; falls back to epoll, with a warning saying why, where the
    /// kernel refuses it, and with --tls-cert.
    #[arg(long)]
    io_uring: bool,
    /// Path on the WebSocket port that answers GET with the Prometheus exposition.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_METRICS_PATH)]
    metrics_path: String,
    /// Serve no metrics on the WebSocket port (--metrics-listen still does).
    #[arg(long)]
    no_metrics: bool,
    /// Serve GET /metrics on this address instead, from a thread of its own; the WebSocket
    /// port then serves no metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Attach to a Redis pub/sub broker, `redis://HOST:PORT[/PREFIX]`, so that rooms span
    /// every server attached to it (channels `PREFIX:ROOM`, prefix `wsreactor` by default).
    /// The server starts even if the broker is unreachable, and connects when it can.
    #[arg(long, value_name = "URL")]
    broker: Option<BrokerUrl>,
    /// Least severe level logged: off, error, warn, info, debug (refused upgrades), trace.
    /// Overrides RUST_LOG, which also takes `target=level` directives.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// `text` (`wsreactor: message key=value`) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Where the binary serves metrics on its WebSocket port unless told otherwise. The library
/// serves none by default; the binary is an operator's tool, listening on loopback unless
/// given `--listen`, and its figures are what an operator wants to scrape.
const DEFAULT_METRICS_PATH: &str = "/metrics";

/// `--slow-subscriber`, as the command line spells [`SlowSubscriber`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SlowPolicy {
    Close,
    Drop,
}

impl From<SlowSubscriber> for SlowPolicy {
    fn from(policy: SlowSubscriber) -> Self {
        match policy {
            SlowSubscriber::Close => SlowPolicy::Close,
            SlowSubscriber::Drop => SlowPolicy::Drop,
        }
    }
}

impl From<SlowPolicy> for SlowSubscriber {
    fn from(policy: SlowPolicy) -> Self {
        match policy {
            SlowPolicy::Close => SlowSubscriber::Close,
            SlowPolicy::Drop => SlowSubscriber::Drop,
        }
    }
}

/// `--compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CompressionArg {
    /// Never negotiate permessage-deflate.
    Off,
    /// Negotiate it without context takeover in either direction.
    NoContextTakeover,
    /// Negotiate it with context takeover where the client allows it.
    ContextTakeover,
}

impl Args {
    fn config(&self) -> Config {
        Config {
            listen: self.listen,
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_pending_handshakes,
            max_request_head: self.max_request_head,
            max_headers: self.max_headers,
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            backlog_high_water: self.backlog_high_water,
            backlog_low_water: self.backlog_low_water,
            max_backlog: self.max_backlog,
            max_memory: self.max_memory,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            idle_timeout: (self.idle_timeout_s > 0)
                .then(|| Duration::from_secs(self.idle_timeout_s)),
            auto_ping: !self.no_auto_ping,
            close_timeout: Duration::from_millis(self.close_timeout_ms),
            subprotocols: self.subprotocols.clone(),
            allowed_origins: self.allowed_origins.clone(),
            read_buffer_size: self.read_buffer_size,
            tick_interval: (self.stats_interval_ms > 0)
                .then(|| Duration::from_millis(self.stats_interval_ms)),
            // Not an option: the library's default. Every field is listed (no `..`), so a new
            // one in `Config` is a compile error here until it gets an option or a line.
            abort_on_panic: Config::default().abort_on_panic,
            max_subscriber_backlog: self.max_subscriber_backlog,
            slow_subscriber: self.slow_subscriber.into(),
            max_topic_name: self.max_topic_name,
            max_topics_per_connection: self.max_topics_per_connection,
            compression: match self.compression {
                CompressionArg::Off => Compression::Off,
                CompressionArg::NoContextTakeover => Compression::NoContextTakeover,
                CompressionArg::ContextTakeover => Compression::ContextTakeover {
                    window_bits: self.compression_window_bits,
                },
            },
            compression_live: self.compression_live,
            compression_threshold: self.compression_threshold,
            compression_level: self.compression_level,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            io_uring: self.io_uring,
            metrics_path: (!self.no_metrics && self.metrics_listen.is_none())
                .then(|| self.metrics_path.clone()),
            metrics_listen: self.metrics_listen,
            broker: self.broker.clone(),
        }
    }

    /// `--log-level`, else `RUST_LOG`, else `info`.
    fn log_filter(&self) -> Result<Filter, String> {
        match &self.log_level {
            Some(level) => Filter::parse(level),
            None => Filter::parse(&std::env::var("RUST_LOG").unwrap_or_default()),
        }
    }
}

/// A duration as whole milliseconds, for an option's default (saturating: no default comes
/// near `u64::MAX` ms).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.log_filter() {
        Ok(filter) => logger::install(filter, args.log_format),
        Err(e) => {
            eprintln!("wsreactor: {e}");
            return ExitCode::FAILURE;
        }
    }
    let files = match &args.static_dir {
        None => StaticFiles::embedded(),
        Some(dir) => match StaticFiles::dir(dir) {
            Ok(files) => files,
            Err(e) => {
                log::error!("cannot serve {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let counts = RoomCounts::default();
    let make_app = |_thread| {
        App::new(files.clone(), args.stats_interval_ms)
            .with_stream_from((args.stream_from > 0).then_some(args.stream_from))
            .with_room_counts(counts.clone())
    };
    let server = match MultiServer::bind(args.config(), args.threads, make_app) {
        Ok(server) => server,
        Err(e) => {
            log::error!("cannot start on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // No signal thread: the handler runs on whatever thread the signal interrupts, so a
    // one-thread server stays a single-threaded process. That matters for speed, not only
    // tidiness: while a process has a second thread, every doubling of its descriptor table
    // waits for an RCU grace period, which cut the handshake rate of a freshly started server
    // by 40% (`MultiServer` grows the table before its second thread starts, for that reason).
    for signal in [SIGINT, SIGTERM] {
        let shutdown = server.shutdown_handle();
        // SAFETY: the action only stores an atomic flag and writes to eventfds
        // (`ShutdownHandle::shutdown`), both async-signal-safe: no allocation, no lock.
        let registered =
            unsafe { signal_hook::low_level::register(signal, move || shutdown.shutdown()) };
        if let Err(e) = registered {
            log::warn!("no handler for signal {signal}: {e}");
        }
    }
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let addr = server.local_addr();
    let config = args.config();
    let broker = config
        .broker
        .as_ref()
        .map_or_else(|| "off".to_string(), BrokerUrl::to_string);
    let metrics = match (server.metrics_addr(), &config.metrics_path) {
        (Some(listen), _) => format!("http://{listen}/metrics"),
        (None, Some(path)) => format!("{scheme}://{addr}{path}"),
        (None, None) => "off".to_string(),
    };
    // Alone on its line, as every server of this repository prints it: scripts and tests
    // (load/, tests/browser/, tests/common) read the address at the end of this line.
    log::info!("listening on {addr}");
    log::info!(
        threads = server.threads(),
        tls = args.tls_cert.is_some(),
        io = server.io_backend(),
        compression:? = args.compression,
        max_connections = config.max_connections,
        max_message_size = config.max_message_size,
        max_memory = config.max_memory,
        idle_timeout_s = args.idle_timeout_s,
        metrics = metrics.as_str(),
        broker = broker.as_str();
        "options"
    );
    match files.root() {
        Some(root) => log::info!("serving {} over HTTP", root.display()),
        None => log::info!("demo page at {scheme}://{addr}/"),
    }
    match server.run() {
        Ok(stopped) => {
            let stats = wsreactor::total_stats(&stopped);
            log::info!(
                opened = stats.opened,
                messages_in = stats.messages_in,
                messages_out = stats.messages_out,
                refused = stats.refused,
                protocol_errors = stats.protocol_errors,
                handler_panics = stats.handler_panics;
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("reactor failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no options the binary runs the library's defaults, plus its own stats push and
    /// compression.
    #[test]
    fn no_options_give_the_library_defaults() {
        let args = Args::try_parse_from(["wsreactor"]).expect("no options parse");
        let expected = Config {
            tick_interval: Some(Duration::from_millis(DEFAULT_STATS_INTERVAL_MS)),
            compression: Compression::NoContextTakeover,
            metrics_path: Some(DEFAULT_METRICS_PATH.to_string()),
            ..Config::default()
        };
        // Config has no PartialEq; its Debug output lists every field.
        assert_eq!(format!("{:?}", args.config()), format!("{expected:?}"));
        assert_eq!(args.stream_from, app::DEFAULT_STREAM_FROM);
    }

    #[test]
    fn a_metrics_address_takes_metrics_off_the_websocket_port() {
        let args = Args::try_parse_from(["wsreactor", "--metrics-listen", "127.0.0.1:9100"])
            .expect("options parse");
        let config = args.config();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(config.metrics_path, None);
        let args = Args::try_parse_from(["wsreactor", "--no-metrics"]).expect("options parse");
        assert_eq!(args.config().metrics_path, None);
        let args = Args::try_parse_from(["wsreactor", "--metrics-path", "/m"]).expect("parse");
        assert_eq!(args.config().metrics_path.as_deref(), Some("/m"));
    }

    #[test]
    fn a_broker_url_is_checked_when_the_options_are_parsed() {
        let args = Args::try_parse_from(["wsreactor", "--broker", "redis://127.0.0.1:6379/chat"])
            .expect("options parse");
        let broker = args.config().broker.expect("a broker");
        assert_eq!(broker.prefix(), "chat:");
        for bad in [
            "127.0.0.1:6379",
            "redis://",
            "redis://h:port",
            "nats://127.0.0.1:4222",
        ] {
            assert!(
                Args::try_parse_from(["wsreactor", "--broker", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn zero_turns_the_idle_timeout_and_the_push_off() {
        let args =
            Args::try_parse_from(["wsreactor", "--idle-timeout-s", "0"]).expect("options parse");
        assert_eq!(args.config().idle_timeout, None);
        let args =
            Args::try_parse_from(["wsreactor", "--stats-interval-ms", "0"]).expect("options parse");
        assert_eq!(args.config().tick_interval, None);
    }
}
