//! Property tests over the real connection state machine, driven in memory
//! (`wsreactor::sans_io::Endpoint`):
//!
//! - any sequence of valid frames, split at any byte boundaries, decodes to the same messages
//!   and the same output bytes as when it arrives in one piece;
//! - the same holds for messages handed over in parts (`Handler::stream_from`): the parts
//!   put together, and the fragmented echoes put together, are the messages sent;
//! - through an in-memory client ([`wsreactor::sans_io::Pair`]), which checks every server
//!   frame as a strict client would: messages fragmented anywhere, delivered in reads of any
//!   size, come back whole and in order from an echo and from a streaming echo, and the close
//!   handshake ends the exchange with nothing after it;
//! - any byte string fed to the handshake parser, or to an open connection's frame decoder,
//!   ends in a defined answer (an HTTP status, well-formed frames, a valid close code) and
//!   never panics.

mod common;

use common::{head_len, masked_frame_with_key, parse_frame, Frame};
use proptest::collection::vec;
use proptest::prelude::*;
use wsreactor::config::HEADER_ARRAY;
use wsreactor::handshake::{self, Verdict};
use wsreactor::sans_io::{Endpoint, Pair, Received};
use wsreactor::{Config, Conn, Handler, Message, MessageKind, MessagePart};

/// Echoes and records every message.
#[derive(Default)]
struct Recorder {
    messages: Vec<(bool, Vec<u8>)>,
}

impl Handler for Recorder {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        self.messages.push((
            matches!(message, Message::Text(_)),
            message.as_bytes().to_vec(),
        ));
        let _ = conn.send(message);
    }
}

/// Takes messages of at least [`STREAM_FROM`] bytes in parts, echoes each part as a fragment,
/// and records every message put together.
#[derive(Default)]
struct PartsRecorder {
    messages: Vec<(bool, Vec<u8>)>,
    assembling: Option<(bool, Vec<u8>)>,
}

const STREAM_FROM: u64 = 100;

impl Handler for PartsRecorder {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        assert!(
            self.assembling.is_none(),
            "a whole message inside a message in parts"
        );
        self.messages.push((
            matches!(message, Message::Text(_)),
            message.as_bytes().to_vec(),
        ));
        let _ = conn.send_binary(message.as_bytes());
    }

    fn stream_from(&self) -> Option<u64> {
        Some(STREAM_FROM)
    }

    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        assert_eq!(part.first, self.assembling.is_none(), "first flag");
        let text = part.kind == MessageKind::Text;
        let (kind, bytes) = self.assembling.get_or_insert_with(|| (text, Vec::new()));
        assert_eq!(*kind, text, "kind changed between parts");
        bytes.extend_from_slice(part.data);
        if part.last {
            self.messages.extend(self.assembling.take());
        }
        let _ = conn.send_part(MessageKind::Binary, part.data, part.last);
    }
}

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn config() -> Config {
    Config {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        ..Config::default()
    }
}

/// One message to send: text or binary, its payload, where to cut it into fragments, and
/// whether to slip a ping in after each fragment.
#[derive(Debug, Clone)]
struct Planned {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    pings: Vec<bool>,
    key: [u8; 4],
}

fn planned() -> impl Strategy<Value = Planned> {
    let text = ".{0,300}".prop_map(|s: String| (true, s.into_bytes()));
    let small = vec(any::<u8>(), 0..2000).prop_map(|b| (false, b));
    // Rarely, a payload that needs the 64-bit length form.
    let large = (any::<u8>(), 65_536usize..70_000).prop_map(|(seed, n)| {
        (
            false,
            (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect(),
        )
    });
    (
        prop_oneof![4 => text, 4 => small, 1 => large],
        vec(any::<prop::sample::Index>(), 0..6),
        vec(any::<bool>(), 6),
        any::<[u8; 4]>(),
    )
        .prop_map(|((text, payload), cuts, pings, key)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
            cuts.sort_unstable();
            Planned {
                text,
                payload,
                cuts,
                pings,
                key,
            }
        })
}

