//! permessage-deflate (RFC 7692): negotiation, and the reactor's compressors and decompressors.
//!
//! Owns the deflate state of a reactor: [`Codec`] holds the compressors (one per window size
//! in use, reset per message: with no context takeover a message never depends on the ones
//! before it) and a free list of decompressors. A connection takes a decompressor only while
//! a compressed message is arriving (it lives in the connection's `Busy`, which exists only
//! then) and gives it back when the message ends, so an idle connection holds no deflate
//! state at all and, when messages arrive one at a time, one decompressor serves them all.
//! This module never sees frames or masks, and never decides what a connection may do: the
//! connection's transform calls [`Inflater::inflate`] on unmasked bytes and the sender calls
//! [`Codec::compress`] on a whole message. Deflate itself is `flate2` on `zlib-rs`.

pub(crate) mod context;
pub mod negotiate;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress, Status};

use context::{Live, Stream};

pub use negotiate::{Agreement, Compression};

/// What RFC 7692 §7.2.2 has the receiver append to a message before inflating it (and the
/// sender strip after a sync flush).
pub(crate) const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Free decompressors kept for reuse at most. More may be live at once (one per connection
/// with a compressed message part-way in); beyond this they are freed when given back.
const FREE_INFLATERS: usize = 8;

/// Output is grown at most this much per step while inflating.
const INFLATE_STEP: usize = 64 * 1024;

/// The deflate data of a message is invalid: close 1007 (RFC 7692 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadData;

/// A raw-deflate decompressor with the largest window (it inflates any window a client
/// uses), reset at the start of each message.
pub(crate) struct Inflater {
    inner: Decompress,
    /// The stream ended with a final block: nothing but the tail may follow in this message.
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Inflater {
    pub(crate) fn new() -> Self {
        Inflater {
            inner: Decompress::new_with_window_bits(false, negotiate::MAX_WINDOW_BITS),
            ended: false,
        }
    }

    /// Forgets the previous message.
    pub(crate) fn reset(&mut self) {
        self.inner.reset(false);
        self.ended = false;
    }

    /// Continues a stream whose window is `dictionary` (the inflater was just reset): what
    /// follows may refer back into it.
    pub(crate) fn prime(&mut self, dictionary: &[u8]) -> Result<(), BadData> {
        self.inner
            .set_dictionary(dictionary)
            .map(drop)
            .map_err(|_| BadData)
    }

    /// The stream ended with a final block: a stream taking context over must be resumed
    /// from its window (a reset and [`prime`](Self::prime)) before its next message.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Inflates from `input` into `out`, whose length may grow to `cap` bytes. Returns how
    /// many input bytes were used. `out` grows by at most [`INFLATE_STEP`] (and its capacity
    /// at most doubles) per call, but the inflater may fill all of its spare capacity, so the
    /// caller checks `out.len()` against its limit after each call. Call again while input
    /// remains or the spare capacity was filled (the inflater may hold more output); a call
    /// that uses no input and adds no output needs more input.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<usize, BadData> {
        if self.ended {
            // After a final block only the tail we append may come.
            return if input.is_empty() || input == TAIL {
                Ok(input.len())
            } else {
                Err(BadData)
            };
        }
        let room = cap.saturating_sub(out.len()).clamp(1, INFLATE_STEP);
        if out.capacity() - out.len() < room {
            out.reserve(room);
        }
        let before = self.inner.total_in();
        match self.inner.decompress_vec(input, out, FlushDecompress::None) {
            Ok(Status::StreamEnd) => self.ended = true,
            Ok(Status::Ok | Status::BufError) => {}
            Err(_) => return Err(BadData),
        }
        Ok((self.inner.total_in() - before) as usize)
    }
}

/// The reactor's deflate state: compressors by window size, free decompressors, and the
/// scratch a compressed message is built in.
#[derive(Default)]
pub(crate) struct Codec {
    /// Index `bits - 9`; created when a connection with that window first sends.
    compressors: [Option<Box<Compress>>; 7],
    #[allow(clippy::vec_box)]
    free: Vec<Box<Inflater>>,
    /// Where [`compress`](Self::compress) writes; lent out by the sender for one send.
    pub scratch: Vec<u8>,
    /// Where a message handed over in parts is inflated, one step at a time.
    pub parts: Vec<u8>,
    /// Compressors of context-taking-over streams, parked between messages.
    live_compressors: Live<(u8, Compress)>,
    /// Decompressors of context-taking-over streams, parked between messages.
    live_inflaters: Live<Inflater>,
    /// One compressor no stream has, kept for the next resume: freeing and allocating one
    /// (about 270 KiB) per message fragmented the heap, measured as 333 KB of RSS per idle
    /// connection with `compression_live` 0.
    spare_compressor: Option<Box<(u8, Compress)>>,
    /// A window laid out for `set_dictionary`.
    dictionary: Vec<u8>,
    /// The last [`Stream::token`] given out.
    tokens: u64,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("free_inflaters", &self.free.len())
            .finish_non_exhaustive()
    }
}

/// Scratch capacity kept between messages; larger is freed after use.
const SCRATCH_KEEP: usize = 256 * 1024;

impl Codec {
    /// A token for a new [`Stream`], never given out before by this codec.
    pub(crate) fn new_token(&mut self) -> u64 {
        self.tokens += 1;
        self.tokens
    }

    /// Live (de)compressors parked now: compressors, decompressors.
    pub(crate) fn parked(&self) -> (usize, usize) {
        (self.live_compressors.len(), self.live_inflaters.len())
    }

    /// Free decompressors kept for reuse.
    pub(crate) fn free_inflaters(&self) -> usize {
        self.free.len()
    }

