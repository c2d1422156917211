//! `compare`: the rounds and their pairing. Every round starts fresh processes of the servers
//! in the list ([`servers`]: built-in, `--server NAME=COMMAND` or `--target NAME=URL`) on free
//! 127.0.0.1 ports pinned to CPU 0 (the generator pins itself to CPU 1), runs each workload
//! against every server back to back, rotating the order, and hands the runs to [`table`],
//! which prints one table of medians with the spread, the per-round ratios to the baseline
//! server and to the raw TCP ceiling, server CPU per message and the limiting side, and writes
//! `results.md`, `results.json` and `chart.svg` to `--out-dir`. Each round ends with the
//! fan-out workloads ([`fanout`]: one room, 1 → S subscribers) against the servers with rooms.
//!
//! This module owns the arguments and the round loop ([`workload`] the shapes and the mix); it
//! does not start processes itself (that is [`servers`]) nor aggregate numbers (that is
//! [`table`]).

pub mod fanout;
pub mod servers;
pub mod table;
mod wire;
mod workload;

use crate::payload::Kind;
use crate::report::thousands;
use crate::units::{parse_kind_mix, parse_secs, parse_size_mix, KindMix, SizeMix};
use crate::workloads::{self, ConnectionsConfig, ConnectionsReport, EchoReport};
use crate::{svg, sys};
use serde::{Deserialize, Serialize};
use servers::{Instance, Launch, Server, RAW, RAW_URING};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use table::Table;
use workload::{echo_config, workload_mix};
pub use workload::{shapes, Shape};

/// Arguments of `load compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Rounds; each runs every workload against every server once.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measured window per run, seconds.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// Warm-up per run, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Where to write results.md, results.json and chart.svg.
    #[arg(long, default_value = "load/results")]
    pub out_dir: PathBuf,
    /// Idle connections for the memory workload (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Built-in WebSocket servers to compare (wsreactor, fastwebsockets, tungstenite; `none`
    /// for none of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wsreactor,fastwebsockets,tungstenite"
    )]
    pub servers: Vec<String>,
    /// Your own server, started every round: NAME=COMMAND, `{port}` in COMMAND replaced by a
    /// free port (repeatable). Pinned to the server CPU, stopped by its PID.
    #[arg(long = "server", value_name = "NAME=COMMAND")]
    pub server: Vec<String>,
    /// A server already running: NAME=ws://127.0.0.1:PORT/PATH (repeatable). Never signalled.
    #[arg(long = "target", value_name = "NAME=URL")]
    pub target: Vec<String>,
    /// PID of a --target server, NAME=PID, for its CPU per message and memory (repeatable).
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pid: Vec<String>,
    /// Request path of a started server, NAME=/PATH (repeatable; default `/`), e.g.
    /// mine=/echo for ws://127.0.0.1:{port}/echo.
    #[arg(long = "path", value_name = "NAME=/PATH")]
    pub path: Vec<String>,
    /// The server the `vs` column divides by (default: wsreactor if listed, else the first).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Skip the raw TCP ceilings (epoll and io_uring).
    #[arg(long)]
    pub no_raw: bool,
    /// Run one workload with this message mix instead of the standard shapes: a size or
    /// SIZE:WEIGHT,… (e.g. 20:80,1KiB:15,64KiB:5), over --connections with --pipeline in flight.
    #[arg(long, value_parser = parse_size_mix)]
    pub sizes: Option<SizeMix>,
    /// Kinds of the mix workload: text, binary, mixed or KIND:WEIGHT,… (default mixed).
    #[arg(long, value_parser = parse_kind_mix)]
    pub kinds: Option<KindMix>,
    /// Connections of the mix workload.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Messages in flight per connection in the mix workload.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Only workloads whose label contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Do not run `cargo build`; use binaries already built.
    #[arg(long)]
    pub no_build: bool,
    /// Directory holding the server binaries (default: cargo's release target directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Fan-out workloads: one publisher to each of these numbers of subscribers in one room
    /// (`none` for none; not run with a `--sizes`/`--kinds` mix).
    #[arg(long, value_delimiter = ',', default_value = "100,10000", value_parser = parse_fanout)]
    pub fanout: Vec<usize>,
    /// Servers of the fan-out workloads (built-ins with rooms; raw-fanout is the ceiling).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wsreactor,broadcast,raw-fanout"
    )]
    pub fanout_servers: Vec<String>,
    /// Deliveries per second each fan-out run asks for: the publish rate is this over the
    /// subscribers (100 subscribers: 2,000 messages/s; 10,000: 20/s).
    #[arg(long, default_value = "200000/s", value_parser = crate::units::parse_rate)]
    pub fanout_deliveries: f64,
    /// Do not run anything: rebuild the table and chart from a results.json written earlier.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    /// Everything over TLS, with a certificate made for the run: wsreactor and tungstenite
    /// (as peer-tungstenite-tls; a --server COMMAND gets {tls-cert} and {tls-key}), 100 × 20 B
    /// and 1 × 1 MiB echo, and the idle workload as full TLS handshakes. No raw ceiling.
    #[arg(long, conflicts_with_all = ["deflate", "sizes", "target"])]
    pub tls: bool,
    /// Compressed (permessage-deflate): the servers that have it (wsreactor, yawc), 100 × 400 B
    /// and 10 × 32 KiB JSON-like text, every echo inflated and checked. No raw ceiling.
    #[arg(long, conflicts_with = "sizes")]
    pub deflate: bool,
}

