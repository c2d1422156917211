//! `load`: the load generator and comparison harness for wsreactor. A single-threaded,
//! edge-triggered mio client ([`engine`]) drives the `echo`, `raw` and `connections` workloads
//! ([`workloads`]); [`rated`] drives open-loop windows at set or ramping rates, on which
//! [`phases`] (`--phases`) and [`search`] (`--p99`, the highest rate under a latency target)
//! are built; [`fanout`] drives one room's publish-once fan-out; [`compare`] builds and
//! starts wsreactor and its peers and runs the same workloads against each, writing a table
//! and a chart. `wss://` URLs run over TLS (`engine::tls`), `--deflate` compresses
//! ([`deflate`]), and [`testcert`] makes the certificate TLS runs use.

#![warn(missing_docs, rust_2018_idioms)]

pub mod compare;
pub mod deflate;
pub mod engine;
pub mod fanout;
pub mod frame;
pub mod handshake;
pub mod payload;
pub mod phases;
pub mod progress;
pub mod rated;
pub mod report;
pub mod search;
pub mod stats;
pub mod svg;
pub mod sys;
pub mod testcert;
pub mod units;
pub mod workloads;
