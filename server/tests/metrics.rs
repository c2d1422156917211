//! `/metrics` of the shipped binary after a known traffic pattern, read with a real Prometheus
//! parser (Python's `prometheus_client`, Debian's `python3-prometheus-client`): every refusal
//! status, messages of known kinds, a protocol-error close, a normal close, backpressure, the
//! pending-handshake limit, and the separate metrics listener's defences.
//!
//! Outside CI the tests skip (saying so) when python3 lacks `prometheus_client`; under
//! `CI=true` they fail instead, since `.ci/run` installs it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{masked_frame, upgrade_request, RawClient};

const ORIGIN: &str = "Origin: http://ok.example\r\n";

/// Samples by `name{label="value",...}` (labels sorted), as the Python parser read them.
type Samples = BTreeMap<String, f64>;

/// Parses an exposition with `prometheus_client.parser`; `None` if the parser is missing
/// outside CI.
fn parse(exposition: &str) -> Option<Samples> {
    const SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, float(s.value)))
"#;
    // Debian's package installs for the system interpreter, which another python3 earlier on
    // PATH (pyenv, a venv) does not see.
    let Some(python) = ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have python3-prometheus-client (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: python3 has no prometheus_client (apt-get install python3-prometheus-client)"
        );
        return None;
    };
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feed the parser");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "the parser rejected:\n{exposition}"
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    Some(
        text.lines()
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                (series.to_string(), value.parse().expect("a number"))
            })
            .collect(),
    )
}

