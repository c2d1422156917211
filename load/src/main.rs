//! Command line of the `wsrload` binary: parses arguments and hands off to the library's
//! workloads and comparison harness. Exit status 0 on a clean run, 1 on failure to run, 2 when
//! the run completed with errors (mismatched echoes, lost messages, failed connections).

use clap::{Args, Parser, Subcommand};
use load::engine::tls::{TlsOptions, TlsTrust};
use load::engine::{Mode, Wire};
use load::search::{self, SearchConfig};
use load::units::{
    parse_duration, parse_kind_mix, parse_latency, parse_rate, parse_secs, parse_size_mix, KindMix,
    SizeMix,
};
use load::workloads::{self, ConnectionsConfig, EchoConfig};
use load::{compare, report};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "wsrload",
    version,
    about = "Load generator and comparison harness for wsreactor"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// WebSocket echo load against ws://127.0.0.1:PORT/PATH.
    Echo(EchoArgs),
    /// The same traffic shape over plain TCP against a TCP echo server (the ceiling).
    Raw(RawArgs),
    /// Open and hold idle WebSocket connections; handshake rate and server memory.
    Connections(ConnArgs),
    /// S subscribers in one room, P publishers at a fixed rate: deliveries, latency, loss.
    Fanout(load::fanout::FanoutArgs),
    /// Build and run wsreactor and its peers side by side; write a table and a chart.
    Compare(compare::CompareArgs),
}

#[derive(Args, Debug)]
struct Traffic {
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Message size (bytes, or with K/KiB/M/MiB), 0 to 16 MiB; or a weighted mix of sizes,
    /// SIZE:WEIGHT,… (e.g. 20:80,1KiB:15,64KiB:5: 80 % of messages are 20 B).
    #[arg(short = 's', long = "sizes", visible_alias = "size", default_value = "20", value_parser = parse_size_mix)]
    sizes: SizeMix,
    /// Messages in flight per connection.
    #[arg(short = 'p', long, default_value_t = 1)]
    pipeline: usize,
    /// Fixed total rate in messages per second, e.g. 5000 or 5000/s (default: as fast as
    /// echoes come back).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Warm-up before the measured window, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    warmup: Duration,
    /// Measured window, seconds.
    #[arg(short = 'd', long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// New connections per second while connecting, e.g. 500/s (0: unlimited).
    #[arg(long, default_value = "10000/s", value_parser = parse_rate)]
    connect_rate: f64,
    /// Most connection attempts in progress at once.
    #[arg(long, default_value_t = 128)]
    max_pending: usize,
    /// Loopback source addresses 127.0.0.1..=N to spread over (0: one per 16,000 connections).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// PID of the server, to report its CPU time per message.
    #[arg(long)]
    server_pid: Option<i32>,
    /// Pace sends on the millisecond poll (batched per millisecond, up to 1 ms late) instead of
    /// a timer when they are due; `callgrind.sh` uses it to count as it did before the timer.
    #[arg(long)]
    ms_pacing: bool,
    #[command(flatten)]
    modes: RateModes,
    #[command(flatten)]
    tls: TlsArgs,
    /// Offer permessage-deflate (no context takeover either way), send JSON-like text
    /// (--kinds is not used) compressed, and check every echo after inflating it; reports
    /// the bytes on the wire against the payload.
    #[arg(long)]
    deflate: bool,
    #[command(flatten)]
    out: Output,
}

/// Trust for `wss://` URLs.
#[derive(Args, Debug)]
struct TlsArgs {
    /// wss://: trust the certificates in this PEM file (the server's self-signed certificate
    /// or its CA); the server's name (the URL's host) is verified against them.
    #[arg(long, help_heading = "TLS (wss://)")]
    tls_ca: Option<std::path::PathBuf>,
    /// wss://: accept any certificate without verifying it (loopback testing only).
    #[arg(long, conflicts_with = "tls_ca", help_heading = "TLS (wss://)")]
    tls_insecure: bool,
    /// wss://: resume TLS sessions when reconnecting (default: every handshake is a full one).
    #[arg(long, help_heading = "TLS (wss://)")]
    tls_resume: bool,
}

impl TlsArgs {
    fn options(&self) -> TlsOptions {
        TlsOptions {
            trust: match (&self.tls_ca, self.tls_insecure) {
                (Some(p), _) => TlsTrust::Ca(p.clone()),
                (None, true) => TlsTrust::Insecure,
                (None, false) => TlsTrust::Unset,
            },
            resume: self.tls_resume,
        }
    }
}

