//! Criterion settings shared by every bench: short windows, so that `cargo bench` finishes in
//! about five minutes on two cores, with enough samples for a stable median.

use std::time::Duration;

use criterion::Criterion;

/// The settings every bench uses, with its own warm-up and measurement window.
pub fn config(warm_up: Duration, measurement: Duration) -> Criterion {
    Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(30)
}
