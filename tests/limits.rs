//! Every configured limit and timeout, breached over a real socket, gets its documented answer
//! (an HTTP status, a close code or a drop), and the server goes on serving others.
//!
//! Limits and timeouts are configured small (tens to hundreds of milliseconds, kilobytes), so
//! nothing here sleeps long; every client socket has a read timeout.

mod common;
mod harden;

use std::io::{ErrorKind, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::masked_frame;
use harden::{assert_serves_fresh_client, config, Client, Running, IO_TIMEOUT};
use wsreactor::{CloseCause, Config};

// ---- request head ---------------------------------------------------------------------------

#[test]
fn request_head_over_max_request_head_gets_431() {
    let server = Running::start(Config {
        max_request_head: 1024,
        ..config()
    });
    // A complete head that is too big.
    let mut client = Client::tcp(server.addr);
    let filler = "a".repeat(1500);
    client.send(
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\nUpgrade: websocket\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(client.read_status(), 431);
    assert!(client.closed_within(IO_TIMEOUT));

    // A head that never ends: refused as soon as it passes the limit, not at the timeout.
    let mut client = Client::tcp(server.addr);
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let start = Instant::now();
    let mut written = 26;
    while written < 1024 {
        client.send(b"X-Slow: 0123456789\r\n");
        written += 20;
    }
    assert_eq!(client.read_status(), 431);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_serves_fresh_client(server.addr);
}

#[test]
fn more_headers_than_max_headers_gets_431() {
    let server = Running::start(Config {
        max_headers: 8,
        ..config()
    });
    let mut client = Client::tcp(server.addr);
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..8 {
        request.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    client.send(request.as_bytes());
    assert_eq!(client.read_status(), 431);

    // Exactly at the limit is fine (an ordinary HTTP request gets the default 404).
    let mut client = Client::tcp(server.addr);
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n");
    assert_eq!(client.read_status(), 404);
    assert_serves_fresh_client(server.addr);
}

// ---- frame and message size -----------------------------------------------------------------

#[test]
fn frame_over_max_frame_size_is_1009_before_its_payload_is_sent() {
    let server = Running::start(Config {
        max_frame_size: 1024,
        max_message_size: 4096,
        ..config()
    });
    let mut client = Client::ws(server.addr);
    // Exactly the limit passes.
    client.send_frame(true, 0x2, &[1u8; 1024]);
    assert_eq!(client.read_frame().unwrap().payload, vec![1u8; 1024]);
    // One byte more: only the header is sent, and the answer comes without the payload.
    let header = &masked_frame(true, 0x2, &[0u8; 1025])[..8];
    client.send(header);
    assert_eq!(client.expect_close(), 1009);
    let seen = server.wait_for(IO_TIMEOUT, "close 1009 reported", |s| {
        s.closes.contains(&1009)
    });
    assert_eq!(seen.stats.protocol_errors, 1);
    assert_eq!(seen.causes, vec![CloseCause::Protocol]);
    assert_serves_fresh_client(server.addr);
}

#[test]
fn limits_below_125_bytes_hold_for_small_whole_frames() {
    // Whole frames with a 7-bit length take the server's short-frame path; the frame limit
    // must hold there too (the message limit is at least the frame limit, by validation).
    for (max_frame_size, max_message_size) in [(16, 64), (100, 100)] {
        let server = Running::start(Config {
            max_frame_size,
            max_message_size,
            ..config()
        });
        let mut client = Client::ws(server.addr);
        client.send_frame(true, 0x2, &vec![4u8; max_frame_size]);
        assert_eq!(
            client.read_frame().unwrap().payload,
            vec![4u8; max_frame_size]
        );
        client.send_frame(true, 0x1, &vec![b'x'; max_frame_size + 1]);
        assert_eq!(client.expect_close(), 1009, "frame limit {max_frame_size}");
        let mut fresh = Client::ws(server.addr);
        fresh.send_frame(true, 0x1, b"still here");
        assert_eq!(fresh.read_frame().unwrap().payload, b"still here");
    }
}

#[test]
fn message_over_max_message_size_is_1009_at_the_fragment_that_breaches_it() {
    let server = Running::start(Config {
        max_frame_size: 1024,
        max_message_size: 4096,
        ..config()
    });
    let mut client = Client::ws(server.addr);
    // Four fragments of 1 KiB: exactly the limit, echoed as one message.
    client.send_frame(false, 0x2, &[2u8; 1024]);
    for last in [false, false, true] {
        client.send_frame(last, 0x0, &[2u8; 1024]);
    }
    assert_eq!(client.read_frame().unwrap().payload, vec![2u8; 4096]);
    // Four fragments and one byte more.
    client.send_frame(false, 0x2, &[3u8; 1024]);
    for _ in 0..3 {
        client.send_frame(false, 0x0, &[3u8; 1024]);
    }
    client.send(&masked_frame(true, 0x0, &[3u8])[..6]); // header only
    assert_eq!(client.expect_close(), 1009);
    assert_serves_fresh_client(server.addr);
}

// ---- connection counts ----------------------------------------------------------------------

#[test]
fn at_max_connections_the_next_client_waits_in_the_backlog_until_a_slot_frees() {
    let server = Running::start(Config {
        max_connections: 4,
        ..config()
    });
    let mut held: Vec<Client> = (0..4).map(|_| Client::ws(server.addr)).collect();
    // The fifth connects (the kernel queues it) but is not served.
    let mut waiting = Client::tcp(server.addr);
    waiting.send(common::upgrade_request("/", "").as_bytes());
    waiting.assert_silent(Duration::from_millis(300));
    let seen = server.seen();
    assert_eq!(seen.connections, 4, "{seen:?}");
    assert_eq!(seen.stats.accepted, 4);
    // Held connections are still served.
    held[0].send_text("busy");
    assert_eq!(held[0].read_frame().unwrap().payload, b"busy");
    // One leaves: the waiting one is accepted and upgraded.
    held.pop().unwrap().close();
    assert!(waiting.read_head().unwrap().starts_with("HTTP/1.1 101"));
    waiting.send_text("in");
    assert_eq!(waiting.read_frame().unwrap().payload, b"in");
}

#[test]
fn above_max_pending_handshakes_new_sockets_are_dropped() {
    let server = Running::start(Config {
        max_pending_handshakes: 3,
        handshake_timeout: Duration::from_millis(400),
        ..config()
    });
    let silent: Vec<Client> = (0..3).map(|_| Client::tcp(server.addr)).collect();
    server.wait_for(IO_TIMEOUT, "three sockets accepted", |s| {
        s.stats.accepted == 3
    });
    // The fourth is accepted and dropped at once.
    let mut extra = Client::tcp(server.addr);
    assert!(extra.closed_within(Duration::from_secs(1)), "not dropped");
    server.wait_for(IO_TIMEOUT, "one refused", |s| s.stats.refused == 1);
    // Open connections do not count: once one silent socket upgrades, there is room again.
    let mut upgraded = silent.into_iter().next().unwrap();
    upgraded.send(common::upgrade_request("/", "").as_bytes());
    assert!(upgraded.read_head().unwrap().starts_with("HTTP/1.1 101"));
    let mut next = Client::ws(server.addr);
    next.send_text("ok");
    assert_eq!(next.read_frame().unwrap().payload, b"ok");
    // The other two silent sockets time out and free their places.
    server.wait_for(IO_TIMEOUT, "silent sockets dropped", |s| s.connections == 2);
    assert_serves_fresh_client(server.addr);
}

// ---- timeouts --------------------------------------------------------------------------------

#[test]
fn handshake_that_trickles_forever_is_cut_off_at_the_handshake_timeout() {
    let server = Running::start(Config {
        handshake_timeout: Duration::from_millis(200),
        ..config()
    });
    let mut client = Client::tcp(server.addr);
    let start = Instant::now();
    // One byte every 20 ms of a head that is valid so far and never ends.
    let trickle = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        .iter()
        .chain([b'a'; 200].iter());
    let mut cut = false;
    for &byte in trickle {
        if client.stream.write_all(&[byte]).is_err() {
            cut = true;
            break;
        }
        if client.closed_within(Duration::from_millis(20)) {
            cut = true;
            break;
        }
    }
    let elapsed = start.elapsed();
    assert!(cut, "a trickled head was never cut off");
    assert!(
        elapsed >= Duration::from_millis(180) && elapsed < Duration::from_millis(1500),
        "cut off after {elapsed:?}"
    );
    // A silent socket too.
    let mut silent = Client::tcp(server.addr);
    assert!(silent.closed_within(Duration::from_millis(1500)));
    assert_serves_fresh_client(server.addr);
}

#[test]
fn idle_connection_is_pinged_then_closed_1001_when_no_pong_comes() {
    let server = Running::start(Config {
        idle_timeout: Some(Duration::from_millis(150)),
        close_timeout: Duration::from_millis(150),
        auto_ping: true,
        ..config()
    });
    // A peer that answers pings stays open across several idle periods.
    let mut lively = Client::ws(server.addr);
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(700) {
        let ping = lively.read_frame().expect("a ping");
        assert_eq!(ping.opcode, 0x9, "{ping:?}");
        lively.send_frame(true, 0xA, &ping.payload);
        pings += 1;
    }
    assert!(pings >= 2, "{pings} pings");
    lively.send_text("alive");
    assert_eq!(lively.read_frame().unwrap().payload, b"alive");
    lively.close();

    // A peer that ignores them gets the ping, then close 1001, then the drop.
    let mut mute = Client::ws(server.addr);
    let start = Instant::now();
    assert_eq!(mute.read_frame().unwrap().opcode, 0x9);
    let pinged = start.elapsed();
    assert_eq!(mute.read_frame().unwrap().expect_close_code(), 1001);
    let closed = start.elapsed();
    assert!(mute.closed_within(Duration::from_secs(1)), "not dropped");
    let dropped = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(140),
        "pinged after {pinged:?}"
    );
    assert!(
        closed >= pinged + Duration::from_millis(100),
        "{pinged:?} {closed:?}"
    );
    assert!(
        dropped >= closed + Duration::from_millis(100),
        "{closed:?} {dropped:?}"
    );
    assert!(dropped < Duration::from_secs(2), "{dropped:?}");
}

#[test]
fn idle_without_auto_ping_closes_1001_directly() {
    let server = Running::start(Config {
        idle_timeout: Some(Duration::from_millis(150)),
        auto_ping: false,
        ..config()
    });
    let mut client = Client::ws(server.addr);
    let frame = client.read_frame().unwrap();
    assert_eq!(frame.expect_close_code(), 1001, "{frame:?}");
    // We answer the close: the server closes the TCP connection at once.
    client.send_frame(true, 0x8, &1001u16.to_be_bytes());
    assert!(client.closed_within(Duration::from_millis(500)));
    let seen = server.wait_for(IO_TIMEOUT, "closed", |s| s.connections == 0);
    assert_eq!(
        (seen.closes, seen.causes),
        (vec![1001], vec![CloseCause::Timeout])
    );
}

#[test]
fn peer_that_never_answers_our_close_is_dropped_at_the_close_timeout() {
    let server = Running::start(Config {
        close_timeout: Duration::from_millis(200),
        ..config()
    });
    let mut client = Client::ws(server.addr);
    client.send_text("close 4000");
    assert_eq!(client.read_frame().unwrap().expect_close_code(), 4000);
    let start = Instant::now();
    // We keep the socket open and say nothing; data we send meanwhile is discarded.
    client.send_text("ignored");
    assert!(
        client.closed_within(Duration::from_secs(2)),
        "never dropped"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(1000),
        "dropped after {waited:?}"
    );
    let seen = server.wait_for(IO_TIMEOUT, "connection gone", |s| s.connections == 0);
    assert_eq!(seen.messages, 1, "data after our close must be discarded");
    assert_serves_fresh_client(server.addr);
}

#[test]
fn handler_closing_mid_batch_stops_delivery_of_the_rest_of_the_read() {
    // Four short frames in one write: they reach the server in one read and take the path
    // for runs of whole short frames. The handler closes on the second; the two after it
    // are discarded, as they would be if each had come in its own read.
    let server = Running::start(config());
    let mut client = Client::ws(server.addr);
    let mut batch = Vec::new();
    for text in ["first", "close 4000", "second", "third"] {
        batch.extend_from_slice(&masked_frame(true, 0x1, text.as_bytes()));
    }
    client.send(&batch);
    let echo = client.read_frame().unwrap();
    assert_eq!((echo.opcode, &echo.payload[..]), (0x1, &b"first"[..]));
    assert_eq!(client.read_frame().unwrap().expect_close_code(), 4000);
    client.send_frame(true, 0x8, &4000u16.to_be_bytes());
    assert!(client.closed_within(Duration::from_secs(2)), "not closed");
    let seen = server.wait_for(IO_TIMEOUT, "connection gone", |s| s.connections == 0);
    assert_eq!(
        seen.messages, 2,
        "frames after the handler's close must be discarded"
    );
    assert_serves_fresh_client(server.addr);
}

// ---- backpressure and the output cap ---------------------------------------------------------

const HIGH: usize = 256 * 1024;
const LOW: usize = 64 * 1024;
const MSG: usize = 16 * 1024;
const READ_BUFFER: usize = 16 * 1024;
/// Reading stops once the backlog passes high water, but the frames already read in that
/// turn (one read buffer's worth) are still answered: that is the overshoot allowed.
const PAUSED_BOUND: usize = HIGH + READ_BUFFER + 2 * (MSG + 14);

#[test]
fn peer_that_sends_but_never_reads_is_paused_at_high_water_and_loses_nothing() {
    let server = Running::start(Config {
        backlog_high_water: HIGH,
        backlog_low_water: LOW,
        max_backlog: 4 << 20,
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        read_buffer_size: READ_BUFFER,
        ..config()
    });
    let mut hog = Client::ws_small_buffers(server.addr, 16 * 1024, 1 << 20);
    // Write numbered messages without reading until the socket stays full for 300 ms.
    hog.stream.set_nonblocking(true).unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut sent = 0u32;
    let mut stuck_since: Option<Instant> = None;
    let mut total = 0usize;
    loop {
        if pending.is_empty() {
            let mut payload = vec![(sent % 251) as u8; MSG];
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            pending = masked_frame(true, 0x2, &payload);
            sent += 1;
        }
        match hog.stream.write(&pending) {
            Ok(n) => {
                total += n;
                pending.drain(..n);
                stuck_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("the server gave up on a slow reader: {e}"),
        }
        assert!(
            total < 256 << 20,
            "never blocked: the server reads without bound"
        );
    }
    let seen = server.wait_for(IO_TIMEOUT, "backpressure", |s| s.backpressure > 0);
    assert!(
        seen.max_buffered <= PAUSED_BOUND,
        "queued {} bytes with high water at {HIGH}",
        seen.max_buffered
    );
    assert_eq!(seen.dropped, 0);

    // Everyone else stays fast meanwhile.
    let mut other = Client::ws(server.addr);
    for i in 0..20 {
        let start = Instant::now();
        other.send_text(&format!("ping {i}"));
        assert_eq!(
            other.read_frame().unwrap().payload,
            format!("ping {i}").as_bytes()
        );
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }

    // Now read: every message comes back, in order, and the server resumes and drains.
    hog.stream.set_nonblocking(false).unwrap();
    let writer_stream = hog.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut stream = writer_stream;
        stream.write_all(&pending).map(|_| ())
    });
    for expected in 0..sent {
        let frame = hog.read_frame().unwrap_or_else(|e| {
            panic!(
                "echo {expected} of {sent}: {e}; server saw {:?}",
                server.seen()
            )
        });
        assert_eq!(frame.payload.len(), MSG);
        assert_eq!(
            frame.payload[..4],
            expected.to_be_bytes(),
            "lost or reordered"
        );
        assert!(frame.payload[4..]
            .iter()
            .all(|&b| b == (expected % 251) as u8));
    }
    writer.join().unwrap().expect("rest of the last message");
    let seen = server.wait_for(IO_TIMEOUT, "drain callback", |s| s.drains > 0);
    assert_eq!(
        seen.messages,
        sent as u64 + 20,
        "the hog's messages and 20 others"
    );
    assert!(seen.max_buffered <= PAUSED_BOUND);
    assert_eq!(seen.stats.backlog_drops, 0);
    hog.close();
}

#[test]
fn output_past_max_backlog_drops_the_connection_instead_of_growing() {
    let server = Running::start(Config {
        backlog_high_water: HIGH,
        backlog_low_water: LOW,
        max_backlog: 1 << 20,
        max_frame_size: 64 * 1024,
        max_message_size: 64 * 1024,
        ..config()
    });
    let mut hog = Client::ws_small_buffers(server.addr, 16 * 1024, 1 << 20);
    // The handler sends 64 MiB at once, ignoring backpressure; the peer reads nothing.
    hog.send_text("flood 1024 65536");
    let seen = server.wait_for(IO_TIMEOUT, "the drop", |s| s.dropped == 1);
    assert!(
        seen.max_buffered <= 1 << 20,
        "queued {} bytes, more than max_backlog",
        seen.max_buffered
    );
    assert!(seen.sent < 1024, "every send was accepted");
    assert_eq!(seen.stats.backlog_drops, 1);
    // The socket was closed: what we read ends with EOF, without a close frame (a drop).
    assert!(hog.closed_within(IO_TIMEOUT));
    server.wait_for(IO_TIMEOUT, "connection gone", |s| s.connections == 0);
    assert_eq!(server.seen().closes, vec![1006]);
    assert_eq!(server.seen().causes, vec![CloseCause::Backlog]);
    assert_serves_fresh_client(server.addr);
}

// ---- the panic story -------------------------------------------------------------------------

#[test]
fn handler_panic_closes_only_that_connection_with_1011() {
    let server = Running::start(config());
    let mut bystander = Client::ws(server.addr);
    let mut victim = Client::ws(server.addr);
    victim.send_text("panic");
    assert_eq!(victim.expect_close(), 1011);
    victim.send_frame(true, 0x8, &1011u16.to_be_bytes());
    assert!(victim.closed_within(IO_TIMEOUT));
    // A panic in on_open fails that connection too, right after its 101.
    let mut early = Client::ws_path(server.addr, "/panic-open");
    assert_eq!(early.expect_close(), 1011);
    bystander.send_text("unaffected");
    assert_eq!(bystander.read_frame().unwrap().payload, b"unaffected");
    let seen = server.wait_for(IO_TIMEOUT, "two panics counted", |s| {
        s.stats.handler_panics == 2
    });
    assert_eq!(seen.closes.iter().filter(|&&c| c == 1011).count(), 2);
    let panics = seen.causes.iter().filter(|&&c| c == CloseCause::Panic);
    assert_eq!(panics.count(), 2);
    bystander.close();
    assert_serves_fresh_client(server.addr);
}

const ABORT_CHILD: &str = "WSREACTOR_TEST_ABORT_CHILD";

/// Runs in a child process (see below): a server with `abort_on_panic` and a handler that
/// panics. Ignored when run directly.
#[test]
#[ignore = "run by handler_panic_aborts_the_process_when_configured"]
fn abort_on_panic_child() {
    if std::env::var_os(ABORT_CHILD).is_none() {
        return;
    }
    let server = Running::start(Config {
        abort_on_panic: true,
        ..config()
    });
    let mut client = Client::ws(server.addr);
    client.send_text("panic");
    // The process should abort before this read returns.
    let _ = client.read_frame();
    std::thread::sleep(Duration::from_secs(2));
    println!("still alive after a panic with abort_on_panic");
}

#[test]
fn handler_panic_aborts_the_process_when_configured() {
    use std::os::unix::process::ExitStatusExt;
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "abort_on_panic_child",
            "--ignored",
            "--nocapture",
        ])
        .env(ABORT_CHILD, "1")
        .output()
        .expect("child test process");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "child did not abort: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}
