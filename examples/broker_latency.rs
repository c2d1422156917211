//! Measures a room's delivery through the shipped binary: latency at a steady rate and the
//! most messages per second, from a publisher on one server to subscribers on the same one
//! or on another attached to the same broker (`--broker`). A client only: start the servers
//! (and Redis) first. Traffic goes only to the addresses given, and stops by itself.
//!
//! ```text
//! cargo run --release --example broker_latency -- PUB_ADDR SUB_ADDR [SUBSCRIBERS] [RATE] [SECONDS] [BURST]
//! ```
//!
//! The publisher joins `/room/bench` on PUB_ADDR, the SUBSCRIBERS (default 10) on SUB_ADDR.
//! Phase 1 publishes RATE messages per second (default 2,000) for SECONDS (default 5), each
//! carrying its send time, and prints p50/p99/max of send-to-receive over every subscriber's
//! copy. Phase 2 publishes BURST messages (default 200,000) as fast as the first subscriber
//! keeps up (at most [`WINDOW`] sent and not yet received by it, so the room's slow-subscriber
//! limit is not what is measured) and prints how many it received and at what rate (first
//! send to last receive). The binary's rooms send a member's own messages back to it; a thread discards
//! the publisher's copies unread.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

/// Bytes of each message: a tag, a sequence number and a send time, padded.
const PAYLOAD: usize = 64;
/// Burst messages sent ahead of what the first subscriber has received.
const WINDOW: u64 = 2_000;

fn join(addr: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tungstenite::client(format!("ws://{addr}/room/bench"), stream)
        .expect("upgrade")
        .0
}

/// The message `seq` of `phase`, sent `at` (nanoseconds since `epoch`).
fn message(phase: u8, seq: u64, at: u64) -> Message {
    let mut text = format!("{phase} {seq} {at} ");
    text.extend(std::iter::repeat_n('.', PAYLOAD.saturating_sub(text.len())));
    Message::text(text)
}

fn parse(text: &str) -> Option<(u8, u64, u64)> {
    let mut parts = text.split(' ');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i)
        .map_or(default, |a| a.parse().expect("a number"))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pub_addr), Some(sub_addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: broker_latency PUB_ADDR SUB_ADDR [SUBSCRIBERS] [RATE] [SECONDS] [BURST]");
        std::process::exit(2);
    };
    let subscribers = arg(&args, 3, 10) as usize;
    let rate = arg(&args, 4, 2_000);
    let seconds = arg(&args, 5, 5);
    let burst = arg(&args, 6, 200_000);
    let steady = rate * seconds;
    let epoch = Instant::now();

    // Each subscriber reports (phase, latency in ns, received at) per message it reads.
    let (tx, rx) = mpsc::channel::<(u8, u64, Instant)>();
    let mut readers = Vec::new();
    let first_got = Arc::new(AtomicU64::new(0));
    for s in 0..subscribers {
        let mut ws = join(sub_addr);
        let tx = tx.clone();
        let first_got = Arc::clone(&first_got);
        readers.push(std::thread::spawn(move || {
            let (mut got_steady, mut got_burst) = (0u64, 0u64);
            while got_steady < steady || got_burst < burst {
                let Ok(Message::Text(text)) = ws.read() else {
                    break; // timed out: the rest was dropped
                };
                let now = epoch.elapsed().as_nanos() as u64;
                let Some((phase, _, at)) = parse(&text) else {
                    continue;
                };
                match phase {
                    1 => got_steady += 1,
                    2 => {
                        got_burst += 1;
                        if s == 0 {
                            first_got.store(got_burst, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
                if phase == 1 || s == 0 {
                    let _ = tx.send((phase, now.saturating_sub(at), Instant::now()));
                }
            }
        }));
    }
    drop(tx);
    let mut publisher = join(pub_addr);
    // The publisher's own copies come back: read and discarded on a clone of the socket.
    let mut drain = publisher.get_ref().try_clone().expect("clone");
    drain.set_read_timeout(None).expect("timeout");
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while drain.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    // Let every subscription reach the broker (a member joined while its server was still
    // subscribing would miss the first messages: at most once).
    std::thread::sleep(Duration::from_millis(500));

    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    for seq in 0..steady {
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let at = epoch.elapsed().as_nanos() as u64;
        publisher.send(message(1, seq, at)).expect("publish");
    }
    std::thread::sleep(Duration::from_millis(500));
    let burst_start = Instant::now();
    let mut stalls = 0;
    for seq in 0..burst {
        if seq >= WINDOW + first_got.load(Ordering::Relaxed) {
            publisher.flush().expect("flush");
            // Wait for the first subscriber; a message that was dropped would stall this
            // forever (at most once), so a stall longer than a second moves on.
            let stalled = Instant::now();
            while seq >= WINDOW + first_got.load(Ordering::Relaxed) {
                if stalled.elapsed() > Duration::from_secs(1) {
                    stalls += 1;
                    break;
                }
                std::thread::yield_now();
            }
        }
        let at = epoch.elapsed().as_nanos() as u64;
        publisher.write(message(2, seq, at)).expect("publish");
        if seq % 64 == 63 {
            publisher.flush().expect("flush");
        }
    }
    publisher.flush().expect("flush");
    for reader in readers {
        let _ = reader.join();
    }
    let mut latencies = Vec::new();
    let (mut burst_got, mut last) = (0u64, burst_start);
    for (phase, latency, when) in rx.try_iter() {
        if phase == 1 {
            latencies.push(latency / 1000); // microseconds
        } else {
            burst_got += 1;
            last = last.max(when);
        }
    }
    latencies.sort_unstable();
    let copies = steady * subscribers as u64;
    println!(
        "steady: {rate}/s for {seconds} s to {subscribers} subscribers: {} of {copies} copies, \
         latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    let took = last.duration_since(burst_start).as_secs_f64();
    println!(
        "burst: {burst_got} of {burst} received by subscriber 0 in {took:.3} s: {:.0} messages/s \
         ({stalls} window stalls over 1 s)",
        burst_got as f64 / took.max(1e-9)
    );
}
