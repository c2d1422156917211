//! Open-loop traffic at a set arrival rate over connections opened once: a [`Session`]
//! connects, then measures windows one after another, each at a constant rate or a linear ramp
//! between two rates, and reports each window apart (rate asked and achieved, latency
//! percentiles, errors and CPU in that window). `--phases` and the `--p99` search are built
//! on it.
//!
//! Latency is measured from when a message was due, not from when it was written: a message
//! held back because its connection already had `pipeline` messages in flight counts its wait,
//! so an overloaded server shows as latency instead of as a quietly lower send rate
//! (coordinated omission). This module owns the window loop; it must not decide which rates to
//! try (that is [`crate::phases`] and [`crate::search`]).

use crate::engine::{auto_source_ips, Engine, EngineConfig, Mode, Target};
use crate::payload::Mix;
use crate::progress::Progress;
use crate::stats::{self, LatencySummary};
use crate::sys;
use crate::workloads::{
    connect_phase, kind_label, mix_counts, EchoConfig, MixCount, MAX_CONNECTIONS, MAX_SIZE,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Below this total rate (messages per second) nothing is sent: a phase at 0 holds the
/// connections idle.
const PAUSED_BELOW: f64 = 1.0;
/// How often a ramp's rate is updated.
const RAMP_TICK: Duration = Duration::from_millis(50);

/// What one measured window saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// Rate asked for at the start of the window, messages per second.
    pub rate_from: f64,
    /// Rate asked for at the end (the same as `rate_from` when constant).
    pub rate_to: f64,
    /// Mean rate asked for over the window.
    pub rate_asked: f64,
    /// Length of the window, seconds.
    pub duration_s: f64,
    /// Echoes received and checked in the window.
    pub messages: u64,
    /// Echoes per second.
    pub msgs_per_s: f64,
    /// Messages sent in the window.
    pub sent: u64,
    /// Round-trip latency from when each message was due.
    pub latency: LatencySummary,
    /// Errors by kind that happened in the window.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Generator CPU, % of one core.
    pub generator_cpu_pct: f64,
    /// Server CPU, % of one core (with a server PID).
    pub server_cpu_pct: Option<f64>,
    /// Server CPU µs per echoed message (with a server PID).
    pub server_cpu_us_per_msg: Option<f64>,
}

/// The traffic a session's report describes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficInfo {
    /// Target URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened.
    pub connected: usize,
    /// Most messages in flight per connection.
    pub pipeline: usize,
    /// Largest message size in the mix.
    pub size: usize,
    /// "text", "binary" or "mixed".
    pub kind: String,
    /// Echoes checked per shape of the mix over the whole session.
    pub mix: Vec<MixCount>,
    /// CPU the generator was pinned to.
    pub generator_cpu: Option<usize>,
}

impl TrafficInfo {
    /// The report header's description: `URL: 98/100 connections, up to 16 in flight each,
    /// 64 KiB mixed (largest)`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {}/{} connections, up to {} in flight each, {} {} (largest)",
            self.url,
            self.connected,
            self.connections,
            self.pipeline,
            crate::report::size_label(self.size),
            self.kind
        )
    }
}

/// Connections held open for a series of windows.
pub struct Session {
    eng: Engine,
    mode: Mode,
    mix: Mix,
    connections: usize,
    connected: usize,
    pipeline: usize,
    url: String,
    server_pid: Option<i32>,
    /// The rate last asked for (`None`: paused).
    rate: Option<f64>,
    /// Checked echoes per shape, summed over the windows.
    by_shape: Vec<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .field("connected", &self.connected)
            .finish()
    }
}

fn error_total(e: &BTreeMap<String, u64>) -> u64 {
    e.values().sum()
}

