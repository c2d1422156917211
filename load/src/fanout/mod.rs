//! `wsrload fanout`: S subscribers in one room and P publishers sending tagged messages at a
//! fixed total rate. Every subscriber checks each publisher's sequence (loss, duplication,
//! reordering) and times each delivery from when its message was due to be published to
//! when it arrived; the report gives deliveries per second, that latency (p50 to max), the
//! counts, and the server's CPU per delivered message (from `/proc/PID/task/*/schedstat`).
//!
//! Subscribers and publishers may connect to different URLs (`--sub-url`, `--pub-url`): two
//! servers joined by a broker are measured the same way, end to end, with the CPU of every
//! `--server-pid` summed. A run is bounded: connect, settle, warm up, one measured window,
//! a drain of at most a few seconds, close.
//!
//! This module owns the run's phases, its report and its summary; [`client`] owns the
//! sockets and the per-delivery checks, [`tag`] the tag's layout.

pub mod client;
pub mod tag;

use crate::compare::servers::{Instance, Server};
use crate::engine::Target;
use crate::payload::Kind;
use crate::progress::Progress;
use crate::report::thousands;
use crate::stats::{self, LatencySummary};
use crate::sys;
use crate::units::{parse_rate, parse_secs, parse_size};
use client::{Client, ClientConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Most subscribers plus publishers of one run (the per-process file limit here is 20,000).
pub const MAX_CONNECTIONS: usize = crate::workloads::MAX_CONNECTIONS;
/// Largest message.
pub const MAX_SIZE: usize = 1 << 20;
/// Time after the last connection opened before publishing starts: a server may join a
/// connection to its room after it has answered the upgrade (tokio peers do).
const SETTLE: Duration = Duration::from_millis(300);
/// Longest wait for subscribers to receive what was published before the counts are taken.
const DRAIN: Duration = Duration::from_secs(3);

/// Settings of a fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Where subscribers connect: `ws://127.0.0.1:PORT/room/NAME`.
    pub sub_url: String,
    /// Where publishers connect (the same room, on this or another server).
    pub pub_url: String,
    /// Subscribers.
    pub subscribers: usize,
    /// Publishers.
    pub publishers: usize,
    /// Total publish rate, messages per second.
    pub rate: f64,
    /// Message size, bytes (at least the tag: 20 binary, 40 text).
    pub size: usize,
    /// Message kind.
    pub kind: Kind,
    /// Publishing before the measured window.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// New connections per second (0: unlimited, bounded by `max_pending`).
    pub connect_rate: f64,
    /// Most connection attempts in progress at once.
    pub max_pending: usize,
    /// Server processes whose CPU is summed (one, or both ends of a broker).
    pub server_pids: Vec<i32>,
    /// CPU the generator is pinned to (recorded in the report; pinning is the caller's).
    pub generator_cpu: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
}

/// What a fan-out run saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Subscribers' URL.
    pub sub_url: String,
    /// Publishers' URL.
    pub pub_url: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Subscribers and publishers that opened.
    pub connected: usize,
    /// Publishers.
    pub publishers: usize,
    /// Total publish rate asked for, messages per second.
    pub rate: f64,
    /// Message size, bytes.
    pub size: usize,
    /// "text" or "binary".
    pub kind: String,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Messages published in the window.
    pub published: u64,
    /// Messages delivered to subscribers in the window.
    pub delivered: u64,
    /// Deliveries per second in the window.
    pub delivered_per_s: f64,
    /// Deliveries per second if every subscriber got every message published at the rate.
    pub expected_per_s: f64,
    /// Publish (when due) to receipt, of the window's deliveries.
    pub latency: LatencySummary,
    /// Messages published over the whole run (warm-up included).
    pub published_total: u64,
    /// Deliveries that never happened, over the whole run and every subscriber.
    pub lost: u64,
    /// Messages a subscriber received more than once.
    pub duplicated: u64,
    /// Messages that came after a later one of the same publisher.
    pub reordered: u64,
    /// Errors by kind (connect, closed-by-server, mismatch, publisher-backlog, ...).
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Generator CPU in the window, % of one core.
    pub generator_cpu_pct: f64,
    /// Server CPU in the window, % of one core (all `--server-pid`s summed).
    pub server_cpu_pct: Option<f64>,
    /// Server CPU nanoseconds per delivered message.
    pub server_cpu_ns_per_delivery: Option<f64>,
    /// Time the server was runnable but waited for its CPU (other processes on its core), % of
    /// the window: a server that needs more CPU than it gets falls behind by this much.
    #[serde(default)]
    pub server_wait_pct: Option<f64>,
    /// Server resident memory with everyone connected, before publishing.
    pub server_rss_bytes: Option<u64>,
    /// Which side was the limit.
    pub limit: String,
    /// CPU the generator was pinned to.
    pub generator_cpu: Option<usize>,
}