/// The wire bytes of the planned messages.
fn encode(messages: &[Planned]) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in messages {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.payload.len());
        let pieces = bounds.len() - 1;
        for i in 0..pieces {
            let opcode = if i > 0 {
                0x0
            } else if m.text {
                0x1
            } else {
                0x2
            };
            let piece = &m.payload[bounds[i]..bounds[i + 1]];
            wire.extend(masked_frame_with_key(i + 1 == pieces, opcode, m.key, piece));
            if m.pings[i % m.pings.len()] {
                wire.extend(masked_frame_with_key(true, 0x9, m.key, &[i as u8; 3]));
            }
        }
    }
    wire
}

/// Feeds `bytes` cut at the given points, draining the output after every piece.
fn run(bytes: &[u8], cuts: &[prop::sample::Index]) -> (Endpoint<Recorder>, Vec<u8>) {
    run_with(Recorder::default(), bytes, cuts)
}

fn run_with<H: Handler>(
    handler: H,
    bytes: &[u8],
    cuts: &[prop::sample::Index],
) -> (Endpoint<H>, Vec<u8>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let mut endpoint = Endpoint::new(config(), handler);
    let mut out = Vec::new();
    for pair in points.windows(2) {
        endpoint.feed(&mut bytes[pair[0]..pair[1]].to_vec());
        endpoint.drain_output(&mut out);
    }
    (endpoint, out)
}

/// Splits server output into frames, which must all be whole messages; panics on anything
/// malformed.
fn server_frames(out: &[u8]) -> Vec<Frame> {
    let frames = server_fragments(out);
    assert!(
        frames.iter().all(|f| f.fin),
        "the server sends whole messages"
    );
    frames
}

/// Splits server output into frames (data frames possibly fragments); panics on anything
/// malformed.
fn server_fragments(mut out: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        assert!(out.len() >= 2, "truncated frame header");
        assert_eq!(out[0] & 0x70, 0, "RSV bits in a server frame");
        // Panics on a masked server frame.
        let (frame, used) = parse_frame(out).expect("truncated frame payload");
        let opcode = frame.opcode;
        assert!(
            matches!(opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xA),
            "unexpected opcode {opcode}"
        );
        assert!(frame.fin || opcode < 0x8, "a fragmented control frame");
        frames.push(frame);
        out = &out[used..];
    }
    frames
}

/// The status code of the response at the start of `out`, and the bytes after its head.
fn http_status(out: &[u8]) -> (u16, &[u8]) {
    assert!(out.starts_with(b"HTTP/1.1 "), "not an HTTP response");
    let status = std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap();
    let end = head_len(out).unwrap();
    (status, &out[end..])
}

/// The answer to a connection that went wrong: one close frame with a code the server may
/// send, and nothing after it.
fn check_frames_end_well(frames: &[Frame]) {
    if let Some(at) = frames.iter().position(|f| f.opcode == 0x8) {
        assert_eq!(at, frames.len() - 1, "frames after the close frame");
        let payload = &frames[at].payload;
        if !payload.is_empty() {
            assert!(payload.len() >= 2);
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            assert!(
                matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                "server sent close code {code}"
            );
            assert!(std::str::from_utf8(&payload[2..]).is_ok());
        }
    }
}

/// Sends the planned messages through a pair, in reads of `reads` bytes, then closes; returns
/// what the client received.
fn pair_exchange<H: Handler>(
    pair: &mut Pair<H>,
    messages: &[Planned],
    reads: &[usize],
) -> Vec<Received> {
    for m in messages {
        pair.client.message(m.text, &m.payload, &m.cuts);
    }
    pair.client.frame(
        true,
        wsreactor::frame::OpCode::Close,
        &1000u16.to_be_bytes(),
    );
    pair.deliver(reads).expect("the server broke the protocol")
}

