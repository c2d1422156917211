//! The generator's compression mode (`--deflate`, RFC 7692 permessage-deflate): the offer it
//! adds to the upgrade request and the check of the server's answer; the JSON-like text it
//! sends ([`JsonBodies`]: generated records of varied names, numbers and flags, exactly the
//! asked size, a per-message sequence number inside); and [`Codec`], which compresses each
//! message on its own (no context takeover either way, so one compressor and one
//! decompressor serve every connection) and inflates each echo to check it byte for byte.
//!
//! It owns these bytes and counts nothing; it must not touch sockets or decide how a run goes.
//! flate2 on zlib-rs, as the server, so both sides run the same deflate.

use crate::frame;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The offer: no context takeover both ways, so no connection keeps a compressor.
pub const OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

/// The smallest message `--deflate` sends: `{"seq":"…","items":[],"pad":""}` and a byte.
pub const MIN_SIZE: usize = 40;

/// The tail a sync flush ends with, stripped from each message (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Distinct documents per message size; message `seq` sends document `seq % VARIANTS`.
const VARIANTS: usize = 16;

/// Where the 8 hex digits of the sequence number sit: `{"seq":"XXXXXXXX",…`.
const SEQ_AT: usize = 8;

/// Adds the offer to an upgrade request (whose head ends with an empty line).
pub fn add_offer(request: &mut Vec<u8>) {
    if request.ends_with(b"\r\n\r\n") {
        request.truncate(request.len() - 2);
    }
    request.extend_from_slice(format!("Sec-WebSocket-Extensions: {OFFER}\r\n\r\n").as_bytes());
}

/// Checks the server's answer (the 101 response head): `Ok(true)` when it accepted
/// permessage-deflate with no context takeover on its side, `Ok(false)` when it declined;
/// an answer this client cannot honour is an error.
pub fn accepted(head: &[u8]) -> Result<bool, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).map_err(|_| "handshake")?;
    let mut found = false;
    for h in resp.headers.iter() {
        if !h.name.eq_ignore_ascii_case("sec-websocket-extensions") {
            continue;
        }
        let v = std::str::from_utf8(h.value).map_err(|_| "deflate-negotiation")?;
        for ext in v.split(',') {
            let mut params = ext.split(';').map(str::trim);
            if params.next() != Some("permessage-deflate") || found {
                return Err("deflate-negotiation");
            }
            found = true;
            let mut server_nct = false;
            for p in params {
                let name = p.split('=').next().unwrap_or("").trim();
                match name {
                    "server_no_context_takeover" => server_nct = true,
                    // We reset per message anyway; a window limit we can keep to (15 bits
                    // covers every smaller window).
                    "client_no_context_takeover" | "client_max_window_bits" => {}
                    // A smaller server window only makes our 15-bit inflater over-provisioned.
                    "server_max_window_bits" => {}
                    _ => return Err("deflate-negotiation"),
                }
            }
            // We offered server_no_context_takeover: a server must keep to it (§7.1.1.1).
            if !server_nct {
                return Err("deflate-negotiation");
            }
        }
    }
    Ok(found)
}

/// The JSON-like documents messages of one size are made of.
#[derive(Debug, Clone)]
pub struct JsonBodies {
    size: usize,
    variants: Vec<Vec<u8>>,
}

const NAMES: [&str; 12] = [
    "alice", "bob", "carol", "dmitri", "eve", "farah", "gao", "hiro", "ines", "jamal", "kofi",
    "lena",
];
const CITIES: [&str; 8] = [
    "Lisbon", "Osaka", "Nairobi", "Quito", "Tallinn", "Perth", "Recife", "Bergen",
];
const EVENTS: [&str; 6] = ["login", "click", "purchase", "scroll", "logout", "search"];

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// One record of an event feed, varied by `x`.
fn record(x: &mut u64, id: u64) -> String {
    let r = next(x);
    format!(
        "{{\"id\":{id},\"user\":\"{}\",\"city\":\"{}\",\"event\":\"{}\",\"ts\":{},\"score\":{}.{},\"ok\":{}}}",
        NAMES[(r % 12) as usize],
        CITIES[((r >> 8) % 8) as usize],
        EVENTS[((r >> 16) % 6) as usize],
        1_700_000_000_000u64 + (r >> 24) % 100_000_000,
        (r >> 40) % 1000,
        (r >> 50) % 100,
        r & 1 == 0
    )
}

