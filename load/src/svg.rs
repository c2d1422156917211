//! Charts as self-contained SVG (written by hand: no plotting or font dependencies): the
//! comparison's horizontal grouped bars ([`chart`]: one group per workload, one bar per server,
//! as a fraction of a baseline, the raw TCP ceiling), and the latency-rate curve of a `--p99`
//! search ([`curve`]: p50, p90 and p99 against the rate asked, both axes logarithmic, the
//! target and the answer marked).

use std::fmt::Write as _;

/// Chart input.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title line.
    pub title: String,
    /// Server names, one colour each.
    pub series: Vec<String>,
    /// (workload label, one value per series; `None` when missing).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
    /// What 1.0 means, e.g. "of raw TCP".
    pub unit: String,
}

const COLOURS: [&str; 6] = [
    "#d9480f", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f59f00", "#495057",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart.
pub fn chart(c: &Chart) -> String {
    let label_w = 210.0;
    let plot_w = 560.0;
    let right = 70.0;
    let bar_h = 12.0;
    let group_gap = 14.0;
    let top = 70.0;
    let n = c.series.len().max(1) as f64;
    let group_h = n * bar_h + group_gap;
    let height = top + group_h * c.groups.len() as f64 + 40.0;
    let width = label_w + plot_w + right;
    let max = c
        .groups
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(1.0f64, f64::max);
    let max = (max * 4.0).ceil() / 4.0;
    let x = |v: f64| label_w + plot_w * (v / max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        10,
        esc(&c.title)
    );
    // Legend.
    let mut lx = label_w;
    for (i, name) in c.series.iter().enumerate() {
        let col = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="34" width="12" height="12" fill="{col}"/><text x="{}" y="45">{}</text>"#,
            lx + 16.0,
            esc(name)
        );
        lx += 24.0 + 8.0 * name.len() as f64;
    }
    // Gridlines every 25 % (every 50 % on wide scales).
    let step = if max > 2.0 { 0.5 } else { 0.25 };
    let bottom = height - 30.0;
    let mut g = 0.0;
    while g <= max + 1e-9 {
        let gx = x(g);
        let _ = writeln!(
            s,
            r##"<line x1="{gx}" y1="{}" x2="{gx}" y2="{bottom}" stroke="{}" stroke-width="1"/><text x="{gx}" y="{}" text-anchor="middle" fill="#555">{:.0}%</text>"##,
            top - 8.0,
            if (g - 1.0).abs() < 1e-9 {
                "#888"
            } else {
                "#e5e5e5"
            },
            bottom + 14.0,
            g * 100.0
        );
        g += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
        label_w + plot_w / 2.0,
        bottom + 27.0,
        esc(&format!("median messages/s, {}", c.unit))
    );
    for (gi, (label, vals)) in c.groups.iter().enumerate() {
        let gy = top + gi as f64 * group_h;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            gy + n * bar_h / 2.0 + 4.0,
            esc(label)
        );
        for (i, v) in vals.iter().enumerate() {
            let Some(v) = v else { continue };
            let col = COLOURS[i % COLOURS.len()];
            let y = gy + i as f64 * bar_h;
            let w = (x(*v) - label_w).max(0.5);
            let _ = writeln!(
                s,
                r#"<rect x="{label_w}" y="{y}" width="{w:.1}" height="{}" fill="{col}"><title>{}: {:.1}%</title></rect><text x="{:.1}" y="{}" font-size="10">{:.0}%</text>"#,
                bar_h - 2.0,
                esc(&c.series[i]),
                v * 100.0,
                label_w + w + 4.0,
                y + bar_h - 3.0,
                v * 100.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// One measured rate of a latency-rate curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Rate asked, messages per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Whether the step passed.
    pub ok: bool,
}

/// Latency-rate curve input.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Title line.
    pub title: String,
    /// The p99 target, µs, drawn as a dashed line.
    pub target_us: Option<f64>,
    /// The answer, drawn as a vertical line.
    pub best_rate: Option<f64>,
    /// The steps, in any order.
    pub points: Vec<CurvePoint>,
}

/// Powers of ten (and 2 and 5 times them) from `lo` to `hi`, for log-axis ticks.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

fn rate_label(v: f64) -> String {
    // Three significant digits at most: 1.18M, 48k, 2.5k.
    let round = |x: f64| {
        let step = 10f64.powf(x.abs().log10().floor() - 2.0).max(0.01);
        (x / step).round() * step
    };
    if v >= 1e6 {
        format!("{}M", round(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", round(v / 1e3))
    } else {
        format!("{v}")
    }
}

fn latency_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Renders the latency-rate curve.
pub fn curve(c: &Curve) -> String {
    let (left, top, plot_w, plot_h) = (80.0, 60.0, 620.0, 340.0);
    let (width, height) = (left + plot_w + 30.0, top + plot_h + 60.0);
    let mut pts = c.points.clone();
    pts.retain(|p| p.rate > 0.0);
    pts.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let lat: Vec<f64> = pts
        .iter()
        .flat_map(|p| [p.p50_us, p.p90_us, p.p99_us])
        .chain(c.target_us)
        .filter(|v| positive(*v))
        .collect();
    let rates: Vec<f64> = pts.iter().map(|p| p.rate).collect();
    let span = |v: &[f64], dflt: (f64, f64)| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if lo.is_finite() && hi > 0.0 {
            (lo, hi)
        } else {
            dflt
        }
    };
    let (r_lo, r_hi) = span(&rates, (1.0, 10.0));
    let (l_lo, l_hi) = span(&lat, (1.0, 10.0));
    // A little room on each side, whole decades where the data allows.
    let (r_lo, r_hi) = (r_lo / 1.3, r_hi * 1.3);
    let (l_lo, l_hi) = (l_lo / 1.5, l_hi * 1.5);
    let lx = |v: f64| left + plot_w * (v / r_lo).log10() / (r_hi / r_lo).log10();
    let ly = |v: f64| top + plot_h * (1.0 - (v.max(l_lo) / l_lo).log10() / (l_hi / l_lo).log10());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(&c.title)
    );
    let bottom = top + plot_h;
    for v in log_ticks(r_lo, r_hi) {
        let x = lx(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#e5e5e5"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            bottom + 16.0,
            rate_label(v)
        );
    }
    for v in log_ticks(l_lo, l_hi) {
        let y = ly(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            esc(&latency_label(v))
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle" fill="#555">messages per second asked (log)</text><text x="14" y="{}" fill="#555" transform="rotate(-90 14 {})" text-anchor="middle">round-trip latency (log)</text>"##,
        left + plot_w / 2.0,
        bottom + 36.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    if let Some(t) = c.target_us.filter(|t| positive(*t)) {
        let y = ly(t);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#d9480f" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#d9480f">p99 target {}</text>"##,
            left + plot_w,
            left + plot_w - 4.0,
            y - 5.0,
            esc(&latency_label(t))
        );
    }
    if let Some(b) = c.best_rate.filter(|b| positive(*b)) {
        let x = lx(b);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#2f9e44" stroke-dasharray="3 3"/><text x="{:.1}" y="{}" fill="#2f9e44">{} msg/s</text>"##,
            x + 4.0,
            top + 14.0,
            esc(&rate_label(b.round()))
        );
    }
    type Series = (&'static str, &'static str, fn(&CurvePoint) -> f64);
    let series: [Series; 3] = [
        ("p50", "#1c7ed6", |p| p.p50_us),
        ("p90", "#ae3ec9", |p| p.p90_us),
        ("p99", "#495057", |p| p.p99_us),
    ];
    for (i, (name, col, get)) in series.iter().enumerate() {
        // One vertex per rate, the median of its steps: a repeated rate shows as several
        // dots, not as a zigzag of the line.
        let mut line: Vec<String> = Vec::new();
        let mut k = 0;
        while k < pts.len() {
            let rate = pts[k].rate;
            let mut vals: Vec<f64> = pts[k..]
                .iter()
                .take_while(|p| p.rate == rate)
                .map(get)
                .collect();
            k += vals.len();
            vals.retain(|v| positive(*v));
            vals.sort_by(f64::total_cmp);
            let Some(&mid) = vals.get(vals.len() / 2) else {
                continue;
            };
            let v = if vals.len() % 2 == 0 {
                (vals[vals.len() / 2 - 1] + mid) / 2.0
            } else {
                mid
            };
            line.push(format!("{:.1},{:.1}", lx(rate), ly(v)));
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{col}" stroke-width="1.5"/>"#,
            line.join(" ")
        );
        let x = left + 10.0 + 70.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{col}"/><text x="{}" y="45">{name}</text>"#,
            x + 16.0
        );
    }
    for p in pts.iter().filter(|p| positive(p.p99_us)) {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{} msg/s: p99 {:.0} µs ({})</title></circle>"#,
            lx(p.rate),
            ly(p.p99_us),
            if p.ok { "#2f9e44" } else { "#e03131" },
            p.rate.round(),
            p.p99_us,
            if p.ok { "ok" } else { "failed" }
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars_and_escapes() {
        let c = Chart {
            title: "a <b> & c".into(),
            series: vec!["wsreactor".into(), "peer".into()],
            groups: vec![
                ("100 x 20 B text".into(), vec![Some(0.8), Some(0.5)]),
                ("1 x 1 MiB binary".into(), vec![Some(1.2), None]),
            ],
            unit: "of raw TCP".into(),
        };
        let s = chart(&c);
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(s.matches("<title>").count(), 3);
        assert!(s.contains(">120%<"));
    }

    #[test]
    fn renders_a_curve() {
        let p = |rate, p99_us, ok| CurvePoint {
            rate,
            p50_us: p99_us / 4.0,
            p90_us: p99_us / 2.0,
            p99_us,
            ok,
        };
        let c = Curve {
            title: "p99 <search>".into(),
            target_us: Some(5000.0),
            best_rate: Some(48_000.0),
            points: vec![
                p(64_000.0, 9000.0, false),
                p(1000.0, 80.0, true),
                p(48_000.0, 3000.0, true),
            ],
        };
        let s = curve(&c);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("p99 &lt;search&gt;"));
        assert_eq!(s.matches("<circle").count(), 3);
        assert_eq!(s.matches("<polyline").count(), 3);
        assert!(s.contains("p99 target 5 ms"), "{s}");
        assert!(s.contains("48k msg/s"), "{s}");
        assert!(s.contains("(failed)") && s.contains("(ok)"));
        // No NaN or infinity leaks into coordinates, even from an empty curve.
        let empty = curve(&Curve {
            title: String::new(),
            target_us: None,
            best_rate: None,
            points: vec![],
        });
        assert!(!s.contains("NaN") && !empty.contains("NaN") && !empty.contains("inf"));
    }
}
