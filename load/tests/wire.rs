//! End-to-end over TLS and with compression: the real `wsreactor` binary serving `wss://`
//! with a certificate made at test time (rcgen), and the real `wsrload` binary against it:
//! echo at small and large sizes, idle connections (full TLS handshakes), `--deflate` with
//! every echo inflated and checked, and the refusals that show the checks are real (a
//! certificate nobody trusts, a server that declines compression); and `compare --tls` and
//! `compare --deflate` against their peers (peer-tungstenite-tls, peer-yawc).

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

mod common;
use common::{binary, peer_binary, profile_dir, start_bin_with, Peer};

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wsrload-wire-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn wsrload(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload")
}

/// Runs `wsrload` with `--json -q` and returns its report; it must exit 0.
fn report(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "-q"]);
    let out = wsrload(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wsrload {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn tls_server(dir: &std::path::Path, extra: &[&str]) -> (Peer, load::testcert::CertFiles) {
    let files = load::testcert::write_self_signed(dir).expect("certificate");
    let bin = binary("wsreactor-server", "wsreactor");
    let cert = files.cert.to_str().expect("path").to_string();
    let key = files.key.to_str().expect("path").to_string();
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend(extra);
    (start_bin_with(&bin, &args), files)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn wss_echo_connections_and_deflate_against_wsreactor() {
    let dir = scratch_dir("tls");
    let (srv, files) = tls_server(&dir, &[]);
    let pid = srv.child.id().to_string();
    let ca = files.cert.to_str().expect("path");
    let url = format!("wss://{}/", srv.addr);
    let short = ["-d", "0.5", "--warmup", "0.2"];

    // Small messages on a few connections, and one 1 MiB message at a time (many records).
    for (conns, size) in [("4", "20"), ("1", "1MiB")] {
        let mut a = vec!["echo", &url, "--tls-ca", ca, "-c", conns, "-s", size];
        a.extend(short);
        a.extend(["--server-pid", &pid]);
        let r = report(&a);
        assert_eq!(u(&r, "error_total"), 0, "{r}");
        assert_eq!(u(&r, "connected"), conns.parse::<u64>().unwrap(), "{r}");
        assert!(u(&r, "messages") > 0, "{r}");
        assert!(r["server_cpu_us_per_msg"].as_f64().is_some(), "{r}");
        assert!(r.get("compression").is_none(), "{r}");
    }

    // Idle connections: every one a full TLS handshake, then an upgrade.
    let r = report(&[
        "connections",
        &url,
        "--tls-ca",
        ca,
        "-n",
        "60",
        "--settle",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(u(&r, "opened"), 60, "{r}");
    assert_eq!(u(&r, "error_total"), 0, "{r}");
    assert!(r["probe_ok"].as_bool().unwrap_or(false), "{r}");
    assert!(r["handshakes_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(r["server_cpu_us_per_handshake"].as_f64().is_some(), "{r}");

    // Compressed JSON, small and large in one mix: every echo inflated and checked.
    let mut a = vec![
        "echo",
        &url,
        "--tls-ca",
        ca,
        "--deflate",
        "-c",
        "3",
        "-p",
        "2",
        "-s",
        "300:1,20KiB:1",
    ];
    a.extend(short);
    let r = report(&a);
    assert_eq!(u(&r, "error_total"), 0, "{r}");
    let msgs = u(&r, "messages");
    assert!(msgs > 0, "{r}");
    assert_eq!(r["kind"], "text", "{r}");
    let c = &r["compression"];
    assert_eq!(
        u(c, "echoes_compressed"),
        msgs,
        "the server compressed every echo: {r}"
    );
    assert_eq!(
        u(c, "payload_bytes_recv"),
        u(&r["mix"][0], "messages") * 300 + u(&r["mix"][1], "messages") * 20 * 1024,
        "{r}"
    );
    let ratio = c["ratio_recv"].as_f64().expect("ratio");
    assert!(
        ratio > 0.05 && ratio < 0.8,
        "JSON compresses, but not to nothing: {r}"
    );
    assert!(u(c, "wire_bytes_sent") < u(c, "payload_bytes_sent"), "{r}");

    // A certificate nobody trusts is refused: the verification is real.
    let other = load::testcert::write_self_signed(&dir.join("other")).expect("certificate");
    let out = wsrload(&[
        "echo",
        &url,
        "--tls-ca",
        other.cert.to_str().expect("path"),
        "-c",
        "2",
        "-d",
        "0.2",
        "--warmup",
        "0",
        "-q",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls-certificate"), "{err}");
    // And wss:// without any trust says what to pass.
    let out = wsrload(&["echo", &url, "-c", "1", "-d", "0.2", "-q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca"));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deflate_over_plain_ws_and_a_server_that_declines() {
    let bin = binary("wsreactor-server", "wsreactor");
    let srv = start_bin_with(&bin, &[]);
    let url = format!("ws://{}/", srv.addr);
    let r = report(&[
        "echo",
        &url,
        "--deflate",
        "-c",
        "2",
        "-s",
        "512",
        "-d",
        "0.4",
        "--warmup",
        "0.1",
    ]);
    assert_eq!(u(&r, "error_total"), 0, "{r}");
    assert!(u(&r, "messages") > 0, "{r}");
    assert_eq!(
        u(&r["compression"], "echoes_compressed"),
        u(&r, "messages"),
        "{r}"
    );
    drop(srv);

    let off = start_bin_with(&bin, &["--compression", "off"]);
    let url = format!("ws://{}/", off.addr);
    let out = wsrload(&[
        "echo",
        &url,
        "--deflate",
        "-c",
        "2",
        "-d",
        "0.2",
        "--warmup",
        "0",
        "-q",
        "-s",
        "64",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deflate-declined"), "{err}");
}

/// Runs `wsrload compare` with `extra` on built binaries, one short round; returns
/// results.json and results.md.
fn compare(name: &str, extra: &[&str]) -> (Value, String) {
    binary("wsreactor-server", "wsreactor");
    peer_binary("peer-tungstenite-tls");
    peer_binary("peer-yawc");
    let out = scratch_dir(name);
    let o = Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .arg("compare")
        .args(["--no-build", "--bin-dir"])
        .arg(profile_dir())
        .args([
            "--rounds",
            "1",
            "--duration",
            "0.4",
            "--warmup",
            "0.1",
            "--quiet",
        ])
        .args(extra)
        .arg("--out-dir")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "compare {extra:?} failed: {stderr}");
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    let _ = std::fs::remove_dir_all(&out);
    (serde_json::from_str(&json).expect("json"), md)
}

fn assert_clean_runs(v: &Value, names: &[&str]) {
    let runs = v["echo"].as_array().expect("echo runs");
    for name in names {
        let run = runs
            .iter()
            .find(|r| r["server"] == *name)
            .unwrap_or_else(|| panic!("no run for {name}: {v}"));
        let rep = &run["report"]["Ok"];
        assert!(u(rep, "messages") > 0, "{name}: {run}");
        assert_eq!(u(rep, "error_total"), 0, "{name}: {run}");
    }
    assert!(
        runs.iter().all(|r| r["server"] != "raw"),
        "no raw ceiling: {v}"
    );
}

#[test]
fn compare_over_tls_and_compressed() {
    let (v, md) = compare(
        "compare-tls",
        &[
            "--tls",
            "--idle",
            "30",
            "--servers",
            "wsreactor,fastwebsockets,tungstenite",
        ],
    );
    assert_clean_runs(&v, &["wsreactor", "tungstenite"]);
    let runs = v["echo"].as_array().expect("runs");
    assert!(
        runs.iter().all(|r| r["server"] != "fastwebsockets"),
        "no TLS there: {v}"
    );
    assert!(
        runs.iter().all(|r| r["report"]["Ok"]["url"]
            .as_str()
            .unwrap_or("")
            .starts_with("wss://")),
        "{v}"
    );
    assert!(runs.iter().any(|r| r["shape"]["size"] == 1 << 20), "{v}");
    // The idle workload: full TLS handshakes, rate and server CPU for each.
    for m in v["memory"].as_array().expect("memory runs") {
        let rep = &m["report"]["Ok"];
        assert_eq!(u(rep, "opened"), 30, "{m}");
        assert!(rep["server_cpu_us_per_handshake"].as_f64().is_some(), "{m}");
    }
    assert_eq!(v["memory"].as_array().map(|m| m.len()), Some(2), "{v}");
    assert!(md.contains("Over: TLS"), "{md}");

    let (v, md) = compare(
        "compare-deflate",
        &[
            "--deflate",
            "--idle",
            "0",
            "--only",
            "400 B",
            "--servers",
            "wsreactor",
        ],
    );
    assert_clean_runs(&v, &["wsreactor", "yawc"]);
    for r in v["echo"].as_array().expect("runs") {
        let rep = &r["report"]["Ok"];
        assert_eq!(rep["kind"], "text", "{r}");
        let c = &rep["compression"];
        assert_eq!(u(c, "echoes_compressed"), u(rep, "messages"), "{r}");
    }
    assert!(md.contains("### Bytes on the wire"), "{md}");
    assert!(md.contains("| 100 x 400 B | yawc |"), "{md}");
}
