//! The memory budget's steps one at a time, over real sockets, with the library's counters:
//! a new large message that would pass 90% of the budget is refused with 1009; at the budget
//! the heaviest holders are closed with 1013 while a connection holding little is kept and
//! served; and a server whose crowd left serves as before.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{parse_frame, Echo, RawClient, TestServer};
use wsreactor::Config;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn config(max_memory: usize) -> Config {
    Config {
        max_memory,
        ..Config::default()
    }
}

/// The close code of a close frame the server sends within `wait`, or `None` if it sends
/// nothing (data frames are not expected here).
fn close_within(client: &mut RawClient, wait: Duration) -> Option<u16> {
    client.stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((frame, _)) = parse_frame(&buf) {
            assert_eq!(frame.opcode, 8, "only a close was expected");
            return frame.close_code();
        }
        match client.stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None, // timed out: nothing sent
        }
    }
}

#[test]
fn a_new_large_message_that_would_pass_ninety_percent_is_refused_with_1009() {
    let server = TestServer::start(config(4 * MIB), Echo);
    // 1 MiB fits under 90% of 4 MiB: echoed.
    let mut fits = RawClient::open(server.addr);
    let payload = vec![7u8; MIB];
    fits.send_frame(true, 2, &payload);
    let echo = fits.read_frame().expect("an echo");
    assert_eq!((echo.opcode, echo.payload.len()), (2, MIB));
    // A header announcing 4 MiB would take the total past 90%: refused before any of it is
    // buffered.
    let mut large = RawClient::open(server.addr);
    let header = common::masked_frame(true, 2, &vec![0u8; 4 * MIB]);
    large.send(&header[..14]);
    assert_eq!(large.expect_close().close_code(), Some(1009));
    // Small messages go on as before.
    fits.send_frame(true, 1, b"still here");
    assert_eq!(fits.read_frame().expect("echo").payload, b"still here");
    drop((fits, large));
    let stats = server.stop();
    assert_eq!(stats.budget_refused_messages, 1, "{stats:?}");
    assert_eq!(stats.budget_closes + stats.budget_drops, 0, "{stats:?}");
}

/// Heavy peers of the test below: four pass its budget.
const HEAVY: usize = 4;

#[test]
fn at_the_budget_the_heaviest_holders_are_closed_with_1013_and_a_light_one_is_kept() {
    let server = TestServer::start(config(4 * MIB), Echo);
    // Holds little: the first 100 bytes of a message.
    let mut light = RawClient::open(server.addr);
    light.send_frame(false, 2, &[1u8; 100]);
    // Each heavy peer begins a message with a small fragment (always admitted) and then
    // sends a 1 MiB continuation, which the server reserves and assembles: four of them
    // pass the 4 MiB budget.
    let mut heavy: Vec<RawClient> = (0..HEAVY).map(|_| RawClient::open(server.addr)).collect();
    for peer in &mut heavy {
        peer.send_frame(false, 2, &[2u8; 32 * KIB]);
        peer.send_frame(false, 0, &vec![3u8; MIB]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let codes: Vec<Option<u16>> = heavy
        .iter_mut()
        .map(|peer| close_within(peer, Duration::from_millis(500)))
        .collect();
    let closed = codes.iter().filter(|&&c| c == Some(1013)).count();
    assert!(closed >= 1, "no heavy holder was closed: {codes:?}");
    assert!(
        codes.iter().all(|&c| c.is_none() || c == Some(1013)),
        "{codes:?}"
    );
    // The light one was never closed: its message completes and comes back whole.
    light.send_frame(true, 0, &[4u8; 20]);
    let echo = light.read_frame().expect("the light connection's echo");
    assert_eq!((echo.opcode, echo.payload.len()), (2, 120));
    drop(heavy);
    // Once the crowd is gone a newcomer is accepted and served.
    std::thread::sleep(Duration::from_millis(200));
    let mut fresh = RawClient::open(server.addr);
    fresh.send_frame(true, 1, b"after");
    assert_eq!(fresh.read_frame().expect("echo").payload, b"after");
    drop((light, fresh));
    let stats = server.stop();
    // Heavy peers still held back when they left were closed for the budget then (a held-back
    // connection whose peer closes is shed at once), so more than the ones seen may count.
    let counted = stats.budget_closes as usize;
    assert!((closed..=HEAVY).contains(&counted), "{stats:?}");
    assert_eq!(stats.budget_drops, 0, "{stats:?}");
}
