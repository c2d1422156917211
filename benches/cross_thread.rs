//! What a publish costs per delivered message when its subscribers are on other reactor
//! threads: a `MultiServer` on 1 or 2 threads, SUBSCRIBERS connections subscribed to one
//! topic, spread evenly over the threads (connections are opened until each thread has its
//! share), one publisher connection on thread 0 whose every message is published to all of
//! them, in
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

/// Greets each connection with its thread's index; the text `sub` subscribes (and says so);
/// any other message is published to the topic.
struct Fanout(usize);

impl Handler for Fanout {
    fn on_open(&mut self, conn: &mut Conn<'_>, _request: &Request<'_>) {
        let _ = conn.send_text(&self.0.to_string());
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        if let Message::Text("sub") = message {
            let _ = conn.subscribe(TOPIC);
            let _ = conn.send_text("subscribed");
            return;
        }
        conn.publish(TOPIC, message, false);
    }
}

/// A connection and the thread that serves it.
fn connect(addr: std::net::SocketAddr) -> (WebSocket<TcpStream>, usize) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("upgrade");
    let thread = ws.read().expect("greeting").into_text().expect("text");
    (ws, thread.parse().expect("thread index"))
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
    let server = MultiServer::bind(config, threads, Fanout).expect("bind");
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    // Thread 2 (callgrind's numbering) runs reactor 0; MultiServer spawns the others after it.
    let running = std::thread::spawn(move || server.run().expect("run"));
    let share = subscribers.div_ceil(threads);
    let mut per_thread = vec![0; threads];
    let (mut subs, mut idle, mut publisher) = (Vec::new(), Vec::new(), None);
    while subs.len() < subscribers || publisher.is_none() {
        let (mut ws, thread) = connect(addr);
        if thread == 0 && publisher.is_none() {
            publisher = Some(ws);
        } else if per_thread[thread] < share && subs.len() < subscribers {
            ws.send(Ws::text("sub")).expect("subscribe");
            assert_eq!(ws.read().expect("answer"), Ws::text("subscribed"));
            per_thread[thread] += 1;
            subs.push(ws);
        } else {
            idle.push(ws); // held open (idle, no cost) so the next connect may land elsewhere
        }
    }
    let mut publisher = publisher.expect("a publisher on thread 0");
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
    drop(idle);
    drop(publisher);
    shutdown.shutdown();
    let stopped = running.join().expect("server thread");
    let opened: u64 = stopped.iter().map(|s| s.stats().opened).sum();
    println!(
        "{threads} threads, {subscribers} subscribers ({per_thread:?} by thread), {messages} \
         messages: {} deliveries in {elapsed:?} ({opened} connections)",
        messages * subscribers
    );
}
