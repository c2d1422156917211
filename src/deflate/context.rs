//! Context takeover (RFC 7692 §7.1.1): a connection's deflate streams kept across messages
//! without keeping a compressor or a decompressor per connection.
//!
//! Owns [`Window`] (the last 2^bits uncompressed bytes of one direction, all a stream needs to
//! go on) and [`Stream`] (a connection's windows and the token that names it), and the bounded
//! per-reactor [`Live`] set of compressors and decompressors parked between messages.
//!
//! How a stream survives: zlib's raw deflate streams are byte-aligned after a sync flush, and
//! the only state the next message depends on is the LZ77 window, so a fresh compressor (or
//! decompressor) primed with the window by `deflateSetDictionary` (`inflateSetDictionary`)
//! continues the stream exactly (the tests in this module check both ways against a real
//! continuous stream). Priming costs time (it hashes up to 32 KiB; see the README's numbers),
//! so the live (de)compressor is parked after each message, named by the connection's token,
//! and the connection's next message takes it back untouched; only when the parked set is
//! full does a new message take the least recently used one, whose owner resumes from its
//! window next time. The window is kept up to date in any case, so an eviction never needs
//! the owner. An idle connection thus holds only its windows, allocated as data arrives and
//! none for a direction without takeover: what it receives needs the whole window (2^bits
//! bytes: the peer may refer back that far), what it sends only [`SEND_DICTIONARY`] bytes,
//! since a compressor primed with less of its past is still correct and priming costs
//! time in proportion to the dictionary (32 KiB measured about 65 times a live compressor's
//! cost per small message; see the README).
//!
//! This module does not see frames, negotiate, or decide which messages are compressed.

use flate2::{Compress, Compression as Level};

/// How much of what it sent a stream keeps to prime a compressor with when it resumes.
pub(crate) const SEND_DICTIONARY: usize = 4 << 10;

/// The last `cap` bytes of a direction's uncompressed compressed-message data: the LZ77
/// window the peer's side of the stream also holds. A ring once full; empty until used.
#[derive(Debug)]
pub(crate) struct Window {
    buf: Vec<u8>,
    /// Once `buf` is full: where the oldest byte is.
    head: usize,
    cap: usize,
}

impl Window {
    /// A window of `2^bits` bytes, nothing allocated yet.
    pub(crate) fn new(bits: u8) -> Self {
        Self::at_most(bits, usize::MAX)
    }

    /// A window of `2^bits` bytes but at most `limit`: the last `limit` bytes of what was
    /// sent. Enough for a compressor (a shorter dictionary only finds fewer matches), never
    /// for a decompressor (the peer may refer back as far as its window).
    pub(crate) fn at_most(bits: u8, limit: usize) -> Self {
        Window {
            buf: Vec::new(),
            head: 0,
            cap: (1usize << bits.clamp(8, 15)).min(limit.max(1)),
        }
    }

    /// Bytes allocated for it.
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends `data`, forgetting what falls out of the window.
    pub(crate) fn push(&mut self, mut data: &[u8]) {
        if data.len() >= self.cap {
            data = &data[data.len() - self.cap..];
            self.buf.clear();
            self.head = 0;
        }
        if self.buf.len() < self.cap {
            let take = (self.cap - self.buf.len()).min(data.len());
            let want = (self.buf.len() + take)
                .max(self.buf.capacity() * 2)
                .min(self.cap);
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        while !data.is_empty() {
            let n = (self.cap - self.head).min(data.len());
            self.buf[self.head..self.head + n].copy_from_slice(&data[..n]);
            self.head = (self.head + n) % self.cap;
            data = &data[n..];
        }
    }

    /// The window's bytes, oldest first, into `out` (cleared first).
    pub(crate) fn copy_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.buf[self.head..]);
        out.extend_from_slice(&self.buf[..self.head]);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// A connection's context-taking-over streams: a window per direction that takes context
/// over (`None`: that direction resets per message), and the token its parked
/// (de)compressors are filed under (unique per reactor for its lifetime, never reused).
#[derive(Debug)]
pub(crate) struct Stream {
    pub token: u64,
    /// What we send, with its window bits.
    pub send: Option<(u8, Window)>,
    /// What we receive.
    pub recv: Option<Window>,
    /// What it counts in its reactor's memory account, as of its last recount.
    pub accounted: usize,
}

impl Stream {
    /// Bytes it holds beyond its own box.
    pub(crate) fn allocated(&self) -> usize {
        self.send.as_ref().map_or(0, |(_, w)| w.allocated())
            + self.recv.as_ref().map_or(0, Window::allocated)
    }
}

/// A bounded set of live (de)compressors, each filed under the token of the connection whose
/// stream it continues; least recently parked goes first when room is needed.
pub(crate) struct Live<T> {
    /// (token, when parked, the state): few enough that a scan beats any index.
    #[allow(clippy::vec_box)]
    parked: Vec<(u64, u64, Box<T>)>,
    clock: u64,
}

impl<T> Default for Live<T> {
    fn default() -> Self {
        Live {
            parked: Vec::new(),
            clock: 0,
        }
    }
}

impl<T> Live<T> {
    /// How many are parked.
    pub(crate) fn len(&self) -> usize {
        self.parked.len()
    }

