//! End-to-end tests of the open-loop modes and of mixes in `compare`, through the `wsrload`
//! binary against the real `wsreactor` binary on an ephemeral loopback port: a short
//! `--phases` run with a ramp and a pause, a short `--p99` search (and one whose target no
//! server can meet), and `compare` running a mix against servers given with `--server` and
//! `--path`. They assert on the JSON reports: every echo checked, no errors, rates kept, the
//! search's steps in the order the algorithm promises. Bounds are loose where the machine's
//! noise lands (rates within 25 %), never on speed.

mod common;

use common::{binary, start_bin, Peer};
use serde_json::Value;
use std::process::{Command, Stdio};

fn wsreactor() -> Peer {
    start_bin(&binary("wsreactor-server", "wsreactor"))
}

/// Runs `wsrload ARGS`; returns its exit code, its stdout parsed as JSON (`Null` when it is
/// not JSON) and its stderr.
fn wsrload(args: &[&str]) -> (i32, Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), v, stderr)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Every shape of the mix was echoed, and the per-shape counts add up to `total`.
fn assert_mix(report: &Value, shapes: usize, total: u64) {
    let mix = report["mix"].as_array().expect("mix");
    assert_eq!(mix.len(), shapes, "{report}");
    for m in mix {
        assert!(u(&m["messages"]) > 0, "no echo of {m}");
    }
    assert_eq!(mix.iter().map(|m| u(&m["messages"])).sum::<u64>(), total);
}

