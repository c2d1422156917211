//! permessage-deflate with context takeover, on the connection's side: setting up a
//! connection's [`Stream`] at the upgrade, and which (de)compressor a compressed message
//! uses and where it goes when the message ends.
//!
//! Owns only those choices; the windows, the parked set and the priming are
//! [`crate::deflate`]'s, and the inflating and the limits are [`transform`](super::transform)'s.
//! Must not touch frames or the handler.

use super::*;
use crate::deflate::context::{Window, SEND_DICTIONARY};
use crate::deflate::{Agreement, Inflater};
use crate::metrics::DEFLATE_IN;

impl Connection {
    /// The upgrade agreed on `agreement`: a [`Stream`] if either direction takes context over.
    pub(super) fn take_context_over(&mut self, agreement: &Agreement, pool: &mut BusyPool) {
        if !(agreement.server_takeover || agreement.client_takeover) {
            return;
        }
        let bits = agreement.server_window_bits;
        self.stream = Some(Box::new(Stream {
            token: pool.deflate.new_token(),
            send: agreement
                .server_takeover
                .then(|| (bits, Window::at_most(bits, SEND_DICTIONARY))),
            recv: agreement
                .client_takeover
                .then(|| Window::new(agreement.client_bits())),
            accounted: 0,
        }));
        self.recount_stream(pool);
    }

    /// The decompressor for a compressed message that starts now: for a stream taking
    /// context over, its parked one or one primed with its window; else a fresh one.
    pub(super) fn inflater_for_message(
        &self,
        pool: &mut BusyPool,
        stats: &Counters,
    ) -> Box<Inflater> {
        match self.stream.as_deref().filter(|s| s.recv.is_some()) {
            Some(stream) => {
                let (inflater, resumed) = pool.deflate.take_stream_inflater(stream);
                if resumed {
                    stats.deflate_resumes[DEFLATE_IN].bump();
                }
                inflater
            }
            None => pool.deflate.take_inflater(),
        }
    }

    /// A compressed message was inflated whole: a stream taking context over parks its
    /// decompressor for the next one (and the window grew: it is recounted). `None`: the
    /// decompressor was not this stream's to keep, and is returned.
    pub(super) fn park_inflater(
        &mut self,
        inflater: Box<Inflater>,
        pool: &mut BusyPool,
        config: &Config,
    ) -> Option<Box<Inflater>> {
        let token = self.stream.as_deref().filter(|s| s.recv.is_some())?.token;
        pool.deflate
            .park_inflater(token, inflater, config.compression_live);
        self.recount_stream(pool);
        None
    }

    /// The window of what we receive, if it carries over.
    pub(super) fn recv_window(&mut self) -> Option<&mut Window> {
        self.stream.as_deref_mut().and_then(|s| s.recv.as_mut())
    }
}
