//! `compare`'s fan-out workloads: one publisher to S subscribers in one room (`--fanout`,
//! 100 and 10,000 by default), against the servers that have rooms (`--fanout-servers`:
//! wsreactor's `/room/NAME`, `peer-broadcast`, and the `raw-fanout` ceiling), every round
//! fresh processes on the server core, in a rotating order. The publish rate is set so that
//! every run asks for the same deliveries per second (`--fanout-deliveries` / S), and each
//! run's [`FanoutReport`] is kept; [`markdown`] ranks the servers by deliveries per second and
//! by server CPU per delivered message, with per-round paired ratios to the baseline and to
//! the ceiling.
//!
//! It owns these workloads' list, their runs and their table; it must not touch the echo
//! workloads' table.

use super::servers::{Instance, Server};
use super::CompareArgs;
use crate::fanout::{run_fanout, FanoutConfig, FanoutReport};
use crate::payload::Kind;
use crate::report::thousands;
use crate::stats::{spread, Spread};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// The room every fan-out run uses.
pub const ROOM_PATH: &str = "/room/bench";
/// The ceiling's name (a sibling of the raw echo ceiling).
pub const CEILING: &str = "raw-fanout";
/// Message size of the fan-out workloads (a chat line, a price tick).
const SIZE: usize = 64;

/// One fan-out run's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRun {
    /// Round number from 1.
    pub round: usize,
    /// Server name.
    pub server: String,
    /// Subscribers.
    pub subscribers: usize,
    /// The report, or why the run failed.
    pub report: Result<FanoutReport, String>,
}

/// "1 → 10,000".
pub fn label(subscribers: usize) -> String {
    format!("fanout 1 → {}", thousands(subscribers as f64))
}

/// Whether the workload of `subscribers` runs: a `--sizes`/`--kinds` mix replaces the standard
/// workloads, these included, and `--only` must keep it.
fn kept(a: &CompareArgs, subscribers: usize) -> bool {
    a.sizes.is_none()
        && a.kinds.is_none()
        && a.only
            .as_deref()
            .map_or(true, |o| label(subscribers).contains(o))
}

/// The servers of the fan-out workloads, each started on [`ROOM_PATH`].
pub fn servers(a: &CompareArgs, bin_dir: &Path) -> Result<Vec<Server>, String> {
    if !a.fanout.iter().any(|&n| n > 0 && kept(a, n)) {
        return Ok(Vec::new());
    }
    let mut list = Vec::new();
    for name in &a.fanout_servers {
        let name = name.trim();
        if name.is_empty() || (a.no_raw && name == CEILING) {
            continue;
        }
        let mut s = Server::builtin(name, bin_dir)?;
        s.set_path(ROOM_PATH)?;
        list.push(s);
    }
    Ok(list)
}

/// Runs every fan-out workload against every server once (round `round`).
pub fn run_round(
    a: &CompareArgs,
    round: usize,
    servers: &[Server],
    server_cpu: Option<usize>,
    generator_cpu: Option<usize>,
    started: Instant,
    out: &mut Vec<FanoutRun>,
) {
    for &subscribers in a.fanout.iter().filter(|&&n| n > 0) {
        if a.only
            .as_deref()
            .is_some_and(|o| !label(subscribers).contains(o))
        {
            continue;
        }
        eprintln!(
            "compare: round {round}/{}, {} ({:.0} s elapsed)",
            a.rounds,
            label(subscribers),
            started.elapsed().as_secs_f64()
        );
        let n = servers.len();
        for j in 0..n {
            let s = &servers[(j + round - 1) % n];
            // A fresh process per run: 10,000 closing connections of one run do not linger
            // in the next.
            let report = s.start(server_cpu).and_then(|srv: Instance| {
                run_fanout(&FanoutConfig {
                    sub_url: srv.url().to_string(),
                    pub_url: srv.url().to_string(),
                    subscribers,
                    publishers: 1,
                    rate: a.fanout_deliveries / subscribers as f64,
                    size: SIZE,
                    kind: Kind::Binary,
                    warmup: a.warmup,
                    duration: a.duration,
                    connect_rate: 0.0,
                    max_pending: 128,
                    server_pids: srv.pid().into_iter().collect(),
                    generator_cpu,
                    progress: !a.quiet,
                })
            });
            match &report {
                Ok(r) => eprintln!(
                    "  {:<15} {:>12} deliveries/s  server {:>5.1}% (waited {:>5.1}%) {:>6.0} ns each  gen {:>5.1}%  lost {}",
                    s.name,
                    thousands(r.delivered_per_s),
                    r.server_cpu_pct.unwrap_or(f64::NAN),
                    r.server_wait_pct.unwrap_or(f64::NAN),
                    r.server_cpu_ns_per_delivery.unwrap_or(f64::NAN),
                    r.generator_cpu_pct,
                    r.lost
                ),
                Err(e) => eprintln!("  {}: {e}", s.name),
            }
            out.push(FanoutRun {
                round,
                server: s.name.clone(),
                subscribers,
                report,
            });
        }
    }
}

