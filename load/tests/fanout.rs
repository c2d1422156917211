//! `wsrload fanout` against real servers over loopback: the `wsreactor` binary's rooms,
//! `peer-broadcast` and the `peer-raw-fanout` ceiling deliver every tagged message to every
//! subscriber in order (checked by the generator's sequence tags), in both kinds; two
//! servers with no broker between them lose every message (so the loss count is real); and
//! `wsrload compare --fanout` writes its fan-out table.

use load::fanout::{run_fanout, FanoutConfig, FanoutReport};
use load::payload::Kind;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{binary, peer_binary, profile_dir, start, start_bin, Peer};

fn config(sub_url: String, pub_url: String, pids: Vec<i32>, kind: Kind) -> FanoutConfig {
    FanoutConfig {
        sub_url,
        pub_url,
        subscribers: 50,
        publishers: 2,
        rate: 400.0,
        size: 100,
        kind,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(700),
        connect_rate: 0.0,
        max_pending: 32,
        server_pids: pids,
        generator_cpu: None,
        progress: false,
    }
}

fn room(p: &Peer) -> String {
    format!("ws://{}/room/t", p.addr)
}

fn assert_delivered_all(name: &str, r: &FanoutReport) {
    assert!(r.clean(), "{name}: {r:?}");
    assert_eq!(r.connected, 52, "{name}");
    assert!(r.published > 100, "{name}: {} published", r.published);
    // Over the whole run nothing was lost (`clean`); in the window, each published message
    // reaches the 50 subscribers, give or take those in flight at its edges (a debug build
    // on a busy machine takes up to a few hundred milliseconds).
    let ratio = r.delivered as f64 / (r.published * 50) as f64;
    assert!((0.5..1.5).contains(&ratio), "{name}: {ratio} {r:?}");
    assert!(r.latency.max_us > 0.0, "{name}");
    assert!(r.server_cpu_ns_per_delivery.is_some(), "{name}");
    assert!(r.server_wait_pct.is_some(), "{name}");
    assert!(r.server_rss_bytes.is_some_and(|b| b > 0), "{name}");
}

#[test]
fn every_subscriber_gets_every_message_in_order() {
    let servers = [
        (
            "wsreactor",
            start_bin(&binary("wsreactor-server", "wsreactor")),
        ),
        ("broadcast", start("peer-broadcast")),
        ("raw-fanout", start("peer-raw-fanout")),
    ];
    for (name, p) in &servers {
        for kind in [Kind::Binary, Kind::Text] {
            let pid = p.child.id() as i32;
            let r = run_fanout(&config(room(p), room(p), vec![pid], kind)).expect(name);
            assert_delivered_all(&format!("{name} {}", kind.name()), &r);
        }
    }
}

#[test]
fn two_servers_without_a_broker_lose_everything() {
    let a = start_bin(&binary("wsreactor-server", "wsreactor"));
    let b = start_bin(&binary("wsreactor-server", "wsreactor"));
    let pids = vec![a.child.id() as i32, b.child.id() as i32];
    let mut cfg = config(room(&a), room(&b), pids, Kind::Binary);
    cfg.subscribers = 5;
    let r = run_fanout(&cfg).expect("run");
    assert_eq!(r.delivered, 0, "{r:?}");
    assert!(r.published_total > 0);
    assert_eq!(r.lost, r.published_total * 5, "{r:?}");
    assert!(!r.clean());
}

#[test]
fn compare_writes_the_fanout_table() {
    binary("wsreactor-server", "wsreactor");
    peer_binary("peer-broadcast");
    peer_binary("peer-raw-fanout");
    // The raw echo ceilings are in every comparison's list (not run with `--only fanout`).
    peer_binary("peer-raw");
    peer_binary("peer-raw-uring");
    let out = std::env::temp_dir().join(format!("wsrload-fanout-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .arg("compare")
        .args(["--no-build", "--bin-dir"])
        .arg(profile_dir())
        .args(["--rounds", "1", "--duration", "0.5", "--warmup", "0.2"])
        // One echo server: with `--only fanout` it runs nothing, but the list must exist.
        .args(["--servers", "wsreactor"])
        .args(["--idle", "0", "--quiet", "--fanout", "20"])
        .args([
            "--fanout-deliveries",
            "4000",
            "--only",
            "fanout",
            "--out-dir",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "compare failed: {stderr}");
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let runs = v["fanout"].as_array().expect("fanout runs");
    for name in ["wsreactor", "broadcast", "raw-fanout"] {
        let run = runs
            .iter()
            .find(|r| r["server"] == name)
            .unwrap_or_else(|| panic!("no run for {name}: {json}"));
        let rep = &run["report"]["Ok"];
        assert!(rep["delivered"].as_u64().unwrap_or(0) > 0, "{name}: {run}");
        assert_eq!(rep["lost"], 0, "{name}: {run}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| fanout 1 → 20 | raw-fanout |"), "{md}");
    assert!(md.contains("CPU vs wsreactor"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}