impl Session {
    /// Opens `cfg.connections` connections to `cfg.url` (at `cfg.connect_rate`), sending
    /// nothing yet. `cfg.rate`, `warmup` and `duration` are not used: the windows say those.
    pub fn open(cfg: &EchoConfig) -> Result<Session, String> {
        if cfg.connections == 0 || cfg.connections > MAX_CONNECTIONS {
            return Err(format!("connections must be 1..={MAX_CONNECTIONS}"));
        }
        if cfg.pipeline == 0 {
            return Err("pipeline depth must be at least 1".into());
        }
        let mix = cfg.mix()?;
        if mix.max_size() > MAX_SIZE {
            return Err(format!("size at most {MAX_SIZE} bytes"));
        }
        if cfg.mode == Mode::Raw && mix.entries().iter().any(|e| e.payload.size() == 0) {
            return Err("raw messages need at least 1 byte".into());
        }
        let target = Target::parse(&cfg.url)?;
        sys::raise_nofile();
        let source_ips = match cfg.source_ips {
            0 => auto_source_ips(cfg.connections),
            n => n,
        };
        let mut eng = Engine::new(EngineConfig {
            mode: cfg.mode,
            target,
            mix: mix.clone(),
            // Paced from the start (the rate is set per window), so an opening connection
            // does not fill its pipeline as fast as it can.
            rate: Some(PAUSED_BELOW),
            rate_connections: cfg.connections,
            source_ips,
            send_timer: cfg.send_timer,
            wire: cfg.wire.clone(),
        })
        .map_err(|e| e.to_string())?;
        eng.stop_sending();
        let bar = Progress::new(cfg.progress);
        connect_phase(
            &mut eng,
            cfg.connections,
            cfg.pipeline,
            cfg.connect_rate,
            cfg.max_pending,
            Duration::from_secs(10),
            &bar,
        )?;
        bar.finish();
        let connected = eng.opened();
        if connected == 0 {
            return Err(format!("no connection could be opened: {:?}", eng.errors()));
        }
        Ok(Session {
            eng,
            mode: cfg.mode,
            by_shape: vec![0; mix.entries().len()],
            mix,
            connections: cfg.connections,
            connected,
            pipeline: cfg.pipeline,
            url: cfg.url.clone(),
            server_pid: cfg.server_pid,
            rate: None,
        })
    }