fn cell(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) if digits == 0 => format!(
            "{} ({}–{})",
            thousands(s.median),
            thousands(s.min),
            thousands(s.max)
        ),
        Some(s) => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        None => "–".into(),
    }
}

/// Per-round ratio `metric(server) / metric(other)` over the rounds both ran.
fn paired(
    runs: &[FanoutRun],
    subscribers: usize,
    server: &str,
    other: &str,
    metric: fn(&FanoutReport) -> Option<f64>,
) -> Option<Spread> {
    let by_round = |name: &str| -> BTreeMap<usize, f64> {
        runs.iter()
            .filter(|r| r.server == name && r.subscribers == subscribers)
            .filter_map(|r| Some((r.round, metric(r.report.as_ref().ok()?)?)))
            .collect()
    };
    let (a, b) = (by_round(server), by_round(other));
    let ratios: Vec<f64> = a
        .iter()
        .filter_map(|(round, x)| b.get(round).filter(|d| **d > 0.0).map(|d| x / d))
        .collect();
    spread(&ratios)
}

fn cpu_per_delivery(r: &FanoutReport) -> Option<f64> {
    r.server_cpu_ns_per_delivery
}

/// The fan-out table: one row per (workload, server), best first by CPU per delivery.
pub fn markdown(runs: &[FanoutRun], baseline: &str) -> String {
    let mut s = String::new();
    if runs.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n### Fan-out: 1 publisher → S subscribers in one room, {SIZE} B binary\n\n\
         Medians over the rounds (min–max). CPU ratios are paired per round; lower is better. \
         `{CEILING}` writes each turn's frames to every member with one write and does no \
         WebSocket work per subscriber: the ceiling. `server waited %`: time the server was \
         runnable but another process had its core; a server that needs more CPU than it \
         gets falls behind (deliveries below what was asked, and loss).\n"
    );
    let _ = writeln!(
        s,
        "| workload | server | delivered msg/s | of asked | server ns / delivery | CPU vs {baseline} | \
         CPU vs ceiling | p50 µs | p99 µs | lost | server % | server waited % | generator % | failed |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut workloads: Vec<usize> = runs.iter().map(|r| r.subscribers).collect();
    workloads.sort_unstable();
    workloads.dedup();
    for subs in workloads {
        let mut names: Vec<&str> = Vec::new();
        for r in runs.iter().filter(|r| r.subscribers == subs) {
            if !names.contains(&r.server.as_str()) {
                names.push(&r.server);
            }
        }
        let mut rows: Vec<(f64, String)> = Vec::new();
        for name in names {
            let ok: Vec<&FanoutReport> = runs
                .iter()
                .filter(|r| r.server == name && r.subscribers == subs)
                .filter_map(|r| r.report.as_ref().ok())
                .collect();
            let failed = runs
                .iter()
                .filter(|r| r.server == name && r.subscribers == subs && r.report.is_err())
                .count();
            let sp = |f: &dyn Fn(&FanoutReport) -> Option<f64>| {
                spread(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            let cpu = sp(&|r| r.server_cpu_ns_per_delivery);
            let med = |f: &dyn Fn(&FanoutReport) -> Option<f64>| sp(f).map(|s| s.median);
            let pct = |v: Option<f64>, d: usize| v.map_or("–".into(), |v| format!("{v:.d$}"));
            let row = format!(
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {failed} |",
                label(subs),
                cell(sp(&|r| Some(r.delivered_per_s)), 0),
                pct(
                    med(&|r| Some(100.0 * r.delivered_per_s / r.expected_per_s.max(1e-9))),
                    1
                )
                .to_string()
                    + " %",
                cell(cpu, 0),
                cell(paired(runs, subs, name, baseline, cpu_per_delivery), 2),
                cell(paired(runs, subs, name, CEILING, cpu_per_delivery), 2),
                pct(med(&|r| Some(r.latency.p50_us)), 0),
                pct(med(&|r| Some(r.latency.p99_us)), 0),
                ok.iter().map(|r| r.lost).sum::<u64>(),
                pct(med(&|r| r.server_cpu_pct), 1),
                pct(med(&|r| r.server_wait_pct), 1),
                pct(med(&|r| Some(r.generator_cpu_pct)), 1),
            );
            rows.push((cpu.map_or(f64::INFINITY, |c| c.median), row));
        }
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, row) in rows {
            let _ = writeln!(s, "{row}");
        }
    }
    s
}
