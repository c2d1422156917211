//! The binary's application over real sockets: plain HTTP served from the built-in page or a
//! folder (status codes, headers, keep-alive, every path-escape attempt) and the `/stats` push.
//!
//! Each test runs `wsreactor_server::app::App` (the handler the binary runs) in a `Server` on an
//! ephemeral 127.0.0.1 port, in a thread that is shut down and joined at the end.

// The harness shared with the library's tests, not a copy of it.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::Message as WsMessage;
use wsreactor::{Config, Server, ShutdownHandle};
use wsreactor_server::app::App;
use wsreactor_server::static_files::StaticFiles;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server running [`App`], shut down and joined on drop.
struct AppServer {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl AppServer {
    fn start(files: StaticFiles, stats_interval: Option<Duration>) -> AppServer {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tick_interval: stats_interval,
            close_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let interval_ms = stats_interval.map_or(0, |t| t.as_millis() as u64);
        let mut server =
            Server::bind(common::on_backend(config), App::new(files, interval_ms)).expect("bind");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run().expect("reactor"));
        AppServer {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }

    fn embedded() -> AppServer {
        AppServer::start(StaticFiles::embedded(), None)
    }

    fn connect(&self) -> Http {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            if !std::thread::panicking() {
                joined.expect("reactor thread");
            }
        }
    }
}

/// One parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length")
    }
}

/// A raw HTTP/1.1 client on one connection; keeps bytes read past a response for the next.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    fn send(&mut self, request: &str) {
        self.stream.write_all(request.as_bytes()).expect("write");
    }

    fn get(&mut self, method: &str, target: &str) -> Reply {
        self.send(&format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ));
        self.reply(method == "HEAD")
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Reads one response; `head_only` for a reply to `HEAD` (no body follows its head).
    fn reply(&mut self, head_only: bool) -> Reply {
        let head_end = loop {
            if let Some(len) = common::head_len(&self.buf) {
                break len;
            }
            assert!(self.fill() > 0, "connection closed before a full head");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("status code");
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header line");
                (name.to_string(), value.trim().to_string())
            })
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        self.buf.drain(..head_end);
        let len = if head_only { 0 } else { reply.content_length() };
        while self.buf.len() < len {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        reply.body = self.buf.drain(..len).collect();
        reply
    }

    /// Whether the server closes the connection (reads EOF) with nothing else to send.
    fn closed_by_server(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

/// A temporary folder tree: `site/` (served) next to `secret.txt` (must never be served).
struct Site {
    base: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let base = std::env::temp_dir().join(format!("wsreactor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let site = base.join("site");
        std::fs::create_dir_all(site.join("docs")).unwrap();
        std::fs::write(site.join("index.html"), "<h1>folder index</h1>").unwrap();
        std::fs::write(site.join("data.json"), "{\"ok\":true}").unwrap();
        std::fs::write(site.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::write(site.join(".hidden"), "hidden").unwrap();
        std::fs::write(base.join("secret.txt"), "TOP-SECRET").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), site.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(&base, site.join("parent")).unwrap();
        std::os::unix::fs::symlink("/etc", site.join("etc")).unwrap();
        Site { base }
    }

    fn root(&self) -> PathBuf {
        self.base.join("site")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn get_root_serves_the_built_in_page() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    let reply = http.get("GET", "/");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.content_length(), reply.body.len());
    assert_eq!(reply.header("connection"), Some("keep-alive"));
    let page = String::from_utf8(reply.body).expect("UTF-8 page");
    assert!(page.contains("<title>wsreactor</title>"));
    assert!(page.contains("app.js") && page.contains("style.css"));
}

#[test]
fn head_announces_the_length_and_sends_no_body() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    let head = http.get("HEAD", "/");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // If a body followed the HEAD reply, this GET's reply would not start where it is read.
    let get = http.get("GET", "/");
    assert_eq!(get.status, 200);
    assert_eq!(head.content_length(), get.body.len());
    assert!(head.content_length() > 0);
}

#[test]
fn missing_file_is_404() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    let reply = http.get("GET", "/no/such/file.html");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("connection"), Some("keep-alive"));
}

#[test]
fn other_methods_are_405_with_allow() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    for method in ["DELETE", "PUT", "OPTIONS", "PATCH"] {
        let reply = http.get(method, "/");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // A request with a body is answered, then the connection closes (the body is not read).
    http.send("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc");
    let reply = http.reply(false);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("connection"), Some("close"));
}

#[test]
fn malformed_requests_are_400() {
    let server = AppServer::embedded();
    for request in [
        "GET\r\n\r\n",
        "GET / HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
        "GET /%zz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ] {
        let mut http = server.connect();
        http.send(request);
        let reply = http.reply(false);
        assert_eq!(reply.status, 400, "{request:?}");
    }
}

