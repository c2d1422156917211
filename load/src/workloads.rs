//! The workloads: `echo` (WebSocket) and `raw` (plain TCP) drive the engine through connect,
//! warm-up, a measured window and a drain; `connections` opens and holds idle WebSocket
//! connections to measure handshake rate and server memory per connection. Each returns a
//! serialisable report; CPU and memory of the server are sampled from /proc at the window edges.

use crate::engine::tls::TlsOptions;
use crate::engine::{auto_source_ips, Engine, EngineConfig, Mode, Target, Wire};
use crate::payload::{Kind, Mix};
use crate::progress::Progress;
use crate::stats::{self, LatencySummary};
use crate::sys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Largest message size accepted (16 MiB).
pub const MAX_SIZE: usize = 16 << 20;
/// Most connections one run may open (the per-process file limit here is 20,000).
pub const MAX_CONNECTIONS: usize = 19_500;
/// Longest measured window.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// Settings of an echo or raw run.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// WebSocket or raw TCP.
    pub mode: Mode,
    /// The URL given on the command line.
    pub url: String,
    /// Connections.
    pub connections: usize,
    /// Message sizes in bytes, with weights (one size: every message has it).
    pub sizes: Vec<(usize, u32)>,
    /// Text or binary, with weights (WebSocket only; raw TCP ignores it).
    pub kinds: Vec<(Kind, u32)>,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Total fixed rate in messages per second, or as fast as echoes return.
    pub rate: Option<f64>,
    /// Time before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// New connections per second while connecting (0 = no limit).
    pub connect_rate: f64,
    /// Most connection attempts in progress at once.
    pub max_pending: usize,
    /// Loopback source addresses (0 = automatic).
    pub source_ips: usize,
    /// The server's PID, for its CPU time.
    pub server_pid: Option<i32>,
    /// Paced sends go out when due (a timerfd); `false` batches them per millisecond poll, the
    /// pacing before the timer (`--ms-pacing`, which `callgrind.sh` uses so its counts stay
    /// comparable with earlier ones).
    pub send_timer: bool,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// TLS trust for `wss://` URLs, and `--deflate`.
    pub wire: Wire,
}

/// Result of an echo or raw run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoReport {
    /// "echo" or "raw".
    pub workload: String,
    /// Target URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened.
    pub connected: usize,
    /// Message size in bytes (the largest, for a mix of sizes).
    pub size: usize,
    /// "text", "binary", "mixed" (a mix of both) or "raw".
    pub kind: String,
    /// Echoes checked in the window per shape of the mix (one entry without a mix).
    #[serde(default)]
    pub mix: Vec<MixCount>,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Fixed total rate, if any.
    pub rate: Option<f64>,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Length of the measured window in seconds.
    pub duration_s: f64,
    /// Echoes received and checked in the window.
    pub messages: u64,
    /// Echoes per second.
    pub msgs_per_s: f64,
    /// Payload MiB/s sent.
    pub mib_per_s_sent: f64,
    /// Payload MiB/s received.
    pub mib_per_s_recv: f64,
    /// Round-trip latency.
    pub latency: LatencySummary,
    /// Errors by kind (whole run).
    pub errors: BTreeMap<String, u64>,
    /// Sum of all errors.
    pub error_total: u64,
    /// Generator CPU as % of one core over the window.
    pub generator_cpu_pct: f64,
    /// Generator CPU µs per message.
    pub generator_cpu_us_per_msg: Option<f64>,
    /// Server CPU as % of one core over the window.
    pub server_cpu_pct: Option<f64>,
    /// Server CPU µs per message.
    pub server_cpu_us_per_msg: Option<f64>,
    /// CPU used by everything else on the machine during the window, % of one core
    /// (a noisy neighbour shows here).
    pub other_cpu_pct: Option<f64>,
    /// Which side was the limit.
    pub limit: String,
    /// `--deflate`: bytes on the wire against payload bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<crate::report::CompressionReport>,
}

