//! A histogram of durations in fixed millisecond buckets, for one writer and any reader.
//!
//! Owns the bucket bounds. The reactor's clock has millisecond resolution (it is read once per
//! loop turn), so the bounds start at 1 ms and a duration is observed in whole milliseconds.

use super::Counter;

/// Upper bounds in milliseconds; above the last is the `+Inf` bucket.
pub(crate) const BOUNDS_MS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative), the last one above every bound.
    buckets: [Counter; BOUNDS_MS.len() + 1],
    sum_ms: Counter,
}

impl Histogram {
    pub fn observe_ms(&self, ms: u64) {
        let index = BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(BOUNDS_MS.len());
        self.buckets[index].bump();
        self.sum_ms.add(ms);
    }

    /// Observations per bucket, not cumulative.
    pub fn buckets(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().map(Counter::get)
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_the_rest_is_infinite() {
        let histogram = Histogram::default();
        for ms in [0, 1, 2, 10_000, 10_001] {
            histogram.observe_ms(ms);
        }
        let counts: Vec<u64> = histogram.buckets().collect();
        assert_eq!(counts[0], 2, "0 and 1 ms are <= 1 ms");
        assert_eq!(counts[1], 1, "2 ms is <= 5 ms");
        assert_eq!(counts[BOUNDS_MS.len() - 1], 1, "10 s is <= 10 s");
        assert_eq!(counts[BOUNDS_MS.len()], 1, "above every bound");
        assert_eq!(histogram.sum_ms(), 20_004);
    }
}
