//! The core protocol over real sockets: echo at every length form, fragmentation, ping/pong,
//! the close handshake and its code rules, handshake refusals, and awkward packetisation.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{close_payload, masked_frame, upgrade_request, Echo, RawClient, TestServer};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message as WsMessage;
use wsreactor::Config;

fn tungstenite_client(
    server: &TestServer,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (socket, response) = tungstenite::connect(server.url()).expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

#[test]
fn echoes_text_and_binary_at_every_length_form() {
    let server = TestServer::echo();
    let mut client = tungstenite_client(&server);
    for size in [0usize, 1, 125, 126, 65535, 65536, 16 << 20] {
        // Text with multi-byte characters where they fit, so UTF-8 validation does real work.
        let text: String = "aé€😀"
            .chars()
            .cycle()
            .scan(0, |len, c| {
                *len += c.len_utf8();
                (*len <= size).then_some(c)
            })
            .collect();
        let text = text.clone() + &"x".repeat(size - text.len());
        assert_eq!(text.len(), size);
        client.send(WsMessage::text(text.clone())).unwrap();
        assert_eq!(client.read().unwrap(), WsMessage::text(text), "text {size}");

        let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        client.send(WsMessage::binary(binary.clone())).unwrap();
        assert_eq!(
            client.read().unwrap(),
            WsMessage::binary(binary),
            "binary {size}"
        );
    }
    client.close(None).unwrap();
}

#[test]
fn fragmented_message_with_control_frames_between_fragments() {
    let server = TestServer::echo();
    let mut client = RawClient::open(server.addr);
    client.send_frame(false, 1, "héllo, ".as_bytes());
    client.send_frame(true, 9, b"ping-1");
    client.send_frame(false, 0, &[0xe2, 0x82]); // a code point split across fragments
    client.send_frame(true, 10, b"unsolicited pong is ignored");
    client.send_frame(true, 0, &[0xac, b'!']);
    let pong = client.read_frame().unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"ping-1"[..]));
    let echo = client.read_frame().unwrap();
    assert_eq!(echo.opcode, 1);
    assert!(echo.fin);
    assert_eq!(echo.payload, "héllo, €!".as_bytes());
}

#[test]
fn many_frames_in_one_write_are_all_answered_in_order() {
    let server = TestServer::echo();
    let mut client = RawClient::open(server.addr);
    let mut batch = Vec::new();
    for i in 0..500u32 {
        batch.extend(masked_frame(true, 2, &i.to_be_bytes()));
    }
    client.send(&batch);
    for i in 0..500u32 {
        let frame = client.read_frame().unwrap();
        assert_eq!(frame.payload, i.to_be_bytes());
    }
}

#[test]
fn medium_messages_alone_and_in_batches_come_back_whole_and_in_order() {
    // Replies of 4 KiB and more to the frame that ends a read go straight to the socket when
    // nothing is queued ahead of them; the others are queued. Mixed, they must keep order.
    let server = TestServer::echo();
    let mut client = RawClient::open(server.addr);
    let sizes = [100usize, 4096, 5000, 20_000, 3000, 70_000];
    let payload = |i: usize| -> Vec<u8> {
        let size = sizes[i % sizes.len()];
        (0..size).map(|j| (i * 7 + j) as u8).collect()
    };
    let mut batch = Vec::new();
    for i in 0..60 {
        batch.extend(masked_frame(true, 2, &payload(i)));
    }
    client.send(&batch);
    for i in 0..60 {
        assert_eq!(
            client.read_frame().unwrap().payload,
            payload(i),
            "batched {i}"
        );
    }
    for i in 60..90 {
        client.send(&masked_frame(true, 2, &payload(i)));
        assert_eq!(
            client.read_frame().unwrap().payload,
            payload(i),
            "alone {i}"
        );
    }
}

