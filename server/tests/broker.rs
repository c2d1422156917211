//! Rooms across server processes through a Redis broker (`--broker`): several shipped
//! binaries attached to one `redis-server`, each started here on a free loopback port and
//! stopped by its PID.
//!
//! Needs `redis-server` and `redis-cli` (Debian's `redis-server` package; `.ci/run` installs
//! it). Without them these tests fail in CI (`CI` set) and are skipped, loudly, elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

#[path = "../../tests/common/mod.rs"]
mod common;

use common::RawClient;

/// Longest any eventual state (a subscription at the broker, a counter) is waited for.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether `redis-server` can be run here; panics in CI if not.
fn have_redis() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed: .ci/run installs it (apt-get install redis-server)"
        );
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server); \
             the broker tests run in CI"
        );
    }
    found
}

/// A `redis-server` on a loopback port, killed by its PID on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis { child: None, port };
        redis.restart();
        redis
    }

    /// Starts the server (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: the broker goes away without a goodbye).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What `redis-cli` prints for a command (empty if the server does not answer).
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Publishes `body` on `channel` (through `redis-cli -x`, which takes it from stdin):
    /// how many subscribers Redis handed it to.
    fn publish(&self, channel: &str, body: &[u8]) -> usize {
        use std::io::Write as _;
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-x", "PUBLISH", channel])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli");
        child.stdin.take().expect("stdin").write_all(body).unwrap();
        let output = child.wait_with_output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// The channels with at least one subscriber.
    fn channels(&self) -> BTreeSet<String> {
        self.cli(&["PUBSUB", "CHANNELS", "*"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Subscribers of `channel` at the broker (one per attached server that wants it).
    fn subscribers(&self, channel: &str) -> usize {
        let out = self.cli(&["PUBSUB", "NUMSUB", channel]);
        out.lines().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    fn url(&self, prefix: &str) -> String {
        format!("redis://127.0.0.1:{}/{prefix}", self.port)
    }

    /// Waits until `channel` has `n` subscribers.
    fn await_subscribers(&self, channel: &str, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.subscribers(channel) != n {
            assert!(
                Instant::now() < deadline,
                "{channel} has {} subscribers at the broker, not {n}",
                self.subscribers(channel)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipped binary on two reactor threads, attached to the broker at `url`.
fn server(url: &str) -> common::Process {
    server_with(url, &[])
}

fn server_with(url: &str, extra: &[&str]) -> common::Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args(["--listen", "127.0.0.1:0", "--threads", "2", "--broker", url]);
    command.args(extra);
    common::Process::start(&mut command)
}

fn join(addr: &str, room: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}/room/{room}"), stream)
        .expect("upgrade")
        .0
}

fn text(member: &mut WebSocket<TcpStream>) -> String {
    match member.read().expect("a message") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// One scrape of the server's `/metrics`: every sample by its series.
fn metrics(addr: &str) -> HashMap<String, u64> {
    let addr: SocketAddr = addr.parse().expect("an address");
    let mut client = RawClient::connect(addr);
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, head, body) = client.read_response();
    assert_eq!(status, 200, "{head}");
    String::from_utf8(body)
        .expect("UTF-8")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metric(addr: &str, series: &str) -> u64 {
    *metrics(addr)
        .get(series)
        .unwrap_or_else(|| panic!("no {series} on {addr}"))
}

/// Waits until `series` on `addr` satisfies `ok`.
fn await_metric(addr: &str, series: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = metric(addr, series);
        if ok(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} on {addr} stayed at {value}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every member of a room spread over `servers` sees every message of two publishers on
/// two different servers, each publisher's in order, and its own exactly once.
fn room_across(redis: &Redis, servers: &[common::Process], room: &str) {
    const MESSAGES: usize = 300;
    let mut members: Vec<WebSocket<TcpStream>> = servers
        .iter()
        .flat_map(|s| [join(&s.addr, room), join(&s.addr, room)])
        .collect();
    redis.await_subscribers(&format!("t:{room}"), servers.len());
    let publishers = [0, members.len() - 1]; // on the first server and on the last
    for i in 0..MESSAGES {
        for (p, &at) in publishers.iter().enumerate() {
            members[at].send(Message::text(format!("{p} {i}"))).unwrap();
        }
    }
    for (m, member) in members.iter_mut().enumerate() {
        let mut next = [0usize; 2];
        for _ in 0..2 * MESSAGES {
            let message = text(member);
            let (p, i) = message.split_once(' ').expect("a tagged message");
            let p: usize = p.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[p],
                "member {m} of {}: publisher {p} out of order or repeated",
                members_len(servers)
            );
            next[p] += 1;
        }
        assert_eq!(next, [MESSAGES; 2], "member {m}");
    }
    for s in servers {
        assert_eq!(metric(&s.addr, "wsreactor_broker_connected"), 1);
    }
}

fn members_len(servers: &[common::Process]) -> usize {
    servers.len() * 2
}

#[test]
fn members_of_one_room_on_two_and_three_servers_see_every_message_in_publisher_order() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url("t");
    let mut servers = vec![server(&url), server(&url)];
    room_across(&redis, &servers, "two");
    // The third on the io_uring backend (epoll where the kernel refuses it): arrivals from
    // the broker cross into either loop the same way.
    servers.push(server_with(&url, &["--io-uring"]));
    room_across(&redis, &servers, "three");
    // Everyone left: no server is subscribed to anything any more.
    let deadline = Instant::now() + PATIENCE;
    while !redis.channels().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left over: {:?}",
            redis.channels()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in &servers {
        assert_eq!(
            metric(
                &s.addr,
                "wsreactor_broker_dropped_total{reason=\"invalid\"}"
            ),
            0
        );
        assert_eq!(metric(&s.addr, "wsreactor_broker_topics"), 0);
    }
}

/// Reads until `want` arrives, skipping messages tagged as probes; panics on anything else.
fn read_until(member: &mut WebSocket<TcpStream>, want: &str) {
    loop {
        let message = text(member);
        if message == want {
            return;
        }
        assert!(message.starts_with("probe"), "unexpected {message:?}");
    }
}

/// Probes from `from` until one reaches `to` (at most once: the first publishes after the
/// broker's return may still find the publisher's connection down), then expects every
/// message, in order.
fn resumes(from: &mut WebSocket<TcpStream>, to: &mut WebSocket<TcpStream>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        from.send(Message::text("probe")).unwrap();
        assert_eq!(text(from), "probe");
        to.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let crossed = matches!(to.read(), Ok(Message::Text(t)) if t.as_str() == "probe");
        to.get_mut()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        if crossed {
            break;
        }
        assert!(Instant::now() < deadline, "delivery did not resume");
    }
    for i in 0..50 {
        from.send(Message::text(format!("after {i}"))).unwrap();
    }
    for i in 0..50 {
        read_until(to, &format!("after {i}"));
        read_until(from, &format!("after {i}"));
    }
}

#[test]
fn a_broker_outage_keeps_local_rooms_serving_counts_drops_and_delivery_resumes() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url("t");
    let (a, b) = (server(&url), server(&url));
    let mut on_a = join(&a.addr, "shared");
    let mut on_b = join(&b.addr, "shared");
    let mut local = [join(&a.addr, "local"), join(&a.addr, "local")];
    redis.await_subscribers("t:shared", 2);
    on_a.send(Message::text("before")).unwrap();
    assert_eq!(text(&mut on_b), "before");
    assert_eq!(text(&mut on_a), "before");

    redis.stop();
    await_metric(&a.addr, "wsreactor_broker_connected", |v| v == 0);
    await_metric(&b.addr, "wsreactor_broker_connected", |v| v == 0);
    // Local delivery goes on: the shared room's member on A and A's local room.
    const DURING: u64 = 20;
    for i in 0..DURING / 2 {
        on_a.send(Message::text(format!("during {i}"))).unwrap();
        assert_eq!(text(&mut on_a), format!("during {i}"));
        local[0].send(Message::text(format!("local {i}"))).unwrap();
        for member in &mut local {
            assert_eq!(text(member), format!("local {i}"));
        }
    }
    // Every one of them was for the broker too, and is counted as dropped.
    await_metric(
        &a.addr,
        "wsreactor_broker_dropped_total{reason=\"disconnected\"}",
        |v| v == DURING,
    );
    assert_eq!(metric(&a.addr, "wsreactor_broker_sent_total"), 1);

    redis.restart();
    // Both servers subscribe again to what they want, with no new member joining.
    redis.await_subscribers("t:shared", 2);
    redis.await_subscribers("t:local", 1);
    resumes(&mut on_a, &mut on_b);
    resumes(&mut on_b, &mut on_a);
    for s in [&a, &b] {
        assert_eq!(metric(&s.addr, "wsreactor_broker_connected"), 1);
        assert!(metric(&s.addr, "wsreactor_broker_reconnects_total") >= 1);
    }
}

#[test]
fn topic_churn_leaves_the_broker_subscribed_to_exactly_the_rooms_with_members() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let s = server(&redis.url("churn"));
    let expect = |rooms: &BTreeSet<String>| {
        let wanted: BTreeSet<String> = rooms.iter().map(|r| format!("churn:{r}")).collect();
        let deadline = Instant::now() + PATIENCE;
        while redis.channels() != wanted {
            assert!(
                Instant::now() < deadline,
                "broker has {:?}, expected {wanted:?}",
                redis.channels()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        await_metric(&s.addr, "wsreactor_broker_topics", |v| {
            v == wanted.len() as u64
        });
    };
    for round in 0..3 {
        // 60 rooms, the even ones with two members (likely on different reactors).
        let mut members: Vec<(String, WebSocket<TcpStream>)> = Vec::new();
        for r in 0..60 {
            let room = format!("r{round}-{r}");
            for _ in 0..(1 + (r % 2 == 0) as usize) {
                members.push((room.clone(), join(&s.addr, &room)));
            }
        }
        let all: BTreeSet<String> = members.iter().map(|(r, _)| r.clone()).collect();
        expect(&all);
        // Every third member leaves: rooms whose every member left are gone at the broker,
        // rooms with one left stay.
        let mut kept = Vec::new();
        for (i, (room, mut member)) in members.into_iter().enumerate() {
            if i % 3 == 0 {
                let _ = member.close(None);
                let _ = member.flush();
            } else {
                kept.push((room, member));
            }
        }
        let still: BTreeSet<String> = kept.iter().map(|(r, _)| r.clone()).collect();
        expect(&still);
        drop(kept);
        expect(&BTreeSet::new());
    }
}

/// Joins every connection to the topic `one` and publishes what it sends there.
struct OneRoom;

impl wsreactor::Handler for OneRoom {
    fn on_open(&mut self, conn: &mut wsreactor::Conn<'_>, _request: &wsreactor::Request<'_>) {
        conn.subscribe(b"one").expect("subscribe");
    }

    fn on_message(&mut self, conn: &mut wsreactor::Conn<'_>, message: wsreactor::Message<'_>) {
        conn.publish(b"one", message, true);
    }
}

#[test]
fn a_one_thread_library_server_shares_a_room_with_the_binary() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url("t");
    let config = wsreactor::Config {
        broker: Some(url.parse().expect("a broker URL")),
        ..wsreactor::Config::default()
    };
    let library = common::TestServer::start(config, OneRoom);
    let binary = server(&url);
    let mut on_library = join(&library.addr.to_string(), "ignored");
    let mut on_binary = join(&binary.addr, "one");
    redis.await_subscribers("t:one", 2);
    on_library.send(Message::text("from the library")).unwrap();
    assert_eq!(text(&mut on_library), "from the library");
    assert_eq!(text(&mut on_binary), "from the library");
    on_binary.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(on_binary.read().unwrap(), Message::binary(vec![1, 2, 3]));
    assert_eq!(on_library.read().unwrap(), Message::binary(vec![1, 2, 3]));
    drop(on_library);
    let stats = library.stop();
    assert_eq!(stats.opened, 1);
}

/// The format on the broker (README, Several servers): version 1, an origin, kind, payload.
fn broker_message(origin: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![1];
    body.extend_from_slice(&origin.to_be_bytes());
    body.push(kind);
    body.extend_from_slice(payload);
    body
}

#[test]
fn what_another_program_publishes_is_delivered_if_well_formed_and_counted_if_not() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let s = server(&redis.url("t"));
    let mut member = join(&s.addr, "news");
    redis.await_subscribers("t:news", 1);
    let bad: [&[u8]; 5] = [
        b"not this format",
        &broker_message(7, 1, &[0xff, 0xfe, 0xfd]), // text that is not UTF-8
        &broker_message(7, 9, b"kind 9"),
        &[1, 0, 0],                                      // shorter than a header
        &broker_message(7, 2, &vec![0; (16 << 20) + 1]), // over --max-message-size
    ];
    for body in bad {
        assert_eq!(redis.publish("t:news", body), 1);
    }
    assert_eq!(
        redis.publish("t:news", &broker_message(7, 1, b"from a backend")),
        1
    );
    assert_eq!(
        redis.publish("t:news", &broker_message(7, 2, &[1, 2, 3])),
        1
    );
    // Only the well-formed ones arrive, in order, and the member stays open.
    assert_eq!(text(&mut member), "from a backend");
    assert_eq!(member.read().unwrap(), Message::binary(vec![1, 2, 3]));
    assert_eq!(
        metric(
            &s.addr,
            "wsreactor_broker_dropped_total{reason=\"invalid\"}"
        ),
        bad.len() as u64
    );
    assert_eq!(metric(&s.addr, "wsreactor_broker_received_total"), 2);
    member.send(Message::text("still here")).unwrap();
    assert_eq!(text(&mut member), "still here");
}