/// A document of exactly `size` bytes (at least [`MIN_SIZE`]), variant `v`.
fn document(size: usize, v: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1D ^ ((v as u64 + 1) * 0x9E37_79B9) ^ size as u64;
    let mut s = String::from("{\"seq\":\"00000000\",\"items\":[");
    let end = "],\"pad\":\"\"}";
    let mut id = v as u64 * 1000;
    loop {
        let rec = record(&mut x, id);
        let sep = if s.ends_with('[') { 0 } else { 1 };
        if s.len() + sep + rec.len() + end.len() > size {
            break;
        }
        if sep == 1 {
            s.push(',');
        }
        s.push_str(&rec);
        id += 1 + next(&mut x) % 7;
    }
    let mut doc = s.into_bytes();
    doc.extend_from_slice(&end.as_bytes()[..end.len() - 2]);
    // Fill to the exact size inside the "pad" string with lowercase letters.
    while doc.len() + 2 < size {
        doc.push(b'a' + (next(&mut x) % 26) as u8);
    }
    doc.extend_from_slice(b"\"}");
    doc.truncate(size);
    doc
}

impl JsonBodies {
    /// Documents of exactly `size` bytes.
    pub fn new(size: usize) -> Result<JsonBodies, String> {
        if size < MIN_SIZE {
            return Err(format!("--deflate messages need at least {MIN_SIZE} bytes"));
        }
        let variants = (0..VARIANTS).map(|v| document(size, v)).collect();
        Ok(JsonBodies { size, variants })
    }

    /// Message size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The sequence number's digits.
    fn digits(seq: u64) -> [u8; 8] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut d = [0u8; 8];
        for (i, b) in d.iter_mut().enumerate() {
            *b = HEX[((seq >> (4 * (7 - i))) & 0xF) as usize];
        }
        d
    }

    /// Message `seq`, written over `out`.
    pub fn message_into(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.variants[seq as usize % VARIANTS]);
        out[SEQ_AT..SEQ_AT + 8].copy_from_slice(&Self::digits(seq));
    }

    /// Does `chunk`, at byte `offset` of echoed message `seq`, match what was sent?
    pub fn matches(&self, seq: u64, offset: usize, chunk: &[u8]) -> bool {
        let doc = &self.variants[seq as usize % VARIANTS];
        let Some(want) = offset
            .checked_add(chunk.len())
            .and_then(|end| doc.get(offset..end))
        else {
            return false;
        };
        let digits = Self::digits(seq);
        chunk.iter().zip(want).enumerate().all(|(i, (&got, &w))| {
            let at = offset + i;
            let w = if (SEQ_AT..SEQ_AT + 8).contains(&at) {
                digits[at - SEQ_AT]
            } else {
                w
            };
            got == w
        })
    }
}

/// One compressor and one decompressor, reset per message, and their scratch buffers.
pub struct Codec {
    compress: Compress,
    inflate: Decompress,
    plain: Vec<u8>,
    packed: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new()
    }
}

/// Inflated bytes are checked in pieces of this size.
const INFLATE_CHUNK: usize = 32 * 1024;

impl Codec {
    /// Raw deflate at zlib's default level (what browsers send), 15-bit windows.
    pub fn new() -> Codec {
        Codec {
            compress: Compress::new(Compression::default(), false),
            inflate: Decompress::new(false),
            plain: Vec::new(),
            packed: Vec::new(),
            out: vec![0; INFLATE_CHUNK],
        }
    }

    /// Appends message `seq` of `bodies` as one masked, compressed frame (RSV1 set) under
    /// `key`; returns the bytes of its (compressed) payload.
    pub fn push_frame(
        &mut self,
        out: &mut Vec<u8>,
        opcode: u8,
        bodies: &JsonBodies,
        seq: u64,
        key: [u8; 4],
    ) -> usize {
        bodies.message_into(seq, &mut self.plain);
        self.packed.clear();
        self.compress.reset();
        let input = &self.plain;
        loop {
            let used = self.compress.total_in() as usize;
            if self.packed.capacity() - self.packed.len() < 64 {
                self.packed.reserve(self.packed.capacity().max(256));
            }
            // Compressing into memory cannot fail: flate2 reports only a bad stream state.
            let _ =
                self.compress
                    .compress_vec(&input[used..], &mut self.packed, FlushCompress::Sync);
            if self.compress.total_in() as usize == input.len()
                && self.packed.len() < self.packed.capacity()
            {
                break;
            }
        }
        if self.packed.ends_with(&TAIL) {
            self.packed.truncate(self.packed.len() - TAIL.len());
        }
        let at = out.len();
        frame::push_masked_frame(out, opcode, &[&self.packed], key);
        out[at] |= 0x40; // RSV1: this message is compressed
        self.packed.len()
    }