    /// The one parked under `token`, if it is still there.
    pub(crate) fn take(&mut self, token: u64) -> Option<Box<T>> {
        let at = self.parked.iter().position(|p| p.0 == token)?;
        Some(self.parked.swap_remove(at).2)
    }

    /// The least recently parked one, taken from its owner (who resumes from its window), if
    /// `limit` are parked.
    pub(crate) fn evict_if_full(&mut self, limit: usize) -> Option<Box<T>> {
        if self.parked.len() < limit.max(1) {
            return None;
        }
        let at = (0..self.parked.len()).min_by_key(|&i| self.parked[i].1)?;
        Some(self.parked.swap_remove(at).2)
    }

    /// Parks `state` under `token`; returns what no longer fits under `limit` (the least
    /// recently parked, or `state` itself when `limit` is 0).
    pub(crate) fn park(&mut self, token: u64, state: Box<T>, limit: usize) -> Option<Box<T>> {
        if limit == 0 {
            return Some(state);
        }
        let evicted = if self.parked.len() >= limit {
            self.evict_if_full(limit)
        } else {
            None
        };
        self.clock += 1;
        self.parked.push((token, self.clock, state));
        evicted
    }

    /// Drops whatever `token` has parked (its connection is gone).
    pub(crate) fn forget(&mut self, token: u64) -> Option<Box<T>> {
        self.take(token)
    }
}

/// A compressor for a window of `bits` at `level`.
pub(crate) fn new_compressor(bits: u8, level: u32) -> Box<(u8, Compress)> {
    Box::new((
        bits,
        Compress::new_with_window_bits(Level::new(level.clamp(1, 9)), false, bits),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::{compress_into, Inflater, TAIL};
    use flate2::{Decompress, FlushDecompress};
    use proptest::prelude::*;

    #[test]
    fn a_window_keeps_the_last_bytes_in_order() {
        let mut w = Window::new(8);
        let mut all = Vec::new();
        let mut out = Vec::new();
        for n in [0usize, 3, 100, 200, 255, 256, 1000, 1, 7] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + all.len()) as u8).collect();
            w.push(&data);
            all.extend_from_slice(&data);
            w.copy_into(&mut out);
            assert_eq!(out, all[all.len().saturating_sub(256)..]);
            assert!(w.allocated() <= 256);
        }
    }

