//! The search's report as people read it: the answer and the latency-rate curve as a Markdown
//! table, and the curve's chart data for [`crate::svg::curve`]. Works on a [`SearchReport`]
//! only; it must not measure anything.

use super::{SearchReport, Step};
use crate::phases::us_label;
use crate::report::thousands;
use std::fmt::Write as _;

/// The latency-rate curve as a Markdown table, steps sorted by rate asked.
pub fn curve_table(r: &SearchReport) -> String {
    let mut steps: Vec<&Step> = r.steps.iter().collect();
    steps.sort_by(|a, b| a.rate.total_cmp(&b.rate).then(a.n.cmp(&b.n)));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| step | stage | asked msg/s | achieved msg/s | p50 | p90 | p99 | p99.9 | max | echoes | srv CPU | gen CPU | limit | verdict |"
    );
    let _ = writeln!(
        s,
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"
    );
    for st in steps {
        let w = &st.window;
        let l = &w.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
            st.n,
            st.stage,
            thousands(st.rate),
            thousands(w.msgs_per_s),
            us_label(l.p50_us),
            us_label(l.p90_us),
            us_label(l.p99_us),
            us_label(l.p999_us),
            us_label(l.max_us),
            thousands(w.messages as f64),
            w.server_cpu_pct
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "n/a".into()),
            w.generator_cpu_pct,
            st.limit,
            st.verdict
        );
    }
    s
}

/// The latency-rate curve's chart data.
pub fn curve_chart(r: &SearchReport) -> crate::svg::Curve {
    let t = &r.traffic;
    crate::svg::Curve {
        title: format!(
            "p99 search, {} connections, {} {}: {} msg/s under p99 {}",
            t.connected,
            crate::report::size_label(t.size),
            t.kind,
            r.best
                .as_ref()
                .map(|b| thousands(b.rate))
                .unwrap_or_else(|| "no rate".into()),
            us_label(r.target_p99_us)
        ),
        target_us: Some(r.target_p99_us),
        best_rate: r.best.as_ref().map(|b| b.rate),
        points: r
            .steps
            .iter()
            .map(|s| crate::svg::CurvePoint {
                rate: s.rate,
                p50_us: s.window.latency.p50_us,
                p90_us: s.window.latency.p90_us,
                p99_us: s.window.latency.p99_us,
                ok: s.verdict == "ok",
            })
            .collect(),
    }
}

/// The report as text: what was searched, the answer, and the curve.
pub fn search_summary(r: &SearchReport) -> String {
    let mut s = String::new();
    let t = &r.traffic;
    let _ = writeln!(
        s,
        "p99 search {}, p99 target {}, generator on CPU {}",
        t.describe(),
        us_label(r.target_p99_us),
        t.generator_cpu
            .map(|c| c.to_string())
            .unwrap_or_else(|| "any".into())
    );
    match &r.best {
        Some(b) => {
            let p99: Vec<String> = b.p99_us.iter().map(|&v| us_label(v)).collect();
            let _ = writeln!(
                s,
                "highest rate under the target: {} msg/s (p99 {}{})",
                thousands(b.rate),
                p99.join(", "),
                if b.confirmed { "" } else { "; not repeated" }
            );
            if b.limit == "generator-bound" || b.limit == "both-saturated" {
                let _ = writeln!(
                    s,
                    "limit at that rate: {} (the generator's core was saturated: the server may \
                     go further than this figure)",
                    b.limit
                );
            }
        }
        None => {
            let _ = writeln!(s, "no rate tried stayed under the target");
        }
    }
    let _ = writeln!(
        s,
        "stopped: {}; {} steps in {:.0} s; errors: {}\n",
        r.stopped,
        r.steps.len(),
        r.duration_s,
        if r.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", r.errors)
        }
    );
    s.push_str(&curve_table(r));
    s
}