    /// Inflates one whole compressed message payload, handing the inflated bytes in pieces to
    /// `check` (offset, bytes); stops once more than `limit` bytes came out. Returns the
    /// inflated length, or `None` for invalid deflate data.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        limit: usize,
        mut check: impl FnMut(usize, &[u8]),
    ) -> Option<usize> {
        self.inflate.reset(false);
        let mut produced = 0usize;
        for input in [payload, &TAIL[..]] {
            let start_in = self.inflate.total_in();
            loop {
                let used = (self.inflate.total_in() - start_in) as usize;
                let before = self.inflate.total_out();
                let before_in = self.inflate.total_in();
                let status = self
                    .inflate
                    .decompress(&input[used..], &mut self.out, FlushDecompress::Sync)
                    .ok()?;
                let n = (self.inflate.total_out() - before) as usize;
                if n > 0 {
                    check(produced, &self.out[..n]);
                    produced += n;
                    if produced > limit {
                        return Some(produced);
                    }
                }
                let used = (self.inflate.total_in() - start_in) as usize;
                if status == Status::StreamEnd || (used == input.len() && n < self.out.len()) {
                    break;
                }
                if n == 0 && self.inflate.total_in() == before_in {
                    break; // no progress: the data is truncated or already done
                }
            }
        }
        Some(produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_the_exact_size_and_are_json_like() {
        for size in [MIN_SIZE, MIN_SIZE + 1, 200, 500, 16 * 1024, 64 * 1024] {
            let b = JsonBodies::new(size).unwrap();
            let mut m = Vec::new();
            b.message_into(0x2a, &mut m);
            assert_eq!(m.len(), size);
            assert!(m.starts_with(b"{\"seq\":\"0000002a\""));
            assert!(m.ends_with(b"\"}"), "{}", String::from_utf8_lossy(&m));
            assert!(std::str::from_utf8(&m).is_ok());
        }
        let b = JsonBodies::new(400).unwrap();
        assert_ne!(b.variants[0], b.variants[1], "documents vary");
        assert!(JsonBodies::new(MIN_SIZE - 1).is_err());
    }

    #[test]
    fn a_compressed_message_inflates_back_and_checks() {
        let bodies = JsonBodies::new(16 * 1024).unwrap();
        let mut codec = Codec::new();
        let mut out = Vec::new();
        let key = [1, 2, 3, 4];
        let packed = codec.push_frame(&mut out, frame::OP_TEXT, &bodies, 7, key);
        assert!(packed < 16 * 1024 / 3, "JSON compresses: {packed}");
        assert_eq!(out[0], 0xC1);
        let head = out.len() - packed;
        let mut payload = out[head..].to_vec();
        frame::mask_in_place(&mut payload, key, 0);
        let mut ok = true;
        let n = codec
            .inflate(&payload, bodies.size(), |off, piece| {
                ok &= bodies.matches(7, off, piece)
            })
            .unwrap();
        assert_eq!(n, bodies.size());
        assert!(ok);
        // The same bytes do not check as another message.
        let mut other = true;
        codec.inflate(&payload, bodies.size(), |off, piece| {
            other &= bodies.matches(8, off, piece)
        });
        assert!(!other);
        assert!(codec.inflate(&[0xff, 0xff, 0xff], 100, |_, _| {}).is_none());
    }

    #[test]
    fn the_answer_is_checked() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: \
                   permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n";
        assert_eq!(accepted(ok), Ok(true));
        assert_eq!(
            accepted(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Ok(false)
        );
        let takeover =
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        assert!(accepted(takeover).is_err());
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        add_offer(&mut req);
        assert!(req.ends_with(format!("Sec-WebSocket-Extensions: {OFFER}\r\n\r\n").as_bytes()));
    }
}