/// Open-loop modes: arrival-rate phases and the latency-bounded rate search.
#[derive(Args, Debug)]
struct RateModes {
    /// Arrival-rate phases instead of one window: DURATION@RATE or DURATION@FROM..TO (a linear
    /// ramp), comma-separated, e.g. 10s@1000,20s@1000..5000,10s@0 (0: connections held idle).
    /// Rates are totals over all connections; -d and --rate are not used.
    #[arg(long, value_parser = load::phases::parse_phase_list, conflicts_with_all = ["rate", "p99"])]
    phases: Option<load::phases::Phases>,
    /// Find the highest total rate whose p99 latency stays at or under this (e.g. 5ms, 800us):
    /// step up, bisect, repeat the answer. -d and --rate are not used.
    #[arg(long, value_parser = parse_latency, conflicts_with = "rate")]
    p99: Option<Duration>,
    /// --p99: the first rate tried.
    #[arg(long, default_value = "1000/s", value_parser = parse_rate, help_heading = "Rate search (--p99)")]
    start_rate: f64,
    /// --p99: the highest rate tried.
    #[arg(long, default_value = "2000000/s", value_parser = parse_rate, help_heading = "Rate search (--p99)")]
    max_rate: f64,
    /// --p99: factor between step-up rates.
    #[arg(long, default_value_t = 2.0, help_heading = "Rate search (--p99)")]
    growth: f64,
    /// --p99: bisect until (first bad - last good) / last good is at most this.
    #[arg(long, default_value_t = 0.05, help_heading = "Rate search (--p99)")]
    precision: f64,
    /// --p99: measured time per step (lengthened, up to 20 s, to see --min-samples echoes).
    #[arg(long, default_value = "2s", value_parser = parse_duration, help_heading = "Rate search (--p99)")]
    step: Duration,
    /// --p99: unmeasured traffic at a step's rate before its window.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, help_heading = "Rate search (--p99)")]
    step_warmup: Duration,
    /// --p99: fewest echoes a step must measure to pass.
    #[arg(long, default_value_t = 2000, help_heading = "Rate search (--p99)")]
    min_samples: u64,
    /// --p99: times the answer is measured again before it is reported.
    #[arg(long, default_value_t = 1, help_heading = "Rate search (--p99)")]
    repeats: usize,
    /// --p99: times a failing step-up or bisection step is measured again before it counts.
    #[arg(long, default_value_t = 1, help_heading = "Rate search (--p99)")]
    retries: usize,
    /// --p99: most steps in all.
    #[arg(long, default_value_t = 30, help_heading = "Rate search (--p99)")]
    max_steps: usize,
    /// Pin the generator to this CPU (--phases and --p99; put the server on another one,
    /// e.g. with taskset).
    #[arg(long)]
    pin: Option<usize>,
    /// --phases and --p99: also write the report as JSON and Markdown (and, for --p99, the
    /// latency-rate curve as curve.svg) into this directory.
    #[arg(long)]
    out_dir: Option<std::path::PathBuf>,
}

/// How a report is shown.
#[derive(Args, Debug)]
struct Output {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl Output {
    /// A progress bar only for a human reading a text report.
    fn progress(&self) -> bool {
        !self.quiet && !self.json
    }

