//! `wsreactor --io-uring`: the binary says which backend its reactors run on, really runs on
//! io_uring when the kernel allows it, and falls back to epoll (with a warning saying why)
//! when io_uring setup fails (forced here with `WSREACTOR_IO_URING_REFUSE`). On either
//! backend the same bytes come back. The rest of the suite runs on io_uring too when `.ci/run`
//! sets `WSREACTOR_IO_URING=1`; this file checks the switch itself.

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

#[path = "../../tests/common/mod.rs"]
mod common;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn start(refuse: bool) -> common::Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsreactor"));
    command.args(["--listen", "127.0.0.1:0", "--io-uring", "--threads", "2"]);
    if refuse {
        command.env("WSREACTOR_IO_URING_REFUSE", "1");
    } else {
        command.env_remove("WSREACTOR_IO_URING_REFUSE");
    }
    common::Process::start(&mut command)
}

/// Echoes messages from 1 byte to 4 MiB over several connections at once, and checks every
/// byte that comes back.
fn echoes_everything(addr: &str) {
    let mut clients: Vec<_> = (0..8)
        .map(|_| {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let config = WebSocketConfig::default()
                .max_message_size(None)
                .max_frame_size(None);
            tungstenite::client::client_with_config(format!("ws://{addr}/"), stream, Some(config))
                .expect("handshake")
                .0
        })
        .collect();
    for (round, len) in [1usize, 125, 126, 20_000, 65_536, 1 << 20, 4 << 20]
        .into_iter()
        .enumerate()
    {
        for (i, ws) in clients.iter_mut().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i + round) as u8).collect();
            ws.send(Message::binary(payload.clone())).expect("send");
            let back = loop {
                match ws.read().expect("echo") {
                    Message::Binary(bytes) => break bytes,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            };
            assert!(
                back == payload,
                "{len} bytes on client {i} came back different"
            );
        }
    }
    for ws in &mut clients {
        ws.close(None).expect("close");
        while ws.read().is_ok() {}
    }
}

#[test]
fn the_binary_serves_on_io_uring_when_asked() {
    let server = start(false);
    let options = server
        .log_line(" options ", Duration::from_secs(5))
        .expect("an options line");
    assert!(options.contains(" io=io_uring "), "{options}");
    assert!(
        server
            .log_line("serving on epoll", Duration::ZERO)
            .is_none(),
        "fell back: {:?}",
        server.log.lock().unwrap()
    );
    echoes_everything(&server.addr);
}

#[test]
fn a_refused_ring_falls_back_to_epoll_and_says_why() {
    let server = start(true);
    let warning = server
        .log_line("serving on epoll", Duration::from_secs(5))
        .expect("a warning");
    assert!(warning.contains("WSREACTOR_IO_URING_REFUSE"), "{warning}");
    let options = server
        .log_line(" options ", Duration::from_secs(5))
        .expect("an options line");
    assert!(options.contains(" io=epoll "), "{options}");
    echoes_everything(&server.addr);
}
