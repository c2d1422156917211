//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Owns metric names, help texts and label sets. Every label value is one of a fixed set of
//! constants (never a peer's bytes), so nothing needs escaping and the series are bounded.
//! Runs on the scraping thread and sums the blocks as it reads them; it never writes one.

use std::io::Write as _;
use std::sync::Arc;

use super::counters::{RefusedBy, CAUSES, KINDS};
use super::histogram::BOUNDS_MS;
use super::{CloseCodeBucket, Counter, Counters, DEFLATE_IN, DEFLATE_OUT};

/// Writes every metric, summed over `blocks`, into `out`.
pub(crate) fn render(blocks: &[Arc<Counters>], out: &mut Vec<u8>) {
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { blocks.iter().map(|b| f(b)).sum() };
    let mut w = Writer { out };

    w.family(
        "wsreactor_connections_accepted_total",
        "counter",
        "TCP connections accepted.",
    );
    w.sample(
        "wsreactor_connections_accepted_total",
        "",
        sum(&|b| b.accepted.get()),
    );
    w.family(
        "wsreactor_connections_opened_total",
        "counter",
        "WebSocket upgrades completed.",
    );
    w.sample(
        "wsreactor_connections_opened_total",
        "",
        sum(&|b| b.opened.get()),
    );
    let opened = sum(&|b| b.opened.get());
    let closed = sum(&|b| b.closes.iter().map(Counter::get).sum());
    w.family(
        "wsreactor_connections_open",
        "gauge",
        "Open WebSocket connections.",
    );
    w.sample(
        "wsreactor_connections_open",
        "",
        opened.saturating_sub(closed),
    );
    w.family(
        "wsreactor_connections",
        "gauge",
        "TCP connections held in any state (set at the timer sweep).",
    );
    w.sample("wsreactor_connections", "", sum(&|b| b.connections.get()));

    w.family(
        "wsreactor_upgrades_refused_total",
        "counter",
        "Requests refused by HTTP status, and connections dropped at the pending-handshake limit.",
    );
    for by in RefusedBy::ALL {
        let labels = format!("status=\"{}\"", by.label());
        w.sample(
            "wsreactor_upgrades_refused_total",
            &labels,
            sum(&|b| b.refused[by as usize].get()),
        );
    }
    w.family(
        "wsreactor_http_requests_total",
        "counter",
        "Plain HTTP requests answered by the handler.",
    );
    w.sample(
        "wsreactor_http_requests_total",
        "",
        sum(&|b| b.http_requests.get()),
    );
    w.family(
        "wsreactor_scrapes_total",
        "counter",
        "Metrics scrapes answered on the WebSocket port.",
    );
    w.sample("wsreactor_scrapes_total", "", sum(&|b| b.scrapes.get()));

    w.family(
        "wsreactor_handshake_duration_seconds",
        "histogram",
        "From accept to the 101 response.",
    );
    let mut cumulative = 0;
    for (index, bound) in BOUNDS_MS.iter().map(Some).chain([None]).enumerate() {
        cumulative += sum(&|b| b.handshake.buckets().nth(index).unwrap_or(0));
        let le = match bound {
            Some(ms) => format!("le=\"{}\"", *ms as f64 / 1000.0),
            None => "le=\"+Inf\"".to_string(),
        };
        w.sample(
            "wsreactor_handshake_duration_seconds_bucket",
            &le,
            cumulative,
        );
    }
    let sum_ms = sum(&|b| b.handshake.sum_ms());
    w.float(
        "wsreactor_handshake_duration_seconds_sum",
        sum_ms as f64 / 1000.0,
    );
    w.sample("wsreactor_handshake_duration_seconds_count", "", cumulative);

    w.family(
        "wsreactor_closes_total",
        "counter",
        "Open WebSockets closed, by cause: peer or local close handshake, shutdown, or abnormal (protocol, timeout, backlog, io, panic).",
    );
    for (index, (_, cause)) in CAUSES.iter().enumerate() {
        let labels = format!("cause=\"{cause}\"");
        w.sample(
            "wsreactor_closes_total",
            &labels,
            sum(&|b| b.closes[index].get()),
        );
    }
    w.family(
        "wsreactor_close_codes_total",
        "counter",
        "Open WebSockets closed, by close code (1006: no close frame).",
    );
    for index in 0..CloseCodeBucket::LEN {
        let labels = match CloseCodeBucket::CODES.get(index) {
            Some(code) => format!("code=\"{code}\""),
            None => "code=\"other\"".to_string(),
        };
        w.sample(
            "wsreactor_close_codes_total",
            &labels,
            sum(&|b| b.close_codes[index].get()),
        );
    }
    w.family(
        "wsreactor_protocol_errors_total",
        "counter",
        "Connections failed for a protocol violation (1002, 1007, 1009).",
    );
    w.sample(
        "wsreactor_protocol_errors_total",
        "",
        sum(&|b| b.protocol_errors.get()),
    );

    for (name, help, pick) in [
        (
            "wsreactor_messages_received_total",
            "Data messages received, by kind.",
            0,
        ),
        (
            "wsreactor_messages_sent_total",
            "Data messages queued for sending, by kind.",
            1,
        ),
    ] {
        w.family(name, "counter", help);
        for (kind_index, kind) in KINDS {
            let labels = format!("kind=\"{kind}\"");
            let value = sum(&|b| {
                let by_kind = if pick == 0 {
                    &b.messages_in
                } else {
                    &b.messages_out
                };
                by_kind[kind_index].get()
            });
            w.sample(name, &labels, value);
        }
    }
    w.family(
        "wsreactor_received_bytes_total",
        "counter",
        "Bytes read from sockets (after TLS).",
    );
    w.sample(
        "wsreactor_received_bytes_total",
        "",
        sum(&|b| b.bytes_in.get()),
    );
    w.family(
        "wsreactor_sent_bytes_total",
        "counter",
        "Bytes written to sockets (before TLS).",
    );
    w.sample(
        "wsreactor_sent_bytes_total",
        "",
        sum(&|b| b.bytes_out.get()),
    );

    let counters: [Simple; 11] = [
        (
            "wsreactor_backpressure_pauses_total",
            "Times a connection stopped being read because its unwritten output passed the high-water mark.",
            |b| b.backpressure_pauses.get(),
        ),
        (
            "wsreactor_backlog_drops_total",
            "Connections dropped because their unwritten output reached max_backlog.",
            |b| b.backlog_drops.get(),
        ),
        (
            "wsreactor_handler_panics_total",
            "Handler callbacks that panicked.",
            |b| b.handler_panics.get(),
        ),
        (
            "wsreactor_publishes_total",
            "Messages published to a topic with at least one subscriber.",
            |b| b.publishes.get(),
        ),
        (
            "wsreactor_publish_drops_total",
            "Published messages a slow subscriber missed (slow_subscriber = drop).",
            |b| b.publish_drops.get(),
        ),
        (
            "wsreactor_slow_subscriber_closes_total",
            "Subscribers closed with 1008 for being slow (slow_subscriber = close).",
            |b| b.slow_subscriber_closes.get(),
        ),
        (
            "wsreactor_budget_read_pauses_total",
            "Times a heavy connection was not read because the memory budget was under pressure.",
            |b| b.budget_read_pauses.get(),
        ),
        (
            "wsreactor_budget_refused_messages_total",
            "New large messages refused with 1009 because they would pass 90% of the memory budget.",
            |b| b.budget_refused_messages.get(),
        ),
        (
            "wsreactor_budget_accept_pauses_total",
            "Times accepting paused at 90% of the memory budget.",
            |b| b.budget_accept_pauses.get(),
        ),
        (
            "wsreactor_budget_closes_total",
            "Heaviest holders closed with 1013 to bring the memory budget's total back under it.",
            |b| b.budget_closes.get(),
        ),
        (
            "wsreactor_budget_drops_total",
            "Heaviest holders dropped without a close frame (their unread backlog blocks one).",
            |b| b.budget_drops.get(),
        ),
    ];
    for (name, help, read) in counters {
        w.family(name, "counter", help);
        w.sample(name, "", sum(&read));
    }
    w.family(
        "wsreactor_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, by kind (resumed: a session ticket or a cached session).",
    );
    for (index, kind) in [(0, "full"), (1, "resumed")] {
        let labels = format!("kind=\"{kind}\"");
        let value = sum(&|b| b.tls_handshakes[index].get());
        w.sample("wsreactor_tls_handshakes_total", &labels, value);
    }
    w.family(
        "wsreactor_tls_handshake_failures_total",
        "counter",
        "TLS connections that ended before their handshake completed.",
    );
    w.sample(
        "wsreactor_tls_handshake_failures_total",
        "",
        sum(&|b| b.tls_handshake_failures.get()),
    );

    let gauges: [Simple; 5] = [
        (
            "wsreactor_memory_held_bytes",
            "Bytes held for connections as the memory budget counts them (set at the timer sweep).",
            |b| b.memory_held.get(),
        ),
        (
            "wsreactor_buffers_busy",
            "Connections holding a buffer set (set at the timer sweep).",
            |b| b.buffers_busy.get(),
        ),
        (
            "wsreactor_buffers_pooled",
            "Idle buffer sets kept for reuse (set at the timer sweep).",
            |b| b.buffers_free.get(),
        ),
        (
            "wsreactor_topics",
            "Topics with at least one subscriber (set at the timer sweep).",
            |b| b.topics.get(),
        ),
        (
            "wsreactor_subscribers",
            "Connections subscribed to at least one topic (set at the timer sweep).",
            |b| b.subscribers.get(),
        ),
    ];
    for (name, help, read) in gauges {
        w.family(name, "gauge", help);
        w.sample(name, "", sum(&read));
    }
    deflate(&mut w, blocks);
    w.family(
        "wsreactor_reactors",
        "gauge",
        "Reactor threads whose counters are summed here.",
    );
    w.sample("wsreactor_reactors", "", blocks.len() as u64);
}

