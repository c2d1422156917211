//! The servers a comparison runs against, and how they start and stop. One list holds them
//! all: the built-in entries (wsreactor, fastwebsockets, tungstenite and the raw TCP ceiling
//! are predefined commands), `--server NAME=COMMAND` entries that we start every round with
//! `{port}` replaced by a free port, and `--target NAME=URL` entries that are already running.
//!
//! It owns parsing those entries, building the built-in binaries, starting a command pinned to
//! the server core, waiting until its port accepts connections, and stopping it by PID
//! (SIGTERM, then SIGKILL). It signals only processes it started itself, never a `--target`.
//! It must not run workloads or aggregate results.

use crate::engine::Target;
use crate::sys;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name the raw TCP ceiling goes by.
pub const RAW: &str = "raw";
/// The raw TCP ceiling on io_uring (`peer-raw-uring`), the ceiling of `wsreactor --io-uring`.
pub const RAW_URING: &str = "raw-uring";
/// `wsreactor --io-uring`.
pub const WSREACTOR_URING: &str = "wsreactor-uring";
/// The built-in WebSocket servers, by name, and their binaries.
pub const BUILTINS: [(&str, &str); 6] = [
    ("wsreactor", "wsreactor"),
    ("fastwebsockets", "peer-fastwebsockets"),
    ("tungstenite", "peer-tungstenite"),
    ("yawc", "peer-yawc"),
    // Rooms on `/room/NAME` (other paths echo): the fan-out workloads' peer and ceiling.
    ("broadcast", "peer-broadcast"),
    ("raw-fanout", "peer-raw-fanout"),
];
/// Binaries a built-in entry may run besides those of [`BUILTINS`] (`compare --tls`).
pub const BUILTIN_VARIANTS: [&str; 1] = ["peer-tungstenite-tls"];
/// How long a started server has to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How a server comes to be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Started by us each round: program and arguments, `{port}` still in them.
    Command(Vec<String>),
    /// Already running at this URL; its PID, when given, is only read (CPU time, memory).
    Target {
        /// `ws://127.0.0.1:PORT/PATH`.
        url: String,
        /// The server's PID, for CPU per message.
        pid: Option<i32>,
    },
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Name in the table.
    pub name: String,
    /// How it starts.
    pub launch: Launch,
    /// The raw TCP ceiling (runs the `raw` workload instead of WebSocket echo).
    pub raw: bool,
    /// The request path of a server we start (`--path NAME=/PATH`; a `--target`'s is in its
    /// URL).
    pub path: String,
    /// One of the built-in peers, started from `--bin-dir` (a `--server` command that happens
    /// to run a binary of the same name is the user's, not ours to build or look for).
    pub builtin: bool,
    /// Serves `wss://` (`compare --tls`).
    pub tls: bool,
}

