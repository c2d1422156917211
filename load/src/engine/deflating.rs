//! What `--deflate` changes in a connection: each message is a JSON-like document compressed
//! on its own into one RSV1 frame, and each echo, compressed or not (a server may leave small
//! messages uncompressed), is inflated and checked byte for byte against the document sent.
//! One [`Deflating`] (codec and documents) is shared by all connections; a connection keeps
//! only the compressed bytes of an echo that spans reads, and only until its end.
//!
//! It must not poll or write sockets; the framing of the uncompressed path stays in [`super::conn`].

use super::conn::{Conn, Ctx, Fed, Shape};
use crate::deflate::{Codec, JsonBodies};
use crate::frame;

/// The codec and each shape's documents.
pub(crate) struct Deflating {
    codec: Codec,
    bodies: Vec<JsonBodies>,
}

impl Deflating {
    /// The shared state of a `--deflate` run (`None` without it; an error for raw TCP).
    pub(super) fn for_run(
        on: bool,
        mode: super::Mode,
        shapes: &[Shape],
    ) -> std::io::Result<Option<Box<Deflating>>> {
        match (on, mode) {
            (false, _) => Ok(None),
            (true, super::Mode::Raw) => Err(std::io::Error::other(
                "--deflate is for WebSocket echo, not raw TCP",
            )),
            (true, super::Mode::WebSocket) => Deflating::new(shapes)
                .map(Some)
                .map_err(std::io::Error::other),
        }
    }

    /// Documents for each shape of the mix.
    fn new(shapes: &[Shape]) -> Result<Box<Deflating>, String> {
        let bodies = shapes
            .iter()
            .map(|s| JsonBodies::new(s.payload.size()))
            .collect::<Result<_, _>>()?;
        Ok(Box::new(Deflating {
            codec: Codec::new(),
            bodies,
        }))
    }

    /// Appends message `seq` of shape `which`, compressed and masked under `key`; returns its
    /// payload's bytes on the wire.
    pub(super) fn push(&mut self, out: &mut Vec<u8>, which: u16, seq: u64, key: [u8; 4]) -> usize {
        let bodies = &self.bodies[which as usize];
        self.codec.push_frame(out, frame::OP_TEXT, bodies, seq, key)
    }
}

/// Most compressed bytes gathered for an echo of `size` bytes: deflate's stored blocks add
/// 5 bytes per 64 KiB, so anything past this is not an echo of what was sent.
fn zbuf_limit(size: usize) -> usize {
    size + size / 8 + 1024
}

impl Conn {
    /// A piece of an echo on a connection that agreed to permessage-deflate.
    pub(super) fn on_deflated_data(
        &mut self,
        ctx: &mut Ctx,
        opcode: u8,
        start: bool,
        end: bool,
        payload: &[u8],
    ) -> Fed {
        let Some(&(_, which)) = self.inflight.front() else {
            return Err("unexpected-message");
        };
        let Some(d) = ctx.deflate.as_mut() else {
            return Err("unexpected-message");
        };
        let Deflating { codec, bodies } = &mut **d;
        let bodies = &bodies[which as usize];
        let size = bodies.size();
        if start {
            self.recv_off = 0;
            self.bad = opcode != frame::OP_TEXT;
        }
        if ctx.measuring {
            ctx.tally.recv_wire_bytes += payload.len() as u64;
        }
        let seq = self.recv_seq;
        if !self.parser.compressed() {
            if !bodies.matches(seq, self.recv_off, payload) {
                self.bad = true;
            }
            self.recv_off = self.recv_off.saturating_add(payload.len());
        } else {
            let whole = if start && end {
                payload
            } else {
                if self.zbuf.len() + payload.len() > zbuf_limit(size) {
                    return Err("deflate-oversized");
                }
                self.zbuf.extend_from_slice(payload);
                if !end {
                    return Ok(());
                }
                &self.zbuf[..]
            };
            let mut bad = false;
            match codec.inflate(whole, size, |off, piece| {
                bad |= !bodies.matches(seq, off, piece);
            }) {
                Some(n) => self.recv_off = n,
                None => return Err("deflate-invalid"),
            }
            self.bad |= bad;
            self.zbuf = Vec::new();
            if ctx.measuring {
                ctx.tally.recv_compressed += 1;
            }
        }
        if end {
            if self.recv_off != size {
                self.bad = true;
            }
            self.complete_message(ctx);
        }
        Ok(())
    }
}