#[test]
fn phases_with_a_ramp_and_a_pause() {
    let srv = wsreactor();
    let pid = srv.child.id().to_string();
    let url = format!("ws://{}/", srv.addr);
    let (code, r, err) = wsrload(&[
        "echo",
        &url,
        "-c",
        "4",
        "-p",
        "4",
        "--sizes",
        "20:80,1KiB:20",
        "--kinds",
        "mixed",
        "--phases",
        "600ms@400,600ms@400..1200,300ms@0",
        "--warmup",
        "0.2",
        "--server-pid",
        &pid,
        "--json",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}\n{r}");
    assert_eq!(r["workload"], "phases");
    assert_eq!(u(&r["connected"]), 4);
    assert_eq!(u(&r["error_total"]), 0, "{r}");
    let p = r["phases"].as_array().expect("phases");
    let labels: Vec<&str> = p.iter().filter_map(|x| x["phase"].as_str()).collect();
    assert_eq!(labels, ["0.6s@400", "0.6s@400..1200", "0.3s@0"]);
    for (x, from, to) in [(&p[0], 400.0, 400.0), (&p[1], 400.0, 1200.0)] {
        assert_eq!((f(&x["rate_from"]), f(&x["rate_to"])), (from, to));
        let asked = f(&x["rate_asked"]);
        assert_eq!(asked, (from + to) / 2.0);
        let share = f(&x["msgs_per_s"]) / asked;
        assert!(
            (0.75..1.25).contains(&share),
            "achieved {share} of asked: {x}"
        );
        assert_eq!(u(&x["error_total"]), 0, "{x}");
        let (p50, p99) = (f(&x["latency"]["p50_us"]), f(&x["latency"]["p99_us"]));
        assert!(p50 > 0.0 && p50 <= p99, "{x}");
        assert!(f(&x["server_cpu_pct"]) >= 0.0, "{x}");
    }
    // The pause sends nothing; at most the messages still in flight come back in it.
    assert_eq!(u(&p[2]["sent"]), 0, "{}", p[2]);
    assert!(u(&p[2]["messages"]) <= 16, "{}", p[2]);
    let total: u64 = p.iter().map(|x| u(&x["messages"])).sum();
    assert_mix(&r, 4, total);
}

#[test]
fn p99_search_steps_up_bisects_and_repeats() {
    let srv = wsreactor();
    let pid = srv.child.id().to_string();
    let url = format!("ws://{}/", srv.addr);
    let out = std::env::temp_dir().join(format!("wsrload-p99-{}", std::process::id()));
    let out_s = out.to_string_lossy().into_owned();
    let (code, r, err) = wsrload(&[
        "echo",
        &url,
        "-c",
        "4",
        "-p",
        "8",
        "--sizes",
        "20,1KiB",
        "--kinds",
        "mixed",
        "--p99",
        "50ms",
        "--start-rate",
        "500",
        "--max-rate",
        "4000",
        "--step",
        "400ms",
        "--step-warmup",
        "100ms",
        "--min-samples",
        "100",
        "--server-pid",
        &pid,
        "--out-dir",
        &out_s,
        "--json",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}\n{r}");
    assert_eq!(r["workload"], "p99-search");
    assert_eq!(u(&r["error_total"]), 0, "{r}");
    assert_eq!(f(&r["target_p99_us"]), 50_000.0);
    let steps = r["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.len() <= 30);
    let rate = |s: &Value| f(&s["rate"]);
    let ok = |s: &Value| s["verdict"] == "ok";
    for s in steps {
        assert_eq!(u(&s["error_total"]), 0, "{s}");
        if ok(s) {
            // What "ok" promises.
            assert!(f(&s["latency"]["p99_us"]) <= 50_000.0, "{s}");
            assert!(u(&s["messages"]) >= 100, "{s}");
            assert!(f(&s["msgs_per_s"]) >= 0.95 * rate(s), "{s}");
        }
    }
    // Step-up: 500, 1000, 2000, 4000 (capped). A failing one is retried at once, and the
    // step-up goes on only if the retry passed.
    let up: Vec<&Value> = steps.iter().filter(|s| s["stage"] == "step-up").collect();
    let expect = [500.0, 1000.0, 2000.0, 4000.0];
    let passed = |s: &Value| {
        ok(s) || {
            let n = u(&s["n"]) as usize; // steps are numbered from 1: steps[n] is the next
            steps
                .get(n)
                .is_some_and(|x| x["stage"] == "retry" && rate(x) == rate(s) && ok(x))
        }
    };
    for (i, s) in up.iter().enumerate() {
        assert_eq!(rate(s), expect[i], "{s}");
        assert!(
            passed(s) || i == up.len() - 1,
            "only the last step-up fails: {s}"
        );
    }
    // Bisection stays strictly between the last good and the first bad step-up rate.
    if let Some(bad) = up.last().filter(|s| !passed(s)) {
        let good = if up.len() > 1 {
            rate(up[up.len() - 2])
        } else {
            0.0
        };
        for s in steps.iter().filter(|s| s["stage"] == "bisect") {
            assert!(good < rate(s) && rate(s) < rate(bad), "{s}");
        }
    }
    // The answer passed in a step and in its repeat.
    let best = &r["best"];
    if !best.is_null() {
        let b = f(&best["rate"]);
        assert!(steps
            .iter()
            .any(|s| ok(s) && rate(s) == b && s["stage"] != "repeat"));
        let last = steps.last().expect("a step");
        assert_eq!((last["stage"].as_str(), rate(last)), (Some("repeat"), b));
        assert!(ok(last) && best["confirmed"] == true, "{r}");
    }
    let total: u64 = steps.iter().map(|s| u(&s["messages"])).sum();
    assert_mix(&r, 4, total);
    // The files: the same report, and the curve with a dot per step.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("search.json")).expect("search.json"),
    )
    .expect("json");
    assert_eq!(file["steps"].as_array().map(Vec::len), Some(steps.len()));
    let svg = std::fs::read_to_string(out.join("curve.svg")).expect("curve.svg");
    assert_eq!(svg.matches("<circle").count(), steps.len(), "{svg}");
    let md = std::fs::read_to_string(out.join("search.md")).expect("search.md");
    assert!(md.contains("| step | stage | asked msg/s |"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn p99_search_with_a_target_no_server_meets() {
    let srv = wsreactor();
    let url = format!("ws://{}/", srv.addr);
    let (code, r, err) = wsrload(&[
        "echo",
        &url,
        "-c",
        "2",
        "--p99",
        "1us",
        "--start-rate",
        "500",
        "--step",
        "300ms",
        "--step-warmup",
        "100ms",
        "--min-samples",
        "50",
        "--json",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}\n{r}");
    assert!(r["best"].is_null(), "{r}");
    let steps = r["steps"].as_array().expect("steps");
    let stages: Vec<&str> = steps.iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(
        stages,
        ["step-up", "retry"],
        "one failure and its retry: {r}"
    );
    for s in steps {
        assert_eq!(
            (s["verdict"].as_str(), f(&s["rate"])),
            (Some("p99-over"), 500.0)
        );
    }
    assert!(r["stopped"].as_str().is_some_and(|s| s.contains("no rate")));
    assert_eq!(u(&r["error_total"]), 0);
}

#[test]
fn compare_runs_a_mix_on_the_path_it_is_given() {
    let bin = binary("wsreactor-server", "wsreactor");
    let out = std::env::temp_dir().join(format!("wsrload-mix-{}", std::process::id()));
    let cmd = |name: &str| format!("{name}={} --listen 127.0.0.1:{{port}}", bin.display());
    let o = Command::new(env!("CARGO_BIN_EXE_wsrload"))
        .arg("compare")
        .args(["--no-build", "--servers", "none", "--no-raw", "--quiet"])
        .args([
            "--rounds",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--idle",
            "0",
        ])
        .args(["--server", &cmd("echo"), "--path", "echo=/echo"])
        // wsreactor's /stats path greets every connection with a text message nobody sent:
        // if the path reaches the server, that server's run cannot be clean.
        .args(["--server", &cmd("stats"), "--path", "stats=/stats"])
        .args([
            "--sizes",
            "20:80,1KiB:15,64KiB:5",
            "--kinds",
            "text:50,binary:50",
        ])
        .args(["--connections", "4", "--pipeline", "2", "--out-dir"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("run wsrload compare");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "ran, with errors (stats): {stderr}"
    );
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("json");
    assert!(
        v["mix"].as_str().is_some_and(|m| m.contains("64KiB:5")),
        "{}",
        v["mix"]
    );
    let runs = v["echo"].as_array().expect("echo runs");
    assert_eq!(runs.len(), 2, "one mix run per server: {v}");
    let run = |name: &str| {
        runs.iter()
            .find(|r| r["server"] == name)
            .unwrap_or_else(|| panic!("no run for {name}: {v}"))
    };
    let echo = run("echo");
    assert_eq!(echo["kind"], "mixed");
    assert_eq!(echo["shape"]["mix"], true);
    assert_eq!(u(&echo["shape"]["size"]), 64 * 1024, "the largest size");
    let rep = &echo["report"]["Ok"];
    assert!(
        rep["url"].as_str().is_some_and(|u| u.ends_with("/echo")),
        "{rep}"
    );
    assert_eq!(u(&rep["error_total"]), 0, "{rep}");
    assert_mix(rep, 6, u(&rep["messages"]));
    let stats = &run("stats")["report"];
    let clean = stats["Ok"]["error_total"] == 0;
    assert!(!clean, "the /stats greeting must show as errors: {stats}");
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| 4 x mix ≤ 64 KiB p2 mixed | echo |"), "{md}");
    assert!(md.contains("The mix workload draws"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}