/// A metric without labels: name, help, and how to read it from one block.
type Simple = (&'static str, &'static str, fn(&Counters) -> u64);

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{labels}}} {value}")
        };
    }

    fn float(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.out, "{name} {value}");
    }
}

/// permessage-deflate: bytes before and after deflate each way (their ratio is the
/// compression ratio), streams resumed from their window, and the decompressor and
/// compressor sets.
fn deflate(w: &mut Writer<'_>, blocks: &[Arc<Counters>]) {
    const WAYS: [(usize, &str); 2] = [(DEFLATE_IN, "in"), (DEFLATE_OUT, "out")];
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { blocks.iter().map(|b| f(b)).sum() };
    w.family(
        "wsreactor_deflate_bytes_total",
        "counter",
        "permessage-deflate payload bytes: received (in) compressed and what they inflated to, sent (out) compressed and what they were compressed from.",
    );
    for (i, way) in WAYS {
        let compressed = sum(&|b| b.deflate_compressed[i].get());
        let plain = sum(&|b| b.deflate_plain[i].get());
        for (form, n) in [("compressed", compressed), ("plain", plain)] {
            let labels = format!("direction=\"{way}\",form=\"{form}\"");
            w.sample("wsreactor_deflate_bytes_total", &labels, n);
        }
    }
    w.family(
        "wsreactor_deflate_resumes_total",
        "counter",
        "Compressed messages of context takeover streams whose decompressor (in) or compressor (out) was primed from the kept window because none was parked for the stream.",
    );
    for (i, way) in WAYS {
        let labels = format!("direction=\"{way}\"");
        let n = sum(&|b| b.deflate_resumes[i].get());
        w.sample("wsreactor_deflate_resumes_total", &labels, n);
    }
    w.family(
        "wsreactor_deflate_parked",
        "gauge",
        "Live decompressors (in) and compressors (out) parked for context takeover streams, at most --compression-live each per reactor (set at the timer sweep).",
    );
    for (i, way) in WAYS {
        let labels = format!("direction=\"{way}\"");
        let n = sum(&|b| b.deflate_parked[i].get());
        w.sample("wsreactor_deflate_parked", &labels, n);
    }
    w.family(
        "wsreactor_deflate_free_inflaters",
        "gauge",
        "Reset decompressors kept for reuse by messages without context takeover (set at the timer sweep).",
    );
    let n = sum(&|b| b.deflate_free_inflaters.get());
    w.sample("wsreactor_deflate_free_inflaters", "", n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn blocks_are_summed_and_buckets_are_cumulative() {
        let blocks: Vec<Arc<Counters>> = (0..3).map(|_| Arc::default()).collect();
        for (i, block) in blocks.iter().enumerate() {
            block.accepted.add(i as u64 + 1);
            block.handshake.observe_ms(3 * i as u64);
        }
        let mut out = Vec::new();
        render(&blocks, &mut out);
        let text = String::from_utf8(out).expect("the exposition is UTF-8");
        assert_eq!(
            line_value(&text, "wsreactor_connections_accepted_total"),
            Some(6)
        );
        let bucket = |le: &str| {
            line_value(
                &text,
                &format!("wsreactor_handshake_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.001"), Some(1), "0 ms");
        assert_eq!(bucket("0.005"), Some(2), "3 ms");
        assert_eq!(bucket("0.01"), Some(3), "6 ms");
        assert_eq!(bucket("+Inf"), Some(3));
        assert_eq!(line_value(&text, "wsreactor_reactors"), Some(3));
        assert!(text.ends_with('\n'));
    }
}
