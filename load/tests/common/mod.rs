//! Shared by the load tool's end-to-end tests: building the `peers` binaries and the real
//! `wsreactor` server in the test's own target directory and profile, starting one on an
//! ephemeral loopback port (it prints `listening on ADDR`), and stopping it by its PID.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A peer we started; killed by its PID on drop.
pub struct Peer {
    pub child: Child,
    pub addr: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds (if needed) and returns the path of a `peers` binary in this test's target dir and
/// profile.
pub fn peer_binary(name: &str) -> PathBuf {
    binary("peers", name)
}

/// This test's profile directory (target/<profile>).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("profile dir")
        .to_path_buf()
}

/// Builds (if needed) binary `name` of `package` in this test's target dir and profile.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-HASH
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("profile dir")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-q", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build for the peers");
    assert!(st.success(), "cargo build -p {package} --bin {name} failed");
    let p = profile_dir.join(name);
    assert!(p.exists(), "{} missing after build", p.display());
    p
}

pub fn start(name: &str) -> Peer {
    start_bin(&peer_binary(name))
}

pub fn start_bin(bin: &std::path::Path) -> Peer {
    start_bin_with(bin, &[])
}

/// Starts server binary `bin` on an ephemeral loopback port with `extra` arguments.
pub fn start_bin_with(bin: &std::path::Path, extra: &[&str]) -> Peer {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on ").nth(1) {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("server printed 'listening on'");
    Peer { child, addr }
}