/// What an echo of `messages` followed by a close 1000 must give the client.
fn echoed(messages: &[Planned], as_text: bool) -> Vec<Received> {
    let mut expected: Vec<Received> = messages
        .iter()
        .map(
            |m| match (m.text && as_text, String::from_utf8(m.payload.clone())) {
                (true, Ok(text)) => Received::Text(text),
                _ => Received::Binary(m.payload.clone()),
            },
        )
        .collect();
    expected.push(Received::Close(Some(1000), String::new()));
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_client_in_memory_gets_back_every_message_whole_and_then_the_close(
        messages in vec(planned(), 1..6),
        reads in vec(1usize..5000, 1..8),
    ) {
        let mut pair = Pair::open(config(), Recorder::default());
        let received = pair_exchange(&mut pair, &messages, &reads);
        prop_assert_eq!(received, echoed(&messages, true));
        prop_assert!(pair.client.is_closed());
        prop_assert!(!pair.server.is_open());

        // The streaming echo sends every part back as a binary fragment.
        let mut pair = Pair::open(config(), PartsRecorder::default());
        let received = pair_exchange(&mut pair, &messages, &reads);
        prop_assert_eq!(received, echoed(&messages, false));
    }

    #[test]
    fn valid_frames_split_anywhere_decode_to_the_same_messages(
        messages in vec(planned(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let mut bytes = UPGRADE.to_vec();
        bytes.extend(encode(&messages));
        let (whole, whole_out) = run(&bytes, &[]);
        let (split, split_out) = run(&bytes, &cuts);
        let expected: Vec<(bool, Vec<u8>)> =
            messages.iter().map(|m| (m.text, m.payload.clone())).collect();
        prop_assert!(split.handler().messages == expected, "messages differ");
        prop_assert!(whole.handler().messages == expected, "messages differ");
        prop_assert!(split_out == whole_out, "output depends on read boundaries");
        prop_assert!(split.is_open());
        // The output is the 101 then, in order, a pong per ping and an echo per message.
        let (status, rest) = http_status(&split_out);
        prop_assert_eq!(status, 101);
        let echoes: Vec<(bool, Vec<u8>)> = server_frames(rest)
            .into_iter()
            .filter(|f| f.opcode != 0xA)
            .map(|f| (f.opcode == 0x1, f.payload))
            .collect();
        prop_assert!(echoes == expected, "echoes differ");
    }

    #[test]
    fn messages_in_parts_split_anywhere_put_together_to_the_messages_sent(
        messages in vec(planned(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let mut bytes = UPGRADE.to_vec();
        bytes.extend(encode(&messages));
        let expected: Vec<(bool, Vec<u8>)> =
            messages.iter().map(|m| (m.text, m.payload.clone())).collect();
        let expected_payloads: Vec<&Vec<u8>> = expected.iter().map(|(_, p)| p).collect();
        for cuts in [&[][..], &cuts[..]] {
            let (endpoint, out) = run_with(PartsRecorder::default(), &bytes, cuts);
            prop_assert!(endpoint.handler().messages == expected, "messages differ");
            prop_assert!(endpoint.is_open());
            let (status, rest) = http_status(&out);
            prop_assert_eq!(status, 101);
            // Put the echoed fragments back together, pongs left out.
            let mut echoes: Vec<Vec<u8>> = Vec::new();
            let mut open = false;
            for frame in server_fragments(rest).into_iter().filter(|f| f.opcode != 0xA) {
                prop_assert_eq!(frame.opcode == 0x0, open, "continuation exactly inside a message");
                if !open {
                    echoes.push(Vec::new());
                }
                echoes.last_mut().unwrap().extend(frame.payload);
                open = !frame.fin;
            }
            prop_assert!(!open);
            let echoes: Vec<&Vec<u8>> = echoes.iter().collect();
            prop_assert!(echoes == expected_payloads, "echoes differ");
        }
    }

    #[test]
    fn any_bytes_to_the_handshake_parser_end_in_a_defined_answer(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..600),
            // A valid request with a few bytes changed or cut short: closer to the edges.
            (vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), any::<prop::sample::Index>())
                .prop_map(|(edits, cut)| {
                    let mut request = UPGRADE.to_vec();
                    for (at, byte) in edits {
                        let i = at.index(request.len());
                        request[i] = byte;
                    }
                    request.truncate(cut.index(request.len() + 1));
                    request
                }),
        ],
        max_head in 64usize..1024,
        max_headers in 1usize..=HEADER_ARRAY,
    ) {
        // The pure functions.
        let config = Config { max_request_head: max_head, max_headers, ..config() };
        let mut headers = [httparse::EMPTY_HEADER; HEADER_ARRAY];
        match handshake::parse_head(&bytes, &mut headers[..max_headers], max_head) {
            Ok(Some((len, request))) => {
                prop_assert!(len <= bytes.len() && len <= max_head);
                let verdict = handshake::evaluate(&request, &config);
                if let Verdict::Refuse(refusal) = verdict {
                    let (status, _) = refusal.status();
                    prop_assert!(matches!(status, 400 | 403 | 426 | 431));
                }
            }
            Ok(None) => prop_assert!(bytes.len() < max_head),
            Err(refusal) => prop_assert!(matches!(refusal.status().0, 400 | 431)),
        }
        // The state machine: an HTTP answer with a known status, or still waiting.
        let mut endpoint = Endpoint::new(config, Recorder::default());
        endpoint.feed(&mut bytes.clone());
        let mut out = Vec::new();
        endpoint.drain_output(&mut out);
        if out.is_empty() {
            prop_assert!(!endpoint.is_open());
            prop_assert!(bytes.len() < max_head, "a full-sized head got no answer");
            // ...and the handshake timeout ends the wait.
            endpoint.advance(60_000);
            prop_assert!(endpoint.is_done());
        } else {
            let (status, rest) = http_status(&out);
            prop_assert!(matches!(status, 101 | 400 | 403 | 404 | 426 | 431), "status {}", status);
            prop_assert_eq!(endpoint.is_open(), status == 101);
            if status == 101 {
                check_frames_end_well(&server_frames(rest));
            }
        }
    }

    #[test]
    fn any_bytes_to_an_open_connection_end_in_a_defined_answer(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..2000),
            // Mostly well-formed frames with random headers: reaches deeper states.
            vec((0u8..16, any::<bool>(), any::<bool>(), vec(any::<u8>(), 0..200)), 0..12)
                .prop_map(|frames| {
                    frames
                        .into_iter()
                        .flat_map(|(opcode, fin, masked, payload)| {
                            let mut f = masked_frame_with_key(fin, opcode, [1, 2, 3, 4], &payload);
                            if !masked {
                                f[1] &= 0x7f;
                                f.drain(f.len() - payload.len() - 4..f.len() - payload.len());
                            }
                            f
                        })
                        .collect()
                }),
        ],
        cuts in vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut stream = UPGRADE.to_vec();
        stream.extend_from_slice(&bytes);
        let (mut endpoint, out) = run(&stream, &cuts);
        let (status, rest) = http_status(&out);
        prop_assert_eq!(status, 101);
        let frames = server_frames(rest);
        check_frames_end_well(&frames);
        // Whatever state it is in, EOF and the close timeout finish it.
        endpoint.feed_eof();
        endpoint.advance(60_000);
        let mut tail = Vec::new();
        endpoint.drain_output(&mut tail);
        prop_assert!(endpoint.is_done(), "still alive after EOF and every timeout");
    }

    #[test]
    fn frame_header_decoder_is_total(bytes in vec(any::<u8>(), 0..20)) {
        match wsreactor::frame::decode_header(&bytes) {
            Ok(Some(header)) => {
                prop_assert!(header.header_len <= bytes.len());
                prop_assert!(header.header_len <= wsreactor::frame::MAX_HEADER_LEN);
                prop_assert!(header.payload_len < 1 << 63);
            }
            Ok(None) => prop_assert!(bytes.len() < wsreactor::frame::MAX_HEADER_LEN),
            Err(_) => prop_assert!(bytes.len() >= 10 && bytes[1] & 0x7f == 127),
        }
    }
}
