//! `load compare`: builds wsreactor and the peers, starts them all every round on free
//! 127.0.0.1 ports pinned to CPU 0 (the generator pins itself to CPU 1), runs each workload
//! against every server back to back, and prints one table of medians with the spread, the
//! per-round ratios to wsreactor and to the raw TCP ceiling, server CPU per message and the
//! limiting side. Writes `results.md`, `results.json` and `chart.svg` to `--out-dir`.
//! Only processes it started are signalled, by PID.

use crate::engine::Mode;
use crate::payload::Kind;
use crate::report::{size_label, thousands};
use crate::stats::{spread, Spread};
use crate::units::parse_secs;
use crate::workloads::{self, ConnectionsConfig, ConnectionsReport, EchoConfig, EchoReport};
use crate::{svg, sys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    /// WebSocket servers to compare (wsreactor, fastwebsockets, tungstenite).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wsreactor,fastwebsockets,tungstenite"
    )]
    pub servers: Vec<String>,
    /// Skip the raw TCP ceiling.
    #[arg(long)]
    pub no_raw: bool,
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
    /// Do not run anything: rebuild the table and chart from a results.json written earlier.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
}

/// One echo traffic shape of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shape {
    /// Connections.
    pub connections: usize,
    /// Message size.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
}

impl Shape {
    /// "100 x 20 B, 16 in flight".
    pub fn label(&self) -> String {
        format!(
            "{} x {}{}",
            self.connections,
            size_label(self.size),
            if self.pipeline > 1 {
                format!(" p{}", self.pipeline)
            } else {
                String::new()
            }
        )
    }
}

/// The shapes every server runs, in text and in binary.
pub fn shapes() -> Vec<Shape> {
    let s = |connections, size, pipeline| Shape {
        connections,
        size,
        pipeline,
    };
    vec![
        s(100, 20, 1),
        s(100, 20, 16),
        s(100, 1024, 1),
        s(10, 16 * 1024, 1),
        s(1, 1 << 20, 1),
    ]
}

/// A server under test.
#[derive(Debug, Clone)]
struct Server {
    name: String,
    bin: String,
    raw: bool,
}

fn server_for(name: &str) -> Result<Server, String> {
    let (bin, raw) = match name {
        "wsreactor" => ("wsreactor", false),
        "tungstenite" | "peer-tungstenite" => ("peer-tungstenite", false),
        "fastwebsockets" | "peer-fastwebsockets" => ("peer-fastwebsockets", false),
        "raw" | "peer-raw" => ("peer-raw", true),
        other => return Err(format!("unknown server {other:?}")),
    };
    Ok(Server {
        name: bin.trim_start_matches("peer-").to_string(),
        bin: bin.to_string(),
        raw,
    })
}