#[test]
fn large_frames_between_small_ones_come_back_whole_and_in_order_however_they_arrive() {
    // The rest of a large frame is read straight into the message buffer (on io_uring, from
    // the socket after the turn's completions, while small frames come through the ring): the
    // two ways must never reorder bytes, whether a group arrives at once or in pieces.
    let server = TestServer::echo();
    let mut client = RawClient::open(server.addr);
    let sizes = [300_000usize, 20, 70_000, 1 << 20, 5, 130_000, 16_384];
    let payload = |i: usize| -> Vec<u8> {
        let size = sizes[i % sizes.len()];
        (0..size).map(|j| (i * 13 + j / 7) as u8).collect()
    };
    let pieces = [7 * 1024, 33 * 1024, 150 * 1024, 1, 64 * 1024 + 3];
    for group in 0..6 {
        let first = group * sizes.len();
        let mut bytes = Vec::new();
        for i in first..first + sizes.len() {
            bytes.extend(masked_frame(true, 2, &payload(i)));
        }
        if group % 2 == 0 {
            client.send(&bytes);
        } else {
            let mut rest = &bytes[..];
            let mut piece = 0;
            while !rest.is_empty() {
                let n = pieces[piece % pieces.len()].min(rest.len());
                client.send(&rest[..n]);
                rest = &rest[n..];
                piece += 1;
                if piece % 3 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        for i in first..first + sizes.len() {
            let frame = client.read_frame().expect("echo");
            assert!(frame.payload == payload(i), "group {group}, message {i}");
        }
    }
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let server = TestServer::echo();
    let mut client = RawClient::open(server.addr);
    for payload in [&b""[..], b"x", &[7u8; 125]] {
        client.send_frame(true, 9, payload);
        let pong = client.read_frame().unwrap();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (10, payload));
    }
}

#[test]
fn valid_close_codes_are_echoed_and_the_server_closes_tcp() {
    let server = TestServer::echo();
    for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
        let mut client = RawClient::open(server.addr);
        client.send_frame(true, 8, &close_payload(code, "bye ✓".as_bytes()));
        let reply = client.read_frame().expect("close reply");
        assert_eq!(reply.close_code(), Some(code));
        assert_eq!(
            client.read_frame(),
            None,
            "server closes TCP after the handshake"
        );
    }
    let mut client = RawClient::open(server.addr);
    client.send_frame(true, 8, b"");
    let reply = client.read_frame().expect("close reply");
    assert_eq!(
        (reply.opcode, reply.payload.len()),
        (8, 0),
        "empty close gets empty close"
    );
    assert_eq!(client.read_frame(), None);
}

#[test]
fn invalid_close_frames_are_answered_with_1002_or_1007() {
    let server = TestServer::echo();
    let mut cases: Vec<(Vec<u8>, u16)> = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]
        .iter()
        .map(|&code| (close_payload(code, b""), 1002))
        .collect();
    cases.push((vec![0x03], 1002)); // one byte: no room for a code
    cases.push((close_payload(1000, b"\xff\xfe"), 1007));
    for (payload, expected) in cases {
        let mut client = RawClient::open(server.addr);
        client.send_frame(true, 8, &payload);
        assert_eq!(
            client.expect_close().close_code(),
            Some(expected),
            "{payload:?}"
        );
    }
}

