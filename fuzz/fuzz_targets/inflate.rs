//! The permessage-deflate paths of the connection (`sans_io::Endpoint`) in every mode: no
//! context takeover, and context takeover with any window and with zero, one or many live
//! (de)compressors kept (so that streams resume from their windows). The input is cut into
//! messages; each is sent either as the fuzzer's bytes with RSV1 set (arbitrary deflate data:
//! the server must fail it with 1007/1009 or deliver what it inflates to), or compressed by a
//! continuous client compressor (valid data: the echo, inflated by a continuous client
//! inflater, must be exactly the message), fragmented and fed in pieces.
//! Checks: no panic, every valid message's echo is exact until the first invalid one, and the
//! connection ends with EOF and the timeouts.
#![no_main]

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress};
use libfuzzer_sys::fuzz_target;
use wsreactor::sans_io::Endpoint;
use wsreactor::{Compression, Config, Conn, Handler, Message};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send_binary(message.as_bytes());
    }
}

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

fn frame(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2 + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    } else {
        // Nothing to flush again (an empty message right after a flush): an empty message
        // is a single 0x00 once the tail is stripped (RFC 7692 §7.2.3.6).
        assert!(out.is_empty(), "a flush that is not a sync flush");
        out.push(0);
    }
    out
}

fn inflate(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 16);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's stream inflates");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let mode = match knobs & 3 {
        0 => Compression::NoContextTakeover,
        _ => Compression::ContextTakeover {
            window_bits: 9 + (knobs >> 2) % 7,
        },
    };
    let config = Config {
        compression: mode,
        compression_live: [0, 1, 32][(knobs as usize >> 5) % 3],
        compression_threshold: 16,
        max_frame_size: 4096,
        max_message_size: 8192,
        ..Config::default()
    };
    let mut endpoint = Endpoint::new(config, Echo);
    endpoint.feed(&mut UPGRADE.to_vec());
    let mut out = Vec::new();
    endpoint.drain_output(&mut out);
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a 101") + 4;
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    out.drain(..head_end);
    let client_resets = head.contains("client_no_context_takeover");
    let server_resets = head.contains("server_no_context_takeover");
    let bits = head
        .split("client_max_window_bits=")
        .nth(1)
        .and_then(|v| v.trim().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(15u8);
    let mut compress = Compress::new_with_window_bits(Level::new(6), false, bits.max(9));
    let mut inflater = Decompress::new_with_window_bits(false, 15);

    // Messages: a length byte, a kind byte, then that many bytes.
    let mut rest = rest;
    let mut expected = Vec::new();
    let mut valid_so_far = true;
    let mut wire = Vec::new();
    while let [len, kind, tail @ ..] = rest {
        let n = (*len as usize * 8).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let payload = if kind & 1 == 0 {
            if client_resets {
                compress.reset();
            }
            if valid_so_far {
                expected.push(body.to_vec());
            }
            deflate(&mut compress, body)
        } else {
            valid_so_far = false; // arbitrary bytes: what follows may not be echoed
            body.to_vec()
        };
        // Fragments: cut at kind's upper bits.
        let cut = (*kind as usize >> 1) % (payload.len() + 1);
        let (a, b) = payload.split_at(cut);
        if kind & 0x80 != 0 && !a.is_empty() {
            frame(&mut wire, 0x40 | 0x02, a);
            frame(&mut wire, 0x80, b);
        } else {
            frame(&mut wire, 0xc2, &payload);
        }
    }
    let piece = 1 + (knobs as usize) % 61;
    for chunk in wire.chunks(piece) {
        endpoint.feed(&mut chunk.to_vec());
        endpoint.drain_output(&mut out);
    }
    endpoint.drain_output(&mut out);

    // The echoes of the valid messages before the first arbitrary one, in order.
    let mut echoes = 0;
    let mut at = &out[..];
    while at.len() >= 2 && echoes < expected.len() {
        let (len, start) = match at[1] & 0x7f {
            126 => (u16::from_be_bytes([at[2], at[3]]) as usize, 4),
            127 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&at[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        let payload = &at[start..start + len];
        if at[0] & 0x0f == 0x8 {
            panic!("closed before a valid message was echoed: {payload:?}");
        }
        let body = if at[0] & 0x40 != 0 {
            if server_resets {
                inflater.reset(false);
            }
            inflate(&mut inflater, payload)
        } else {
            payload.to_vec()
        };
        assert_eq!(body, expected[echoes], "echo {echoes}");
        echoes += 1;
        at = &at[start + len..];
    }
    assert_eq!(echoes, expected.len(), "every valid message is echoed");

    endpoint.feed_eof();
    for _ in 0..4 {
        endpoint.advance(120_000);
        endpoint.drain_output(&mut out);
    }
    assert!(endpoint.is_done(), "connection never finishes");
});