/// The workspace root: the parent of this crate's manifest directory when it exists,
/// else the current directory.
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    match here.parent() {
        Some(p) if p.join("Cargo.toml").exists() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// cargo's target directory for the workspace (honours CARGO_TARGET_DIR and config).
fn target_dir(root: &Path) -> Result<PathBuf, String> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err("cargo metadata failed".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    v.get("target_directory")
        .and_then(|t| t.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata: no target_directory".into())
}

fn cargo_build(root: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!("compare: cargo build --release {}", args.join(" "));
    let st = Command::new("cargo")
        .arg("build")
        .arg("--release")
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !st.success() {
        return Err(format!("cargo build --release {} failed", args.join(" ")));
    }
    Ok(())
}

/// A started server; stopped (SIGTERM, then SIGKILL) by PID when dropped.
struct Running {
    child: Child,
    addr: String,
}

impl Running {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn start(bin: &Path, cpu: Option<usize>) -> Result<Running, String> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(&addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpu) = cpu {
            // SAFETY: only sched_setaffinity (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || sys::pin_to_cpu(cpu));
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take();
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(stderr) = stderr {
            // Drain the server's stderr for its whole life so it never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut ready = false;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if !ready && line.contains("listening on") {
                        ready = true;
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let mut running = Running { child, addr };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(_) => Ok(running),
            Err(_) => {
                let status = running.child.try_wait().ok().flatten();
                Err(format!(
                    "{} did not print 'listening on' within 15 s (exit status {status:?})",
                    bin.display()
                ))
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child by its PID.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
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
}

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
        // wsreactor first, the ceiling last, as in a live run.
        names.sort_by_key(|n| (n != "wsreactor", n == "raw"));
        return write_outputs(a, &results, &names, Instant::now());
    }
    if a.rounds == 0 || a.rounds > 20 {
        return Err("--rounds must be 1..=20".into());
    }
    let mut servers: Vec<Server> = a
        .servers
        .iter()
        .map(|s| server_for(s.trim()))
        .collect::<Result<_, _>>()?;
    servers.retain(|s| !s.raw);
    if !a.no_raw {
        servers.push(server_for("raw")?);
    }
    let root = workspace_root();
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => target_dir(&root)?.join("release"),
    };
    if !a.no_build {
        if servers.iter().any(|s| s.bin == "wsreactor") {
            cargo_build(&root, &["-p", "wsreactor-server", "--bin", "wsreactor"])?;
        }
        if servers.iter().any(|s| s.bin.starts_with("peer-")) {
            cargo_build(&root, &["-p", "peers"])?;
        }
    }
    for s in &servers {
        let p = bin_dir.join(&s.bin);
        if !p.exists() {
            return Err(format!(
                "{} not found (build it, or pass --bin-dir)",
                p.display()
            ));
        }
    }
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

    let shapes: Vec<Shape> = shapes();
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
    };
    let started = Instant::now();
    // What runs against each shape: every WebSocket server in text and in binary, and the
    // raw ceiling once.
    let units: Vec<(usize, Option<Kind>)> = servers
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let kinds: &[Option<Kind>] = if s.raw {
                &[None]
            } else {
                &[Some(Kind::Text), Some(Kind::Binary)]
            };
            kinds.iter().map(move |k| (i, *k))
        })
        .collect();
    for round in 1..=a.rounds {
        // Fresh processes every round, so the idle-connection figures come from a server that
        // has run nothing else yet, and a server that died in one round is back in the next.
        let mut running: Vec<Option<Running>> = Vec::with_capacity(servers.len());
        for s in &servers {
            running.push(match Running::start(&bin_dir.join(&s.bin), server_cpu) {
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
                url: format!("ws://{}/", srv.addr),
                connections: a.idle,
                connect_rate: 0.0,
                max_pending: 128,
                settle: Duration::from_secs(1),
                hold: Duration::ZERO,
                source_ips: 0,
                server_pid: Some(srv.pid()),
                progress: !a.quiet,
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
        let kind_name = |kind: Option<Kind>| kind.map(|k| k.name()).unwrap_or("raw");
        for shape in &shapes {
            let kept = |&(_, kind): &(usize, Option<Kind>)| {
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
                let unit = units[(j + offset) % units.len()];
                let (at, kind) = unit;
                let (s, Some(srv)) = (&servers[at], &running[at]) else {
                    continue;
                };
                if !kept(&unit) {
                    continue;
                }
                let name = kind_name(kind);
                let r = workloads::run_echo(&echo_config(a, s, srv, shape, kind));
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
    }

    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    write_outputs(a, &results, &names, started)
}

/// One echo run of `shape` against server `s` (running as `srv`): the raw workload for the
/// raw ceiling (`kind` is then `None`), else WebSocket messages of `kind`.
fn echo_config(
    a: &CompareArgs,
    s: &Server,
    srv: &Running,
    shape: &Shape,
    kind: Option<Kind>,
) -> EchoConfig {
    EchoConfig {
        mode: if s.raw { Mode::Raw } else { Mode::WebSocket },
        url: if s.raw {
            format!("tcp://{}", srv.addr)
        } else {
            format!("ws://{}/", srv.addr)
        },
        connections: shape.connections,
        size: shape.size,
        kind: kind.unwrap_or(Kind::Binary),
        pipeline: shape.pipeline,
        rate: None,
        warmup: a.warmup,
        duration: a.duration,
        connect_rate: 10_000.0,
        max_pending: 128,
        source_ips: 0,
        server_pid: Some(srv.pid()),
        progress: !a.quiet,
    }
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
    let md = table.markdown(&results);
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
            .all(|r| matches!(&r.report, Ok(x) if x.error_total == 0 && x.probe_ok));
    Ok(clean)
}

/// Aggregated figures of one (workload, server) cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Echoes per second.
    pub msgs: Spread,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// Median server CPU µs per message.
    pub server_us: Option<f64>,
    /// Median server CPU %.
    pub server_pct: Option<f64>,
    /// Median generator CPU %.
    pub gen_pct: f64,
    /// Median CPU used by other processes, % of a core.
    pub other_pct: Option<f64>,
    /// Most frequent limit verdict.
    pub limit: String,
    /// Errors over all rounds.
    pub errors: u64,
    /// Runs that failed outright.
    pub failed: usize,
    /// Per-round msg/s over wsreactor's in the same round (see [`paired`]).
    pub vs_ours: Option<Spread>,
    /// Per-round msg/s over the raw ceiling's in the same round.
    pub vs_raw: Option<Spread>,
    /// Per-round server CPU per message over the raw ceiling's in the same round.
    pub cpu_vs_raw: Option<Spread>,
}

fn median(v: &[f64]) -> Option<f64> {
    spread(v).map(|s| s.median)
}

fn aggregate(reports: &[&EchoReport], failed: usize) -> Option<Cell> {
    if reports.is_empty() {
        return None;
    }
    let f = |g: &dyn Fn(&EchoReport) -> f64| reports.iter().map(|r| g(r)).collect::<Vec<_>>();
    let g = |g: &dyn Fn(&EchoReport) -> Option<f64>| {
        reports.iter().filter_map(|r| g(r)).collect::<Vec<_>>()
    };
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports {
        *verdicts.entry(r.limit.as_str()).or_insert(0) += 1;
    }
    let limit = verdicts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(v, _)| v.to_string())
        .unwrap_or_default();
    Some(Cell {
        msgs: spread(&f(&|r| r.msgs_per_s))?,
        p50_us: median(&f(&|r| r.latency.p50_us)).unwrap_or(0.0),
        p99_us: median(&f(&|r| r.latency.p99_us)).unwrap_or(0.0),
        server_us: median(&g(&|r| r.server_cpu_us_per_msg)),
        server_pct: median(&g(&|r| r.server_cpu_pct)),
        gen_pct: median(&f(&|r| r.generator_cpu_pct)).unwrap_or(0.0),
        other_pct: median(&g(&|r| r.other_cpu_pct)),
        limit,
        errors: reports.iter().map(|r| r.error_total).sum(),
        failed,
        vs_ours: None,
        vs_raw: None,
        cpu_vs_raw: None,
    })
}

/// The successful runs of one server on one workload, by round.
fn by_round<'a>(
    res: &'a Results,
    server: &str,
    shape: Shape,
    kind: &str,
) -> BTreeMap<usize, &'a EchoReport> {
    res.echo
        .iter()
        .filter(|r| r.server == server && r.shape == shape && r.kind == kind)
        .filter_map(|r| Some((r.round, r.report.as_ref().ok()?)))
        .collect()
}