fn value(samples: &Samples, series: &str) -> f64 {
    let series = if series.contains('{') {
        series.to_string()
    } else {
        format!("{series}{{}}")
    };
    *samples
        .get(&series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// One scrape on a connection of its own: the body of a 200.
fn scrape(addr: SocketAddr, path: &str) -> String {
    let mut client = RawClient::connect(addr);
    client.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let (status, head, body) = client.read_response();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    String::from_utf8(body).expect("UTF-8 exposition")
}

fn refused_with(addr: SocketAddr, request: &str) -> u16 {
    let mut client = RawClient::connect(addr);
    client.send(request.as_bytes());
    client.read_response().0
}

#[test]
fn a_known_traffic_pattern_is_counted_exactly() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--allow-origin",
        "http://ok.example",
        "--max-request-head",
        "1024",
        "--stream-from",
        "0",
        "--stats-interval-ms",
        "0",
        "--backlog-high-water",
        "65536",
        "--backlog-low-water",
        "16384",
        "--handshake-timeout-ms",
        "1000",
    ]);
    let server = common::Process::start(&mut command);
    let addr: SocketAddr = server.addr.parse().expect("address");

    // Refusals, one per status.
    let no_key = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(refused_with(addr, no_key), 400);
    let evil = upgrade_request("/", "Origin: http://evil.example\r\n");
    assert_eq!(refused_with(addr, &evil), 403);
    let version_8 = upgrade_request("/", ORIGIN).replace("Version: 13", "Version: 8");
    assert_eq!(refused_with(addr, &version_8), 426);
    let huge = upgrade_request("/", &format!("X-Pad: {}\r\n{ORIGIN}", "a".repeat(2000)));
    assert_eq!(refused_with(addr, &huge), 431);

    // A plain HTTP request (the page) goes to the handler.
    let mut page = RawClient::connect(addr);
    page.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(page.read_response().0, 200);

    // Three text and two binary messages, echoed, then a normal close from the client.
    let mut normal = RawClient::connect(addr);
    normal.send(upgrade_request("/", ORIGIN).as_bytes());
    assert_eq!(normal.read_response_head().0, 101);
    for text in ["one", "two", "three"] {
        normal.send(&masked_frame(true, 1, text.as_bytes()));
        assert_eq!(normal.read_frame().expect("echo").payload, text.as_bytes());
    }
    for size in [100, 1000] {
        normal.send(&masked_frame(true, 2, &vec![7; size]));
        assert_eq!(normal.read_frame().expect("echo").payload.len(), size);
    }
    normal.send(&masked_frame(true, 8, &common::close_payload(1000, b"")));
    assert_eq!(normal.read_frame().expect("close").close_code(), Some(1000));
    assert!(
        normal.read_frame().is_none(),
        "the server closes after the handshake"
    );

    // An unmasked frame: failed with 1002.
    let mut rude = RawClient::connect(addr);
    rude.send(upgrade_request("/", ORIGIN).as_bytes());
    assert_eq!(rude.read_response_head().0, 101);
    rude.send(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(rude.expect_close().close_code(), Some(1002));

    // Backpressure: 16 messages of 512 KiB sent without reading the echoes fill the socket
    // buffers, so the server's output passes the high-water mark and it stops reading.
    let mut slow = RawClient::connect(addr);
    slow.send(upgrade_request("/", ORIGIN).as_bytes());
    assert_eq!(slow.read_response_head().0, 101);
    let big = masked_frame(true, 2, &vec![1; 512 << 10]);
    let writer = {
        let mut stream = slow.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..16 {
                stream.write_all(&big).expect("write a big message");
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300)); // let the buffers fill before reading
    for _ in 0..16 {
        assert_eq!(slow.read_frame().expect("echo").payload.len(), 512 << 10);
    }
    writer.join().expect("writer");
    slow.send(&masked_frame(true, 8, &common::close_payload(1000, b"")));
    assert_eq!(slow.read_frame().expect("close").close_code(), Some(1000));
    assert!(slow.read_frame().is_none());

    // The gauges are sampled at the timer sweep (every 250 ms here): scrape until the
    // closed connections have left the connection gauge, or give up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let Some(samples) = parse(&scrape(addr, "/metrics")) else {
            return;
        };
        // At most the scrape's own connection is held (the sweep may come before or after it).
        if value(&samples, "wsreactor_connections") <= 1.0 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let scrapes = value(&samples, "wsreactor_scrapes_total");
    let expected = [
        ("wsreactor_upgrades_refused_total{status=\"400\"}", 1.0),
        ("wsreactor_upgrades_refused_total{status=\"403\"}", 1.0),
        ("wsreactor_upgrades_refused_total{status=\"426\"}", 1.0),
        ("wsreactor_upgrades_refused_total{status=\"431\"}", 1.0),
        ("wsreactor_upgrades_refused_total{status=\"limit\"}", 0.0),
        ("wsreactor_http_requests_total", 1.0),
        // 4 refused, the page, 3 WebSockets, the scrapes before (counted once answered) and
        // this one.
        ("wsreactor_connections_accepted_total", 9.0 + scrapes),
        ("wsreactor_connections_opened_total", 3.0),
        ("wsreactor_connections_open", 0.0),
        ("wsreactor_messages_received_total{kind=\"text\"}", 3.0),
        ("wsreactor_messages_received_total{kind=\"binary\"}", 18.0),
        ("wsreactor_messages_sent_total{kind=\"text\"}", 3.0),
        ("wsreactor_messages_sent_total{kind=\"binary\"}", 18.0),
        ("wsreactor_closes_total{cause=\"peer\"}", 2.0),
        ("wsreactor_closes_total{cause=\"protocol\"}", 1.0),
        ("wsreactor_closes_total{cause=\"io\"}", 0.0),
        ("wsreactor_closes_total{cause=\"timeout\"}", 0.0),
        ("wsreactor_close_codes_total{code=\"1000\"}", 2.0),
        ("wsreactor_close_codes_total{code=\"1002\"}", 1.0),
        ("wsreactor_close_codes_total{code=\"other\"}", 0.0),
        ("wsreactor_protocol_errors_total", 1.0),
        ("wsreactor_handshake_duration_seconds_count", 3.0),
        (
            "wsreactor_handshake_duration_seconds_bucket{le=\"+Inf\"}",
            3.0,
        ),
        ("wsreactor_backlog_drops_total", 0.0),
        ("wsreactor_handler_panics_total", 0.0),
        ("wsreactor_subscribers", 0.0),
        // No client here offered compression.
        (
            "wsreactor_deflate_bytes_total{direction=\"in\",form=\"compressed\"}",
            0.0,
        ),
        (
            "wsreactor_deflate_bytes_total{direction=\"out\",form=\"plain\"}",
            0.0,
        ),
        // Two reactor threads (asked for above): every figure here is their sum.
        ("wsreactor_reactors", 2.0),
    ];
    for (series, want) in expected {
        assert_eq!(value(&samples, series), want, "{series}");
    }
    assert!(value(&samples, "wsreactor_connections") <= 1.0);
    let pauses = value(&samples, "wsreactor_backpressure_pauses_total");
    assert!(pauses >= 1.0, "the slow reader paused the server's reading");
    // Every byte the clients' frames carried was read, and every echo written.
    let echoed = (3 + 3 + 5 + 100 + 1000 + 16 * (512 << 10)) as f64;
    assert!(value(&samples, "wsreactor_received_bytes_total") > echoed);
    assert!(value(&samples, "wsreactor_sent_bytes_total") > echoed);
}

