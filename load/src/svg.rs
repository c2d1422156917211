//! The comparison chart as a self-contained SVG (written by hand: no plotting or font
//! dependencies): horizontal grouped bars, one group per workload, one bar per server, as a
//! fraction of a baseline (the raw TCP ceiling), with a legend and gridlines.

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
}
