//! A server on several reactor threads, over real sockets: connections spread over the
//! threads, topics deliver across threads in each publisher's order (from a reactor and from a
//! thread that is not one), one thread's busy handler does not stall another thread's
//! connections, a publish crosses only to threads with subscribers of its topic, a
//! connection id from one thread names nothing on another, and shutdown reaches every
//! connection.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message as Ws, WebSocket};
use wsreactor::{
    Config, Conn, ConnId, Handler, Message, MultiServer, Publisher, Request, SendStatus, Server,
    ServerHandle, ShutdownHandle,
};

const THREADS: usize = 2;
const TOPIC: &[u8] = b"news";
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Greets each connection with the index of the thread that serves it; a connection opened
/// on `/sub` subscribes to [`TOPIC`]. `pub TEXT` publishes TEXT to the topic (the sender left
/// out), `count TEXT` does the same and answers how many other threads it was handed to,
/// `sub` and `unsub` (un)subscribe, `sleep MS` blocks this thread's reactor, anything else is
/// echoed.
struct Probe {
    thread: usize,
    /// Every open connection's id, by thread.
    ids: Arc<Mutex<Vec<(usize, ConnId)>>>,
}

impl Handler for Probe {
    fn on_open(&mut self, conn: &mut Conn<'_>, request: &Request<'_>) {
        if request.path == "/sub" {
            assert_eq!(conn.subscribe(TOPIC), Ok(true));
        }
        self.ids.lock().unwrap().push((self.thread, conn.id()));
        let _ = conn.send_text(&format!("thread {}", self.thread));
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        match message {
            Message::Text(text) if text.starts_with("pub ") => {
                conn.publish(TOPIC, Message::Text(&text[4..]), false);
            }
            Message::Text(text) if text.starts_with("count ") => {
                let published = conn.publish(TOPIC, Message::Text(&text[6..]), false);
                let _ = conn.send_text(&format!("threads {}", published.threads));
            }
            Message::Text("sub") => {
                assert_eq!(conn.subscribe(TOPIC), Ok(true));
                let _ = conn.send_text("subscribed");
            }
            Message::Text("unsub") => {
                assert!(conn.unsubscribe(TOPIC));
                let _ = conn.send_text("unsubscribed");
            }
            Message::Text(text) if text.starts_with("sleep ") => {
                let ms = text[6..].parse().unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                let _ = conn.send_text("slept");
            }
            _ => {
                let _ = conn.send(message);
            }
        }
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    publisher: Publisher,
    handles: Vec<ServerHandle<Probe>>,
    ids: Arc<Mutex<Vec<(usize, ConnId)>>>,
    thread: Option<JoinHandle<Vec<Server<Probe>>>>,
}

impl Running {
    fn start() -> Running {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_connections: 8_000,
            max_pending_handshakes: 8_000,
            // Clients still held at the end do not answer the close: do not wait long.
            close_timeout: Duration::from_millis(300),
            // The backend this run of the suite tests (tests/common's `IO_URING_ENV`).
            io_uring: std::env::var_os("WSREACTOR_IO_URING").is_some_and(|v| v == "1"),
            ..Config::default()
        };
        let ids = Arc::new(Mutex::new(Vec::new()));
        let server = MultiServer::bind(config, THREADS, |thread| Probe {
            thread,
            ids: Arc::clone(&ids),
        })
        .expect("bind");
        assert_eq!(server.threads(), THREADS);
        let running = Running {
            addr: server.local_addr(),
            shutdown: server.shutdown_handle(),
            publisher: server.publisher(),
            handles: server.handles(),
            ids: Arc::clone(&ids),
            thread: None,
        };
        let thread = std::thread::spawn(move || server.run().expect("run"));
        Running {
            thread: Some(thread),
            ..running
        }
    }

