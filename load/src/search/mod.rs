//! `--p99 TARGET`: the highest message rate whose p99 latency stays under a target, as
//! tcpkali's `-r @latency` and websocket-bench's step-up find it. Over connections opened once,
//! it steps the total rate up by a factor (×2 by default) until a step fails, bisects between
//! the last rate that passed and the first that failed until they are within `precision`
//! (a failing step is measured once more first: noise can fail a good rate, hardly pass a bad
//! one), then measures the best rate again; if a repeat fails it falls back to the next lower
//! rate that passed and repeats that. Every step is one [`crate::rated`] window reported with its
//! latency percentiles, so the run gives the whole latency-rate curve, not just its answer.
//!
//! A step passes when nothing went wrong in it, the achieved rate is within 5 % of the rate
//! asked, it saw at least `min_samples` echoes (its window is lengthened to get them, up to
//! `max_step`), and its p99 is at most the target. Latency counts from when a message was due,
//! so a server that falls behind fails on latency instead of looking fine at a lower rate.
//! Between steps traffic stops until every echo is back. The search is bounded in steps and in
//! time and stops by itself. This module owns the search; it must not measure windows itself.

mod report;

pub use report::{curve_chart, curve_table, search_summary};

use crate::phases::us_label;
use crate::rated::{pin_generator, Session, TrafficInfo, Window};
use crate::report::thousands;
use crate::workloads::{EchoConfig, MAX_DURATION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A step whose achieved rate is below this share of the rate asked has fallen behind.
pub const ACHIEVED_SHARE: f64 = 0.95;
/// Time allowed for the echoes in flight to come back between steps.
const QUIESCE: Duration = Duration::from_secs(3);

/// Settings of a search.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The p99 latency a step must stay at or under.
    pub target: Duration,
    /// The first rate tried, messages per second.
    pub start_rate: f64,
    /// The highest rate tried.
    pub max_rate: f64,
    /// Factor between step-up rates (more than 1).
    pub growth: f64,
    /// Bisection stops when (first bad − last good) / last good is at most this.
    pub precision: f64,
    /// Measured time per step (lengthened to reach `min_samples`).
    pub step: Duration,
    /// Unmeasured traffic at the step's rate before its window.
    pub step_warmup: Duration,
    /// Fewest echoes a step must measure to pass.
    pub min_samples: u64,
    /// Longest a step's window is lengthened to.
    pub max_step: Duration,
    /// Times the best rate is measured again (each must pass).
    pub repeats: usize,
    /// Times a failing step-up or bisection step is measured again before it counts as failed.
    pub retries: usize,
    /// Most steps in all.
    pub max_steps: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            target: Duration::from_millis(5),
            start_rate: 1000.0,
            max_rate: 2e6,
            growth: 2.0,
            precision: 0.05,
            step: Duration::from_secs(2),
            step_warmup: Duration::from_millis(500),
            min_samples: 2000,
            max_step: Duration::from_secs(20),
            repeats: 1,
            retries: 1,
            max_steps: 30,
        }
    }
}

impl SearchConfig {
    fn check(&self) -> Result<(), String> {
        if !(self.start_rate >= 1.0 && self.start_rate <= self.max_rate) {
            return Err("--start-rate must be at least 1/s and at most --max-rate".into());
        }
        if !(self.growth > 1.0 && self.growth <= 100.0) {
            return Err("--growth must be more than 1 and at most 100".into());
        }
        if !(self.precision > 0.0 && self.precision < 1.0) {
            return Err("--precision must be between 0 and 1 (e.g. 0.05)".into());
        }
        if self.step.is_zero() || self.max_steps == 0 {
            return Err("--step and the step limit must be more than 0".into());
        }
        Ok(())
    }

    /// The window length for `rate`: `step`, or longer to see `min_samples` echoes.
    pub fn step_len(&self, rate: f64) -> Duration {
        let need = Duration::from_secs_f64(self.min_samples as f64 / rate.max(1.0));
        self.step.max(need).min(self.max_step.max(self.step))
    }
}

/// Whether a step passed, and if not why: `ok`, `errors`, `behind` (achieved rate below 95 %
/// of the rate asked), `few-samples` or `p99-over`.
pub fn verdict(w: &Window, rate: f64, target: Duration, min_samples: u64) -> &'static str {
    if w.error_total > 0 {
        "errors"
    } else if w.msgs_per_s < ACHIEVED_SHARE * rate {
        "behind"
    } else if w.messages < min_samples {
        "few-samples"
    } else if w.latency.p99_us > target.as_secs_f64() * 1e6 {
        "p99-over"
    } else {
        "ok"
    }
}

