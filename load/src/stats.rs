//! Statistics: the latency histogram and its percentiles, CPU-per-message and CPU-share
//! arithmetic, the "which side was the limit" verdict, and median/min/max over repeated runs.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency recorder in nanoseconds (1 ns .. 100 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty recorder.
    pub fn new() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        }
    }
    /// Records one latency.
    pub fn record(&mut self, nanos: u64) {
        self.hist.saturating_record(nanos.max(1));
    }
    /// Forgets everything (end of warm-up).
    pub fn reset(&mut self) {
        self.hist.reset();
    }
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }
    /// Percentiles in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |v: u64| v as f64 / 1000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: self.hist.mean() / 1000.0,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// CPU seconds from clock ticks.
pub fn ticks_to_secs(ticks: u64, ticks_per_sec: u64) -> f64 {
    if ticks_per_sec == 0 {
        return 0.0;
    }
    ticks as f64 / ticks_per_sec as f64
}

/// CPU microseconds per message; `None` without messages.
pub fn cpu_us_per_msg(cpu_secs: f64, messages: u64) -> Option<f64> {
    if messages == 0 {
        return None;
    }
    Some(cpu_secs * 1e6 / messages as f64)
}

/// Share of one core used, in percent.
pub fn cpu_percent(cpu_secs: f64, wall_secs: f64) -> f64 {
    if wall_secs <= 0.0 {
        return 0.0;
    }
    100.0 * cpu_secs / wall_secs
}

/// A core at or above this share counts as saturated.
pub const SATURATED_PCT: f64 = 95.0;

/// Which side limited the run, from each side's share of one core.
pub fn limit_verdict(generator_pct: f64, server_pct: Option<f64>) -> &'static str {
    let gen = generator_pct >= SATURATED_PCT;
    match server_pct {
        Some(s) if s >= SATURATED_PCT && gen => "both-saturated",
        Some(s) if s >= SATURATED_PCT => "server-bound",
        _ if gen => "generator-bound",
        Some(_) => "latency-bound",
        None => "not-generator-bound",
    }
}

/// Median, minimum and maximum of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// Median/min/max of `values`, `None` when empty (NaNs are ignored).
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Bytes per second to MiB per second.
pub fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / (1024.0 * 1024.0) / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.01;
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p999_us, 999.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
        assert!(close(s.mean_us, 500.5), "{s:?}");
        l.reset();
        assert_eq!(l.count(), 0);
        assert_eq!(l.summary(), LatencySummary::default());
    }

    #[test]
    fn cpu_arithmetic() {
        // 250 ticks at 100 Hz = 2.5 s of CPU over 5 s of wall: half a core.
        let secs = ticks_to_secs(250, 100);
        assert!((secs - 2.5).abs() < 1e-12);
        assert!((cpu_percent(secs, 5.0) - 50.0).abs() < 1e-9);
        // 2.5 s over 1,000,000 messages = 2.5 µs per message.
        let per = cpu_us_per_msg(secs, 1_000_000).expect("messages");
        assert!((per - 2.5).abs() < 1e-9);
        assert_eq!(cpu_us_per_msg(1.0, 0), None);
        assert_eq!(ticks_to_secs(5, 0), 0.0);
        assert_eq!(cpu_percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn verdicts() {
        assert_eq!(limit_verdict(99.0, Some(40.0)), "generator-bound");
        assert_eq!(limit_verdict(60.0, Some(99.5)), "server-bound");
        assert_eq!(limit_verdict(96.0, Some(97.0)), "both-saturated");
        assert_eq!(limit_verdict(50.0, Some(50.0)), "latency-bound");
        assert_eq!(limit_verdict(50.0, None), "not-generator-bound");
        assert_eq!(limit_verdict(95.0, None), "generator-bound");
    }

    #[test]
    fn spreads() {
        assert_eq!(spread(&[]), None);
        let s = spread(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = spread(&[4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(s.median, 2.5);
        assert!((mib_per_s(3 * 1024 * 1024, 2.0) - 1.5).abs() < 1e-12);
    }
}