#[test]
fn the_metrics_listener_counts_the_pending_limit_and_survives_bad_scrapers() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let metrics_addr = probe.local_addr().expect("address");
    drop(probe);
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--max-pending-handshakes",
        "1",
        // One reactor: the pending limit is shared out among reactors, and this counts one.
        "--threads",
        "1",
        "--metrics-listen",
        &metrics_addr.to_string(),
    ]);
    let server = common::Process::start(&mut command);
    let addr: SocketAddr = server.addr.parse().expect("address");

    // With --metrics-listen the WebSocket port serves no metrics: the page's 404.
    let mut client = RawClient::connect(addr);
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(client.read_response().0, 404);
    drop(client);

    // One silent connection takes the only pending-handshake place; the next is dropped.
    let silent = TcpStream::connect(addr).expect("connect");
    let dropped = wait_for_refusals(metrics_addr, &silent, addr);
    assert!(dropped, "a connection over the pending limit was counted");
    drop(silent);

    // A scraper that never finishes its request holds the listener at most its 2 s.
    let _stalled = TcpStream::connect(metrics_addr).expect("connect");
    let mut oversized = TcpStream::connect(metrics_addr).expect("connect");
    oversized
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ =
        oversized.write_all(format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(8000)).as_bytes());
    let mut answer = String::new();
    let _ = oversized.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    let Some(samples) = parse(&scrape(metrics_addr, "/metrics")) else {
        return;
    };
    assert_eq!(
        value(&samples, "wsreactor_scrapes_total"),
        0.0,
        "not on the WS port"
    );
    let mut other = RawClient::connect(metrics_addr);
    other.send(b"GET /other HTTP/1.1\r\n\r\n");
    assert_eq!(other.read_response().0, 404);
}

/// Connects past the pending limit until the listener reports a refusal (the silent socket is
/// accepted first, but accept order is the kernel's): whether one was counted.
fn wait_for_refusals(metrics_addr: SocketAddr, silent: &TcpStream, addr: SocketAddr) -> bool {
    let _ = silent;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut extra = TcpStream::connect(addr).expect("connect");
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        // Dropped by the server: end of stream (or a reset) without any answer.
        let _ = extra.read(&mut byte);
        let body = scrape(metrics_addr, "/metrics");
        let Some(samples) = parse(&body) else {
            return true;
        };
        if value(
            &samples,
            "wsreactor_upgrades_refused_total{status=\"limit\"}",
        ) >= 1.0
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Compressed traffic from python-websockets (context takeover both ways, every message
/// compressed) on two connections taking turns on one reactor that keeps one live
/// (de)compressor: every message finds the other connection's parked, so each resumes from
/// its window; when both have closed, nothing stays parked.
#[test]
fn compressed_traffic_counts_bytes_both_ways_and_resumes() {
    let Some(python) = ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import websockets, prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have python3-websockets (.ci/run installs it)"
        );
        eprintln!("SKIPPED: python3 has no websockets or prometheus_client");
        return;
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--compression",
        "context-takeover",
        "--compression-live",
        "1",
    ]);
    let server = common::Process::start(&mut command);
    let addr: SocketAddr = server.addr.parse().expect("address");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate_client.py");
    let status = Command::new(python)
        .args([script, &format!("ws://{addr}/"), "2", "30"])
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs");
    assert!(status.success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let Some(samples) = parse(&scrape(addr, "/metrics")) else {
            return;
        };
        let parked = value(&samples, "wsreactor_deflate_parked{direction=\"in\"}");
        if (value(&samples, "wsreactor_connections") <= 1.0 && parked == 0.0)
            || Instant::now() > deadline
        {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes = |direction: &str, form: &str| {
        value(
            &samples,
            &format!("wsreactor_deflate_bytes_total{{direction=\"{direction}\",form=\"{form}\"}}"),
        )
    };
    let received = value(&samples, "wsreactor_messages_received_total{kind=\"text\"}")
        + value(
            &samples,
            "wsreactor_messages_received_total{kind=\"binary\"}",
        );
    assert_eq!(received, 60.0);
    // The JSON-like text compresses several times over, both ways.
    assert!(
        bytes("in", "plain") > 3.0 * bytes("in", "compressed"),
        "{samples:#?}"
    );
    assert!(
        bytes("out", "plain") > 3.0 * bytes("out", "compressed"),
        "{samples:#?}"
    );
    // What came in inflated is what went out compressed, less the echoes below the
    // compression threshold (256 B), which went out plain.
    assert!(bytes("out", "plain") <= bytes("in", "plain"));
    assert!(bytes("out", "plain") > 0.9 * bytes("in", "plain"));
    // Every message arrived compressed, and each took its turn after the other connection.
    let resumes_in = value(
        &samples,
        "wsreactor_deflate_resumes_total{direction=\"in\"}",
    );
    assert_eq!(resumes_in, received);
    let resumes_out = value(
        &samples,
        "wsreactor_deflate_resumes_total{direction=\"out\"}",
    );
    assert!((20.0..=60.0).contains(&resumes_out), "{resumes_out}");
    for direction in ["in", "out"] {
        let series = format!("wsreactor_deflate_parked{{direction=\"{direction}\"}}");
        assert_eq!(
            value(&samples, &series),
            0.0,
            "{series}: freed with their connections"
        );
    }
}
