//! A measurement client, not a server: the RSS one idle connection costs a `wsreactor`
//! binary, over plain TCP or TLS.
//!
//! ```text
//! cargo build --release -p wsreactor-server --examples
//! target/release/examples/idle_rss target/release/wsreactor 10000 tls [SERVER ARGS...]
//! ```
//!
//! Starts the binary (one reactor, metrics off, a certificate made by `rcgen` for TLS),
//! reads its RSS, opens N connections one after another, echoes one text message on each
//! and keeps it open, waits half a second, reads the RSS again and prints the difference
//! per connection. Needs N plus a few dozen open files (`ulimit -n`); stops the server it
//! started.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::{client_tls_with_config, Connector, Message};

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS");
    kib * 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(bin), Some(count)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: idle_rss BINARY COUNT [tls|plain] [SERVER ARGS...]");
        std::process::exit(2);
    };
    let count: usize = count;
    let tls = args.get(3).is_some_and(|mode| mode == "tls");
    let extra = args.get(4..).unwrap_or_default();

    let dir = std::env::temp_dir().join(format!("idle-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");

    let mut command = Command::new(bin);
    command.args(["--listen", "127.0.0.1:0", "--threads", "1", "--no-metrics"]);
    if tls {
        command.arg("--tls-cert").arg(&cert_path);
        command.arg("--tls-key").arg(&key_path);
    }
    command.args(extra);
    let mut server = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| Some(l.strip_prefix("wsreactor: listening on ")?.to_string()))
        .expect("the start line");
    std::thread::spawn(move || lines.for_each(drop));
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    std::thread::sleep(Duration::from_millis(300));
    let before = rss(server.id());
    let mut open = Vec::with_capacity(count);
    for i in 0..count {
        let tcp = TcpStream::connect(&addr).expect("connect");
        let (url, connector) = if tls {
            (
                format!("wss://localhost:{port}/"),
                Connector::Rustls(Arc::clone(&client)),
            )
        } else {
            (format!("ws://{addr}/"), Connector::Plain)
        };
        let (mut ws, _) = client_tls_with_config(url, tcp, None, Some(connector)).expect("upgrade");
        ws.send(Message::text(format!("hello {i}"))).expect("send");
        ws.read().expect("echo");
        open.push(ws);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss(server.id());
    println!(
        "{} {count} idle connections: server RSS {before} B before, {after} B after, {} B per connection",
        if tls { "tls" } else { "plain" },
        after.saturating_sub(before) / count as u64
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
