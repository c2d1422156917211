//! A chat room: every text message from one member reaches every member at once, sender
//! included, from inside `on_message` (no waiting for a timer).
//!
//! `cargo run --release --example chat [ADDR]` (default 127.0.0.1:9001), then connect two or
//! more WebSocket clients. Binary messages are ignored; a member that leaves is announced.

use std::collections::BTreeSet;

use wsreactor::{Close, Config, Conn, ConnId, Ctx, Handler, Message, Request, Server};

#[derive(Default)]
struct Room {
    members: BTreeSet<ConnId>,
}

impl Handler for Room {
    fn on_open(&mut self, conn: &mut Conn<'_>, _request: &Request<'_>) {
        self.members.insert(conn.id());
        let joined = format!(
            "#{} joined ({} here)",
            conn.id().as_u64(),
            self.members.len()
        );
        self.broadcast(conn, &joined);
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        if let Message::Text(text) = message {
            let line = format!("#{}: {text}", conn.id().as_u64());
            self.broadcast(conn, &line);
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _close: Close<'_>) {
        self.members.remove(&id);
        let left = Message::Text(&format!("#{} left", id.as_u64()));
        ctx.send_many(self.members.iter().copied(), left);
    }
}

impl Room {
    /// Sends `line` to every member: to this connection through `conn`, to the others through
    /// its context. Each member's copy is written in this loop turn.
    fn broadcast(&self, conn: &mut Conn<'_>, line: &str) {
        for &member in &self.members {
            let _ = conn.send_to(member, Message::Text(line));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.listen = addr.parse()?;
    }
    let mut server = Server::bind(config, Room::default())?;
    eprintln!("chat: listening on {}", server.local_addr());
    server.run()?;
    Ok(())
}
