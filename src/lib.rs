//! # wsreactor
//!
//! A WebSocket server (RFC 6455) on single-threaded `mio` reactors: one ([`Server`]), or one
//! per core ([`MultiServer`]), sharing nothing on the per-message path.
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
//! The layout follows the path of a byte: the reactor ([`Server`]: sockets, readiness,
//! timers) → a transport → the connection (the sans-IO state machine, in layers) → the
//! [`Handler`] the application implements, which reaches any connection through [`Conn`] and
//! [`Ctx`] and publishes to topics.
//!
//! The API is what this page lists. The modules `frame`, `handshake`, `mask`, `utf8`,
//! `deflate` and `sans_io` are public only so that the benches, fuzz targets and tests can
//! reach the pure functions and the in-memory connection; they are hidden from these docs and
//! may change in any release.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod broker;
mod budget;
mod buffers;
pub mod config;
mod connection;
#[doc(hidden)]
pub mod deflate;
#[doc(hidden)]
pub mod frame;
mod handler;
#[doc(hidden)]
pub mod handshake;
pub mod http;
#[doc(hidden)]
pub mod mask;
mod metrics;
mod reactor;
#[doc(hidden)]
pub mod sans_io;
mod stats;
mod threads;
mod topics;
mod transport;
#[doc(hidden)]
pub mod utf8;

pub use config::{BrokerUrl, Config, ConfigError, Error, SlowSubscriber, TlsError, TlsFiles};

pub use connection::{Conn, Ctx, Fanout};
pub use deflate::Compression;
pub use frame::close_code;
pub use handler::{
    Close, CloseCause, ConnId, Handler, Message, MessageKind, MessagePart, SendStatus,
};
pub use handshake::Request;
pub use http::Response;
pub use reactor::{Server, ServerHandle, ShutdownHandle, Stopped};
pub use stats::{Closes, Refusals, Stats};
pub use threads::{total_stats, MultiServer, Publisher};
pub use topics::{Published, TopicError};