    /// A client on `path`, and the thread that serves it.
    fn connect(&self, path: &str) -> (WebSocket<TcpStream>, usize) {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let (mut ws, _) =
            tungstenite::client(format!("ws://{}{path}", self.addr), stream).expect("upgrade");
        let greeting = ws.read().expect("greeting");
        let thread = greeting
            .to_text()
            .unwrap()
            .strip_prefix("thread ")
            .unwrap()
            .parse()
            .unwrap();
        (ws, thread)
    }

    /// Clients on `path` until each thread serves at least `each` of them; by thread.
    fn connect_on_every_thread(&self, path: &str, each: usize) -> Vec<Vec<WebSocket<TcpStream>>> {
        let mut by_thread: Vec<Vec<_>> = (0..THREADS).map(|_| Vec::new()).collect();
        for _ in 0..1_000 {
            if by_thread.iter().all(|c| c.len() >= each) {
                return by_thread;
            }
            let (ws, thread) = self.connect(path);
            by_thread[thread].push(ws);
        }
        panic!("1,000 connections never reached every thread");
    }

    fn stop(mut self) -> Vec<Server<Probe>> {
        self.shutdown.shutdown();
        self.thread.take().unwrap().join().expect("server thread")
    }
}

#[test]
fn connections_spread_over_the_threads() {
    // Client and server share this process's 20,000 descriptors: 2 x 4,000.
    const CONNECTIONS: usize = 4_000;
    let server = Running::start();
    let mut per_thread = [0usize; THREADS];
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (ws, thread) = server.connect("/");
        per_thread[thread] += 1;
        clients.push(ws);
    }
    eprintln!("{CONNECTIONS} connections by thread: {per_thread:?}");
    for (thread, &n) in per_thread.iter().enumerate() {
        // The kernel hashes each connection's addresses and ports: about half each.
        assert!(
            n >= CONNECTIONS * 4 / 10,
            "thread {thread} got {n} of {CONNECTIONS}: {per_thread:?}"
        );
    }
    drop(clients);
    server.stop();
}

#[test]
fn topics_deliver_across_threads_in_each_publishers_order() {
    const FROM_REACTOR: usize = 2_000;
    const FROM_OUTSIDE: usize = 500;
    let server = Running::start();
    let mut subscribers: Vec<_> = server
        .connect_on_every_thread("/sub", 2)
        .into_iter()
        .flatten()
        .collect();
    let (mut publisher, publisher_thread) = server.connect("/");
    for i in 0..FROM_REACTOR {
        publisher.send(Ws::text(format!("pub r{i}"))).unwrap();
    }
    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        for i in 0..FROM_REACTOR {
            let got = subscriber.read().expect("published message");
            assert_eq!(
                got,
                Ws::text(format!("r{i}")),
                "subscriber {n}, message {i}"
            );
        }
    }
    eprintln!(
        "{FROM_REACTOR} messages published on thread {publisher_thread} reached {} subscribers \
         on {THREADS} threads in order",
        subscribers.len()
    );
    // From a thread that is no reactor: every reactor takes each message.
    for i in 0..FROM_OUTSIDE {
        let taken = server
            .publisher
            .publish(TOPIC, Message::Text(&format!("o{i}")));
        assert_eq!(taken, THREADS);
    }
    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        for i in 0..FROM_OUTSIDE {
            let got = subscriber.read().expect("published message");
            assert_eq!(
                got,
                Ws::text(format!("o{i}")),
                "subscriber {n}, message {i}"
            );
        }
    }
    let stopped = server.stop();
    let publishes: u64 = stopped.iter().map(|s| s.stats().publishes).sum();
    assert_eq!(publishes, FROM_REACTOR as u64, "each publish counted once");
}