    /// JSON-like messages that repeat across messages (so that back-references into earlier
    /// messages are likely) with noise (so that not everything matches).
    fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(
            (
                0u32..5000,
                prop::collection::vec(any::<u8>(), 0..40),
                0usize..3000,
            ),
            1..40,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .map(|(id, noise, len)| {
                    let mut m = format!("{{\"id\":{id},\"user\":\"user{}\",\"tags\":[", id % 17)
                        .into_bytes();
                    m.extend_from_slice(&noise);
                    while m.len() < len {
                        m.extend_from_slice(b"\"price\":12.5,\"qty\":3,");
                    }
                    m
                })
                .collect()
        })
    }

    fn inflate_continuous(d: &mut Decompress, compressed: &[u8]) -> Vec<u8> {
        let mut input = compressed.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 16);
        let mut pos = 0;
        loop {
            let before_in = d.total_in();
            let before_out = out.len();
            d.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                .expect("the continuous inflater accepts the stream");
            pos += (d.total_in() - before_in) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                return out;
            }
            if out.len() == before_out && d.total_in() == before_in {
                out.reserve(out.capacity());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// What we send: a fresh compressor per message, primed with the window, produces a
        /// stream that one continuous inflater (what the peer has) decodes exactly.
        #[test]
        fn primed_compressors_continue_a_stream_the_peer_inflates(
            msgs in messages(), bits in 9u8..=15,
        ) {
            // As the server keeps it: no more than SEND_DICTIONARY.
            let mut window = Window::at_most(bits, SEND_DICTIONARY);
            let mut dict = Vec::new();
            let mut peer = Decompress::new_with_window_bits(false, bits.max(9));
            let mut out = Vec::new();
            for m in &msgs {
                let mut c = new_compressor(bits, 1);
                window.copy_into(&mut dict);
                if !dict.is_empty() {
                    c.1.set_dictionary(&dict).unwrap();
                }
                compress_into(&mut c.1, m, &mut out);
                window.push(m);
                prop_assert_eq!(&inflate_continuous(&mut peer, &out), m);
            }
        }

        /// What we receive: one continuous compressor (what the peer has) over many
        /// messages, inflated by a fresh decompressor per message primed with the window.
        #[test]
        fn primed_inflaters_decode_a_continuous_stream(
            msgs in messages(), bits in 9u8..=15, cut in any::<prop::sample::Index>(),
        ) {
            let mut peer = new_compressor(bits, 6);
            let mut window = Window::new(bits);
            let mut dict = Vec::new();
            let mut compressed = Vec::new();
            for m in &msgs {
                compress_into(&mut peer.1, m, &mut compressed);
                let mut inflater = Inflater::new();
                window.copy_into(&mut dict);
                if !dict.is_empty() {
                    inflater.prime(&dict).unwrap();
                }
                // Split anywhere, then the tail.
                let at = cut.index(compressed.len() + 1);
                let mut got = Vec::new();
                for piece in [&compressed[..at], &compressed[at..], &TAIL[..]] {
                    let mut pos = 0;
                    loop {
                        let before = got.len();
                        let used = inflater.inflate(&piece[pos..], &mut got, usize::MAX).unwrap();
                        pos += used;
                        if (used == 0 && got.len() == before)
                            || (pos == piece.len() && got.len() < got.capacity())
                        {
                            break;
                        }
                    }
                }
                prop_assert_eq!(&got, m);
                window.push(m);
            }
        }
    }

    /// The window is really used: a message sent again compresses to a few bytes, whether
    /// the compressor stayed live or was primed, and both streams inflate the same.
    #[test]
    fn a_repeated_message_refers_back_live_or_primed() {
        // Shorter than SEND_DICTIONARY: a primed compressor sees all of it.
        let msg: Vec<u8> = (0..600u32)
            .flat_map(|i| format!("{},", i * 7919 % 10007).into_bytes())
            .collect();
        let mut codec = crate::deflate::Codec::default();
        for live in [0, 4] {
            let token = codec.new_token();
            let mut stream = Stream {
                token,
                send: Some((15, Window::at_most(15, SEND_DICTIONARY))),
                recv: None,
                accounted: 0,
            };
            let mut peer = Decompress::new_with_window_bits(false, 15);
            let mut out = Vec::new();
            assert!(codec.compress_stream(&mut stream, 1, live, &msg, &mut out));
            let first = out.len();
            assert_eq!(inflate_continuous(&mut peer, &out), msg);
            let resumed = codec.compress_stream(&mut stream, 1, live, &msg, &mut out);
            assert_eq!(resumed, live == 0, "parked only when there is room");
            assert!(out.len() * 20 < first, "{} then {}", first, out.len());
            assert_eq!(inflate_continuous(&mut peer, &out), msg);
            codec.forget_stream(token);
        }
    }

    #[test]
    fn parked_states_come_back_to_their_owner_and_the_oldest_goes_first() {
        let mut live: Live<u32> = Live::default();
        assert!(live.park(1, Box::new(10), 2).is_none());
        assert!(live.park(2, Box::new(20), 2).is_none());
        assert_eq!(live.take(1).as_deref(), Some(&10));
        assert!(live.park(1, Box::new(11), 2).is_none());
        // Full: parking a third evicts the least recently parked (token 2).
        assert_eq!(live.park(3, Box::new(30), 2).as_deref(), Some(&20));
        assert_eq!(live.take(2), None);
        assert_eq!(live.len(), 2);
        assert_eq!(live.park(4, Box::new(40), 0).as_deref(), Some(&40));
    }
}
