//! The search's verdicts, step lengths and algorithm, the last against a server model.
use super::*;
use crate::stats::LatencySummary;

fn window(msgs: u64, secs: f64, p99_us: f64, errors: u64) -> Window {
    Window {
        rate_from: 0.0,
        rate_to: 0.0,
        rate_asked: 0.0,
        duration_s: secs,
        messages: msgs,
        msgs_per_s: msgs as f64 / secs,
        sent: msgs,
        latency: LatencySummary {
            p99_us,
            ..LatencySummary::default()
        },
        errors: BTreeMap::new(),
        error_total: errors,
        generator_cpu_pct: 0.0,
        server_cpu_pct: None,
        server_cpu_us_per_msg: None,
    }
}

#[test]
fn verdicts() {
    let t = Duration::from_millis(5);
    assert_eq!(
        verdict(&window(10_000, 2.0, 4000.0, 0), 5000.0, t, 2000),
        "ok"
    );
    assert_eq!(
        verdict(&window(10_000, 2.0, 6000.0, 0), 5000.0, t, 2000),
        "p99-over"
    );
    assert_eq!(
        verdict(&window(10_000, 2.0, 100.0, 1), 5000.0, t, 2000),
        "errors"
    );
    assert_eq!(
        verdict(&window(9_000, 2.0, 100.0, 0), 5000.0, t, 2000),
        "behind"
    );
    assert_eq!(
        verdict(&window(1_000, 1.0, 100.0, 0), 1000.0, t, 2000),
        "few-samples"
    );
}

/// A server model: a rate passes when it is at most `capacity`, except the rates in
/// `flaky`, which pass their first time and fail after.
struct Model {
    capacity: f64,
    flaky: Vec<f64>,
    max_steps: usize,
    steps: Vec<Step>,
}

impl Probe for Model {
    fn can_step(&self, _rate: f64) -> bool {
        self.steps.len() < self.max_steps
    }
    fn step(&mut self, stage: &str, rate: f64) -> Result<bool, String> {
        let seen = self.steps.iter().any(|s| s.rate == rate);
        let ok = rate <= self.capacity && !(seen && self.flaky.contains(&rate));
        self.steps.push(Step {
            n: self.steps.len() + 1,
            stage: stage.into(),
            rate,
            verdict: if ok { "ok" } else { "p99-over" }.into(),
            limit: String::new(),
            window: window(1, 1.0, 1.0, 0),
        });
        Ok(ok)
    }
    fn steps(&self) -> &[Step] {
        &self.steps
    }
}

fn model(capacity: f64, flaky: &[f64], max_steps: usize) -> Model {
    Model {
        capacity,
        flaky: flaky.to_vec(),
        max_steps,
        steps: Vec::new(),
    }
}

fn rates(m: &Model, stage: &str) -> Vec<f64> {
    m.steps
        .iter()
        .filter(|s| s.stage == stage)
        .map(|s| s.rate)
        .collect()
}

#[test]
fn steps_up_bisects_and_repeats() {
    let sc = SearchConfig::default(); // from 1000/s, x2, 5 %
    let mut m = model(50_000.0, &[], 30);
    let (best, stopped) = search(&mut m, &sc).expect("search");
    let best = best.expect("an answer");
    assert_eq!(rates(&m, "step-up"), [1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 64e3]);
    // Between 32k (good) and 64k (bad): 48k ok, 56k bad, 52k bad, 50k ok: within 5 %.
    assert_eq!(rates(&m, "bisect"), [48e3, 56e3, 52e3, 50e3]);
    assert_eq!(
        rates(&m, "retry"),
        [64e3, 56e3, 52e3],
        "each failure measured twice"
    );
    assert_eq!(rates(&m, "repeat"), [50e3]);
    assert_eq!(best.rate, 50e3);
    assert!(best.confirmed);
    assert_eq!(best.p99_us.len(), 2, "the finding step and its repeat");
    assert!(stopped.contains("52000"), "{stopped}");
}

#[test]
fn a_failed_repeat_falls_back_to_the_next_good_rate() {
    let sc = SearchConfig::default();
    let mut m = model(50_000.0, &[50e3], 30);
    let (best, stopped) = search(&mut m, &sc).expect("search");
    let best = best.expect("an answer");
    // 50k passed once then failed its repeat; 48k is the next rate that passed.
    assert_eq!(rates(&m, "repeat"), [50e3, 48e3]);
    assert_eq!(best.rate, 48e3);
    assert!(best.confirmed);
    assert!(stopped.contains("50000"), "{stopped}");
}

#[test]
fn a_failure_that_does_not_repeat_is_not_the_boundary() {
    // 8k fails once (noise) and passes its retry: the step-up goes on past it.
    struct Once(Model);
    impl Probe for Once {
        fn can_step(&self, rate: f64) -> bool {
            self.0.can_step(rate)
        }
        fn step(&mut self, stage: &str, rate: f64) -> Result<bool, String> {
            let first = !self.0.steps.iter().any(|s| s.rate == rate);
            let ok = self.0.step(stage, rate)?;
            if rate == 8e3 && first {
                if let Some(s) = self.0.steps.last_mut() {
                    s.verdict = "p99-over".into();
                }
                return Ok(false);
            }
            Ok(ok)
        }
        fn steps(&self) -> &[Step] {
            self.0.steps()
        }
    }
    let mut m = Once(model(20_000.0, &[], 30));
    let (best, _) = search(&mut m, &SearchConfig::default()).expect("search");
    assert_eq!(rates(&m.0, "step-up"), [1e3, 2e3, 4e3, 8e3, 16e3, 32e3]);
    assert_eq!(rates(&m.0, "retry")[0], 8e3);
    assert!(best.is_some_and(|b| b.rate >= 16e3));
}

#[test]
fn stops_at_the_limits() {
    let sc = SearchConfig {
        max_rate: 5000.0,
        ..SearchConfig::default()
    };
    let mut m = model(1e9, &[], 30);
    let (best, stopped) = search(&mut m, &sc).expect("search");
    assert_eq!(rates(&m, "step-up"), [1e3, 2e3, 4e3, 5e3], "capped");
    assert_eq!(best.map(|b| b.rate), Some(5e3));
    assert!(stopped.contains("max-rate"), "{stopped}");

    let mut m = model(1e9, &[], 3);
    let (best, stopped) = search(&mut m, &SearchConfig::default()).expect("search");
    assert_eq!(m.steps.len(), 3, "the step budget");
    let best = best.expect("the last good rate");
    assert!(!best.confirmed, "no step left to repeat it");
    assert!(stopped.contains("limit"), "{stopped}");

    let mut m = model(10.0, &[], 30);
    let (best, stopped) = search(&mut m, &SearchConfig::default()).expect("search");
    assert!(best.is_none());
    assert_eq!(rates(&m, "step-up"), [1e3]);
    assert_eq!(rates(&m, "retry"), [1e3]);
    assert!(stopped.contains("no rate"), "{stopped}");
}

#[test]
fn step_length_reaches_the_sample_floor() {
    let sc = SearchConfig::default();
    assert_eq!(sc.step_len(100_000.0), Duration::from_secs(2));
    assert_eq!(sc.step_len(500.0), Duration::from_secs(4));
    assert_eq!(sc.step_len(1.0), Duration::from_secs(20), "capped");
    assert!(SearchConfig {
        growth: 1.0,
        ..SearchConfig::default()
    }
    .check()
    .is_err());
}
