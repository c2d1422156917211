//! python-websockets, a real client that takes context over by default, against the shipped
//! binary in `--compression context-takeover` mode over real sockets: every echo checked
//! byte for byte (by `deflate_client.py`), with live (de)compressors kept, with none kept
//! (every message resumed from its window), with fewer kept than connections (evictions
//! between interleaved connections), and with a small window.
//!
//! Outside CI the tests skip (saying so) when python3 lacks `websockets`; under `CI=true`
//! they fail instead, since `.ci/run` installs Debian's `python3-websockets`.

use std::process::{Command, Stdio};

#[path = "../../tests/common/mod.rs"]
mod common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deflate_client.py");

/// A python3 that has `websockets`; `None` (outside CI) if there is none.
fn python() -> Option<&'static str> {
    // Debian's package installs for the system interpreter, which another python3 earlier on
    // PATH (pyenv, a venv) does not see.
    let found = ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import websockets"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have python3-websockets (.ci/run installs it)"
        );
        eprintln!("SKIPPED: python3 has no websockets (apt-get install python3-websockets)");
    }
    found
}

/// Runs the client against a binary started with `args`; returns what it printed.
fn exchange(args: &[&str], conns: usize, count: usize) -> Option<String> {
    let python = python()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args(["--listen", "127.0.0.1:0", "--stats-interval-ms", "0"]);
    command.args(args);
    let server = common::Process::start(&mut command);
    let output = Command::new(python)
        .arg(SCRIPT)
        .arg(format!("ws://{}/", server.addr))
        .arg(conns.to_string())
        .arg(count.to_string())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("ok {count}")), "{stdout}");
    Some(stdout)
}

const TAKEOVER: &[&str] = &["--compression", "context-takeover"];

#[test]
fn python_websockets_takes_context_over_both_ways() {
    let Some(out) = exchange(TAKEOVER, 2, 80) else {
        return;
    };
    // Both directions take context over: neither no_context_takeover is answered.
    assert_eq!(
        out.matches("extensions: permessage-deflate; client_max_window_bits=15\n")
            .count(),
        2,
        "{out}"
    );
}

#[test]
fn streams_resume_from_their_windows_when_nothing_live_is_kept() {
    let args = [TAKEOVER, &["--compression-live", "0", "--threads", "1"]].concat();
    exchange(&args, 2, 60);
    // Fewer kept than connections interleaving: each message takes another's.
    let args = [TAKEOVER, &["--compression-live", "1", "--threads", "1"]].concat();
    exchange(&args, 3, 60);
}

#[test]
fn a_small_window_is_answered_and_kept() {
    let args = [TAKEOVER, &["--compression-window-bits", "10"]].concat();
    let Some(out) = exchange(&args, 1, 60) else {
        return;
    };
    assert!(
        out.contains("extensions: permessage-deflate; client_max_window_bits=10\n"),
        "{out}"
    );
}
