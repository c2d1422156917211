//! End-to-end: builds the `peers` crate's `peer-tungstenite` and `peer-raw` binaries and the
//! real `wsreactor` server (a no-op when they are fresh), starts them on ephemeral loopback
//! ports, and runs tiny bounded echo, raw and connections workloads in-process against them,
//! a message mix against wsreactor, and `wsrload compare` with a peer given as
//! `--server NAME=COMMAND`, asserting real counts and zero errors.

use load::engine::Mode;
use load::payload::Kind;
use load::workloads::{run_connections, run_echo, ConnectionsConfig, EchoConfig};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{binary, peer_binary, profile_dir, start, start_bin};

fn echo_cfg(
    mode: Mode,
    url: String,
    conns: usize,
    size: usize,
    kind: Kind,
    pid: i32,
) -> EchoConfig {
    EchoConfig {
        mode,
        url,
        connections: conns,
        sizes: vec![(size, 1)],
        kinds: vec![(kind, 1)],
        pipeline: 4,
        rate: None,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(800),
        connect_rate: 0.0,
        max_pending: 16,
        source_ips: 0,
        server_pid: Some(pid),
        send_timer: true,
        progress: false,
        wire: Default::default(),
    }
}

#[test]
fn echo_raw_and_connections_against_real_peers() {
    let ws = start("peer-tungstenite");
    let pid = ws.child.id() as i32;
    let url = format!("ws://{}/echo", ws.addr);

    // Small text messages with multi-byte characters.
    let r = run_echo(&echo_cfg(
        Mode::WebSocket,
        url.clone(),
        2,
        100,
        Kind::Text,
        pid,
    ))
    .expect("echo run");
    assert_eq!(r.error_total, 0, "errors: {:?}", r.errors);
    assert!(r.messages > 0);
    assert!(r.server_cpu_us_per_msg.is_some());

    // Binary messages large enough for the 64-bit length form, and empty ones.
    for size in [70_000, 0] {
        let r = run_echo(&echo_cfg(
            Mode::WebSocket,
            url.clone(),
            1,
            size,
            Kind::Binary,
            pid,
        ))
        .expect("echo run");
        assert_eq!(r.error_total, 0, "size {size}: {:?}", r.errors);
        assert!(r.messages > 0, "size {size}");
    }

    // Idle connections, memory sample, and a probe echo while they are open.
    let c = run_connections(&ConnectionsConfig {
        url,
        connections: 200,
        connect_rate: 0.0,
        max_pending: 64,
        settle: Duration::from_millis(200),
        hold: Duration::ZERO,
        source_ips: 0,
        server_pid: Some(pid),
        progress: false,
        tls: Default::default(),
    })
    .expect("connections run");
    assert_eq!(c.opened, 200);
    assert!(c.probe_ok, "{c:?}");
    assert_eq!(c.error_total, 0, "{:?}", c.errors);
    assert!(c.server_bytes_per_conn.is_some());

    let raw = start("peer-raw");
    let r = run_echo(&echo_cfg(
        Mode::Raw,
        format!("tcp://{}", raw.addr),
        2,
        1000,
        Kind::Binary,
        raw.child.id() as i32,
    ))
    .expect("raw run");
    assert_eq!(r.error_total, 0, "errors: {:?}", r.errors);
    assert!(r.messages > 0);
}

#[test]
fn mix_against_the_real_server() {
    let srv = start_bin(&binary("wsreactor-server", "wsreactor"));
    let pid = srv.child.id() as i32;
    let mut cfg = echo_cfg(
        Mode::WebSocket,
        format!("ws://{}/", srv.addr),
        8,
        0,
        Kind::Text,
        pid,
    );
    cfg.sizes = vec![(20, 80), (1024, 15), (64 * 1024, 5)];
    cfg.kinds = vec![(Kind::Text, 50), (Kind::Binary, 50)];
    let r = run_echo(&cfg).expect("mix run");
    assert_eq!(r.error_total, 0, "errors: {:?}", r.errors);
    assert_eq!(r.connected, 8);
    assert_eq!(r.kind, "mixed");
    assert_eq!(r.size, 64 * 1024, "the largest size");
    assert_eq!(r.mix.len(), 6, "{:?}", r.mix);
    for m in &r.mix {
        assert!(
            m.messages > 0,
            "no {} B {} echo seen: {:?}",
            m.size,
            m.kind,
            r.mix
        );
    }
    assert_eq!(r.mix.iter().map(|m| m.messages).sum::<u64>(), r.messages);
    // 80 % of messages are 20 B: allow wide noise, but the weights must show.
    let small: u64 = r
        .mix
        .iter()
        .filter(|m| m.size == 20)
        .map(|m| m.messages)
        .sum();
    let share = small as f64 / r.messages as f64;
    assert!((0.6..0.95).contains(&share), "20 B share {share}");
    assert!(r.server_cpu_us_per_msg.is_some());

    // A fixed rate keeps to it.
    let mut cfg = echo_cfg(
        Mode::WebSocket,
        format!("ws://{}/", srv.addr),
        4,
        100,
        Kind::Binary,
        pid,
    );
    cfg.rate = Some(2000.0);
    let r = run_echo(&cfg).expect("rated run");
    assert_eq!(r.error_total, 0, "errors: {:?}", r.errors);
    assert!(
        (0.8..1.1).contains(&(r.msgs_per_s / 2000.0)),
        "{}",
        r.msgs_per_s
    );
}

#[test]
fn compare_with_a_server_given_on_the_command_line() {
    let tung = peer_binary("peer-tungstenite");
    binary("wsreactor-server", "wsreactor");
    let out = std::env::temp_dir().join(format!("wsrload-e2e-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .arg("compare")
        .args(["--no-build", "--bin-dir"])
        .arg(profile_dir())
        .args(["--rounds", "1", "--duration", "0.5", "--warmup", "0.2"])
        .args([
            "--idle",
            "0",
            "--no-raw",
            "--quiet",
            "--servers",
            "wsreactor",
        ])
        .arg("--server")
        .arg(format!(
            "tung={} --listen 127.0.0.1:{{port}}",
            tung.display()
        ))
        .args(["--only", "100 x 20 B p16 binary", "--out-dir"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "compare failed: {stderr}");
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["baseline"], "wsreactor");
    let runs = v["echo"].as_array().expect("echo runs");
    for name in ["wsreactor", "tung"] {
        let run = runs
            .iter()
            .find(|r| r["server"] == name)
            .unwrap_or_else(|| panic!("no run for {name}: {json}"));
        let rep = &run["report"]["Ok"];
        assert!(rep["messages"].as_u64().unwrap_or(0) > 0, "{name}: {run}");
        assert_eq!(rep["error_total"], 0, "{name}: {run}");
        assert!(rep["server_cpu_us_per_msg"].as_f64().is_some(), "{name}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| 100 x 20 B p16 binary | tung |"), "{md}");
    assert!(md.contains("vs wsreactor"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn refuses_non_loopback_targets() {
    let e = load::engine::Target::parse("ws://10.1.2.3:80/").expect_err("not loopback");
    assert!(e.contains("loopback"), "{e}");
    let t = load::engine::Target::parse("ws://127.0.0.1:9001/chat").expect("loopback");
    assert_eq!(t.path, "/chat");
    assert_eq!(t.host, "127.0.0.1:9001");
}
