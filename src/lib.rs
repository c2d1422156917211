//! # wsreactor
//!
//! A WebSocket server (RFC 6455) on one single-threaded `mio` reactor.
//!
//! ```no_run
//! use wsreactor::{Config, Conn, Handler, Message, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
//!         let _ = conn.send(message);
//!     }
//! }
//!
//! let mut server = Server::bind(Config::default(), Echo)?;
//! server.run()?;
//! # Ok::<(), wsreactor::Error>(())
//! ```
//!
//! The layout follows the path of a byte: [`reactor`](Server) (sockets, readiness, timers) →
//! `connection` (the sans-IO state machine) → [`handshake`], [`frame`], [`mask`], [`utf8`]
//! (pure functions over bytes) → the [`Handler`] the application implements.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]

mod buffers;
pub mod config;
mod connection;
pub mod frame;
mod handler;
pub mod handshake;
pub mod http;
pub mod mask;
mod reactor;
pub mod sans_io;
mod stats;
mod transport;
pub mod utf8;

pub use config::{Config, ConfigError, Error, TlsError, TlsFiles};

pub use connection::{Conn, Ctx, Fanout};
pub use handler::{
    Close, CloseCause, ConnId, Handler, Message, MessageKind, MessagePart, SendStatus,
};
pub use handshake::Request;
pub use http::Response;
pub use reactor::{Server, ServerHandle, ShutdownHandle, Stopped};
pub use stats::Stats;
