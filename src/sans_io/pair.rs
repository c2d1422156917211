//! A client and a server connection wired to each other in memory, in the spirit of
//! quinn-proto's test pairs: every byte either side writes reaches the other through
//! [`Pair::deliver`], cut into reads of the sizes a test chooses, with no socket and no clock.
//!
//! Owns the wiring only: the server is the reactor's very connection (an [`Endpoint`]) and the
//! client is [`Client`]. A test opens the pair, queues client frames, delivers bytes both ways
//! and asserts on what the client received.

use super::client::{Client, Received, Violation, SWITCHING_PROTOCOLS, UPGRADE_REQUEST};
use super::Endpoint;
use crate::config::Config;
use crate::handler::Handler;

/// A client and a server connection, connected in memory.
#[derive(Debug)]
pub struct Pair<H: Handler> {
    /// The server side.
    pub server: Endpoint<H>,
    /// The client side.
    pub client: Client,
}

impl<H: Handler> Pair<H> {
    /// A pair whose upgrade has completed (the server's 101 checked byte for byte).
    ///
    /// # Panics
    /// If the server does not answer the upgrade with exactly the expected 101: that is what
    /// a test of a pair relies on.
    pub fn open(config: Config, handler: H) -> Self {
        let mut server = Endpoint::new(config, handler);
        server.feed(&mut UPGRADE_REQUEST.to_vec());
        let mut answer = Vec::new();
        server.drain_output(&mut answer);
        assert!(
            answer.starts_with(SWITCHING_PROTOCOLS),
            "no 101: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let mut client = Client::default();
        let rest = answer[SWITCHING_PROTOCOLS.len()..].to_vec();
        let early = client.receive(&rest).expect("frames after the 101");
        assert!(early.is_empty() || server.is_open(), "{early:?}");
        Pair { server, client }
    }

    /// Moves what the client queued to the server, in reads of the sizes `reads` yields
    /// (cycled; a size of 0 counts as 1), and what the server answers back to the client,
    /// which returns everything it read complete.
    pub fn deliver(&mut self, reads: &[usize]) -> Result<Vec<Received>, Violation> {
        let bytes = std::mem::take(&mut self.client.outgoing);
        let mut received = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut sizes = reads.iter().copied().cycle();
        while at < bytes.len() {
            let size = sizes.next().unwrap_or(bytes.len()).max(1);
            let end = (at + size).min(bytes.len());
            self.server.feed(&mut bytes[at..end].to_vec());
            at = end;
            self.server.drain_output(&mut out);
            received.extend(self.client.receive(&out)?);
            out.clear();
        }
        self.server.drain_output(&mut out);
        received.extend(self.client.receive(&out)?);
        Ok(received)
    }
}