/// Median and range of `metric(a) / metric(b)` over the rounds both have. Each round runs
/// every server on a workload back to back, so each ratio compares two runs taken seconds
/// apart: paired like this, the machine's drift between rounds cancels, where a ratio of
/// medians taken over different rounds would carry it.
fn paired(
    a: &BTreeMap<usize, &EchoReport>,
    b: &BTreeMap<usize, &EchoReport>,
    metric: fn(&EchoReport) -> Option<f64>,
) -> Option<Spread> {
    let ratios: Vec<f64> = a
        .iter()
        .filter_map(|(round, x)| {
            let (num, den) = (metric(x)?, metric(b.get(round)?)?);
            (den > 0.0).then(|| num / den)
        })
        .collect();
    spread(&ratios)
}

fn msgs_per_s(r: &EchoReport) -> Option<f64> {
    Some(r.msgs_per_s)
}

fn server_us_per_msg(r: &EchoReport) -> Option<f64> {
    r.server_cpu_us_per_msg
}

/// Median memory figures of one server.
#[derive(Debug, Clone)]
pub struct MemCell {
    /// Server bytes per idle connection.
    pub bytes: Spread,
    /// Handshakes per second.
    pub handshakes: Spread,
    /// Server CPU µs per handshake, when measured.
    pub cpu_per_handshake: Option<Spread>,
    /// Probes that worked / runs.
    pub probes_ok: usize,
    /// Runs.
    pub runs: usize,
    /// Errors over all rounds.
    pub errors: u64,
    /// Connections opened (median).
    pub opened: f64,
}

