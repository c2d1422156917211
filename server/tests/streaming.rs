//! Messages handled in parts (`Handler::stream_from`), over real sockets: the demo app's echo
//! streams large messages back fragment by fragment while they are still arriving, and the
//! protocol rules (UTF-8, limits, control frames between fragments, no whole message slipped
//! between our fragments) hold for them exactly as for assembled messages.

// The harness shared with the library's tests, not a copy of it.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{masked_frame, Frame, RawClient, TestServer};
use wsreactor::{Config, Conn, Handler, Message, MessageKind, MessagePart, SendStatus};
use wsreactor_server::app::App;
use wsreactor_server::static_files::StaticFiles;

const STREAM_FROM: u64 = 64 << 10;

fn app_server(config: Config) -> TestServer {
    let app = App::new(StaticFiles::embedded(), 0).with_stream_from(Some(STREAM_FROM));
    TestServer::start(config, app)
}

/// Writes `bytes` from another thread, so the server's echo can flow back while they go out
/// (a single thread writing 1 MiB before reading could deadlock against a paused server).
fn write_in_background(client: &RawClient, bytes: Vec<u8>) -> JoinHandle<()> {
    let mut stream = client.stream.try_clone().expect("clone");
    std::thread::spawn(move || stream.write_all(&bytes).expect("write"))
}

/// Reads data frames until one has FIN; returns them (control frames between them included).
fn read_message_frames(client: &mut RawClient) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let frame = client.read_frame().expect("server closed inside a message");
        let done = frame.fin && frame.opcode < 8;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Checks the fragment rules of a reply and returns its opcode and reassembled payload.
fn reassemble(frames: &[Frame]) -> (u8, Vec<u8>) {
    let data: Vec<&Frame> = frames.iter().filter(|f| f.opcode < 8).collect();
    let opcode = data[0].opcode;
    assert!(opcode == 1 || opcode == 2, "first fragment opcode {opcode}");
    for later in &data[1..] {
        assert_eq!(later.opcode, 0, "later fragments are continuations");
    }
    for earlier in &data[..data.len() - 1] {
        assert!(!earlier.fin, "only the last fragment has FIN");
    }
    (
        opcode,
        data.iter().flat_map(|f| f.payload.clone()).collect(),
    )
}

fn mixed_text(len: usize) -> Vec<u8> {
    let mut text: Vec<u8> = "a€😀é".repeat(len / 10 + 1).into_bytes();
    while std::str::from_utf8(&text[..len]).is_err() {
        text.insert(0, b'x');
    }
    text.truncate(len);
    text
}

#[test]
fn large_messages_come_back_in_fragments_that_reassemble_exactly() {
    let server = app_server(Config::default());
    let mut client = RawClient::open(server.addr);
    let binary: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 % 253) as u8).collect();
    let text = mixed_text(3 << 18);
    for (opcode, payload) in [(2u8, binary), (1, text)] {
        let writer = write_in_background(&client, masked_frame(true, opcode, &payload));
        let frames = read_message_frames(&mut client);
        writer.join().unwrap();
        assert!(
            frames.len() > 1,
            "a {} B message is streamed",
            payload.len()
        );
        assert_eq!(reassemble(&frames), (opcode, payload));
    }
    // A small message still comes back whole, as one frame.
    client.send_frame(true, 1, b"small");
    let frames = read_message_frames(&mut client);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].payload, b"small");
}

#[test]
fn a_fragmented_message_is_streamed_with_control_frames_between_its_fragments() {
    let server = app_server(Config::default());
    let mut client = RawClient::open(server.addr);
    let text = mixed_text(300_000);
    // Fragment boundaries inside multi-byte characters, and a ping in the middle.
    let (a, rest) = text.split_at(100_001);
    let (b, c) = rest.split_at(100_002);
    let mut bytes = masked_frame(false, 1, a);
    bytes.extend(masked_frame(true, 9, b"between"));
    bytes.extend(masked_frame(false, 0, b));
    bytes.extend(masked_frame(true, 0, c));
    let writer = write_in_background(&client, bytes);
    let frames = read_message_frames(&mut client);
    writer.join().unwrap();
    let pongs: Vec<&Frame> = frames.iter().filter(|f| f.opcode == 10).collect();
    assert_eq!(pongs.len(), 1);
    assert_eq!(pongs[0].payload, b"between");
    assert_eq!(reassemble(&frames), (1, text));
}