    /// Prints `report` as JSON or as the text `summary` makes of it.
    fn print<T: serde::Serialize>(
        &self,
        report: &T,
        summary: fn(&T) -> String,
    ) -> Result<(), String> {
        if self.json {
            let s = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
            out(&format!("{s}\n"));
        } else {
            out(&summary(report));
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
struct EchoArgs {
    /// ws://127.0.0.1:PORT/PATH or wss://…
    url: String,
    /// Message type: text, binary, mixed (half each), or weighted, e.g. text:30,binary:70.
    #[arg(short = 'k', long = "kinds", visible_alias = "kind", default_value = "binary", value_parser = parse_kind_mix)]
    kinds: KindMix,
    #[command(flatten)]
    t: Traffic,
}

#[derive(Args, Debug)]
struct RawArgs {
    /// tcp://127.0.0.1:PORT (or 127.0.0.1:PORT)
    url: String,
    #[command(flatten)]
    t: Traffic,
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// ws://127.0.0.1:PORT/PATH or wss://… (every TLS handshake a full one)
    url: String,
    /// Idle connections to open and hold (at most 19,500).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    connections: usize,
    /// New connections per second, e.g. 500/s (0: unlimited, bounded by --max-pending).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    connect_rate: f64,
    /// Most connection attempts in progress at once.
    #[arg(long, default_value_t = 128)]
    max_pending: usize,
    /// Seconds to let the server settle before sampling its memory.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    settle: Duration,
    /// Seconds to keep holding the connections after the sample.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    hold: Duration,
    /// Loopback source addresses (0: automatic, at least 2).
    #[arg(long, default_value_t = 0)]
    source_ips: usize,
    /// PID of the server, to report its memory per connection.
    #[arg(long)]
    server_pid: Option<i32>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    out: Output,
}

fn echo_config(mode: Mode, url: String, kinds: &KindMix, t: &Traffic) -> EchoConfig {
    EchoConfig {
        mode,
        url,
        connections: t.connections,
        sizes: t.sizes.0.clone(),
        kinds: kinds.0.clone(),
        pipeline: t.pipeline,
        rate: t.rate,
        warmup: t.warmup,
        duration: t.duration,
        connect_rate: t.connect_rate,
        max_pending: t.max_pending,
        source_ips: t.source_ips,
        server_pid: t.server_pid,
        send_timer: !t.ms_pacing,
        progress: t.out.progress(),
        wire: Wire {
            tls: t.tls.options(),
            deflate: t.deflate,
        },
    }
}

/// Writes to stdout; a closed pipe (`wsrload ... | head`) is not an error.
fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Writes `files` (name, contents) into `dir`.
fn write_files(dir: &std::path::Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    eprintln!(
        "wsrload: wrote {} to {}",
        files.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
        dir.display()
    );
    Ok(())
}

fn json<T: serde::Serialize>(r: &T) -> Result<String, String> {
    serde_json::to_string_pretty(r).map_err(|e| e.to_string())
}

/// Runs `--phases` and prints (and writes) its report.
fn phases(cfg: &EchoConfig, phases: &[load::phases::Phase], t: &Traffic) -> Result<bool, String> {
    let r = load::phases::run_phases(cfg, phases, t.modes.pin, !t.out.quiet)?;
    t.out.print(&r, load::phases::phases_summary)?;
    if let Some(dir) = &t.modes.out_dir {
        write_files(
            dir,
            &[
                ("phases.json", json(&r)?),
                ("phases.md", load::phases::phases_summary(&r)),
            ],
        )?;
    }
    Ok(r.error_total == 0)
}

/// Runs the `--p99` search and prints (and writes) its report and curve.
fn p99_search(cfg: &EchoConfig, target: Duration, t: &Traffic) -> Result<bool, String> {
    let m = &t.modes;
    let sc = SearchConfig {
        target,
        start_rate: m.start_rate,
        max_rate: m.max_rate,
        growth: m.growth,
        precision: m.precision,
        step: m.step,
        step_warmup: m.step_warmup,
        min_samples: m.min_samples,
        repeats: m.repeats,
        retries: m.retries,
        max_steps: m.max_steps,
        ..SearchConfig::default()
    };
    let r = search::run_search(cfg, &sc, m.pin, !t.out.quiet)?;
    t.out.print(&r, search::search_summary)?;
    if let Some(dir) = &m.out_dir {
        write_files(
            dir,
            &[
                ("search.json", json(&r)?),
                ("search.md", search::search_summary(&r)),
                ("curve.svg", load::svg::curve(&search::curve_chart(&r))),
            ],
        )?;
    }
    Ok(r.error_total == 0)
}

/// Runs the `echo` or `raw` workload (one window, `--phases` or a `--p99` search) and prints
/// its report.
fn echo(mode: Mode, url: String, kinds: &KindMix, t: &Traffic) -> Result<bool, String> {
    let cfg = echo_config(mode, url, kinds, t);
    if let Some(p) = &t.modes.phases {
        return phases(&cfg, &p.0, t);
    }
    if let Some(target) = t.modes.p99 {
        return p99_search(&cfg, target, t);
    }
    let r = workloads::run_echo(&cfg)?;
    t.out.print(&r, report::echo_summary)?;
    Ok(r.error_total == 0)
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.cmd {
        Cmd::Echo(a) => echo(Mode::WebSocket, a.url, &a.kinds, &a.t),
        Cmd::Raw(a) => echo(
            Mode::Raw,
            a.url,
            &KindMix(vec![(load::payload::Kind::Binary, 1)]),
            &a.t,
        ),
        Cmd::Connections(a) => {
            let r = workloads::run_connections(&ConnectionsConfig {
                url: a.url,
                connections: a.connections,
                connect_rate: a.connect_rate,
                max_pending: a.max_pending,
                settle: a.settle,
                hold: a.hold,
                source_ips: a.source_ips,
                server_pid: a.server_pid,
                progress: a.out.progress(),
                tls: a.tls.options(),
            })?;
            a.out.print(&r, report::connections_summary)?;
            Ok(r.error_total == 0 && r.probe_ok)
        }
        Cmd::Fanout(a) => load::fanout::run(&a),
        Cmd::Compare(a) => compare::run(&a),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("wsrload: {e}");
            ExitCode::FAILURE
        }
    }
}