#[test]
fn keep_alive_serves_two_requests_then_honours_close() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    let js = http.get("GET", "/app.js");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("connection"), Some("keep-alive"));
    let css = http.get("GET", "/style.css?v=2");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    // Two pipelined requests in one write, the second asking to close.
    http.send(concat!(
        "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ));
    let first = http.reply(false);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    let last = http.reply(true);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(http.closed_by_server());
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let server = AppServer::embedded();
    let mut http = server.connect();
    http.send("GET / HTTP/1.0\r\n\r\n");
    let reply = http.reply(false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(http.closed_by_server());
}

#[test]
fn static_folder_is_served_with_types_and_index() {
    let site = Site::new("serve");
    let server = AppServer::start(StaticFiles::dir(site.root()).unwrap(), None);
    let mut http = server.connect();
    let index = http.get("GET", "/");
    assert_eq!(
        (index.status, &index.body[..]),
        (200, &b"<h1>folder index</h1>"[..])
    );
    let json = http.get("GET", "/data.json");
    assert_eq!(json.header("content-type"), Some("application/json"));
    let docs = http.get("GET", "/docs");
    assert_eq!(docs.status, 301);
    assert_eq!(docs.header("location"), Some("/docs/"));
    let docs = http.get("GET", "/docs/");
    assert_eq!((docs.status, &docs.body[..]), (200, &b"<h1>docs</h1>"[..]));
    // The built-in page is not mixed in.
    assert_eq!(http.get("GET", "/app.js").status, 404);
}

#[test]
fn no_path_escapes_the_served_folder() {
    let site = Site::new("escape");
    let server = AppServer::start(StaticFiles::dir(site.root()).unwrap(), None);
    let attempts = [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/%2e%2e%5csecret.txt",
        "/secret.txt%00.html",
        "/./../secret.txt",
        "//../secret.txt",
        "http://127.0.0.1/../secret.txt",
        "/leak.txt",
        "/parent/secret.txt",
        "/parent/site/../secret.txt",
        "/etc/passwd",
        "/etc/hostname",
        "//etc/passwd",
        "/.hidden",
        "/%2ehidden",
    ];
    for target in attempts {
        let mut http = server.connect();
        http.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ));
        let reply = http.reply(false);
        assert!(
            matches!(reply.status, 400 | 403 | 404),
            "{target}: status {}",
            reply.status
        );
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains("TOP-SECRET"), "{target} leaked the secret");
        assert!(!body.contains("root:"), "{target} leaked /etc/passwd");
    }
    // The embedded page refuses the same way.
    let server = AppServer::embedded();
    for target in ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/..%2fsrc%2flib.rs"] {
        let mut http = server.connect();
        let reply = http.get("GET", target);
        assert_eq!(reply.status, 400, "{target}");
    }
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn ws_connect(server: &AppServer, path: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = format!("ws://{}{path}", server.addr);
    let (socket, response) = tungstenite::client(url.as_str(), stream).expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

fn read_text(socket: &mut Ws) -> String {
    loop {
        match socket.read().expect("read a message") {
            WsMessage::Text(text) => return text.as_str().to_string(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The value of a numeric field in the push's flat JSON (`"name":123`), first occurrence.
fn field(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    let digits: String = json[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().expect("a number")
}

#[test]
fn stats_subscriber_receives_pushes_at_the_interval() {
    let interval = Duration::from_millis(250);
    let server = AppServer::start(StaticFiles::embedded(), Some(interval));

    // Some traffic on an ordinary path first, for the counters to show.
    let mut echo = ws_connect(&server, "/echo");
    echo.send(WsMessage::text("counted")).unwrap();
    assert_eq!(read_text(&mut echo), "counted");

    let mut stats = ws_connect(&server, "/stats?from=test");
    let hello = read_text(&mut stats);
    assert!(hello.contains(r#""type":"hello""#), "{hello}");
    assert_eq!(field(&hello, "interval_ms"), 250);

    let mut pushes = Vec::new();
    while pushes.len() < 3 {
        let text = read_text(&mut stats);
        pushes.push((Instant::now(), text));
    }
    for (_, push) in &pushes {
        assert!(push.starts_with(r#"{"type":"stats""#), "{push}");
        assert_eq!(field(push, "open"), 2, "{push}");
        assert_eq!(field(push, "subscribers"), 1, "{push}");
        let totals = &push[push.find(r#""total""#).expect("totals")..];
        assert!(field(totals, "messages_in") >= 1, "{push}");
        assert!(field(totals, "opened") >= 2, "{push}");
    }
    let seqs: Vec<u64> = pushes.iter().map(|(_, p)| field(p, "seq")).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for pair in pushes.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(150) && gap <= Duration::from_millis(750),
            "pushes {gap:?} apart, configured {interval:?}"
        );
        let window = field(&pair[1].1, "window_ms");
        assert!((200..=600).contains(&window), "window {window} ms");
    }

    // The subscriber still echoes, and other paths never receive pushes.
    stats.send(WsMessage::text("also echoed")).unwrap();
    let mut echoed = false;
    for _ in 0..5 {
        if read_text(&mut stats) == "also echoed" {
            echoed = true;
            break;
        }
    }
    assert!(echoed);
    std::thread::sleep(interval * 2);
    echo.send(WsMessage::text("still plain")).unwrap();
    assert_eq!(read_text(&mut echo), "still plain");
    echo.send(WsMessage::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(echo.read().unwrap(), WsMessage::binary(vec![1u8, 2, 3]));
}

#[test]
fn closed_subscribers_are_forgotten() {
    let server = AppServer::start(StaticFiles::embedded(), Some(Duration::from_millis(100)));
    let mut first = ws_connect(&server, "/stats");
    read_text(&mut first); // hello
    first.close(None).unwrap();
    // Drain until the close completes.
    while first.read().is_ok() {}
    let mut second = ws_connect(&server, "/stats");
    read_text(&mut second); // hello
    let push = read_text(&mut second);
    let push = if push.contains(r#""subscribers":1"#) {
        push
    } else {
        // A push measured just before the close was seen may still count two.
        read_text(&mut second)
    };
    assert_eq!(field(&push, "subscribers"), 1, "{push}");
    assert_eq!(field(&push, "open"), 1, "{push}");
}
