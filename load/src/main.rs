//! Command line of the `wsrload` binary: parses arguments and hands off to the library's
//! workloads and comparison harness. Exit status 0 on a clean run, 1 on failure to run, 2 when
//! the run completed with errors (mismatched echoes, lost messages, failed connections).

use clap::{Args, Parser, Subcommand};
use load::engine::Mode;
use load::units::{parse_kind_mix, parse_rate, parse_secs, parse_size_mix, KindMix, SizeMix};
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
    #[command(flatten)]
    out: Output,
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
    /// ws://127.0.0.1:PORT/PATH
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
    /// ws://127.0.0.1:PORT/PATH
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
        progress: t.out.progress(),
    }
}

/// Writes to stdout; a closed pipe (`wsrload ... | head`) is not an error.
fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Runs the `echo` or `raw` workload and prints its report.
fn echo(mode: Mode, url: String, kinds: &KindMix, t: &Traffic) -> Result<bool, String> {
    let r = workloads::run_echo(&echo_config(mode, url, kinds, t))?;
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
            })?;
            a.out.print(&r, report::connections_summary)?;
            Ok(r.error_total == 0 && r.probe_ok)
        }
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
