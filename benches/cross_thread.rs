//! What a publish costs per delivered message when its subscribers are on other reactor
//! threads: a `MultiServer` on 1 or 2 threads, SUBSCRIBERS connections subscribed to one
//! topic, one publisher connection whose every message is published to all of them, in
//! batches of BATCH that the subscribers read before the next batch is sent (so no subscriber
//! falls behind the slow-subscriber limit).
//!
//! Not a criterion bench: run it under callgrind, where instruction counts are repeatable, and
//! count the reactor threads only (`--separate-threads=yes`; the reactors are threads 2 and up,
//! the clients all run on thread 1): `load/cross-thread.sh` does that and subtracts two runs of
//! different lengths, leaving the steady-state cost of one delivery.
//!
//! Usage: cross_thread THREADS SUBSCRIBERS MESSAGES   (defaults 2 100 2000; `cargo bench` runs
//! the defaults once and prints the wall time)

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::{Message as Ws, WebSocket};
use wsreactor::{Config, Conn, Handler, Message, MultiServer, Request};

const TOPIC: &[u8] = b"bench";
const BATCH: usize = 50;

/// `/sub` subscribes (and says so); any message from anyone is published to the topic.
struct Fanout;

impl Handler for Fanout {
    fn on_open(&mut self, conn: &mut Conn<'_>, request: &Request<'_>) {
        if request.path == "/sub" {
            let _ = conn.subscribe(TOPIC);
        }
        let _ = conn.send_text("ok");
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        conn.publish(TOPIC, message, false);
    }
}

fn connect(addr: std::net::SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("upgrade");
    assert_eq!(ws.read().expect("greeting"), Ws::text("ok"));
    ws
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = numbers.first().copied().unwrap_or(2);
    let subscribers = numbers.get(1).copied().unwrap_or(100);
    let messages = numbers.get(2).copied().unwrap_or(2_000);
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Config::default()
    };
    let server = MultiServer::bind(config, threads, |_| Fanout).expect("bind");
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    // Thread 2 (callgrind's numbering) runs reactor 0; MultiServer spawns the others after it.
    let running = std::thread::spawn(move || server.run().expect("run"));
    let mut subs: Vec<_> = (0..subscribers).map(|_| connect(addr, "/sub")).collect();
    let mut publisher = connect(addr, "/");
    let payload = [0x42u8; 20];
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let batch = BATCH.min(messages - sent);
        for _ in 0..batch {
            publisher.send(Ws::binary(payload.to_vec())).expect("send");
        }
        for sub in &mut subs {
            for _ in 0..batch {
                assert_eq!(sub.read().expect("delivery").len(), payload.len());
            }
        }
        sent += batch;
    }
    let elapsed = started.elapsed();
    // Closed by the clients first, so that shutdown has no close handshake left to wait for.
    drop(subs);
    drop(publisher);
    shutdown.shutdown();
    let stopped = running.join().expect("server thread");
    let opened: u64 = stopped.iter().map(|s| s.stats().opened).sum();
    println!(
        "{threads} threads, {subscribers} subscribers, {messages} messages: {} deliveries in \
         {elapsed:?} ({opened} connections)",
        messages * subscribers
    );
}
