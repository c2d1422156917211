//! Human-readable summaries of single runs (the `--json` form is the serde serialisation of
//! the same report structs).

use crate::workloads::{ConnectionsReport, EchoReport};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Formats a count with thousands separators.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i128;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Formats a byte size compactly (20 B, 1 KiB, 16 MiB).
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn errors_line(errors: &std::collections::BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Summary of an echo/raw run.
pub fn echo_summary(r: &EchoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {}: {}/{} connections, {}{} {} messages, pipeline {}{}",
        r.workload,
        r.url,
        r.connected,
        r.connections,
        if r.mix.len() > 1 { "up to " } else { "" },
        size_label(r.size),
        r.kind,
        r.pipeline,
        r.rate
            .map(|x| format!(", fixed rate {} msg/s", thousands(x)))
            .unwrap_or_default()
    );
    if r.mix.len() > 1 {
        let parts: Vec<String> = r
            .mix
            .iter()
            .map(|m| {
                format!(
                    "{} {} ×{}: {}",
                    size_label(m.size),
                    m.kind,
                    m.weight,
                    thousands(m.messages as f64)
                )
            })
            .collect();
        let _ = writeln!(s, "  mix        {}", parts.join(", "));
    }
    let _ = writeln!(
        s,
        "  window     {:.2} s after {:.1} s warm-up",
        r.duration_s, r.warmup_s
    );
    let _ = writeln!(
        s,
        "  messages   {} echoed ({} msg/s)",
        thousands(r.messages as f64),
        thousands(r.msgs_per_s)
    );
    let _ = writeln!(
        s,
        "  payload    {:.2} MiB/s sent, {:.2} MiB/s received",
        r.mib_per_s_sent, r.mib_per_s_recv
    );
    let l = &r.latency;
    let _ = writeln!(
        s,
        "  latency    p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
    );
    let per = |v: Option<f64>| {
        v.map(|x| format!("{x:.3} µs/msg"))
            .unwrap_or_else(|| "n/a".into())
    };
    let _ = writeln!(
        s,
        "  generator  {:.0}% of a core, {}",
        r.generator_cpu_pct,
        per(r.generator_cpu_us_per_msg)
    );
    match r.server_cpu_pct {
        Some(p) => {
            let _ = writeln!(
                s,
                "  server     {:.0}% of a core, {}",
                p,
                per(r.server_cpu_us_per_msg)
            );
        }
        None => {
            let _ = writeln!(s, "  server     CPU unknown (pass --server-pid)");
        }
    }
    if let Some(o) = r.other_cpu_pct {
        let _ = writeln!(s, "  others     {o:.0}% of a core used by other processes");
    }
    if let Some(c) = &r.compression {
        let _ = writeln!(
            s,
            "  deflate    echoes {:.3} of their size on the wire ({} of {} compressed), sent {:.3}",
            c.ratio_recv,
            thousands(c.echoes_compressed as f64),
            thousands(r.messages as f64),
            c.ratio_sent
        );
    }
    let _ = writeln!(s, "  limit      {}", r.limit);
    let _ = writeln!(s, "  errors     {}", errors_line(&r.errors));
    s
}

/// Summary of a connections run.
pub fn connections_summary(r: &ConnectionsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "connections {}: {}/{} opened in {:.2} s ({} handshakes/s), {} held",
        r.url,
        r.opened,
        r.connections,
        r.open_s,
        thousands(r.handshakes_per_s),
        r.held
    );
    if let Some(us) = r.server_cpu_us_per_handshake {
        let _ = writeln!(s, "  server CPU {us:.1} µs per handshake");
    }
    match (
        r.server_rss_before,
        r.server_rss_after,
        r.server_bytes_per_conn,
    ) {
        (Some(b), Some(a), Some(p)) => {
            let _ = writeln!(
                s,
                "  server RSS {:.1} MiB before, {:.1} MiB after: {} bytes per connection",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0,
                thousands(p)
            );
        }
        _ => {
            let _ = writeln!(s, "  server RSS unknown (pass --server-pid)");
        }
    }
    let _ = writeln!(
        s,
        "  probe      echo on a fresh connection {}",
        if r.probe_ok { "ok" } else { "FAILED" }
    );
    let _ = writeln!(s, "  errors     {}", errors_line(&r.errors));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(size_label(20), "20 B");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(16 << 10), "16 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1500), "1500 B");
    }
}

/// Bytes on the wire (message payloads as framed, compressed or not; frame headers and TLS
/// records not counted) against payload bytes, over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionReport {
    /// Payload bytes of the messages sent.
    pub payload_bytes_sent: u64,
    /// Their bytes on the wire, compressed.
    pub wire_bytes_sent: u64,
    /// Payload bytes of the echoes, inflated.
    pub payload_bytes_recv: u64,
    /// Their bytes on the wire.
    pub wire_bytes_recv: u64,
    /// wire / payload of the echoes (the server's compression; 1.0 for none).
    pub ratio_recv: f64,
    /// wire / payload of the messages sent (the generator's compression).
    pub ratio_sent: f64,
    /// Echoes that came back compressed.
    pub echoes_compressed: u64,
}

impl CompressionReport {
    pub(crate) fn from_tally(t: &crate::engine::Tally) -> CompressionReport {
        let ratio = |wire: u64, payload: u64| wire as f64 / payload.max(1) as f64;
        CompressionReport {
            payload_bytes_sent: t.sent_bytes,
            wire_bytes_sent: t.sent_wire_bytes,
            payload_bytes_recv: t.recv_bytes,
            wire_bytes_recv: t.recv_wire_bytes,
            ratio_recv: ratio(t.recv_wire_bytes, t.recv_bytes),
            ratio_sent: ratio(t.sent_wire_bytes, t.sent_bytes),
            echoes_compressed: t.recv_compressed,
        }
    }
}