#[test]
fn protocol_violations_fail_the_connection_with_their_code() {
    let server = TestServer::echo();
    let unmasked_text = vec![0x81, 0x02, b'h', b'i'];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked frame", unmasked_text, 1002),
        (
            "reserved bit",
            {
                let mut f = masked_frame(true, 1, b"x");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        ("reserved opcode", masked_frame(true, 3, b""), 1002),
        ("fragmented ping", masked_frame(false, 9, b""), 1002),
        ("long ping", masked_frame(true, 9, &[0; 126]), 1002),
        ("lone continuation", masked_frame(true, 0, b"x"), 1002),
        (
            "invalid text",
            masked_frame(true, 1, b"ok \xed\xa0\x80"),
            1007,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut client = RawClient::open(server.addr);
        client.send(&bytes);
        assert_eq!(client.expect_close().close_code(), Some(code), "{what}");
    }
    // A new message inside a fragmented one.
    let mut client = RawClient::open(server.addr);
    client.send_frame(false, 1, b"a");
    client.send_frame(true, 2, b"b");
    assert_eq!(client.expect_close().close_code(), Some(1002));
}

#[test]
fn too_big_is_1009_before_the_payload_arrives() {
    let config = Config {
        max_frame_size: 1024,
        max_message_size: 4096,
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    // Only the header of a 1 MiB frame: the answer must not wait for the payload.
    let mut client = RawClient::open(server.addr);
    let header = &masked_frame(true, 2, &vec![0; 1 << 20])[..14];
    client.send(header);
    assert_eq!(client.read_frame().unwrap().close_code(), Some(1009));
    // Fragments each under the frame limit that add up past the message limit.
    let mut client = RawClient::open(server.addr);
    client.send_frame(false, 2, &[1; 1000]);
    for _ in 0..3 {
        client.send_frame(false, 0, &[1; 1000]);
    }
    client.send_frame(true, 0, &[1; 1000]);
    assert_eq!(client.expect_close().close_code(), Some(1009));
}

fn status_for(server: &TestServer, request: &str) -> (u16, String) {
    let mut client = RawClient::connect(server.addr);
    client.send(request.as_bytes());
    let (status, head, _) = client.read_response();
    (status, head)
}

#[test]
fn every_handshake_refusal_has_its_status() {
    let server = TestServer::echo();
    let good = upgrade_request("/", "");
    let cases = [
        ("POST", good.replacen("GET", "POST", 1), 400),
        ("HTTP/1.0", good.replacen("HTTP/1.1", "HTTP/1.0", 1), 400),
        ("no Host", good.replacen("Host: 127.0.0.1\r\n", "", 1), 400),
        (
            "no Connection: Upgrade",
            good.replacen("Connection: Upgrade", "Connection: keep-alive", 1),
            400,
        ),
        (
            "no Upgrade",
            good.replacen("Upgrade: websocket\r\n", "", 1),
            400,
        ),
        ("short key", good.replacen(common::KEY, "c2hvcnQ=", 1), 400),
        (
            "key not base64",
            good.replacen(common::KEY, "!!!!!!!!!!!!!!!!!!!!!!==", 1),
            400,
        ),
        (
            "version 8",
            good.replacen("Version: 13", "Version: 8", 1),
            426,
        ),
        ("garbage", "\x01\x02 not http\r\n\r\n".to_string(), 400),
    ];
    for (what, request, expected) in cases {
        let (status, head) = status_for(&server, &request);
        assert_eq!(status, expected, "{what}: {head}");
        if expected == 426 {
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        }
    }
    let huge = upgrade_request("/", &format!("X-Filler: {}\r\n", "a".repeat(9000)));
    assert_eq!(status_for(&server, &huge).0, 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(status_for(&server, &upgrade_request("/", &many)).0, 431);
    // Plain HTTP on the WebSocket port, with the default handler.
    let (status, _) = status_for(&server, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
}

#[test]
fn origin_policy_answers_403() {
    let config = Config {
        allowed_origins: vec!["http://good.example".into()],
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let refused = upgrade_request("/", "Origin: http://evil.example\r\n");
    assert_eq!(status_for(&server, &refused).0, 403);
    let allowed = upgrade_request("/", "Origin: http://good.example\r\n");
    assert_eq!(status_for(&server, &allowed).0, 101);
}

#[test]
fn subprotocol_is_chosen_from_the_configured_list() {
    let config = Config {
        subprotocols: vec!["stats".into(), "chat.v2".into()],
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "chat.v1, chat.v2, stats".parse().unwrap(),
    );
    let (_, response) = tungstenite::connect(request).expect("upgrade");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "chat.v2");

    let (_, response) = tungstenite::connect(server.url()).expect("upgrade");
    assert!(response.headers().get("Sec-WebSocket-Protocol").is_none());
}

#[test]
fn first_frame_in_the_same_packet_as_the_handshake_is_not_lost() {
    let server = TestServer::echo();
    let mut client = RawClient::connect(server.addr);
    let mut packet = upgrade_request("/", "").into_bytes();
    packet.extend(masked_frame(true, 1, b"early bird"));
    packet.extend(masked_frame(true, 2, b"second"));
    client.send(&packet);
    assert_eq!(client.read_response_head().0, 101);
    assert_eq!(client.read_frame().unwrap().payload, b"early bird");
    assert_eq!(client.read_frame().unwrap().payload, b"second");
}

#[test]
fn request_head_and_frames_trickled_one_byte_at_a_time() {
    let server = TestServer::echo();
    let mut client = RawClient::connect(server.addr);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(masked_frame(true, 1, "slow ✓".as_bytes()));
    for byte in bytes {
        client.send(&[byte]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(client.read_response_head().0, 101);
    assert_eq!(client.read_frame().unwrap().payload, "slow ✓".as_bytes());
}

#[test]
fn peer_that_stops_reading_is_paused_not_buffered_and_loses_nothing() {
    // Small marks so the test is quick; a cap far above what backpressure should allow.
    let config = Config {
        backlog_high_water: 64 << 10,
        backlog_low_water: 16 << 10,
        max_backlog: 32 << 20,
        max_message_size: 1 << 20,
        max_frame_size: 1 << 20,
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut client = RawClient::open(server.addr);
    client
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let message = vec![0x5a; 16 << 10];
    let frame = masked_frame(true, 2, &message);
    let (mut sent, mut offset) = (0usize, 0usize);
    // Write without reading until the server stops reading from us (our writes block).
    loop {
        match client.stream.write(&frame[offset..]) {
            Ok(n) => offset += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
        if offset == frame.len() {
            sent += 1;
            offset = 0;
        }
        assert!(
            sent < 4096,
            "server kept reading a peer that never reads: 64 MiB accepted"
        );
    }
    // Once we read, the server reads again: finish the frame we were in the middle of, and
    // everything accepted comes back, in order.
    client
        .stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = frame[offset..].to_vec();
    if offset > 0 {
        sent += 1;
    } else {
        rest.clear();
    }
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&rest))
    };
    let mut received = 0usize;
    while received < sent {
        let frame = client.read_frame().expect("echo");
        assert_eq!(frame.payload, message);
        received += 1;
    }
    writer.join().unwrap().unwrap();
    client.send_frame(true, 1, b"still here");
    assert_eq!(client.read_frame().unwrap().payload, b"still here");
}

#[test]
fn graceful_shutdown_sends_1001_to_every_client() {
    // Clients here never answer the close: the server must still stop within its close timeout.
    let config = Config {
        close_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let server = TestServer::start(config, Echo);
    let mut clients: Vec<RawClient> = (0..5).map(|_| RawClient::open(server.addr)).collect();
    server.stop();
    for client in &mut clients {
        let frame = client.read_frame().expect("close frame");
        assert_eq!(frame.close_code(), Some(1001));
    }
}

#[test]
fn thousands_of_pipelined_http_requests_are_answered_in_order() {
    let server = TestServer::echo();
    let mut client = RawClient::connect(server.addr);
    let requests: String = (0..5000)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(requests.as_bytes()))
    };
    for _ in 0..5000 {
        let (status, head, _) = client.read_response();
        assert_eq!(status, 404, "{head}");
        assert!(head.contains("Connection: keep-alive"), "{head}");
    }
    writer.join().unwrap().unwrap();
    // The same connection can still upgrade afterwards.
    client.send(upgrade_request("/", "").as_bytes());
    assert_eq!(client.read_response_head().0, 101);
}