/// One echo run's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoRun {
    /// Round number from 1.
    pub round: usize,
    /// Server name.
    pub server: String,
    /// Traffic shape.
    pub shape: Shape,
    /// "text", "binary" or "raw".
    pub kind: String,
    /// The report, or why the run failed.
    pub report: Result<EchoReport, String>,
}

/// One memory run's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemRun {
    /// Round number from 1.
    pub round: usize,
    /// Server name.
    pub server: String,
    /// The report, or why the run failed.
    pub report: Result<ConnectionsReport, String>,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Rounds run.
    pub rounds: usize,
    /// Window per run, seconds.
    pub duration_s: f64,
    /// Warm-up per run, seconds.
    pub warmup_s: f64,
    /// CPU the servers ran on, if pinned.
    pub server_cpu: Option<usize>,
    /// CPU the generator ran on, if pinned.
    pub generator_cpu: Option<usize>,
    /// Echo and raw runs.
    pub echo: Vec<EchoRun>,
    /// Idle-connection runs.
    pub memory: Vec<MemRun>,
    /// Fan-out runs (absent in older files).
    #[serde(default)]
    pub fanout: Vec<fanout::FanoutRun>,
    /// The server the `vs` column divides by (absent in older files: wsreactor).
    #[serde(default)]
    pub baseline: Option<String>,
    /// The `--sizes`/`--kinds` mix the mix workload ran, e.g. "sizes 20:80,1KiB:15, kinds
    /// text:1,binary:1" (absent without one).
    #[serde(default)]
    pub mix: Option<String>,
    /// What the connections ran over besides plain WebSocket (`--tls`, `--deflate`).
    #[serde(default)]
    pub wire: Option<String>,
}

/// The list of servers the arguments name, in table order: built-ins, `--server` entries,
/// `--target` entries, then the raw ceiling.
pub fn server_list(a: &CompareArgs, bin_dir: &std::path::Path) -> Result<Vec<Server>, String> {
    let mut list = Vec::new();
    for n in &a.servers {
        let n = n.trim();
        if n.is_empty()
            || n == "none"
            || [RAW, RAW_URING, "peer-raw", "peer-raw-uring"].contains(&n)
        {
            continue;
        }
        list.push(Server::builtin(n, bin_dir)?);
    }
    for spec in &a.server {
        list.push(Server::command(spec)?);
    }
    for spec in &a.target {
        list.push(Server::target(spec)?);
    }
    for spec in &a.pid {
        let (name, pid) = servers::split_named(spec)?;
        let pid: i32 = pid.parse().map_err(|e| format!("--pid {spec:?}: {e}"))?;
        match list.iter_mut().find(|s| s.name == name) {
            Some(Server {
                launch: Launch::Target { pid: p, .. },
                ..
            }) => *p = Some(pid),
            Some(_) => return Err(format!("--pid {name}: only a --target needs a PID")),
            None => return Err(format!("--pid {name}: no --target of that name")),
        }
    }
    for spec in &a.path {
        let (name, path) = servers::split_named(spec)?;
        match list.iter_mut().find(|s| s.name == name) {
            Some(s) => s.set_path(&path)?,
            None => return Err(format!("--path {name}: no server of that name")),
        }
    }
    if !a.no_raw {
        list.push(Server::builtin(RAW, bin_dir)?);
        list.push(Server::builtin(RAW_URING, bin_dir)?);
    }
    for (i, s) in list.iter().enumerate() {
        if list[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("server name {:?} given twice", s.name));
        }
        if s.name == RAW && !s.raw {
            return Err("the name \"raw\" is the TCP ceiling's; pick another".into());
        }
    }
    if list.iter().all(|s| s.raw) {
        return Err("no WebSocket server to compare".into());
    }
    Ok(list)
}

/// A `--fanout` entry: a number of subscribers, or `none`.
fn parse_fanout(s: &str) -> Result<usize, String> {
    match s.trim() {
        "none" | "0" => Ok(0),
        n => n
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{n:?}: {e}"))
            .and_then(|n: usize| match n {
                1..=19_000 => Ok(n),
                _ => Err(format!("{n}: 1 to 19,000 subscribers")),
            }),
    }
}

