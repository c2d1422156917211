//! # wsreactor-server
//!
//! The demo application the `wsreactor` binary runs, built only on the public API of the
//! [`wsreactor`] library: the library itself holds no demo code and does not depend on
//! `clap` or `signal-hook`.
//!
//! - [`app`]: the [`Handler`](wsreactor::Handler): echo, rooms, the `/stats` push, HTTP
//!   answered from [`static_files`];
//! - [`rooms`]: `/room/NAME` joins a topic; member counts;
//! - [`static_files`]: request target → bytes, from the page built into the binary (`web/`)
//!   or a folder given at run time;
//! - [`logger`]: the `log` facade's output: level filter, text or JSON lines on stderr;
//! - `main.rs` (the binary): command line, signals, start/stop logging.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod app;
pub mod logger;
pub mod rooms;
pub mod static_files;
