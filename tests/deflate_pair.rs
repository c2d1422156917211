//! permessage-deflate in memory, both modes: any sequence of messages survives compress →
//! split at any byte → inflate, over many messages, on the server's very connection
//! ([`wsreactor::sans_io::Endpoint`]) against a client written here with `flate2` that keeps
//! one continuous compressor and one continuous inflater when context is taken over (what a
//! real client does) and resets them per message otherwise.
//!
//! The server echoes whole messages (compressed at or above the threshold) or, for a handler
//! that takes messages in parts, the parts it got (uncompressed). With `compression_live` 0
//! every message resumes its stream from the kept window; with 32 the live state is kept.

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress};
use proptest::collection::vec;
use proptest::prelude::*;
use wsreactor::sans_io::Endpoint;
use wsreactor::{Compression, Config, Conn, Handler, Message, MessagePart};

mod common;
use common::masked_frame_from_first_byte;

/// Echoes whole messages as they came.
struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send(message);
    }
}

/// Takes messages whose first frame has at least 256 bytes in parts and echoes each part as a fragment.
struct PartsEcho;

impl Handler for PartsEcho {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send(message);
    }

    fn stream_from(&self) -> Option<u64> {
        Some(256)
    }

    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        let _ = conn.send_part(part.kind, part.data, part.last);
    }
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The client's side of the compression.
struct Side {
    compress: Compress,
    inflate: Decompress,
    /// Reset per message (the answer said `*_no_context_takeover`).
    client_resets: bool,
    server_resets: bool,
}

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

impl Side {
    fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        if self.client_resets {
            self.compress.reset();
        }
        let mut out = Vec::with_capacity(data.len() + 64);
        self.deflate_all(data, &mut out);
        out.truncate(out.len() - TAIL.len());
        out
    }

    fn deflate_all(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = self.compress.total_in();
        loop {
            let used = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&data[used..], out, FlushCompress::Sync)
                .unwrap();
            if (self.compress.total_in() - start) as usize == data.len()
                && out.len() < out.capacity()
            {
                assert!(out.ends_with(&TAIL));
                return;
            }
            out.reserve(out.capacity().max(64));
        }
    }

    fn inflate(&mut self, data: &[u8]) -> Vec<u8> {
        if self.server_resets {
            self.inflate.reset(false);
        }
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let before = self.inflate.total_in();
            self.inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                .expect("the server's deflate stream inflates");
            pos += (self.inflate.total_in() - before) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity());
        }
    }
}

/// Opens a connection offering permessage-deflate; returns the client's side as the answer
/// set it up.
fn open<H: Handler>(server: &mut Endpoint<H>) -> Side {
    let request = common::upgrade_request("/", &format!("Sec-WebSocket-Extensions: {OFFER}\r\n"));
    server.feed(&mut request.into_bytes());
    let mut answer = Vec::new();
    server.drain_output(&mut answer);
    let head = String::from_utf8(answer).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let ext = head
        .lines()
        .find(|l| l.starts_with("Sec-WebSocket-Extensions:"))
        .expect("permessage-deflate answered")
        .to_string();
    let bits = ext
        .split("client_max_window_bits=")
        .nth(1)
        .map_or(15, |v| v.trim().parse().unwrap());
    Side {
        compress: Compress::new_with_window_bits(Level::new(6), false, bits.max(9)),
        inflate: Decompress::new_with_window_bits(false, 15),
        client_resets: ext.contains("client_no_context_takeover"),
        server_resets: ext.contains("server_no_context_takeover"),
    }
}

/// A message: text (JSON-like, repeating across messages) or binary, compressed or not, cut
/// into fragments at `cuts` (of the bytes on the wire).
#[derive(Debug, Clone)]
struct Planned {
    text: bool,
    payload: Vec<u8>,
    compressed: bool,
    cuts: Vec<prop::sample::Index>,
}

fn planned() -> impl Strategy<Value = Planned> {
    (
        any::<bool>(),
        0u32..40,
        0usize..6000,
        vec(any::<u8>(), 0..64),
        prop::bool::weighted(0.85),
        vec(any::<prop::sample::Index>(), 0..3),
    )
        .prop_map(|(text, seed, len, noise, compressed, cuts)| {
            let payload = if text {
                let mut s = format!("{{\"seed\":{seed},\"rows\":[");
                let mut i = seed;
                while s.len() < len {
                    s.push_str(&format!(
                        "{{\"id\":{},\"name\":\"row{}\"}},",
                        i % 97,
                        i % 13
                    ));
                    i = i.wrapping_mul(31).wrapping_add(7);
                }
                s.into_bytes()
            } else {
                let mut b = noise;
                b.resize(len.min(3000), (seed % 5) as u8);
                b
            };
            Planned {
                text,
                payload,
                compressed,
                cuts,
            }
        })
}