    /// Connections that opened.
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Asks for `rate` messages per second from now; `fresh` restarts the schedule (spread over
    /// the connections) instead of keeping what is already due (a ramp's small steps).
    fn apply_rate(&mut self, rate: f64, fresh: bool) {
        if rate < PAUSED_BELOW {
            self.eng.stop_sending();
            self.rate = None;
            return;
        }
        if fresh || self.rate.is_none() {
            self.eng.set_rate(Some(rate), self.connected);
            self.eng.resume_sending();
        } else {
            self.eng.retarget_rate(rate, self.connected);
        }
        self.rate = Some(rate);
    }

    /// Runs traffic for `len` at a rate going linearly from `from` to `to`, updated every
    /// 50 ms. Counts into the tally only when `measure` is set (a warm-up does not).
    fn drive(&mut self, from: f64, to: f64, len: Duration, fresh: bool) -> Result<(), String> {
        self.apply_rate(from, fresh);
        let t0 = Instant::now();
        let mut next_tick = t0 + RAMP_TICK;
        loop {
            let elapsed = t0.elapsed();
            if elapsed >= len {
                return Ok(());
            }
            if from != to && Instant::now() >= next_tick {
                next_tick += RAMP_TICK;
                let f = (elapsed.as_secs_f64() / len.as_secs_f64().max(1e-9)).min(1.0);
                self.apply_rate(from + (to - from) * f, false);
            }
            let left = len.saturating_sub(elapsed);
            self.eng
                .turn(left.min(Duration::from_millis(10)))
                .map_err(|e| e.to_string())?;
            if self.eng.live() == 0 {
                return Err("every connection closed".into());
            }
        }
    }

    /// Sends at `from` for `warmup` without counting, then measures a window of `len` at a
    /// rate going from `from` to `to`. `fresh` restarts the send schedule at the start.
    pub fn window(
        &mut self,
        from: f64,
        to: f64,
        warmup: Duration,
        len: Duration,
        fresh: bool,
    ) -> Result<Window, String> {
        if !warmup.is_zero() {
            self.drive(from, from, warmup, fresh)?;
        }
        let fresh = fresh && warmup.is_zero();
        let errors0 = self.eng.errors().clone();
        let srv0 = self.server_pid.and_then(|p| sys::process_cpu_ns(p).ok());
        let own0 = sys::own_cpu_secs();
        self.eng.set_measuring(true);
        let t0 = Instant::now();
        let run = self.drive(from, to, len, fresh);
        let wall = t0.elapsed().as_secs_f64();
        let own1 = sys::own_cpu_secs();
        let srv1 = self.server_pid.and_then(|p| sys::process_cpu_ns(p).ok());
        self.eng.set_measuring(false);
        run?;
        let tally = self.eng.tally().clone();
        for (i, n) in tally.recv_by_shape.iter().enumerate() {
            if let Some(s) = self.by_shape.get_mut(i) {
                *s += n;
            }
        }
        let mut errors = BTreeMap::new();
        for (k, v) in self.eng.errors() {
            let d = v.saturating_sub(errors0.get(k).copied().unwrap_or(0));
            if d > 0 {
                errors.insert(k.clone(), d);
            }
        }
        let srv_cpu = match (srv0, srv1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
            _ => None,
        };
        let msgs = tally.recv_msgs;
        Ok(Window {
            rate_from: from,
            rate_to: to,
            rate_asked: (from + to) / 2.0,
            duration_s: wall,
            messages: msgs,
            msgs_per_s: msgs as f64 / wall.max(1e-9),
            sent: tally.sent_msgs,
            latency: tally.latency.summary(),
            error_total: error_total(&errors),
            errors,
            generator_cpu_pct: stats::cpu_percent(own1 - own0, wall),
            server_cpu_pct: srv_cpu.map(|c| stats::cpu_percent(c, wall)),
            server_cpu_us_per_msg: srv_cpu.and_then(|c| stats::cpu_us_per_msg(c, msgs)),
        })
    }

    /// Stops sending and waits (at most `limit`) until every message in flight has come back;
    /// returns how many are still out.
    pub fn quiesce(&mut self, limit: Duration) -> Result<usize, String> {
        self.eng.stop_sending();
        self.rate = None;
        let t0 = Instant::now();
        while self.eng.in_flight() > 0 && t0.elapsed() < limit && self.eng.live() > 0 {
            self.eng
                .turn(Duration::from_millis(10))
                .map_err(|e| e.to_string())?;
        }
        Ok(self.eng.in_flight())
    }

    /// Drains, counts what never came back as `no-echo`, closes every connection politely, and
    /// returns the errors of the whole session and what the traffic was.
    pub fn finish(
        mut self,
        generator_cpu: Option<usize>,
    ) -> Result<(BTreeMap<String, u64>, TrafficInfo), String> {
        let limit = Duration::from_secs(3)
            + Duration::from_secs_f64((self.mix.max_size() * self.pipeline) as f64 / 50e6);
        let out = self.quiesce(limit)?;
        self.eng.count_error("no-echo", out as u64);
        self.eng
            .close_all(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let info = TrafficInfo {
            url: self.url.clone(),
            connections: self.connections,
            connected: self.connected,
            pipeline: self.pipeline,
            size: self.mix.max_size(),
            kind: kind_label(self.mode, &self.mix),
            mix: mix_counts(self.mode, &self.mix, &self.by_shape),
            generator_cpu,
        };
        Ok((self.eng.errors().clone(), info))
    }
}

/// Pins the generator to `cpu` when asked; returns the CPU it runs on, if pinned.
pub fn pin_generator(cpu: Option<usize>) -> Result<Option<usize>, String> {
    match cpu {
        Some(c) => sys::pin_to_cpu(c)
            .map(|()| Some(c))
            .map_err(|e| format!("cannot pin the generator to CPU {c}: {e}")),
        None => Ok(None),
    }
}