#[test]
fn a_publish_crosses_only_to_threads_with_subscribers() {
    let server = Running::start();
    let mut by_thread = server.connect_on_every_thread("/", 1);
    let mut publisher = by_thread[0].pop().unwrap();
    let mut member = by_thread[1].pop().unwrap();
    let mut count = |text: &str| {
        publisher.send(Ws::text(format!("count {text}"))).unwrap();
        publisher.read().unwrap().into_text().unwrap().to_string()
    };
    assert_eq!(count("nobody"), "threads 0");
    member.send(Ws::text("sub")).unwrap();
    assert_eq!(member.read().unwrap(), Ws::text("subscribed"));
    // Thread 1 announced the topic before it answered, so this publish crosses.
    assert_eq!(count("one"), "threads 1");
    assert_eq!(member.read().unwrap(), Ws::text("one"));
    member.send(Ws::text("unsub")).unwrap();
    assert_eq!(member.read().unwrap(), Ws::text("unsubscribed"));
    assert_eq!(count("gone"), "threads 0");
    member.send(Ws::text("after")).unwrap();
    assert_eq!(
        member.read().unwrap(),
        Ws::text("after"),
        "nothing else arrived"
    );
    server.stop();
}

#[test]
fn a_busy_thread_does_not_stall_the_others() {
    let server = Running::start();
    let mut by_thread = server.connect_on_every_thread("/", 1);
    let mut sleeper = by_thread[0].pop().unwrap();
    let mut other = by_thread[1].pop().unwrap();
    sleeper.send(Ws::text("sleep 1500")).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // thread 0 is now inside the handler
    let started = Instant::now();
    for i in 0..100 {
        other.send(Ws::text(format!("echo {i}"))).unwrap();
        assert_eq!(other.read().unwrap(), Ws::text(format!("echo {i}")));
    }
    let echoed = started.elapsed();
    assert_eq!(sleeper.read().unwrap(), Ws::text("slept"));
    let slept = started.elapsed();
    eprintln!("100 echoes on thread 1 took {echoed:?} while thread 0 slept ({slept:?})");
    assert!(
        echoed < slept,
        "thread 1's echoes waited for thread 0's handler"
    );
    server.stop();
}

#[test]
fn an_id_from_another_thread_names_no_connection() {
    let server = Running::start();
    let by_thread = server.connect_on_every_thread("/", 3);
    let ids = server.ids.lock().unwrap().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // Thread 0 sends to every id; only its own connections' ids reach anyone.
    server.handles[0]
        .run(move |_, ctx| {
            let answers: Vec<(usize, SendStatus)> = ids
                .iter()
                .map(|&(thread, id)| (thread, ctx.send(id, Message::Text("direct"))))
                .collect();
            tx.send(answers).unwrap();
        })
        .unwrap();
    let answers = rx.recv_timeout(IO_TIMEOUT).expect("work ran");
    for (thread, status) in &answers {
        let expected = if *thread == 0 {
            SendStatus::Sent
        } else {
            SendStatus::Closed
        };
        assert_eq!(*status, expected, "an id of thread {thread}");
    }
    for (thread, clients) in by_thread.into_iter().enumerate() {
        for mut client in clients {
            if thread == 0 {
                assert_eq!(client.read().unwrap(), Ws::text("direct"));
            }
        }
    }
    server.stop();
}

#[test]
fn shutdown_closes_every_connection_on_every_thread_with_1001() {
    const CONNECTIONS: usize = 200;
    let server = Running::start();
    let mut clients: Vec<_> = (0..CONNECTIONS).map(|_| server.connect("/").0).collect();
    let stopping = {
        let shutdown = server.shutdown.clone();
        std::thread::spawn(move || shutdown.shutdown())
    };
    for (n, client) in clients.iter_mut().enumerate() {
        match client.read() {
            Ok(Ws::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away, "client {n}"),
            other => panic!("client {n}: expected close 1001, got {other:?}"),
        }
    }
    stopping.join().unwrap();
    drop(clients);
    let stopped = server.stop();
    assert_eq!(stopped.len(), THREADS);
    let opened: u64 = stopped.iter().map(|s| s.stats().opened).sum();
    assert_eq!(opened, CONNECTIONS as u64);
    for (thread, server) in stopped.iter().enumerate() {
        assert!(server.stats().opened > 0, "thread {thread} served nothing");
        assert_eq!(
            server.stats().closed,
            server.stats().opened,
            "thread {thread}"
        );
    }
}
