//! Rooms in the shipped binary: a WebSocket on `/room/NAME` joins topic `NAME`, and every
//! message from a member reaches every member, the sender included. Other paths still echo.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

#[path = "../../tests/common/mod.rs"]
mod common;

fn start() -> common::Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args(["--listen", "127.0.0.1:0", "--max-connections", "19000"]);
    common::Process::start(&mut command)
}

fn join(addr: &str, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}{path}"), stream)
        .expect("upgrade")
        .0
}

#[test]
fn members_of_a_room_see_each_others_messages_and_other_paths_echo() {
    let server = start();
    let mut alice = join(&server.addr, "/room/lobby");
    let mut bob = join(&server.addr, "/room/lobby");
    let mut elsewhere = join(&server.addr, "/room/other");
    let mut echo = join(&server.addr, "/");
    // Order holds per publisher; between two publishers on two reactor threads it is
    // whichever crossing comes first, so each message is awaited before the next is sent.
    alice.send(Message::text("hi from alice")).unwrap();
    for member in [&mut alice, &mut bob] {
        assert_eq!(member.read().unwrap(), Message::text("hi from alice"));
    }
    bob.send(Message::binary(vec![1, 2, 3])).unwrap();
    for member in [&mut alice, &mut bob] {
        assert_eq!(member.read().unwrap(), Message::binary(vec![1, 2, 3]));
    }
    echo.send(Message::text("echo")).unwrap();
    assert_eq!(echo.read().unwrap(), Message::text("echo"));
    elsewhere.send(Message::text("alone")).unwrap();
    assert_eq!(elsewhere.read().unwrap(), Message::text("alone"));
    // A room name that is not a plain segment is refused.
    let stream = TcpStream::connect(&server.addr).unwrap();
    let refused = tungstenite::client(format!("ws://{}/room/a%20b", server.addr), stream);
    assert!(refused.is_err(), "a bad room name was accepted");
}

/// One message published to 10,000 members reaches every one of them.
#[test]
fn one_message_reaches_ten_thousand_members() {
    const MEMBERS: usize = 10_000;
    let server = start();
    let mut members: Vec<WebSocket<TcpStream>> = (0..MEMBERS)
        .map(|_| join(&server.addr, "/room/big"))
        .collect();
    let started = Instant::now();
    members[0]
        .send(Message::text("to everyone"))
        .expect("publish");
    for (i, member) in members.iter_mut().enumerate() {
        assert_eq!(
            member.read().expect("delivered"),
            Message::text("to everyone"),
            "member {i}"
        );
    }
    eprintln!("delivered to {MEMBERS} members in {:?}", started.elapsed());
}