impl FanoutReport {
    /// No errors, nothing lost, duplicated or reordered.
    pub fn clean(&self) -> bool {
        self.error_total == 0 && self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

fn check(cfg: &FanoutConfig) -> Result<(), String> {
    if cfg.subscribers == 0 || cfg.publishers == 0 {
        return Err("at least one subscriber and one publisher".into());
    }
    if cfg.subscribers + cfg.publishers > MAX_CONNECTIONS {
        return Err(format!(
            "subscribers + publishers at most {MAX_CONNECTIONS}"
        ));
    }
    let min = tag::tag_len(cfg.kind);
    if cfg.size < min || cfg.size > MAX_SIZE {
        return Err(format!(
            "{} messages are {min} to {MAX_SIZE} bytes (the tag is {min})",
            cfg.kind.name()
        ));
    }
    if !(cfg.rate >= 0.1 && cfg.rate.is_finite()) {
        return Err("--rate must be at least 0.1/s".into());
    }
    if cfg.duration.is_zero() || cfg.duration > crate::workloads::MAX_DURATION {
        return Err("--duration must be above 0 and at most 600 s".into());
    }
    Ok(())
}

fn servers_cpu_ns(pids: &[i32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| sys::process_cpu_ns(p).ok()).sum()
}

/// Nanoseconds the threads of `pid` spent runnable but waiting for a CPU (the second field of
/// each `/proc/PID/task/TID/schedstat`).
fn runqueue_wait_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(s) = std::fs::read_to_string(thread.ok()?.path().join("schedstat")) else {
            continue; // a thread that ended meanwhile
        };
        total += s.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn servers_wait_ns(pids: &[i32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| runqueue_wait_ns(p)).sum()
}

/// Turns the reactor for `len`.
fn drive(c: &mut Client, len: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    while t0.elapsed() < len {
        let left = len.saturating_sub(t0.elapsed());
        c.turn(left.min(Duration::from_millis(10)))
            .map_err(|e| e.to_string())?;
        if c.live() == 0 {
            return Err("every connection closed".into());
        }
    }
    Ok(())
}

/// Opens every subscriber, then every publisher.
fn connect(c: &mut Client, cfg: &FanoutConfig, bar: &Progress) -> Result<(), String> {
    let n = cfg.subscribers + cfg.publishers;
    let paced = if cfg.connect_rate > 0.0 {
        Duration::from_secs_f64(n as f64 / cfg.connect_rate)
    } else {
        Duration::ZERO
    };
    let timeout = Duration::from_secs(10) + paced;
    let t0 = Instant::now();
    let mut attempted = 0;
    bar.phase("connecting", n as u64);
    loop {
        let allowed = if cfg.connect_rate > 0.0 {
            ((t0.elapsed().as_secs_f64() * cfg.connect_rate) as usize + 1).min(n)
        } else {
            n
        };
        let mut pending = c.connecting();
        while attempted < allowed && pending < cfg.max_pending.max(1) {
            let publisher = attempted.checked_sub(cfg.subscribers).map(|p| p as u32);
            c.connect(publisher);
            attempted += 1;
            pending += 1;
        }
        c.turn(Duration::from_millis(5))
            .map_err(|e| e.to_string())?;
        bar.set(c.opened() as u64);
        if attempted == n && c.connecting() == 0 {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "{} of {n} connections opened in {timeout:?}",
                c.opened()
            ));
        }
    }
}