    /// Compresses `data` as the next message of `stream`'s outgoing stream (which must take
    /// context over), as [`compress`](Self::compress) does otherwise: with the compressor
    /// parked for it if there still is one, else with one primed with its window. `live`:
    /// how many compressors may stay parked. Returns whether it resumed from the window.
    pub(crate) fn compress_stream(
        &mut self,
        stream: &mut Stream,
        level: u32,
        live: usize,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Some((bits, window)) = stream.send.as_mut() else {
            self.compress(15, level, data, out);
            return false;
        };
        let mut resumed = false;
        let bits = (*bits).clamp(
            negotiate::MIN_PRODUCIBLE_WINDOW_BITS,
            negotiate::MAX_WINDOW_BITS,
        );
        let mut compressor = match self.live_compressors.take(stream.token) {
            Some(parked) => parked,
            None => {
                resumed = true;
                let reusable = self
                    .live_compressors
                    .evict_if_full(live)
                    .or_else(|| self.spare_compressor.take());
                let mut compressor = match reusable {
                    Some(mut c) if c.0 == bits => {
                        c.1.reset();
                        c
                    }
                    _ => context::new_compressor(bits, level),
                };
                if !window.is_empty() {
                    window.copy_into(&mut self.dictionary);
                    // Fails only on a stream that already began, which this one has not; should
                    // it fail, the message is compressed without the window and stays valid.
                    let _ = compressor.1.set_dictionary(&self.dictionary);
                    self.dictionary.clear();
                }
                compressor
            }
        };
        compress_into(&mut compressor.1, data, out);
        window.push(data);
        // Whatever no longer fits is kept as the spare: its owner resumes from its window.
        if let Some(evicted) = self.live_compressors.park(stream.token, compressor, live) {
            self.spare_compressor = Some(evicted);
        }
        resumed
    }

    /// A decompressor for the compressed message of `stream` (which must take context over
    /// on what it receives) that starts now: the one parked for it, or a fresh one primed
    /// with its window (then `true`: it resumed from the window).
    pub(crate) fn take_stream_inflater(&mut self, stream: &Stream) -> (Box<Inflater>, bool) {
        if let Some(parked) = self.live_inflaters.take(stream.token) {
            return (parked, false);
        }
        let mut inflater = self.take_inflater();
        if let Some(window) = stream.recv.as_ref().filter(|w| !w.is_empty()) {
            window.copy_into(&mut self.dictionary);
            // A raw inflater just reset always takes a dictionary.
            let _ = inflater.prime(&self.dictionary);
            self.dictionary.clear();
        }
        (inflater, true)
    }

    /// Parks the decompressor of `token`'s stream, whose message ended, for its next one
    /// (at most `live` stay parked; what does not fit goes back to the free list).
    pub(crate) fn park_inflater(&mut self, token: u64, inflater: Box<Inflater>, live: usize) {
        if inflater.ended() {
            // A final block ended the stream: the next message resumes from the window.
            return self.give_inflater(inflater);
        }
        if let Some(evicted) = self.live_inflaters.park(token, inflater, live) {
            self.give_inflater(evicted);
        }
    }

    /// `token`'s connection is gone: whatever it had parked is freed or reused.
    pub(crate) fn forget_stream(&mut self, token: u64) {
        drop(self.live_compressors.forget(token));
        if let Some(inflater) = self.live_inflaters.forget(token) {
            self.give_inflater(inflater);
        }
    }

    /// A decompressor, reset, for a compressed message that starts now.
    pub(crate) fn take_inflater(&mut self) -> Box<Inflater> {
        match self.free.pop() {
            Some(mut inflater) => {
                inflater.reset();
                inflater
            }
            None => Box::new(Inflater::new()),
        }
    }

    /// Takes back a decompressor whose message ended (or failed).
    pub(crate) fn give_inflater(&mut self, inflater: Box<Inflater>) {
        if self.free.len() < FREE_INFLATERS {
            self.free.push(inflater);
        }
    }

    /// Compresses `data` as one message with a window of `bits` (9..=15) at `level`, into
    /// `out` (cleared first): raw deflate, sync flush, the `00 00 ff ff` tail stripped
    /// (RFC 7692 §7.2.1). The compressor is reset first: no context is taken over.
    pub(crate) fn compress(&mut self, bits: u8, level: u32, data: &[u8], out: &mut Vec<u8>) {
        let bits = bits.clamp(
            negotiate::MIN_PRODUCIBLE_WINDOW_BITS,
            negotiate::MAX_WINDOW_BITS,
        );
        let slot = &mut self.compressors[(bits - negotiate::MIN_PRODUCIBLE_WINDOW_BITS) as usize];
        let compressor = slot.get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Level::new(level.min(9)),
                false,
                bits,
            ))
        });
        compressor.reset();
        compress_into(compressor, data, out);
    }

    /// Frees scratch grown by a large message.
    pub(crate) fn trim(&mut self) {
        for buf in [&mut self.scratch, &mut self.parts] {
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
        }
    }
}

/// Compresses `data` with `compressor` as it stands (reset, primed or continuing) into `out`
/// (cleared first): sync flush, the `00 00 ff ff` tail stripped (RFC 7692 §7.2.1).
pub(crate) fn compress_into(compressor: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(data.len() / 2 + 64);
    let start = compressor.total_in();
    loop {
        let used = (compressor.total_in() - start) as usize;
        // Deflate does not fail on valid parameters; should it, the message goes out as
        // whatever was produced, which the peer rejects: no panic on our side.
        if compressor
            .compress_vec(&data[used..], out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        let all_in = (compressor.total_in() - start) as usize == data.len();
        if all_in && out.len() < out.capacity() {
            break; // the flush fitted: complete
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}