/// The comparison table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Server names, wsreactor first if present.
    pub servers: Vec<String>,
    /// (shape, kind) rows with one optional cell per server.
    pub rows: Vec<((Shape, String), BTreeMap<String, Cell>)>,
    /// Raw ceiling per shape.
    pub raw: BTreeMap<Shape, Cell>,
    /// Memory per server.
    pub memory: BTreeMap<String, MemCell>,
}

impl Table {
    /// Aggregates all runs.
    pub fn build(res: &Results, names: &[String]) -> Table {
        let ws: Vec<String> = names.iter().filter(|n| *n != "raw").cloned().collect();
        let mut rows = Vec::new();
        for shape in shapes() {
            let raw_runs = by_round(res, "raw", shape, "raw");
            for kind in ["text", "binary"] {
                let ours = by_round(res, "wsreactor", shape, kind);
                let mut cells = BTreeMap::new();
                for s in &ws {
                    let runs: Vec<&EchoRun> = res
                        .echo
                        .iter()
                        .filter(|r| &r.server == s && r.shape == shape && r.kind == kind)
                        .collect();
                    let ok: Vec<&EchoReport> =
                        runs.iter().filter_map(|r| r.report.as_ref().ok()).collect();
                    if let Some(mut c) = aggregate(&ok, runs.len() - ok.len()) {
                        let mine = by_round(res, s, shape, kind);
                        c.vs_ours = paired(&mine, &ours, msgs_per_s);
                        c.vs_raw = paired(&mine, &raw_runs, msgs_per_s);
                        c.cpu_vs_raw = paired(&mine, &raw_runs, server_us_per_msg);
                        cells.insert(s.clone(), c);
                    }
                }
                if !cells.is_empty() {
                    rows.push(((shape, kind.to_string()), cells));
                }
            }
        }
        let mut raw = BTreeMap::new();
        for shape in shapes() {
            let runs: Vec<&EchoRun> = res
                .echo
                .iter()
                .filter(|r| r.server == "raw" && r.shape == shape)
                .collect();
            let ok: Vec<&EchoReport> = runs.iter().filter_map(|r| r.report.as_ref().ok()).collect();
            if let Some(mut c) = aggregate(&ok, runs.len() - ok.len()) {
                let one = Spread {
                    median: 1.0,
                    min: 1.0,
                    max: 1.0,
                };
                c.vs_raw = Some(one);
                c.cpu_vs_raw = c.server_us.map(|_| one);
                raw.insert(shape, c);
            }
        }
        let mut memory = BTreeMap::new();
        for s in &ws {
            let ok: Vec<&ConnectionsReport> = res
                .memory
                .iter()
                .filter(|r| &r.server == s)
                .filter_map(|r| r.report.as_ref().ok())
                .collect();
            let bytes: Vec<f64> = ok.iter().filter_map(|r| r.server_bytes_per_conn).collect();
            let hs: Vec<f64> = ok.iter().map(|r| r.handshakes_per_s).collect();
            if let (Some(b), Some(h)) = (spread(&bytes), spread(&hs)) {
                memory.insert(
                    s.clone(),
                    MemCell {
                        bytes: b,
                        handshakes: h,
                        cpu_per_handshake: spread(
                            &ok.iter()
                                .filter_map(|r| r.server_cpu_us_per_handshake)
                                .collect::<Vec<_>>(),
                        ),
                        probes_ok: ok.iter().filter(|r| r.probe_ok).count(),
                        runs: ok.len(),
                        errors: ok.iter().map(|r| r.error_total).sum(),
                        opened: median(&ok.iter().map(|r| r.opened as f64).collect::<Vec<_>>())
                            .unwrap_or(0.0),
                    },
                );
            }
        }
        Table {
            servers: ws,
            rows,
            raw,
            memory,
        }
    }

