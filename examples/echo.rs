//! The smallest wsreactor server: every message goes back to its sender.
//!
//! `cargo run --release --example echo [ADDR]` (default 127.0.0.1:9001).

use wsreactor::{Config, Conn, Handler, Message, Server};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let _ = conn.send(message);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.listen = addr.parse()?;
    }
    let mut server = Server::bind(config, Echo)?;
    eprintln!("echo: listening on {}", server.local_addr());
    server.run()?;
    Ok(())
}
