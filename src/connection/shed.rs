//! What the memory budget asks of one connection: what it holds, a recount of it, and being
//! shed (closed with 1013, or dropped when its unread backlog leaves no room for a close).
//!
//! Owns how a connection gives its memory back. It decides nothing: the reactor picks which
//! connections to shed (`src/reactor/shed.rs`) from the levels of [`crate::budget`].

use super::*;
use crate::budget::{Account, LITTLE};

/// What [`Connection::shed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// A close 1013 is queued; the message it was assembling is freed.
    Closed,
    /// Dropped without a close frame: its unread backlog holds at least [`LITTLE`], which a
    /// peer that does not read would never let a close frame past.
    Dropped,
}

impl Connection {
    /// Bytes this connection's buffers held at their last recount (0 without any).
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.busy.as_ref().map_or(0, |b| b.accounted)
    }

    /// Bytes this connection's buffers hold now.
    #[inline]
    pub(crate) fn holding(&self) -> usize {
        self.busy.as_deref().map_or(0, crate::budget::footprint)
    }

    /// Brings this connection's share of `account` up to date.
    #[inline]
    pub(crate) fn recount(&mut self, account: &mut Account) {
        if let Some(busy) = self.busy.as_deref_mut() {
            account.recount(busy);
        }
    }

    /// Closes this connection to give its memory back: the message being assembled is freed
    /// at once, and the connection either waits for the peer's answer to a close 1013 (reading
    /// and discarding meanwhile, as any closing connection does) or, with a large unread
    /// backlog, is dropped.
    pub(crate) fn shed<H: Handler>(&mut self, env: &mut Env<'_, H>) -> Shed {
        self.flags &= !STREAM_IN;
        if let Some(busy) = self.busy.as_mut() {
            busy.drop_message();
            busy.message = Vec::new();
            busy.head = Vec::new();
            if let Some(inflater) = busy.inflater.take() {
                env.pool.deflate.give_inflater(inflater);
            }
        }
        let cause = CloseCause::Budget;
        if self.pending_output() >= LITTLE || self.state != State::Open {
            self.abort(cause, env);
            return Shed::Dropped;
        }
        let reason = "server memory budget";
        self.start_close(close_code::TRY_AGAIN_LATER, reason, cause, env);
        Shed::Closed
    }
}