/// Runs a fan-out workload.
pub fn run_fanout(cfg: &FanoutConfig) -> Result<FanoutReport, String> {
    check(cfg)?;
    let targets = [Target::parse(&cfg.sub_url)?, Target::parse(&cfg.pub_url)?];
    sys::raise_nofile();
    let mut c = Client::new(ClientConfig {
        targets,
        publishers: cfg.publishers,
        rate: cfg.rate,
        size: cfg.size,
        kind: cfg.kind,
    })
    .map_err(|e| e.to_string())?;
    let bar = Progress::new(cfg.progress);
    connect(&mut c, cfg, &bar)?;
    let connected = c.opened();
    if connected < cfg.subscribers + cfg.publishers {
        return Err(format!(
            "only {connected} of {} connections opened: {:?}",
            cfg.subscribers + cfg.publishers,
            c.errors()
        ));
    }
    drive(&mut c, SETTLE)?;
    let server_rss_bytes = match cfg.server_pids.as_slice() {
        [] => None,
        pids => pids.iter().map(|&p| sys::process_rss(p).ok()).sum(),
    };
    bar.phase("publishing", (cfg.warmup + cfg.duration).as_millis() as u64);
    c.start_publishing();
    drive(&mut c, cfg.warmup)?;
    c.set_measuring(true);
    let srv0 = servers_cpu_ns(&cfg.server_pids);
    let wait0 = servers_wait_ns(&cfg.server_pids);
    let own0 = sys::own_cpu_secs();
    let t0 = Instant::now();
    let run = drive(&mut c, cfg.duration);
    let wall = t0.elapsed().as_secs_f64();
    let own1 = sys::own_cpu_secs();
    let srv1 = servers_cpu_ns(&cfg.server_pids);
    let wait1 = servers_wait_ns(&cfg.server_pids);
    c.set_measuring(false);
    run?;
    let tally = c.tally().clone();
    c.stop_publishing();
    bar.phase("draining", 0);
    let t1 = Instant::now();
    while !c.caught_up() && t1.elapsed() < DRAIN && c.live() > 0 {
        c.turn(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
    }
    let losses = c.losses();
    let published_total = c.published_total();
    c.close_all(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    bar.finish();
    let srv_cpu = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let errors = c.errors().clone();
    let generator_cpu_pct = stats::cpu_percent(own1 - own0, wall);
    let server_cpu_pct = srv_cpu.map(|s| stats::cpu_percent(s, wall));
    Ok(FanoutReport {
        sub_url: cfg.sub_url.clone(),
        pub_url: cfg.pub_url.clone(),
        subscribers: cfg.subscribers,
        connected,
        publishers: cfg.publishers,
        rate: cfg.rate,
        size: cfg.size,
        kind: cfg.kind.name().to_string(),
        duration_s: wall,
        published: tally.published,
        delivered: tally.delivered,
        delivered_per_s: tally.delivered as f64 / wall.max(1e-9),
        expected_per_s: cfg.rate * cfg.subscribers as f64,
        latency: tally.latency.summary(),
        published_total,
        lost: losses.lost,
        duplicated: losses.duplicated,
        reordered: losses.reordered,
        error_total: errors.values().sum(),
        errors,
        generator_cpu_pct,
        server_cpu_pct,
        server_cpu_ns_per_delivery: srv_cpu
            .and_then(|s| (tally.delivered > 0).then(|| s * 1e9 / tally.delivered as f64)),
        server_wait_pct: match (wait0, wait1) {
            (Some(a), Some(b)) => Some(stats::cpu_percent(b.saturating_sub(a) as f64 / 1e9, wall)),
            _ => None,
        },
        server_rss_bytes,
        limit: stats::limit_verdict(generator_cpu_pct, server_cpu_pct).to_string(),
        generator_cpu: cfg.generator_cpu,
    })
}

/// The text report of a fan-out run.
pub fn fanout_summary(r: &FanoutReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fanout {} → {} subscribers ({}/{} connected), {} {} B, {}/s published",
        r.publishers,
        r.subscribers,
        r.connected,
        r.subscribers + r.publishers,
        r.kind,
        r.size,
        thousands(r.rate)
    );
    if r.sub_url == r.pub_url {
        let _ = writeln!(s, "  room       {}", r.sub_url);
    } else {
        let _ = writeln!(s, "  subscribe  {}\n  publish    {}", r.sub_url, r.pub_url);
    }
    let _ = writeln!(
        s,
        "  delivered  {} msg/s ({:.1} % of {} expected), {} published and {} delivered in {:.2} s",
        thousands(r.delivered_per_s),
        100.0 * r.delivered_per_s / r.expected_per_s.max(1e-9),
        thousands(r.expected_per_s),
        thousands(r.published as f64),
        thousands(r.delivered as f64),
        r.duration_s
    );
    let l = &r.latency;
    let _ = writeln!(
        s,
        "  latency    p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    let _ = writeln!(
        s,
        "  checks     {} lost, {} duplicated, {} reordered (of {} published × {} subscribers)",
        r.lost,
        r.duplicated,
        r.reordered,
        thousands(r.published_total as f64),
        r.subscribers
    );
    let _ = write!(s, "  cpu        generator {:.1} %", r.generator_cpu_pct);
    if let (Some(pct), Some(ns)) = (r.server_cpu_pct, r.server_cpu_ns_per_delivery) {
        let _ = write!(s, ", server {pct:.1} %, {ns:.0} ns per delivered message");
    }
    if let Some(w) = r.server_wait_pct {
        let _ = write!(s, ", server waited {w:.1} % for its CPU");
    }
    let _ = writeln!(s, " (limit: {})", r.limit);
    if let Some(rss) = r.server_rss_bytes {
        let _ = writeln!(
            s,
            "  memory     server RSS {:.1} MiB with everyone connected",
            rss as f64 / (1 << 20) as f64
        );
    }
    if r.error_total > 0 {
        let _ = writeln!(s, "  errors     {:?}", r.errors);
    }
    s
}

/// Arguments of `wsrload fanout`.
#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// The room, for subscribers and publishers: ws://127.0.0.1:PORT/room/NAME.
    pub url: Option<String>,
    /// Where subscribers connect instead (e.g. one server of two joined by a broker).
    #[arg(long)]
    pub sub_url: Option<String>,
    /// Where publishers connect instead.
    #[arg(long)]
    pub pub_url: Option<String>,
    /// Start this server for the run: a command with `{port}` in it (e.g.
    /// "target/release/wsreactor --listen 127.0.0.1:{port}"), stopped by its PID at the end.
    #[arg(long, value_name = "COMMAND")]
    pub server: Option<String>,
    /// The room's path on a --server.
    #[arg(long, default_value = "/room/bench")]
    pub room_path: String,
    /// Pin a --server to this CPU.
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// Subscribers.
    #[arg(short = 'S', long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publishers.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub publishers: usize,
    /// Total publish rate, e.g. 1000 or 1000/s.
    #[arg(long, default_value = "1000/s", value_parser = parse_rate)]
    pub rate: f64,
    /// Message size (at least 20 B binary, 40 B text: the sequence tag).
    #[arg(short = 's', long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// text or binary.
    #[arg(short = 'k', long, default_value = "binary", value_parser = parse_kind)]
    pub kind: Kind,
    /// Publishing before the measured window, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Measured window, seconds.
    #[arg(short = 'd', long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// New connections per second (0: unlimited).
    #[arg(long, default_value = "10000/s", value_parser = parse_rate)]
    pub connect_rate: f64,
    /// Most connection attempts in progress at once.
    #[arg(long, default_value_t = 128)]
    pub max_pending: usize,
    /// PID of the server (repeatable: the CPU of all is summed).
    #[arg(long)]
    pub server_pid: Vec<i32>,
    /// Pin the generator to this CPU.
    #[arg(long)]
    pub pin: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "text" => Ok(Kind::Text),
        "binary" => Ok(Kind::Binary),
        _ => Err(format!("{s:?}: text or binary")),
    }
}