/// One shape of a mix and how many of its echoes came back intact in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixCount {
    /// Message size in bytes.
    pub size: usize,
    /// "text", "binary" or "raw".
    pub kind: String,
    /// Relative weight asked for.
    pub weight: u32,
    /// Echoes received and checked in the window.
    pub messages: u64,
}

impl EchoConfig {
    /// The mix these settings describe (raw TCP: the sizes only).
    pub fn mix(&self) -> Result<Mix, String> {
        match self.mode {
            // --deflate sends JSON text, whatever the kinds.
            Mode::WebSocket if self.wire.deflate => Mix::new(&self.sizes, &[(Kind::Text, 1)]),
            Mode::WebSocket => Mix::new(&self.sizes, &self.kinds),
            Mode::Raw => Mix::new(&self.sizes, &[(Kind::Binary, 1)]),
        }
    }
}

fn check_common(connections: usize, duration: Duration) -> Result<(), String> {
    if connections == 0 || connections > MAX_CONNECTIONS {
        return Err(format!("connections must be 1..={MAX_CONNECTIONS}"));
    }
    if duration > MAX_DURATION {
        return Err(format!("duration at most {} s", MAX_DURATION.as_secs()));
    }
    Ok(())
}

/// Opens connections up to `want`, at `rate` per second since `start` with at most
/// `max_pending` in progress.
fn open_more(
    eng: &mut Engine,
    attempted: &mut usize,
    want: usize,
    start: Instant,
    rate: f64,
    max_pending: usize,
    depth: usize,
) {
    let allowed = if rate > 0.0 {
        ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(want)
    } else {
        want
    };
    while *attempted < allowed && eng.connecting() < max_pending.max(1) {
        *attempted += 1;
        let _ = eng.connect(depth, None); // failures are counted by the engine
    }
}

/// Connects `n` connections with the given depth; returns when all opened or failed, or at the
/// timeout: `grace` plus the time pacing at `rate` per second takes (none when unpaced).
#[allow(clippy::too_many_arguments)]
pub(crate) fn connect_phase(
    eng: &mut Engine,
    n: usize,
    depth: usize,
    rate: f64,
    max_pending: usize,
    grace: Duration,
    bar: &Progress,
) -> Result<(), String> {
    let timeout = grace
        + if rate > 0.0 {
            Duration::from_secs_f64(n as f64 / rate)
        } else {
            Duration::ZERO
        };
    let start = Instant::now();
    let mut attempted = 0;
    bar.phase("connecting", n as u64);
    loop {
        open_more(eng, &mut attempted, n, start, rate, max_pending, depth);
        eng.turn(Duration::from_millis(5))
            .map_err(|e| e.to_string())?;
        bar.set(eng.opened() as u64);
        if attempted >= n && eng.connecting() == 0 {
            break;
        }
        if start.elapsed() > timeout {
            let missing = eng.connecting() as u64 + (n - attempted) as u64;
            eng.count_error("connect-timeout", missing);
            break;
        }
    }
    Ok(())
}

/// "text", "binary", "mixed" (both kinds in the mix) or "raw".
pub(crate) fn kind_label(mode: Mode, mix: &Mix) -> String {
    match mode {
        Mode::WebSocket => {
            let first = mix.entries()[0].payload.kind();
            if mix.entries().iter().all(|e| e.payload.kind() == first) {
                first.name().into()
            } else {
                "mixed".into()
            }
        }
        Mode::Raw => "raw".into(),
    }
}

/// The mix's shapes with the echoes checked per shape (`by_shape`, in the mix's order).
pub(crate) fn mix_counts(mode: Mode, mix: &Mix, by_shape: &[u64]) -> Vec<MixCount> {
    mix.entries()
        .iter()
        .enumerate()
        .map(|(i, e)| MixCount {
            size: e.payload.size(),
            kind: match mode {
                Mode::WebSocket => e.payload.kind().name().into(),
                Mode::Raw => "raw".into(),
            },
            weight: e.weight,
            messages: by_shape.get(i).copied().unwrap_or(0),
        })
        .collect()
}