/// Frames every message as the client would send them.
fn encode(side: &mut Side, messages: &[Planned]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (n, m) in messages.iter().enumerate() {
        let body = if m.compressed {
            side.deflate(&m.payload)
        } else {
            m.payload.clone()
        };
        let mut cuts: Vec<usize> = m.cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([body.len()]) {
            pieces.push(&body[at..cut.max(at)]);
            at = cut.max(at);
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let opcode = match (i, m.text) {
                (0, true) => 1,
                (0, false) => 2,
                _ => 0,
            };
            let rsv1 = if i == 0 && m.compressed { 0x40 } else { 0 };
            let fin = if i == last { 0x80 } else { 0 };
            let key = [n as u8, 0x5b, i as u8, 0xe7];
            wire.extend(masked_frame_from_first_byte(
                fin | rsv1 | opcode,
                key,
                piece,
            ));
        }
    }
    wire
}

/// Feeds `wire` in reads cut at `reads`, collecting what the server writes.
fn exchange<H: Handler>(server: &mut Endpoint<H>, mut wire: Vec<u8>, reads: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = reads.iter().copied().cycle();
    while at < wire.len() {
        let end = (at + sizes.next().unwrap_or(wire.len()).max(1)).min(wire.len());
        server.feed(&mut wire[at..end]);
        server.drain_output(&mut out);
        at = end;
    }
    server.drain_output(&mut out);
    out
}

/// The server's messages, put together from its frames and inflated by the client.
fn decode(side: &mut Side, mut out: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let mut messages = Vec::new();
    let mut current: Option<(bool, bool, Vec<u8>)> = None;
    while let Some((frame, used)) = common::parse_frame(out) {
        let rsv1 = out[0] & 0x40 != 0;
        out = &out[used..];
        assert_ne!(
            frame.opcode,
            8,
            "the server closed: {:?}",
            frame.close_code()
        );
        let entry = current.get_or_insert_with(|| (frame.opcode == 1, rsv1, Vec::new()));
        entry.2.extend_from_slice(&frame.payload);
        if frame.fin {
            let (text, compressed, body) = current.take().unwrap();
            let body = if compressed {
                side.inflate(&body)
            } else {
                body
            };
            messages.push((text, body));
        }
    }
    assert!(out.is_empty(), "a partial frame left");
    messages
}

fn config(mode: Compression, live: usize) -> Config {
    Config {
        compression: mode,
        compression_live: live,
        compression_threshold: 64,
        max_message_size: 1 << 20,
        max_frame_size: 1 << 20,
        ..Config::default()
    }
}

fn modes() -> impl Strategy<Value = (Compression, usize)> {
    prop_oneof![
        Just((Compression::NoContextTakeover, 32)),
        Just((Compression::ContextTakeover { window_bits: 15 }, 32)),
        Just((Compression::ContextTakeover { window_bits: 15 }, 0)),
        (9u8..=15).prop_map(|b| (Compression::ContextTakeover { window_bits: b }, 1)),
    ]
}

fn check<H: Handler>(
    handler: H,
    (mode, live): (Compression, usize),
    messages: &[Planned],
    reads: &[usize],
) -> Result<(), TestCaseError> {
    let mut server = Endpoint::new(config(mode, live), handler);
    let mut side = open(&mut server);
    let takeover = matches!(mode, Compression::ContextTakeover { .. });
    prop_assert_eq!(side.server_resets, !takeover);
    // Sent in two batches, so that the second continues streams the first left.
    let half = messages.len() / 2;
    let mut got = Vec::new();
    for batch in [&messages[..half], &messages[half..]] {
        let wire = encode(&mut side, batch);
        let out = exchange(&mut server, wire, reads);
        got.extend(decode(&mut side, &out));
    }
    prop_assert_eq!(got.len(), messages.len());
    for (m, (text, body)) in messages.iter().zip(&got) {
        prop_assert_eq!(*text, m.text);
        prop_assert_eq!(body, &m.payload);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_survive_compress_split_inflate_in_every_mode(
        mode in modes(),
        messages in vec(planned(), 1..24),
        reads in vec(1usize..3000, 1..6),
    ) {
        check(Echo, mode, &messages, &reads)?;
    }

    #[test]
    fn messages_in_parts_survive_too(
        mode in modes(),
        messages in vec(planned(), 1..16),
        reads in vec(1usize..3000, 1..6),
    ) {
        check(PartsEcho, mode, &messages, &reads)?;
    }
}

/// The other way round of the proptest's check: a peer that does not keep the window (it
/// resets its inflater) fails to read what the server sends with context takeover, so the
/// check above would notice if the server stopped referring back into earlier messages.
#[test]
fn a_receiver_without_the_window_cannot_follow() {
    let mut server = Endpoint::new(
        config(Compression::ContextTakeover { window_bits: 15 }, 0),
        Echo,
    );
    let mut side = open(&mut server);
    let msg = br#"{"event":"trade","symbol":"WSRX","price":101.25,"size":300,"venue":"loopback"}"#
        .repeat(4);
    let m = Planned {
        text: true,
        payload: msg.clone(),
        compressed: false,
        cuts: vec![],
    };
    let first = exchange(
        &mut server,
        encode(&mut side, std::slice::from_ref(&m)),
        &[4096],
    );
    assert_eq!(decode(&mut side, &first), vec![(true, msg.clone())]);
    let second = exchange(&mut server, encode(&mut side, &[m]), &[4096]);
    side.inflate.reset(false);
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&mut side, &second)));
    assert!(
        result.map_or(true, |got| got != vec![(true, msg)]),
        "the second message did not refer back into the first"
    );
}