/// One step of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// 1, 2, … in the order run.
    pub n: usize,
    /// `step-up`, `bisect` or `repeat`.
    pub stage: String,
    /// Total rate asked, messages per second.
    pub rate: f64,
    /// `ok` or why it failed (see [`verdict`]).
    pub verdict: String,
    /// Which side saturated its core in the step (see [`crate::stats::limit_verdict`]): a
    /// `generator-bound` failure says nothing about the server.
    #[serde(default)]
    pub limit: String,
    /// What its window saw.
    #[serde(flatten)]
    pub window: Window,
}

/// The answer of a search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    /// The highest rate that passed, messages per second.
    pub rate: f64,
    /// Its p99 in the step that found it and in every repeat, µs.
    pub p99_us: Vec<f64>,
    /// Whether it passed `repeats` more times (false when the search ran out of steps first).
    pub confirmed: bool,
    /// The limit verdict of its last step: `generator-bound` means the generator's core, not
    /// the server, set the figure.
    #[serde(default)]
    pub limit: String,
}

/// Result of a search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    /// "p99-search".
    pub workload: String,
    /// Connections, mix and pinning.
    #[serde(flatten)]
    pub traffic: TrafficInfo,
    /// The p99 target, µs.
    pub target_p99_us: f64,
    /// Step-up factor.
    pub growth: f64,
    /// Bisection precision.
    pub precision: f64,
    /// Measured seconds per step (before lengthening).
    pub step_s: f64,
    /// Warm-up seconds per step.
    pub step_warmup_s: f64,
    /// Fewest echoes a passing step measured.
    pub min_samples: u64,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// The highest rate under the target, if even the first rate did not fail.
    pub best: Option<Best>,
    /// Why the search ended.
    pub stopped: String,
    /// Errors over the whole run, the final drain included.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
}

/// The search's running state: the session, the steps so far and the budget.
struct Run<'a> {
    s: Session,
    sc: &'a SearchConfig,
    steps: Vec<Step>,
    started: Instant,
    log: bool,
}

/// What the search needs of the measurements: room for another step, a step, the steps so far.
/// [`Run`] measures real windows; the tests use a model.
trait Probe {
    /// Whether another step at `rate` fits the step and time limits.
    fn can_step(&self, rate: f64) -> bool;
    /// Measures one step at `rate`; true when it passed.
    fn step(&mut self, stage: &str, rate: f64) -> Result<bool, String>;
    /// The steps so far, in the order run.
    fn steps(&self) -> &[Step];
}

impl Probe for Run<'_> {
    fn steps(&self) -> &[Step] {
        &self.steps
    }

    fn can_step(&self, rate: f64) -> bool {
        let len = self.sc.step_warmup + self.sc.step_len(rate) + QUIESCE;
        self.steps.len() < self.sc.max_steps && self.started.elapsed() + len <= MAX_DURATION
    }

    fn step(&mut self, stage: &str, rate: f64) -> Result<bool, String> {
        self.s.quiesce(QUIESCE)?;
        let w = self.s.window(
            rate,
            rate,
            self.sc.step_warmup,
            self.sc.step_len(rate),
            true,
        )?;
        let v = verdict(&w, rate, self.sc.target, self.sc.min_samples);
        if self.log {
            eprintln!(
                "p99 search: step {:>2} {:<8} {:>10} msg/s asked, {:>10} achieved, p99 {:>9}, {} \
                 (gen {:.0}%, srv {})",
                self.steps.len() + 1,
                stage,
                thousands(rate),
                thousands(w.msgs_per_s),
                us_label(w.latency.p99_us),
                v,
                w.generator_cpu_pct,
                w.server_cpu_pct
                    .map(|c| format!("{c:.0}%"))
                    .unwrap_or_else(|| "n/a".into())
            );
        }
        self.steps.push(Step {
            n: self.steps.len() + 1,
            stage: stage.into(),
            rate,
            verdict: v.into(),
            limit: crate::stats::limit_verdict(w.generator_cpu_pct, w.server_cpu_pct).into(),
            window: w,
        });
        Ok(v == "ok")
    }
}