/// Runs the `echo` or `raw` workload.
pub fn run_echo(cfg: &EchoConfig) -> Result<EchoReport, String> {
    check_common(cfg.connections, cfg.duration)?;
    let mix = cfg.mix()?;
    if mix.max_size() > MAX_SIZE {
        return Err(format!("size at most {MAX_SIZE} bytes"));
    }
    if cfg.mode == Mode::Raw && mix.entries().iter().any(|e| e.payload.size() == 0) {
        return Err("raw messages need at least 1 byte".into());
    }
    if cfg.pipeline == 0 {
        return Err("pipeline depth must be at least 1".into());
    }
    let target = Target::parse(&cfg.url)?;
    sys::raise_nofile();
    let source_ips = if cfg.source_ips == 0 {
        auto_source_ips(cfg.connections)
    } else {
        cfg.source_ips
    };
    let mut eng = Engine::new(EngineConfig {
        mode: cfg.mode,
        target,
        mix: mix.clone(),
        rate: cfg.rate,
        rate_connections: cfg.connections,
        source_ips,
        send_timer: cfg.send_timer,
        wire: cfg.wire.clone(),
    })
    .map_err(|e| e.to_string())?;
    let bar = Progress::new(cfg.progress);
    connect_phase(
        &mut eng,
        cfg.connections,
        cfg.pipeline,
        cfg.connect_rate,
        cfg.max_pending,
        Duration::from_secs(10),
        &bar,
    )?;
    let connected = eng.opened();
    if connected == 0 {
        bar.finish();
        return Err(format!("no connection could be opened: {:?}", eng.errors()));
    }

    // Warm-up: traffic flows, nothing is counted.
    let run_len = cfg.warmup + cfg.duration;
    bar.phase("warm-up", run_len.as_millis() as u64);
    let begin = Instant::now();
    while begin.elapsed() < cfg.warmup {
        eng.turn(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
        bar.set(begin.elapsed().as_millis() as u64);
    }

    // Measured window.
    let ticks = sys::clock_ticks_per_sec();
    let srv0 = cfg.server_pid.and_then(|p| sys::process_cpu_ticks(p).ok());
    let own0 = sys::own_cpu_secs();
    let own_ticks0 = sys::process_cpu_ticks(std::process::id() as i32).ok();
    let busy0 = sys::machine_busy_ticks();
    eng.set_measuring(true);
    let t0 = Instant::now();
    bar.phase("measuring", run_len.as_millis() as u64);
    let mut last_draw = t0;
    while t0.elapsed() < cfg.duration {
        let left = cfg.duration.saturating_sub(t0.elapsed());
        eng.turn(left.min(Duration::from_millis(10)))
            .map_err(|e| e.to_string())?;
        if last_draw.elapsed() >= Duration::from_millis(100) {
            last_draw = Instant::now();
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            bar.set(begin.elapsed().as_millis() as u64);
            bar.message(format!(
                "{:.0} msg/s, {} errors",
                eng.tally().recv_msgs as f64 / secs,
                eng.errors().values().sum::<u64>()
            ));
        }
        if eng.live() == 0 {
            break;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let own1 = sys::own_cpu_secs();
    let srv1 = cfg.server_pid.and_then(|p| sys::process_cpu_ticks(p).ok());
    let own_ticks1 = sys::process_cpu_ticks(std::process::id() as i32).ok();
    let busy1 = sys::machine_busy_ticks();
    eng.set_measuring(false);
    let tally = eng.tally().clone();

    // Drain: every message sent must come back.
    eng.stop_sending();
    bar.phase("draining", 0);
    let drain_limit = Duration::from_secs(3)
        + Duration::from_secs_f64((mix.max_size() * cfg.pipeline) as f64 / 50e6);
    let d0 = Instant::now();
    while eng.in_flight() > 0 && d0.elapsed() < drain_limit && eng.live() > 0 {
        eng.turn(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
    }
    let unanswered = eng.in_flight() as u64;
    eng.count_error("no-echo", unanswered);
    eng.close_all(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    bar.finish();

    let msgs = tally.recv_msgs;
    let gen_cpu = own1 - own0;
    let gen_pct = stats::cpu_percent(gen_cpu, wall);
    let srv_cpu = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(stats::ticks_to_secs(b.saturating_sub(a), ticks)),
        _ => None,
    };
    let srv_pct = srv_cpu.map(|c| stats::cpu_percent(c, wall));
    let other_pct = match (busy0, busy1, own_ticks0, own_ticks1, srv0, srv1) {
        (Some(b0), Some(b1), Some(o0), Some(o1), Some(s0), Some(s1)) => {
            let ours = (o1 - o0) + (s1.saturating_sub(s0));
            let other = b1.saturating_sub(b0).saturating_sub(ours);
            Some(stats::cpu_percent(stats::ticks_to_secs(other, ticks), wall))
        }
        _ => None,
    };
    let errors = eng.errors().clone();
    Ok(EchoReport {
        workload: match cfg.mode {
            Mode::WebSocket => "echo".into(),
            Mode::Raw => "raw".into(),
        },
        url: cfg.url.clone(),
        connections: cfg.connections,
        connected,
        size: mix.max_size(),
        kind: kind_label(cfg.mode, &mix),
        mix: mix_counts(cfg.mode, &mix, &tally.recv_by_shape),
        pipeline: cfg.pipeline,
        rate: cfg.rate,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: wall,
        messages: msgs,
        msgs_per_s: msgs as f64 / wall.max(1e-9),
        mib_per_s_sent: stats::mib_per_s(tally.sent_bytes, wall),
        mib_per_s_recv: stats::mib_per_s(tally.recv_bytes, wall),
        latency: tally.latency.summary(),
        error_total: errors.values().sum(),
        errors,
        generator_cpu_pct: gen_pct,
        generator_cpu_us_per_msg: stats::cpu_us_per_msg(gen_cpu, msgs),
        server_cpu_pct: srv_pct,
        server_cpu_us_per_msg: srv_cpu.and_then(|c| stats::cpu_us_per_msg(c, msgs)),
        other_cpu_pct: other_pct,
        limit: stats::limit_verdict(gen_pct, srv_pct).into(),
        compression: cfg
            .wire
            .deflate
            .then(|| crate::report::CompressionReport::from_tally(&tally)),
    })
}

/// Settings of a `connections` run.
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    /// Target URL.
    pub url: String,
    /// Idle connections to open and hold.
    pub connections: usize,
    /// New connections per second (0 = no limit).
    pub connect_rate: f64,
    /// Most connection attempts in progress at once.
    pub max_pending: usize,
    /// Time to let the server settle before measuring memory.
    pub settle: Duration,
    /// Extra time to hold the connections after the memory sample.
    pub hold: Duration,
    /// Loopback source addresses (0 = automatic, at least 2).
    pub source_ips: usize,
    /// The server's PID, for its memory.
    pub server_pid: Option<i32>,
    /// Draw a progress bar.
    pub progress: bool,
    /// TLS trust for a `wss://` URL (every handshake a full one unless it asks to resume).
    pub tls: TlsOptions,
}

/// Result of a `connections` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionsReport {
    /// "connections".
    pub workload: String,
    /// Target URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened.
    pub opened: usize,
    /// Connections still open after settling.
    pub held: usize,
    /// Seconds from the first connect to the last handshake.
    pub open_s: f64,
    /// Completed handshakes per second.
    pub handshakes_per_s: f64,
    /// Server CPU time (user and kernel, all threads) from the first connect to the last
    /// handshake, per connection opened, in µs. The generator may saturate before the server
    /// does, so this ranks servers where the rate cannot.
    pub server_cpu_us_per_handshake: Option<f64>,
    /// Server VmRSS before opening, bytes.
    pub server_rss_before: Option<u64>,
    /// Server VmRSS with all connections open and settled, bytes.
    pub server_rss_after: Option<u64>,
    /// (after - before) / opened.
    pub server_bytes_per_conn: Option<f64>,
    /// An echo on a fresh connection worked while the others were open.
    pub probe_ok: bool,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Sum of all errors.
    pub error_total: u64,
}

/// Number of probe messages on the fresh connection.
const PROBE_MESSAGES: u64 = 10;

/// Runs the `connections` workload.
pub fn run_connections(cfg: &ConnectionsConfig) -> Result<ConnectionsReport, String> {
    check_common(cfg.connections, Duration::ZERO)?;
    let target = Target::parse(&cfg.url)?;
    let limit = sys::raise_nofile();
    if (limit as usize) < cfg.connections + 64 {
        return Err(format!(
            "open-file limit {limit} is too low for {} connections",
            cfg.connections
        ));
    }
    let source_ips = if cfg.source_ips == 0 {
        auto_source_ips(cfg.connections).max(2)
    } else {
        cfg.source_ips
    };
    let mut eng = Engine::new(EngineConfig {
        mode: Mode::WebSocket,
        target,
        mix: Mix::single(64, Kind::Text),
        rate: None,
        rate_connections: 1,
        source_ips,
        send_timer: false, // nothing is paced
        wire: Wire {
            tls: cfg.tls.clone(),
            deflate: false,
        },
    })
    .map_err(|e| e.to_string())?;
    let bar = Progress::new(cfg.progress);
    let rss_before = cfg.server_pid.and_then(|p| sys::process_rss(p).ok());
    let cpu_before = cfg.server_pid.and_then(|p| sys::process_cpu_ns(p).ok());
    let start = Instant::now();
    connect_phase(
        &mut eng,
        cfg.connections,
        0,
        cfg.connect_rate,
        cfg.max_pending,
        Duration::from_secs(20),
        &bar,
    )?;
    let cpu_after = cfg.server_pid.and_then(|p| sys::process_cpu_ns(p).ok());
    let opened = eng.opened();
    let open_s = eng
        .last_open_at()
        .map(|t| t.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(0.0);
    bar.phase("settling", cfg.settle.as_millis() as u64);
    let s0 = Instant::now();
    while s0.elapsed() < cfg.settle {
        eng.turn(Duration::from_millis(20))
            .map_err(|e| e.to_string())?;
        bar.set(s0.elapsed().as_millis() as u64);
    }
    let rss_after = cfg.server_pid.and_then(|p| sys::process_rss(p).ok());
    let held = eng.live();
    let h0 = Instant::now();
    while h0.elapsed() < cfg.hold {
        eng.turn(Duration::from_millis(20))
            .map_err(|e| e.to_string())?;
    }

    // Probe: a fresh connection must still echo.
    bar.phase("probe", PROBE_MESSAGES);
    let errors_before: u64 = eng.errors().values().sum();
    let done_before = eng.completed_total();
    let _ = eng.connect(1, Some(PROBE_MESSAGES));
    let p0 = Instant::now();
    while eng.completed_total() - done_before < PROBE_MESSAGES
        && p0.elapsed() < Duration::from_secs(5)
    {
        eng.turn(Duration::from_millis(10))
            .map_err(|e| e.to_string())?;
        bar.set(eng.completed_total() - done_before);
    }
    let probe_done = eng.completed_total() - done_before;
    let errors_after: u64 = eng.errors().values().sum();
    let probe_ok = probe_done == PROBE_MESSAGES && errors_after == errors_before;
    if !probe_ok {
        eng.count_error("probe-failed", 1);
    }
    bar.phase("closing", 0);
    eng.close_all(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    bar.finish();
    let errors = eng.errors().clone();
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    Ok(ConnectionsReport {
        workload: "connections".into(),
        url: cfg.url.clone(),
        connections: cfg.connections,
        opened,
        held,
        open_s,
        handshakes_per_s: if open_s > 0.0 {
            opened as f64 / open_s
        } else {
            0.0
        },
        server_cpu_us_per_handshake: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if opened > 0 => {
                Some(a.saturating_sub(b) as f64 / 1e3 / opened as f64)
            }
            _ => None,
        },
        server_rss_before: rss_before,
        server_rss_after: rss_after,
        server_bytes_per_conn: per_conn,
        probe_ok,
        error_total: errors.values().sum(),
        errors,
    })
}