/// Splits `NAME=VALUE`; NAME is non-empty and made of letters, digits, `-`, `_` and `.`.
pub fn split_named(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let name = name.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(ok) {
        return Err(format!(
            "{s:?}: the name must be letters, digits, '-', '_' or '.'"
        ));
    }
    if value.trim().is_empty() {
        return Err(format!("{s:?}: nothing after '='"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

impl Server {
    /// A built-in entry: `wsreactor`, `fastwebsockets`, `tungstenite`, `yawc` or `raw`, run from
    /// `bin_dir` as `BIN --listen 127.0.0.1:{port}`.
    pub fn builtin(name: &str, bin_dir: &Path) -> Result<Server, String> {
        let name = name.trim().trim_start_matches("peer-");
        let bin = if name == RAW {
            "peer-raw"
        } else if name == RAW_URING {
            "peer-raw-uring"
        } else if name == WSREACTOR_URING {
            "wsreactor"
        } else {
            BUILTINS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    format!(
                        "unknown built-in server {name:?} (known: wsreactor, wsreactor-uring, \
                         fastwebsockets, tungstenite, yawc, broadcast, raw-fanout, raw, \
                         raw-uring; give your own with --server NAME=COMMAND)"
                    )
                })?
        };
        let mut argv = vec![
            bin_dir.join(bin).to_string_lossy().into_owned(),
            "--listen".into(),
            "127.0.0.1:{port}".into(),
        ];
        if name == WSREACTOR_URING {
            argv.push("--io-uring".into());
        }
        Ok(Server {
            name: name.to_string(),
            launch: Launch::Command(argv),
            raw: name == RAW || name == RAW_URING,
            path: "/".into(),
            builtin: true,
            tls: false,
        })
    }

    /// `--server NAME=COMMAND`: COMMAND is split as a shell would split words (quotes and
    /// backslashes, no expansion) and must mention `{port}`.
    pub fn command(spec: &str) -> Result<Server, String> {
        let (name, cmd) = split_named(spec)?;
        let argv =
            shlex::split(&cmd).ok_or_else(|| format!("{spec:?}: unbalanced quotes in COMMAND"))?;
        if argv.is_empty() {
            return Err(format!("{spec:?}: empty COMMAND"));
        }
        if !argv.iter().any(|a| a.contains("{port}")) {
            return Err(format!(
                "{spec:?}: COMMAND must contain {{port}} (replaced by the port to listen on)"
            ));
        }
        Ok(Server {
            name,
            launch: Launch::Command(argv),
            raw: false,
            path: "/".into(),
            builtin: false,
            tls: false,
        })
    }

    /// `--target NAME=URL`: a running server at a loopback `ws://` URL.
    pub fn target(spec: &str) -> Result<Server, String> {
        let (name, url) = split_named(spec)?;
        if !url.starts_with("ws://") {
            return Err(format!(
                "{spec:?}: the URL must be ws://127.0.0.1:PORT/PATH"
            ));
        }
        Target::parse(&url)?;
        Ok(Server {
            name,
            launch: Launch::Target { url, pid: None },
            raw: false,
            path: "/".into(),
            builtin: false,
            tls: false,
        })
    }

    /// Sets the request path of a server we start: `/` followed by URL path characters.
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        if matches!(self.launch, Launch::Target { .. }) || self.raw {
            return Err(format!(
                "--path {}: only a started WebSocket server takes a path (a --target's is in its URL)",
                self.name
            ));
        }
        let ok = |c: char| c.is_ascii_graphic() && c != '#';
        if !path.starts_with('/') || !path.chars().all(ok) {
            return Err(format!(
                "--path {}: {path:?} must start with '/' and be printable ASCII without spaces",
                self.name
            ));
        }
        self.path = path.to_string();
        Ok(())
    }

    /// The built-in binary this entry needs built, if any.
    pub fn builtin_binary(&self) -> Option<&str> {
        let Launch::Command(argv) = &self.launch else {
            return None;
        };
        if !self.builtin {
            return None;
        }
        let file = Path::new(argv.first()?).file_name()?.to_str()?;
        (file == "peer-raw"
            || file == "peer-raw-uring"
            || BUILTINS.iter().any(|(_, b)| *b == file)
            || BUILTIN_VARIANTS.contains(&file))
        .then_some(file)
    }

    /// Starts the server (a `Command`, pinned to `cpu`) or connects to nothing (a `Target`),
    /// and returns once its port accepts TCP connections.
    pub fn start(&self, cpu: Option<usize>) -> Result<Instance, String> {
        let argv = match &self.launch {
            Launch::Target { url, pid } => {
                return Ok(Instance {
                    child: None,
                    url: url.clone(),
                    pid: *pid,
                    log: Arc::default(),
                })
            }
            Launch::Command(argv) => argv,
        };
        let port = free_port()?;
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpu) = cpu {
            // SAFETY: only sched_setaffinity (async-signal-safe) runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || sys::pin_to_cpu(cpu));
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: cannot start {:?}: {e}", self.name, argv[0]))?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        if let Some(stderr) = child.stderr.take() {
            // Drain its stderr for its whole life so it never blocks on a full pipe; keep the
            // last lines to explain a failed start.
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut l) = log.lock() {
                        if l.len() == 10 {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
            });
        }
        let scheme = match (self.raw, self.tls) {
            (true, _) => "tcp",
            (false, false) => "ws",
            (false, true) => "wss",
        };
        let pid = child.id() as i32;
        let mut inst = Instance {
            child: Some(child),
            url: format!("{scheme}://127.0.0.1:{port}{}", self.path),
            pid: Some(pid),
            log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(inst);
            }
            let exited = inst
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= end {
                std::thread::sleep(Duration::from_millis(50)); // let the last lines arrive
                let why = match exited {
                    Some(st) => format!("exited ({st})"),
                    None => format!("no connection accepted within {READY_TIMEOUT:?}"),
                };
                return Err(format!(
                    "{}: `{}` {why}; its stderr: {}",
                    self.name,
                    argv.join(" "),
                    inst.last_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A server ready for traffic. One we started is stopped by its PID when dropped.
#[derive(Debug)]
pub struct Instance {
    child: Option<Child>,
    url: String,
    pid: Option<i32>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Instance {
    /// Where to send traffic (`ws://…/` or, for the raw ceiling, `tcp://…/`).
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The PID whose CPU time and memory are read, if known.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }
    fn last_log(&self) -> String {
        match self.log.lock() {
            Ok(l) if !l.is_empty() => l.iter().cloned().collect::<Vec<_>>().join(" | "),
            _ => "(nothing)".into(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return; // a --target: not ours to stop
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child, by its PID, which it keeps until we reap it.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The workspace root: the parent of this crate's manifest directory when it exists,
/// else the current directory.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    match here.parent() {
        Some(p) if p.join("Cargo.toml").exists() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// cargo's target directory for the workspace (honours CARGO_TARGET_DIR and config).
pub fn target_dir(root: &Path) -> Result<PathBuf, String> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err("cargo metadata failed".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    v.get("target_directory")
        .and_then(|t| t.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata: no target_directory".into())
}

/// Builds the built-in binaries the list needs (`cargo build --release`).
pub fn build_builtins(root: &Path, servers: &[Server]) -> Result<(), String> {
    let needs = |f: &dyn Fn(&str) -> bool| servers.iter().filter_map(Server::builtin_binary).any(f);
    if needs(&|b| b == "wsreactor") {
        cargo_build(root, &["-p", "wsreactor-server", "--bin", "wsreactor"])?;
    }
    if needs(&|b| b.starts_with("peer-")) {
        cargo_build(root, &["-p", "peers"])?;
    }
    Ok(())
}

fn cargo_build(root: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!("compare: cargo build --release {}", args.join(" "));
    let st = Command::new("cargo")
        .arg("build")
        .arg("--release")
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !st.success() {
        return Err(format!("cargo build --release {} failed", args.join(" ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let s = Server::command("mine=./srv --port {port} --name 'a b'").expect("command");
        assert_eq!(s.name, "mine");
        assert_eq!(
            s.launch,
            Launch::Command(vec![
                "./srv".into(),
                "--port".into(),
                "{port}".into(),
                "--name".into(),
                "a b".into()
            ])
        );
        assert!(s.builtin_binary().is_none());
        let own = Server::command("mine=/opt/bin/wsreactor --listen 127.0.0.1:{port}").unwrap();
        assert!(
            own.builtin_binary().is_none(),
            "a command is the user's own binary"
        );
        assert!(
            Server::command("mine=./srv --port 9000").is_err(),
            "no {{port}}"
        );
        assert!(Server::command("=./srv {port}").is_err());
        assert!(Server::command("mine='./srv {port}").is_err(), "unbalanced");
        let t = Server::target("up=ws://127.0.0.1:9001/chat").expect("target");
        assert_eq!(
            t.launch,
            Launch::Target {
                url: "ws://127.0.0.1:9001/chat".into(),
                pid: None
            }
        );
        assert!(
            Server::target("far=ws://10.0.0.1:80/").is_err(),
            "not loopback"
        );
        let w = Server::builtin("wsreactor", Path::new("/b")).expect("builtin");
        assert_eq!(w.builtin_binary(), Some("wsreactor"));
        let r = Server::builtin("peer-raw", Path::new("/b")).expect("raw");
        assert!(r.raw && r.name == RAW);
        assert!(Server::builtin("nginx", Path::new("/b")).is_err());
        let mut m = Server::command("mine=./srv {port}").expect("command");
        assert_eq!(m.path, "/");
        m.set_path("/echo?room=1").expect("path");
        assert_eq!(m.path, "/echo?room=1");
        assert!(m.set_path("echo").is_err(), "no leading slash");
        assert!(m.set_path("/a b").is_err(), "a space");
        let mut t = t;
        assert!(t.set_path("/x").is_err(), "a target's path is in its URL");
    }
}
