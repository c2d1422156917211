//! The sending side of the fan-out client: publishers' tagged messages when they are due,
//! writing a connection's output, and the closing handshake at the end of a run. It must not
//! read or check anything (that is [`super`]'s).

use super::{xorshift, Client, Conn, State, MAX_PUBLISHER_BACKLOG};
use crate::fanout::tag::{tag_len, Tag, MAX_TAG};
use crate::frame;
use std::io::{self, ErrorKind, Write};
use std::time::{Duration, Instant};

impl Client {
    /// Queues what each publisher is due to send by now; returns the next due time.
    pub(super) fn publish_due(&mut self, dirty: &mut Vec<usize>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut head = [0u8; MAX_TAG];
        let tag_len = tag_len(self.kind);
        for (idx, c) in self.conns.iter_mut().enumerate() {
            let Some(p) = c.publisher.as_mut() else {
                continue;
            };
            if c.state != State::Open {
                continue;
            }
            while p.next_due <= self.now {
                let due = p.next_due;
                p.next_due += self.interval;
                if c.out.len() - c.out_pos > MAX_PUBLISHER_BACKLOG {
                    *self.errors.entry("publisher-backlog".into()).or_insert(0) += 1;
                    continue;
                }
                let seq = self.sent[p.id as usize];
                self.sent[p.id as usize] += 1;
                let tag = Tag {
                    publisher: p.id,
                    seq,
                    due_ns: due.saturating_duration_since(self.epoch).as_nanos() as u64,
                };
                tag.write(self.kind, &mut head);
                let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
                let opcode = self.kind.opcode();
                frame::push_masked_frame(&mut c.out, opcode, &[&head[..tag_len], &self.body], key);
                if self.measuring {
                    self.tally.published += 1;
                }
                if !c.dirty {
                    c.dirty = true;
                    dirty.push(idx);
                }
            }
            next = Some(next.map_or(p.next_due, |n| n.min(p.next_due)));
        }
        next
    }

    /// Writes a connection's output; Err: it is dead.
    pub(super) fn flush(c: &mut Conn) -> io::Result<()> {
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.out.clear();
        c.out_pos = 0;
        if c.out.capacity() > 64 << 10 {
            c.out = Vec::new();
        }
        Ok(())
    }

    /// Sends a close to every open connection and waits (at most `limit`) for the server to
    /// close them.
    pub fn close_all(&mut self, limit: Duration) -> io::Result<()> {
        self.publishing = false;
        for c in &mut self.conns {
            if c.state == State::Open {
                c.state = State::Closing;
                let key = (xorshift(&mut self.rng) as u32).to_ne_bytes();
                frame::push_masked_frame(
                    &mut c.out,
                    frame::OP_CLOSE,
                    &[&1000u16.to_be_bytes()],
                    key,
                );
                let _ = Self::flush(c);
            }
        }
        let t0 = Instant::now();
        while self.live > 0 && t0.elapsed() < limit {
            self.turn(Duration::from_millis(10))?;
        }
        for idx in 0..self.conns.len() {
            self.drop_conn(idx, None);
        }
        Ok(())
    }
}