/// Runs `wsrload fanout` and prints its report; Ok(false) when it was not clean.
pub fn run(a: &FanoutArgs) -> Result<bool, String> {
    let generator_cpu = crate::rated::pin_generator(a.pin)?;
    // A started server lives until the end of this function (stopped when dropped).
    let started: Option<Instance> = match &a.server {
        Some(cmd) => {
            let mut s = Server::command(&format!("fanout={cmd}"))?;
            s.set_path(&a.room_path)?;
            Some(s.start(a.server_cpu)?)
        }
        None => None,
    };
    let room = started
        .as_ref()
        .map(|i| i.url().to_string())
        .or(a.url.clone());
    let sub_url = a.sub_url.clone().or(room.clone());
    let pub_url = a.pub_url.clone().or(room);
    let (Some(sub_url), Some(pub_url)) = (sub_url, pub_url) else {
        return Err("give the room's URL, --sub-url and --pub-url, or --server".into());
    };
    let mut server_pids = a.server_pid.clone();
    server_pids.extend(started.as_ref().and_then(Instance::pid));
    let r = run_fanout(&FanoutConfig {
        sub_url,
        pub_url,
        subscribers: a.subscribers,
        publishers: a.publishers,
        rate: a.rate,
        size: a.size,
        kind: a.kind,
        warmup: a.warmup,
        duration: a.duration,
        connect_rate: a.connect_rate,
        max_pending: a.max_pending,
        server_pids,
        generator_cpu,
        progress: !a.quiet && !a.json,
    })?;
    let text = if a.json {
        serde_json::to_string_pretty(&r).map_err(|e| e.to_string())? + "\n"
    } else {
        fanout_summary(&r)
    };
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(r.clean())
}