/// The kinds one run of a server sends, with weights; `None` for the raw ceiling.
type UnitKinds = Option<Vec<(Kind, u32)>>;

/// Runs the comparison; Ok(false) when some run had errors.
pub fn run(a: &CompareArgs) -> Result<bool, String> {
    if let Some(p) = &a.from_json {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let results: Results =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut names: Vec<String> = Vec::new();
        for r in &results.echo {
            if !names.contains(&r.server) {
                names.push(r.server.clone());
            }
        }
        // The baseline first, the ceiling last, as in a live run.
        let base = results
            .baseline
            .clone()
            .unwrap_or_else(|| "wsreactor".into());
        names.sort_by_key(|n| (n != &base, n == RAW));
        return write_outputs(a, &results, &names, Instant::now());
    }
    if a.rounds == 0 || a.rounds > 20 {
        return Err("--rounds must be 1..=20".into());
    }
    let root = servers::workspace_root();
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => servers::target_dir(&root)?.join("release"),
    };
    let mut servers = server_list(a, &bin_dir)?;
    let run_wire = wire::adapt(a, &mut servers, &bin_dir)?;
    let fanout_servers = fanout::servers(a, &bin_dir)?;
    if !a.no_build {
        servers::build_builtins(&root, &[servers.clone(), fanout_servers.clone()].concat())?;
    }
    for s in servers.iter().chain(&fanout_servers) {
        if let Some(b) = s.builtin_binary() {
            let p = bin_dir.join(b);
            if !p.exists() {
                return Err(format!(
                    "{} not found (build it, or pass --bin-dir)",
                    p.display()
                ));
            }
        }
    }
    let baseline = match &a.baseline {
        Some(b) if servers.iter().any(|s| &s.name == b && !s.raw) => b.clone(),
        Some(b) => {
            return Err(format!(
                "--baseline {b}: not a WebSocket server in the list"
            ))
        }
        None => servers
            .iter()
            .find(|s| s.name == "wsreactor")
            .or_else(|| servers.iter().find(|s| !s.raw))
            .map(|s| s.name.clone())
            .unwrap_or_default(),
    };
    sys::raise_nofile();
    let (server_cpu, generator_cpu) = if sys::cpu_count() >= 2 {
        match sys::pin_to_cpu(1) {
            Ok(()) => (Some(0), Some(1)),
            Err(e) => {
                eprintln!("compare: cannot pin the generator ({e}); running unpinned");
                (None, None)
            }
        }
    } else {
        (None, None)
    };

    let mix = workload_mix(a)?;
    let shapes: Vec<Shape> = match (&mix, wire::shapes(a)) {
        (Some(m), _) => vec![m.shape],
        (None, Some(w)) => w,
        (None, None) => shapes(),
    };
    let keep = |label: &str| match a.only.as_deref() {
        Some(o) => label.contains(o),
        None => true,
    };
    let mut results = Results {
        rounds: a.rounds,
        duration_s: a.duration.as_secs_f64(),
        warmup_s: a.warmup.as_secs_f64(),
        server_cpu,
        generator_cpu,
        echo: Vec::new(),
        memory: Vec::new(),
        fanout: Vec::new(),
        baseline: Some(baseline.clone()),
        mix: mix.as_ref().map(|m| m.label.clone()),
        wire: run_wire.label.clone(),
    };
    let started = Instant::now();
    // What runs against each shape: every WebSocket server in text and in binary (or in the
    // mix's kinds), and the raw ceiling once.
    let ws_kinds: Vec<Vec<(Kind, u32)>> = match &mix {
        Some(m) => vec![m.kinds.clone()],
        None if a.deflate => vec![vec![(Kind::Text, 1)]],
        None => vec![vec![(Kind::Text, 1)], vec![(Kind::Binary, 1)]],
    };
    let units: Vec<(usize, UnitKinds)> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let kinds: Vec<UnitKinds> = if s.raw {
                vec![None]
            } else {
                ws_kinds.iter().cloned().map(Some).collect()
            };
            kinds.into_iter().map(move |k| (i, k))
        })
        .collect();
    for round in 1..=a.rounds {
        // Fresh processes every round, so the idle-connection figures come from a server that
        // has run nothing else yet, and a server that died in one round is back in the next.
        let mut running: Vec<Option<Instance>> = Vec::with_capacity(servers.len());
        for s in &servers {
            running.push(match s.start(server_cpu) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("compare: round {round}: {e}");
                    None
                }
            });
        }
        // Rotate the order each round so drift in machine noise does not favour one server.
        let n = servers.len();
        for i in 0..n {
            let at = (i + round - 1) % n;
            let (s, Some(srv)) = (&servers[at], &running[at]) else {
                continue;
            };
            if s.raw || a.idle == 0 || !keep("idle") {
                continue;
            }
            eprintln!(
                "compare: round {round}/{}, idle connections, {} ({:.0} s elapsed)",
                a.rounds,
                s.name,
                started.elapsed().as_secs_f64()
            );
            let r = workloads::run_connections(&ConnectionsConfig {
                url: srv.url().to_string(),
                connections: a.idle,
                connect_rate: 0.0,
                max_pending: 128,
                settle: Duration::from_secs(1),
                hold: Duration::ZERO,
                source_ips: 0,
                server_pid: srv.pid(),
                progress: !a.quiet,
                tls: run_wire.wire.tls.clone(),
            });
            if let Err(e) = &r {
                eprintln!("compare: {} idle: {e}", s.name);
            }
            results.memory.push(MemRun {
                round,
                server: s.name.clone(),
                report: r,
            });
        }
        // Workload by workload, every server back to back: the runs a ratio compares are
        // seconds apart, not a server's whole round apart, so the VM's drift in speed over
        // minutes cancels out of the ratios.
        let offset = (round - 1) * units.len() / a.rounds;
        let kind_name = |kind: &UnitKinds| match kind.as_deref() {
            None => "raw",
            Some([(k, _)]) => k.name(),
            Some(_) => "mixed",
        };
        for shape in &shapes {
            let kept = |(_, kind): &(usize, UnitKinds)| {
                keep(&format!("{} {}", shape.label(), kind_name(kind)))
            };
            if !units.iter().any(kept) {
                continue;
            }
            eprintln!(
                "compare: round {round}/{}, {} ({:.0} s elapsed)",
                a.rounds,
                shape.label(),
                started.elapsed().as_secs_f64()
            );
            for j in 0..units.len() {
                let unit = &units[(j + offset) % units.len()];
                let (at, kind) = unit;
                let (s, Some(srv)) = (&servers[*at], &running[*at]) else {
                    continue;
                };
                if !kept(unit) {
                    continue;
                }
                let name = kind_name(kind);
                let sizes = match &mix {
                    Some(m) => m.sizes.clone(),
                    None => vec![(shape.size, 1)],
                };
                let mut cfg = echo_config(a, s, srv, shape, sizes, kind.clone());
                cfg.wire = run_wire.wire.clone();
                let r = workloads::run_echo(&cfg);
                match &r {
                    Ok(rep) => eprintln!(
                        "  {:<15} {:<6} {:>12} msg/s  server {:>6.1}%  gen {:>5.1}%  errors {}",
                        s.name,
                        name,
                        thousands(rep.msgs_per_s),
                        rep.server_cpu_pct.unwrap_or(f64::NAN),
                        rep.generator_cpu_pct,
                        rep.error_total
                    ),
                    Err(e) => eprintln!("  {} {name}: {e}", s.name),
                }
                results.echo.push(EchoRun {
                    round,
                    server: s.name.clone(),
                    shape: *shape,
                    kind: name.to_string(),
                    report: r,
                });
            }
        }
        drop(running);
        fanout::run_round(
            a,
            round,
            &fanout_servers,
            server_cpu,
            generator_cpu,
            started,
            &mut results.fanout,
        );
    }

    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    write_outputs(a, &results, &names, started)
}

