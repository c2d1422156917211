//! Each example in `examples/`, run as its own process on an ephemeral port and exercised by
//! real clients (`cargo test` builds the examples before it runs this).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

mod common;

/// An example's process on an ephemeral port.
struct Example(common::Process);

impl Example {
    fn start(name: &str) -> Example {
        // target/<profile>/deps/examples-HASH → target/<profile>/examples/NAME
        let exe = std::env::current_exe().expect("test executable");
        let profile = exe.parent().and_then(|d| d.parent()).expect("profile dir");
        let bin: PathBuf = profile.join("examples").join(name);
        assert!(bin.exists(), "{} not built", bin.display());
        Example(common::Process::start(
            Command::new(&bin).arg("127.0.0.1:0"),
        ))
    }

    fn connect(&self) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(&self.0.addr).expect("connect");
        // Well above any delivery here, and far below a timer tick: a message that waited
        // for a tick instead of going out at once would still arrive, but none is configured.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let config = WebSocketConfig::default().max_message_size(None);
        let url = format!("ws://{}/", self.0.addr);
        tungstenite::client::client_with_config(url, stream, Some(config))
            .expect("handshake")
            .0
    }
}

fn text(ws: &mut WebSocket<TcpStream>) -> String {
    match ws.read().expect("a message") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn echo_example_echoes_text_and_binary() {
    let server = Example::start("echo");
    let mut ws = server.connect();
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![7u8; 100_000])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![7u8; 100_000]));
}

#[test]
fn chat_example_delivers_a_message_to_every_member_at_once() {
    let server = Example::start("chat");
    let mut alice = server.connect();
    assert!(text(&mut alice).ends_with("joined (1 here)"));
    let mut bob = server.connect();
    assert!(text(&mut alice).ends_with("joined (2 here)"));
    assert!(text(&mut bob).ends_with("joined (2 here)"));
    let mut carol = server.connect();
    for member in [&mut alice, &mut bob, &mut carol] {
        assert!(text(member).ends_with("joined (3 here)"));
    }
    bob.send(Message::text("hello, room")).unwrap();
    for member in [&mut alice, &mut bob, &mut carol] {
        let line = text(member);
        assert!(line.ends_with(": hello, room"), "{line}");
    }
    carol.close(None).unwrap();
    while carol.read().is_ok() {}
    for member in [&mut alice, &mut bob] {
        assert!(text(member).ends_with(" left"));
    }
}

#[test]
fn relay_example_streams_messages_between_partners() {
    let server = Example::start("relay");
    let mut left = server.connect();
    let mut right = server.connect();
    // Paired as soon as the second is open (its 101 is written after `on_open`).
    let large: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    for _ in 0..3 {
        left.send(Message::binary(large.clone())).unwrap();
        assert_eq!(right.read().unwrap(), Message::binary(large.clone()));
        right.send(Message::text("got it")).unwrap();
        assert_eq!(left.read().unwrap(), Message::text("got it"));
    }
    // One side leaves: the other is closed with 1001.
    left.close(None).unwrap();
    while left.read().is_ok() {}
    match right.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
}