/// One step-up or bisection step at `rate`; a failure other than errors is measured again up
/// to `sc.retries` times, and the rate passes if a retry does. Noise on a shared machine only
/// ever adds latency or steals time: it can make a good rate fail, hardly a bad one pass, so
/// one unlucky window must not become the boundary. Errors are never noise.
fn try_rate<P: Probe>(
    r: &mut P,
    sc: &SearchConfig,
    stage: &str,
    rate: f64,
) -> Result<bool, String> {
    if r.step(stage, rate)? {
        return Ok(true);
    }
    for _ in 0..sc.retries {
        let errors = r.steps().last().is_some_and(|s| s.verdict == "errors");
        if errors || !r.can_step(rate) {
            break;
        }
        if r.step("retry", rate)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The search itself over `r`: step up, bisect, repeat the best rate (falling back on a failed
/// repeat). Returns the answer and why it stopped.
fn search<P: Probe>(r: &mut P, sc: &SearchConfig) -> Result<(Option<Best>, String), String> {
    let out_of_budget = "step or time limit reached";
    let mut lo: Option<f64> = None;
    let mut hi: Option<f64> = None;
    let mut stopped = String::new();

    // Step up until a step fails.
    let mut rate = sc.start_rate;
    loop {
        if !r.can_step(rate) {
            stopped = out_of_budget.into();
            break;
        }
        if try_rate(r, sc, "step-up", rate)? {
            lo = Some(rate);
            if rate >= sc.max_rate {
                stopped = "reached --max-rate under the target".into();
                break;
            }
            rate = (rate * sc.growth).min(sc.max_rate);
        } else {
            hi = Some(rate);
            break;
        }
    }
    // Bisect between the last good and the first bad rate.
    while let (Some(l), Some(h)) = (lo, hi) {
        if (h - l) / l <= sc.precision {
            break;
        }
        let mid = ((l + h) / 2.0).round();
        if !r.can_step(mid) {
            stopped = out_of_budget.into();
            break;
        }
        if try_rate(r, sc, "bisect", mid)? {
            lo = Some(mid);
        } else {
            hi = Some(mid);
        }
    }
    // Measure the best rate again; on a failed repeat fall back to the next lower good rate.
    let mut best = None;
    let mut failed: Vec<f64> = Vec::new();
    while let Some(l) = lo {
        let first_p99: Vec<f64> = r
            .steps()
            .iter()
            .filter(|s| s.rate == l && s.verdict == "ok")
            .map(|s| s.window.latency.p99_us)
            .take(1)
            .collect();
        let mut p99_us = first_p99;
        let mut passed = 0;
        let mut all_ran = true;
        for _ in 0..sc.repeats {
            if !r.can_step(l) {
                all_ran = false;
                break;
            }
            let ok = r.step("repeat", l)?;
            if let Some(s) = r.steps().last() {
                p99_us.push(s.window.latency.p99_us);
            }
            if !ok {
                break;
            }
            passed += 1;
        }
        if passed == sc.repeats || !all_ran {
            if !all_ran && stopped.is_empty() {
                stopped = out_of_budget.into();
            }
            let limit = r
                .steps()
                .iter()
                .rev()
                .find(|s| s.rate == l && s.verdict == "ok")
                .map(|s| s.limit.clone())
                .unwrap_or_default();
            best = Some(Best {
                rate: l,
                p99_us,
                confirmed: passed == sc.repeats,
                limit,
            });
            break;
        }
        failed.push(l);
        hi = Some(l);
        lo = r
            .steps()
            .iter()
            .filter(|s| s.verdict == "ok" && s.rate < l && !failed.contains(&s.rate))
            .map(|s| s.rate)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    }
    if stopped.is_empty() {
        stopped = match (&best, lo, hi) {
            (None, _, _) => "no rate tried stayed under the target".into(),
            (Some(_), _, Some(h)) => format!("the lowest failing rate is {h}/s"),
            _ => "done".into(),
        };
    }
    Ok((best, stopped))
}

/// Runs the search with the traffic `cfg` describes (its `rate`, `warmup` and `duration` are
/// unused), the generator pinned to `cpu` if given; `log` prints a line per step to stderr.
pub fn run_search(
    cfg: &EchoConfig,
    sc: &SearchConfig,
    cpu: Option<usize>,
    log: bool,
) -> Result<SearchReport, String> {
    sc.check()?;
    let started = Instant::now();
    let generator_cpu = pin_generator(cpu)?;
    let mut r = Run {
        s: Session::open(cfg)?,
        sc,
        steps: Vec::new(),
        started,
        log,
    };
    let (best, stopped) = search(&mut r, sc)?;
    let Run { s, steps, .. } = r;
    let (errors, traffic) = s.finish(generator_cpu)?;
    Ok(SearchReport {
        workload: "p99-search".into(),
        traffic,
        target_p99_us: sc.target.as_secs_f64() * 1e6,
        growth: sc.growth,
        precision: sc.precision,
        step_s: sc.step.as_secs_f64(),
        step_warmup_s: sc.step_warmup.as_secs_f64(),
        min_samples: sc.min_samples,
        steps,
        best,
        stopped,
        error_total: errors.values().sum(),
        errors,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests;