/// Prints the table and writes results.md, results.json and chart.svg; Ok(false) when some
/// run had errors.
fn write_outputs(
    a: &CompareArgs,
    results: &Results,
    names: &[String],
    started: Instant,
) -> Result<bool, String> {
    let results = results.clone();
    let table = Table::build(&results, names);
    let md = table.markdown(&results)
        + &wire::wire_bytes_section(&results, names)
        + &fanout::markdown(
            &results.fanout,
            results.baseline.as_deref().unwrap_or("wsreactor"),
        );
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{md}");
    }
    std::fs::create_dir_all(&a.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", a.out_dir.display()))?;
    let write = |name: &str, body: &str| -> Result<(), String> {
        let p = a.out_dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    write("results.md", &md)?;
    write(
        "results.json",
        &serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?,
    )?;
    write("chart.svg", &svg::chart(&table.chart_data()))?;
    eprintln!(
        "compare: wrote results.md, results.json and chart.svg to {} ({:.0} s)",
        a.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    let clean = results
        .echo
        .iter()
        .all(|r| matches!(&r.report, Ok(x) if x.error_total == 0))
        && results
            .memory
            .iter()
            .all(|r| matches!(&r.report, Ok(x) if x.error_total == 0 && x.probe_ok))
        && results
            .fanout
            .iter()
            .all(|r| matches!(&r.report, Ok(x) if x.error_total == 0));
    Ok(clean)
}