#[test]
fn invalid_utf8_late_in_a_streamed_text_fails_with_1007_after_the_valid_parts() {
    let server = app_server(Config::default());
    let mut client = RawClient::open(server.addr);
    let mut text = mixed_text(200_000);
    text[199_990] = 0xff;
    let writer = write_in_background(&client, masked_frame(true, 1, &text));
    let mut echoed = Vec::new();
    let close = loop {
        let frame = client.read_frame().expect("a close frame before EOF");
        if frame.opcode == 8 {
            break frame;
        }
        assert!(
            !frame.fin,
            "an invalid message never gets its last fragment"
        );
        echoed.extend(frame.payload);
    };
    writer.join().unwrap();
    assert_eq!(close.expect_close_code(), 1007);
    assert!(
        echoed.len() <= 199_990,
        "nothing past the bad byte is echoed"
    );
    assert_eq!(echoed, text[..echoed.len()]);
}

#[test]
fn max_message_size_applies_to_a_streamed_message_across_its_fragments() {
    let config = Config {
        max_message_size: 250_000,
        max_frame_size: 250_000,
        ..Config::default()
    };
    let server = app_server(config);
    let mut client = RawClient::open(server.addr);
    let part = vec![7u8; 100_000];
    let mut bytes = masked_frame(false, 2, &part);
    bytes.extend(masked_frame(false, 0, &part));
    bytes.extend(masked_frame(true, 0, &part));
    let writer = write_in_background(&client, bytes);
    assert_eq!(client.expect_close().expect_close_code(), 1009);
    let _ = writer.join(); // the server may close before taking every byte
}

/// Echoes in parts and records what whole-message sends answered while a reply was open.
#[derive(Clone, Default)]
struct PartsProbe {
    statuses: Arc<Mutex<Vec<(&'static str, SendStatus)>>>,
}

impl Handler for PartsProbe {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send_binary(message.as_bytes());
    }

    fn stream_from(&self) -> Option<u64> {
        Some(STREAM_FROM)
    }

    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        assert_eq!(part.kind, MessageKind::Binary);
        let sent = conn.send_part(part.kind, part.data, part.last);
        let mut statuses = self.statuses.lock().unwrap();
        statuses.push(("part", sent));
        if part.first && !part.last {
            statuses.push(("whole between parts", conn.send_text("slipped in")));
        }
        if part.last {
            statuses.push(("whole after the last part", conn.send_text("after")));
        }
    }
}

#[test]
fn no_whole_message_is_slipped_between_the_fragments_of_a_reply() {
    let probe = PartsProbe::default();
    let server = TestServer::start(Config::default(), probe.clone());
    let mut client = RawClient::open(server.addr);
    let payload = vec![3u8; 500_000];
    let writer = write_in_background(&client, masked_frame(true, 2, &payload));
    let frames = read_message_frames(&mut client);
    writer.join().unwrap();
    assert_eq!(reassemble(&frames), (2, payload));
    let after = client
        .read_frame()
        .expect("the message sent after the last part");
    assert_eq!((after.opcode, after.payload.as_slice()), (1, &b"after"[..]));
    let statuses = probe.statuses.lock().unwrap();
    assert!(statuses.contains(&("whole between parts", SendStatus::PartsOpen)));
    assert!(statuses.contains(&("whole after the last part", SendStatus::Sent)));
    assert!(statuses
        .iter()
        .filter(|(what, _)| *what == "part")
        .all(|(_, status)| *status == SendStatus::Sent || *status == SendStatus::Backpressure));
}
