//! A relay between pairs of connections that streams large messages: each new connection is
//! paired with the one waiting, and every message from one side is forwarded to the other in
//! parts, as its bytes arrive, without ever being assembled.
//!
//! `cargo run --release --example relay [ADDR]` (default 127.0.0.1:9001), then connect two
//! clients: what one sends, the other receives. Memory per message in flight is at most one
//! read's worth of bytes, whatever the message's size (up to `max_message_size`), and the
//! backpressure rule of `Handler::stream_from` bounds what piles up for a partner that reads
//! slowly.

use std::collections::HashMap;

use wsreactor::{Close, Config, Conn, ConnId, Ctx, Handler, Message, MessagePart, Request, Server};

#[derive(Default)]
struct Relay {
    waiting: Option<ConnId>,
    partner: HashMap<ConnId, ConnId>,
}

impl Handler for Relay {
    fn on_open(&mut self, conn: &mut Conn<'_>, _request: &Request<'_>) {
        match self.waiting.take() {
            Some(other) => {
                self.partner.insert(conn.id(), other);
                self.partner.insert(other, conn.id());
            }
            None => self.waiting = Some(conn.id()),
        }
    }

    /// Every message, however small, is handed over in parts.
    fn stream_from(&self) -> Option<u64> {
        Some(0)
    }

    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        if let Some(&other) = self.partner.get(&conn.id()) {
            if let Some(mut partner) = conn.ctx().conn(other) {
                let _ = partner.send_part(part.kind, part.data, part.last);
            }
        }
    }

    /// A message that arrived whole in one read (the parts path is for messages still
    /// arriving) is forwarded as one message.
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        if let Some(&other) = self.partner.get(&conn.id()) {
            let _ = conn.send_to(other, message);
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _close: Close<'_>) {
        if self.waiting == Some(id) {
            self.waiting = None;
        }
        if let Some(other) = self.partner.remove(&id) {
            self.partner.remove(&other);
            if let Some(mut partner) = ctx.conn(other) {
                partner.close(1001, "partner left");
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.listen = addr.parse()?;
    }
    let mut server = Server::bind(config, Relay::default())?;
    eprintln!("relay: listening on {}", server.local_addr());
    server.run()?;
    Ok(())
}
