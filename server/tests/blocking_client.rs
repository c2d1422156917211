//! The shipped binary against clients that write a whole message before they read anything.
//!
//! Every blocking client library works this way (tungstenite's `send` writes the whole frame
//! and only then returns), and so do request/response programs and test scripts. The demo echo
//! streams large messages back while they arrive, so its reply piles up unread while the
//! client is still writing: the server must read that message to its end all the same (see
//! `Handler::stream_from`), or both sides wait for each other forever.
//!
//! The server is the binary as `cargo run --release` starts it (its own handler, default
//! options), not a test-only handler. Every socket has a timeout, so a hang fails the test
//! instead of wedging it.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

// The harness shared with the library's tests, not a copy of it.
#[path = "../../tests/common/mod.rs"]
mod common;

const MIB: usize = 1024 * 1024;
/// Longer than any echo here takes, short enough that a hang fails the test quickly.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const ROUNDS: usize = 20;

/// The `wsreactor` binary on an ephemeral port, with `extra` options.
fn start_binary(extra: &[&str]) -> common::Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args(["--listen", "127.0.0.1:0"]).args(extra);
    common::Process::start(&mut command)
}

fn connect(addr: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}/"), stream, Some(config))
            .expect("handshake");
    ws
}

/// Text of `len` bytes in which most characters take 2 to 4 bytes.
fn dense_text(len: usize) -> String {
    let pattern = "añ€𝄞ö字🙂z";
    let mut text = String::with_capacity(len + 8);
    while text.len() + pattern.len() <= len {
        text.push_str(pattern);
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Sends each message whole, then reads its echo, `ROUNDS` times per size and kind, on one
/// connection.
fn send_then_read(server: &common::Process) {
    let mut ws = connect(&server.addr);
    for size in [MIB, 4 * MIB, 16 * MIB] {
        let text = dense_text(size);
        let data = binary(size);
        for round in 0..ROUNDS {
            for message in [Message::text(text.clone()), Message::binary(data.clone())] {
                let started = Instant::now();
                ws.send(message.clone())
                    .unwrap_or_else(|e| panic!("{size} B, round {round}: send failed: {e}"));
                let echo = ws
                    .read()
                    .unwrap_or_else(|e| panic!("{size} B, round {round}: no echo: {e}"));
                assert!(
                    echo == message,
                    "{size} B, round {round}: the echo differs ({} B back) after {:?}",
                    echo.len(),
                    started.elapsed()
                );
            }
        }
    }
    ws.close(None).expect("close");
    while ws.read().is_ok() {}
}

#[test]
fn the_shipped_binary_echoes_a_message_written_whole_before_the_client_reads() {
    send_then_read(&start_binary(&[]));
}

#[test]
fn the_shipped_binary_echoes_whole_messages_to_a_blocking_client_with_stream_from_0() {
    send_then_read(&start_binary(&["--stream-from", "0"]));
}

/// A peer that pipelines messages and never reads is another case: its reading pauses at a
/// message boundary once the backlog passes the high-water mark, the backlog stays bounded,
/// and at the idle timeout (ping, then close 1001, then the close timeout) it is dropped.
/// Everyone else is served meanwhile.
#[test]
fn a_peer_that_pipelines_and_never_reads_is_paused_then_dropped() {
    let server = start_binary(&["--idle-timeout-s", "1", "--close-timeout-ms", "500"]);
    let addr = server.addr.parse().expect("address");
    let mut stream = common::RawClient::open(addr).stream;
    // 256 KiB binary messages, written until the server stops taking them.
    let frame = common::masked_frame(true, 0x2, &binary(256 * 1024));
    stream.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut written = 0usize;
    let mut stalled_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the server kept reading a peer that never reads"
        );
        // Frame after frame, a partial write resumed where it stopped.
        match stream.write(&frame[written % frame.len()..]) {
            Ok(n) => {
                written += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // The server has stopped reading once writes stay refused for a while.
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write failed before the server paused: {e}"),
        }
    }
    // What the server took is its backlog bound plus the kernel's buffers, far below what a
    // peer could send: reading paused.
    assert!(
        written < 64 * MIB,
        "the server took {written} B before pausing"
    );

    // Another client is served while the first one is paused.
    let mut other = connect(&server.addr);
    other.send(Message::text("still serving")).unwrap();
    assert_eq!(other.read().unwrap(), Message::text("still serving"));

    // The silent peer is dropped after the idle timeout, ping and close timeout.
    stream.set_nonblocking(false).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let dropped_by = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < dropped_by,
            "the paused peer was never dropped"
        );
        // Reading would drain the backlog and resume the connection, so the drop is seen as a
        // write that fails once the server has reset the socket.
        match stream.write(&frame[..1]) {
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                break
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