    /// The Markdown report.
    pub fn markdown(&self, res: &Results) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## wsreactor vs peers: echo over loopback\n");
        let pin = match (res.server_cpu, res.generator_cpu) {
            (Some(a), Some(b)) => format!("server pinned to CPU {a}, generator to CPU {b}"),
            _ => "unpinned".to_string(),
        };
        let _ = writeln!(
            s,
            "{} round(s), {:.1} s measured after {:.1} s warm-up per run, {pin}; {} CPUs. \
             Medians over rounds, spread is min–max. Each round runs every server on a workload \
             back to back, and the `vs` columns are medians of the ratios within a round (range \
             in brackets): `vs wsreactor` is the server's msg/s over wsreactor's, `vs raw` over \
             the raw TCP echo ceiling's for the same shape, and `srv CPU vs raw` the server's \
             CPU per message over the raw echo's. \
             `srv µs/msg` is the server's CPU time (utime+stime) per echoed message; `limit` \
             says which side saturated its core (≥ 95 %); `others` is CPU used by other processes \
             during the window (noise: figures from runs with high `others` are suspect).\n",
            res.rounds,
            res.duration_s,
            res.warmup_s,
            sys::cpu_count()
        );
        let _ = writeln!(
            s,
            "| workload | server | msg/s | spread | vs wsreactor | vs raw | p50 µs | p99 µs | srv µs/msg | srv CPU vs raw | srv CPU | gen CPU | others | limit | errors |"
        );
        let _ = writeln!(
            s,
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|"
        );
        let pct = |v: Option<f64>| v.map(|x| format!("{x:.0}%")).unwrap_or("–".into());
        let ratio = |r: &Option<Spread>, range: bool| match r {
            Some(r) if range && r.max > r.min => {
                format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max)
            }
            Some(r) => format!("{:.2}×", r.median),
            None => "–".into(),
        };
        let line = |s: &mut String, wl: &str, name: &str, c: &Cell| {
            let _ = writeln!(
                s,
                "| {wl} | {name} | {} | {}–{} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.0}% | {} | {} | {}{} |",
                thousands(c.msgs.median),
                thousands(c.msgs.min),
                thousands(c.msgs.max),
                ratio(&c.vs_ours, false),
                ratio(&c.vs_raw, true),
                c.p50_us,
                c.p99_us,
                c.server_us.map(|x| format!("{x:.3}")).unwrap_or("–".into()),
                ratio(&c.cpu_vs_raw, true),
                pct(c.server_pct),
                c.gen_pct,
                pct(c.other_pct),
                c.limit,
                c.errors,
                if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() }
            );
        };
        for ((shape, kind), cells) in &self.rows {
            let wl = format!("{} {kind}", shape.label());
            for name in &self.servers {
                if let Some(c) = cells.get(name) {
                    line(&mut s, &wl, name, c);
                }
            }
        }
        for shape in shapes() {
            let Some(c) = self.raw.get(&shape) else {
                continue;
            };
            let wl = format!("{} raw TCP", shape.label());
            line(&mut s, &wl, "raw (ceiling)", c);
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                s,
                "\n### Idle connections: server memory and handshake rate\n"
            );
            let _ = writeln!(
                s,
                "| server | connections | bytes/conn | spread | vs wsreactor | handshakes/s | spread | server CPU µs/handshake | spread | echo probe | errors |"
            );
            let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|");
            let base = self.memory.get("wsreactor").map(|m| m.bytes.median);
            for name in &self.servers {
                let Some(m) = self.memory.get(name) else {
                    continue;
                };
                let ratio = match base {
                    Some(b) if b > 0.0 => format!("{:.1}×", m.bytes.median / b),
                    _ => "–".into(),
                };
                let (cpu, cpu_spread) = match &m.cpu_per_handshake {
                    Some(c) => (
                        format!("{:.1}", c.median),
                        format!("{:.1}–{:.1}", c.min, c.max),
                    ),
                    None => ("–".into(), "–".into()),
                };
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {}–{} | {ratio} | {} | {}–{} | {cpu} | {cpu_spread} | {}/{} ok | {} |",
                    thousands(m.opened),
                    thousands(m.bytes.median),
                    thousands(m.bytes.min),
                    thousands(m.bytes.max),
                    thousands(m.handshakes.median),
                    thousands(m.handshakes.min),
                    thousands(m.handshakes.max),
                    m.probes_ok,
                    m.runs,
                    m.errors
                );
            }
        }
        // Generator headroom: the raw ceiling against the best WebSocket server per shape.
        let mut head = Vec::new();
        for shape in shapes() {
            let Some(rc) = self.raw.get(&shape) else {
                continue;
            };
            let best = self
                .rows
                .iter()
                .filter(|((sh, _), _)| *sh == shape)
                .flat_map(|(_, cells)| cells.values().map(|c| c.msgs.median))
                .fold(0.0f64, f64::max);
            if best > 0.0 {
                head.push(format!(
                    "{}: raw {} msg/s vs best WebSocket {} msg/s ({:.2}×)",
                    shape.label(),
                    thousands(rc.msgs.median),
                    thousands(best),
                    rc.msgs.median / best
                ));
            }
        }
        if !head.is_empty() {
            let _ = writeln!(
                s,
                "\n### Generator headroom\n\nThe same generator against the raw TCP echo: if it \
                 pushes clearly more there than against any WebSocket server, the generator is \
                 not what limits the WebSocket figures.\n"
            );
            for h in head {
                let _ = writeln!(s, "- {h}");
            }
        }
        s
    }

    /// Bars for the chart: per workload, each server's msg/s relative to the raw ceiling (or
    /// to wsreactor when there is no ceiling), the median of the per-round ratios.
    pub fn chart_data(&self) -> svg::Chart {
        let mut groups = Vec::new();
        let has_raw = !self.raw.is_empty();
        for ((shape, kind), cells) in &self.rows {
            if has_raw && !self.raw.contains_key(shape) {
                continue;
            }
            let bars = self
                .servers
                .iter()
                .map(|n| {
                    let c = cells.get(n)?;
                    let r = if has_raw { &c.vs_raw } else { &c.vs_ours };
                    r.as_ref().map(|r| r.median)
                })
                .collect();
            groups.push((format!("{} {kind}", shape.label()), bars));
        }
        svg::Chart {
            title: if has_raw {
                "Echo throughput relative to the raw TCP echo ceiling (median of per-round ratios)"
                    .into()
            } else {
                "Echo throughput relative to wsreactor (median of per-round ratios)".into()
            },
            series: self.servers.clone(),
            groups,
            unit: if has_raw {
                "of raw TCP"
            } else {
                "of wsreactor"
            }
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(msgs_per_s: f64, server_us: f64) -> EchoReport {
        EchoReport {
            workload: "echo".into(),
            url: "ws://127.0.0.1:1/".into(),
            connections: 100,
            connected: 100,
            size: 20,
            kind: "binary".into(),
            pipeline: 1,
            rate: None,
            warmup_s: 1.0,
            duration_s: 5.0,
            messages: (msgs_per_s * 5.0) as u64,
            msgs_per_s,
            mib_per_s_sent: 0.0,
            mib_per_s_recv: 0.0,
            latency: Default::default(),
            errors: BTreeMap::new(),
            error_total: 0,
            generator_cpu_pct: 90.0,
            generator_cpu_us_per_msg: None,
            server_cpu_pct: Some(90.0),
            server_cpu_us_per_msg: Some(server_us),
            other_cpu_pct: Some(0.0),
            limit: "generator-bound".into(),
        }
    }

    fn run(round: usize, server: &str, kind: &str, msgs: f64, us: f64) -> EchoRun {
        EchoRun {
            round,
            server: server.into(),
            shape: shapes()[0],
            kind: kind.into(),
            report: Ok(report(msgs, us)),
        }
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        // The machine runs at a different speed in each round. Within a round wsreactor does
        // 0.98x the raw echo twice, and 0.75x once. The ratio of the medians (150k over 200k)
        // would say 0.75x; the paired ratios say 0.98x, with 0.75 as the low end of the range.
        let mut echo = vec![
            run(1, "wsreactor", "binary", 98e3, 5.0),
            run(1, "raw", "raw", 100e3, 5.0),
            run(2, "raw", "raw", 300e3, 2.0),
            run(2, "wsreactor", "binary", 294e3, 2.2),
            run(3, "wsreactor", "binary", 150e3, 4.0),
            run(3, "raw", "raw", 200e3, 2.0),
            // No raw run in round 4: this one pairs with nothing.
            run(4, "wsreactor", "binary", 10e3, 50.0),
        ];
        echo.push(EchoRun {
            report: Err("connection refused".into()),
            ..run(3, "fastwebsockets", "binary", 0.0, 0.0)
        });
        echo.push(run(1, "fastwebsockets", "binary", 49e3, 10.0));
        let res = Results {
            rounds: 4,
            duration_s: 5.0,
            warmup_s: 1.0,
            server_cpu: Some(0),
            generator_cpu: Some(1),
            echo,
            memory: Vec::new(),
        };
        let names: Vec<String> = ["wsreactor", "fastwebsockets", "raw"]
            .map(String::from)
            .to_vec();
        let table = Table::build(&res, &names);
        let cells = &table.rows[0].1;
        let ours = &cells["wsreactor"];
        let vs_raw = ours.vs_raw.expect("paired with raw");
        assert!((vs_raw.median - 0.98).abs() < 1e-9, "{vs_raw:?}");
        assert!((vs_raw.min - 0.75).abs() < 1e-9, "{vs_raw:?}");
        let cpu = ours.cpu_vs_raw.expect("cpu paired");
        // Rounds 1-3: 1.0, 1.1, 2.0.
        assert!((cpu.median - 1.1).abs() < 1e-9, "{cpu:?}");
        assert!((cpu.max - 2.0).abs() < 1e-9, "{cpu:?}");
        // fastwebsockets only has round 1 (round 3 failed): 49k over our 98k.
        let peer = cells["fastwebsockets"].vs_ours.expect("paired with ours");
        assert!((peer.median - 0.5).abs() < 1e-9, "{peer:?}");
        assert_eq!(cells["fastwebsockets"].failed, 1);
        let md = table.markdown(&res);
        assert!(md.contains("| 0.98× (0.75–0.98) |"), "{md}");
        let chart = table.chart_data();
        let bar = chart.groups[0].1[0].expect("a bar for wsreactor");
        assert!((bar - 0.98).abs() < 1e-9, "{bar}");
    }
}
