//! Aggregation and reporting of a comparison: cells of medians and spreads per (workload,
//! server), the per-round paired ratios to the baseline server and to the raw ceiling, the
//! Markdown table and the bar chart's data. Works on [`Results`] only: it must not start
//! servers or run workloads, so `--from-json` can re-render a table without running anything.

use super::servers::{RAW, RAW_URING};
use super::{shapes, EchoRun, Results, Shape};
use crate::report::thousands;
use crate::stats::{spread, Spread};
use crate::svg;
use crate::sys;
use crate::workloads::{ConnectionsReport, EchoReport};
use std::collections::BTreeMap;
use std::fmt::Write as _;

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
    /// Per-round msg/s over the baseline server's in the same round (see [`paired`]).
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

/// The shapes the runs have: the standard ones in their order, then any other (the mix).
fn run_shapes(res: &Results) -> Vec<Shape> {
    let mut out: Vec<Shape> = shapes();
    for r in &res.echo {
        if !out.contains(&r.shape) {
            out.push(r.shape);
        }
    }
    out
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
    /// Server names, the baseline first.
    pub servers: Vec<String>,
    /// (shape, kind) rows with one optional cell per server.
    pub rows: Vec<((Shape, String), BTreeMap<String, Cell>)>,
    /// Raw ceiling per shape.
    pub raw: BTreeMap<Shape, Cell>,
    /// The io_uring raw ceiling per shape, its ratios against the epoll one.
    pub raw_uring: BTreeMap<Shape, Cell>,
    /// Memory per server.
    pub memory: BTreeMap<String, MemCell>,
    /// The server the `vs` column divides by.
    pub baseline: String,
}

impl Table {
    /// Aggregates all runs.
    pub fn build(res: &Results, names: &[String]) -> Table {
        let baseline = res.baseline.clone().unwrap_or_else(|| "wsreactor".into());
        let ws: Vec<String> = names
            .iter()
            .filter(|n| *n != RAW && *n != RAW_URING)
            .cloned()
            .collect();
        let mut rows = Vec::new();
        for shape in run_shapes(res) {
            let raw_runs = by_round(res, RAW, shape, "raw");
            for kind in ["text", "binary", "mixed"] {
                let ours = by_round(res, &baseline, shape, kind);
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
        for shape in run_shapes(res) {
            let runs: Vec<&EchoRun> = res
                .echo
                .iter()
                .filter(|r| r.server == RAW && r.shape == shape)
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
        let mut raw_uring = BTreeMap::new();
        for shape in run_shapes(res) {
            let runs: Vec<&EchoRun> = res
                .echo
                .iter()
                .filter(|r| r.server == RAW_URING && r.shape == shape)
                .collect();
            let ok: Vec<&EchoReport> = runs.iter().filter_map(|r| r.report.as_ref().ok()).collect();
            if let Some(mut c) = aggregate(&ok, runs.len() - ok.len()) {
                let mine = by_round(res, RAW_URING, shape, "raw");
                let raw_runs = by_round(res, RAW, shape, "raw");
                c.vs_raw = paired(&mine, &raw_runs, msgs_per_s);
                c.cpu_vs_raw = paired(&mine, &raw_runs, server_us_per_msg);
                raw_uring.insert(shape, c);
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
            raw_uring,
            memory,
            baseline,
        }
    }

    /// The Markdown report.
    pub fn markdown(&self, res: &Results) -> String {
        let mut s = String::new();
        let base = &self.baseline;
        let _ = writeln!(s, "## {}: echo over loopback\n", self.servers.join(" vs "));
        let pin = match (res.server_cpu, res.generator_cpu) {
            (Some(a), Some(b)) => format!("server pinned to CPU {a}, generator to CPU {b}"),
            _ => "unpinned".to_string(),
        };
        let _ = writeln!(
            s,
            "{} round(s), {:.1} s measured after {:.1} s warm-up per run, {pin}; {} CPUs. \
             Medians over rounds, spread is min–max. Each round runs every server on a workload \
             back to back, and the `vs` columns are medians of the ratios within a round (range \
             in brackets): `vs {base}` is the server's msg/s over {base}'s, `vs raw` over \
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
        if let Some(w) = &res.wire {
            let _ = writeln!(s, "Over: {w}.\n");
        }
        if let Some(m) = &res.mix {
            let _ = writeln!(
                s,
                "The mix workload draws each message's size and kind by weight ({m}); every \
                 echo is checked byte for byte against the shape it was sent as.\n"
            );
        }
        let _ = writeln!(
            s,
            "| workload | server | msg/s | spread | vs {base} | vs raw | p50 µs | p99 µs | srv µs/msg | srv CPU vs raw | srv CPU | gen CPU | others | limit | errors |"
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
        for shape in run_shapes(res) {
            let Some(c) = self.raw.get(&shape) else {
                continue;
            };
            let wl = format!("{} raw TCP", shape.label());
            line(&mut s, &wl, "raw (ceiling)", c);
            if let Some(c) = self.raw_uring.get(&shape) {
                line(&mut s, &wl, "raw-uring (io_uring ceiling)", c);
            }
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                s,
                "\n### Idle connections: server memory and handshake rate\n"
            );
            let _ = writeln!(
                s,
                "| server | connections | bytes/conn | spread | vs {base} | handshakes/s | spread | server CPU µs/handshake | spread | echo probe | errors |"
            );
            let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|");
            let base = self.memory.get(base).map(|m| m.bytes.median);
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
        for shape in run_shapes(res) {
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
    /// to the baseline when there is no ceiling), the median of the per-round ratios.
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
                format!(
                    "Echo throughput relative to {} (median of per-round ratios)",
                    self.baseline
                )
            },
            series: self.servers.clone(),
            groups,
            unit: if has_raw {
                "of raw TCP".into()
            } else {
                format!("of {}", self.baseline)
            },
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
            mix: Vec::new(),
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
            compression: None,
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
            fanout: Vec::new(),
            baseline: None,
            mix: None,
            wire: None,
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
