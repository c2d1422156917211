//! `--phases`: arrival-rate phases, as k6's `ramping-arrival-rate` and Artillery's `phases`
//! describe load. `10s@1000,20s@1000..5000,10s@0` holds 1,000 msg/s for 10 s, ramps linearly
//! to 5,000 msg/s over 20 s, then holds the connections idle for 10 s. The rate is the total
//! over all connections and does not wait for echoes (open loop); each phase is reported on its
//! own: rate asked and achieved, latency percentiles from when each message was due, errors,
//! CPU.
//!
//! This module owns the phase syntax and the phase loop; the windows themselves are
//! [`crate::rated`]'s.

use crate::rated::{pin_generator, Session, TrafficInfo, Window};
use crate::report::thousands;
use crate::units::{parse_duration, parse_rate};
use crate::workloads::{EchoConfig, MAX_DURATION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One phase: a length and a rate that is constant (`from == to`) or ramps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// How long it lasts.
    pub duration: Duration,
    /// Total messages per second at its start.
    pub from: f64,
    /// Total messages per second at its end.
    pub to: f64,
}

impl Phase {
    /// `10s@1000` or `20s@1000..5000`.
    pub fn label(&self) -> String {
        let secs = self.duration.as_secs_f64();
        if self.from == self.to {
            format!("{secs}s@{}", self.from)
        } else {
            format!("{secs}s@{}..{}", self.from, self.to)
        }
    }
}

/// A list of phases, as `--phases` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Phases(pub Vec<Phase>);

/// Parses [`Phases`] (see [`parse_phases`]).
pub fn parse_phase_list(s: &str) -> Result<Phases, String> {
    parse_phases(s).map(Phases)
}

/// Parses `DURATION@RATE[..RATE],…`, e.g. `10s@1000,20s@1000..5000,10s@0`. Durations take
/// ms, s or m; rates are totals in messages per second (`5000`, `5k`, `5000/s`), 0 for none.
pub fn parse_phases(s: &str) -> Result<Vec<Phase>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (d, r) = part
            .split_once('@')
            .ok_or_else(|| format!("phase {part:?}: expected DURATION@RATE or DURATION@A..B"))?;
        let duration = parse_duration(d)?;
        if duration.is_zero() {
            return Err(format!("phase {part:?}: the duration must be more than 0"));
        }
        let (from, to) = match r.split_once("..") {
            Some((a, b)) => (parse_rate(a)?, parse_rate(b)?),
            None => {
                let v = parse_rate(r)?;
                (v, v)
            }
        };
        out.push(Phase { duration, from, to });
    }
    if out.is_empty() {
        return Err(format!("{s:?}: no phase"));
    }
    let total: Duration = out.iter().map(|p| p.duration).sum();
    if total > MAX_DURATION {
        return Err(format!(
            "the phases last {} s; at most {} s",
            total.as_secs_f64(),
            MAX_DURATION.as_secs()
        ));
    }
    Ok(out)
}

/// One phase's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The phase as given, e.g. `20s@1000..5000`.
    pub phase: String,
    /// What its window saw.
    #[serde(flatten)]
    pub window: Window,
}

/// Result of a `--phases` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhasesReport {
    /// "phases".
    pub workload: String,
    /// Connections, mix and pinning.
    #[serde(flatten)]
    pub traffic: TrafficInfo,
    /// Warm-up before the first phase, seconds (at its starting rate, not counted).
    pub warmup_s: f64,
    /// The phases in order.
    pub phases: Vec<PhaseReport>,
    /// Errors by kind over the whole run, the final drain included.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
}

/// Runs `phases` with the traffic `cfg` describes (its `rate` and `duration` are unused),
/// the generator pinned to `cpu` if given; `log` prints a line per phase to stderr.
pub fn run_phases(
    cfg: &EchoConfig,
    phases: &[Phase],
    cpu: Option<usize>,
    log: bool,
) -> Result<PhasesReport, String> {
    let started = Instant::now();
    let generator_cpu = pin_generator(cpu)?;
    let mut s = Session::open(cfg)?;
    let mut reports = Vec::with_capacity(phases.len());
    for (i, p) in phases.iter().enumerate() {
        // The warm-up runs at the first phase's starting rate; later phases carry on the
        // schedule, so a backlog at a phase's end still counts in the next one's latency.
        let warmup = if i == 0 { cfg.warmup } else { Duration::ZERO };
        let w = s.window(p.from, p.to, warmup, p.duration, i == 0)?;
        if log {
            eprintln!(
                "phase {}/{} {}: {} msg/s asked, {} achieved, p99 {}, errors {}",
                i + 1,
                phases.len(),
                p.label(),
                thousands(w.rate_asked),
                thousands(w.msgs_per_s),
                us_label(w.latency.p99_us),
                w.error_total
            );
        }
        reports.push(PhaseReport {
            phase: p.label(),
            window: w,
        });
    }
    let (errors, traffic) = s.finish(generator_cpu)?;
    Ok(PhasesReport {
        workload: "phases".into(),
        traffic,
        warmup_s: cfg.warmup.as_secs_f64(),
        phases: reports,
        error_total: errors.values().sum(),
        errors,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Latency in µs as a short human figure (812 µs, 4.21 ms).
pub fn us_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The report as text: a header and one table row per phase.
pub fn phases_summary(r: &PhasesReport) -> String {
    let mut s = String::new();
    let t = &r.traffic;
    let _ = writeln!(s, "phases {}, {:.1} s", t.describe(), r.duration_s);
    let _ = writeln!(
        s,
        "\n| phase | asked msg/s | achieved msg/s | p50 | p90 | p99 | p99.9 | max | srv CPU | errors |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for p in &r.phases {
        let w = &p.window;
        let l = &w.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.phase,
            thousands(w.rate_asked),
            thousands(w.msgs_per_s),
            us_label(l.p50_us),
            us_label(l.p90_us),
            us_label(l.p99_us),
            us_label(l.p999_us),
            us_label(l.max_us),
            w.server_cpu_pct
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "n/a".into()),
            w.error_total
        );
    }
    let _ = writeln!(
        s,
        "\nerrors: {}",
        if r.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", r.errors)
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse() {
        let p = parse_phases("10s@1000, 20s@1k..5000/s,500ms@0").expect("phases");
        assert_eq!(
            p,
            vec![
                Phase {
                    duration: Duration::from_secs(10),
                    from: 1000.0,
                    to: 1000.0
                },
                Phase {
                    duration: Duration::from_secs(20),
                    from: 1000.0,
                    to: 5000.0
                },
                Phase {
                    duration: Duration::from_millis(500),
                    from: 0.0,
                    to: 0.0
                },
            ]
        );
        assert_eq!(p[0].label(), "10s@1000");
        assert_eq!(p[1].label(), "20s@1000..5000");
        assert!(parse_phases("10s").is_err(), "no rate");
        assert!(parse_phases("0s@100").is_err(), "empty phase");
        assert!(parse_phases("10s@fast").is_err());
        assert!(parse_phases("").is_err());
        assert!(parse_phases("5m@10,5m@10,1s@10").is_err(), "over 600 s");
    }
}
