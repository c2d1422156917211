//! The handler the `wsreactor` binary runs: echo, the demo page, and a live stats push.
//!
//! Owns three behaviours, chosen per request:
//!
//! - every WebSocket message on any path is sent back unchanged (the echo benchmark's path:
//!   [`App::on_message`](Handler::on_message) does exactly what a bare echo does, no more),
//!   except in a room: a WebSocket on `/room/NAME` joins the topic `NAME`, and its messages are
//!   published unchanged to every member, the sender included ([`crate::rooms`]);
//! - a WebSocket opened on [`STATS_PATH`] (`/stats`, query ignored) is also a subscriber: it
//!   receives one `{"type":"hello",...}` text message at once, then one JSON text message per
//!   `Config::tick_interval` with the server's counters and rates (see [`StatsSample::to_json`]);
//! - a plain HTTP request is answered by [`StaticFiles`] (the built-in page or `--static DIR`).
//!
//! It does not count anything itself: the reactor's [`Stats`] counters are read once per tick
//! and the rates are the difference between two ticks, so the per-message path pays nothing
//! for the live panel.

use std::collections::HashSet;
use std::fmt::Write as _;

use wsreactor::{
    Close, Conn, ConnId, Ctx, Handler, Message, MessagePart, Request, Response, SendStatus, Stats,
};

use crate::rooms::{room_name, RoomCounts, Rooms};
use crate::static_files::StaticFiles;

/// Rooms listed in each stats push (the largest first).
const ROOMS_IN_PUSH: usize = 16;

/// Messages whose first frame announces at least this many bytes, and is still arriving, are
/// echoed in parts (a fragment per read) unless configured otherwise.
pub const DEFAULT_STREAM_FROM: u64 = 64 << 10;

/// The WebSocket path that subscribes to the stats push.
pub const STATS_PATH: &str = "/stats";

/// A subscriber whose unwritten output is above this many bytes misses pushes until it reads:
/// a stalled browser tab must not make the server buffer its figures forever.
const MAX_SUBSCRIBER_BACKLOG: usize = 64 << 10;

/// The server's figures at one tick, and the rates since the tick before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSample {
    /// Number of this push, from 1.
    pub seq: u64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// Milliseconds the rates were measured over (since the previous push).
    pub window_ms: u64,
    /// Open WebSocket connections on every thread (upgraded, not yet closed).
    pub open: usize,
    /// TCP connections held in any state (handshaking, open, closing): this thread's now,
    /// the others' as of their last timer sweep.
    pub connections: usize,
    /// Stats subscribers.
    pub subscribers: usize,
    /// The largest rooms and their member counts, already as JSON (`[{"room":..,"members":..}]`).
    pub rooms_json: String,
    /// Bytes the server holds for its connections, counted against `--max-memory`.
    pub memory_held: usize,
    /// Counters now.
    pub total: Stats,
    /// Counters at the previous push (all zero before the first).
    pub previous: Stats,
}

impl StatsSample {
    /// A per-second rate of a counter that grew from `before` to `now` over the window.
    fn rate(&self, now: u64, before: u64) -> u64 {
        let delta = now.saturating_sub(before);
        if self.window_ms == 0 {
            return 0;
        }
        // Rounded to the nearest whole unit per second.
        ((delta as u128 * 1000 + self.window_ms as u128 / 2) / self.window_ms as u128) as u64
    }

    /// Writes the push message into `out` (cleared first). One line of JSON:
    ///
    /// ```text
    /// {"type":"stats","seq":7,"uptime_ms":7003,"window_ms":1000,"open":3,"connections":3,
    ///  "subscribers":1,"rate":{"messages_in":..,"messages_out":..,"bytes_in":..,"bytes_out":..},
    ///  "total":{"opened":..,"closed":..,"accepted":..,"messages_in":..,"messages_out":..,
    ///  "bytes_in":..,"bytes_out":..,"http_requests":..,"refused":..,"protocol_errors":..,
    ///  "backlog_drops":..,"handler_panics":..,"publishes":..,"publish_drops":..,
    ///  "slow_subscriber_closes":..,"backpressure_pauses":..},
    ///  "closes":{"peer":..,"local":..,"shutdown":..,"protocol":..,"timeout":..,"backlog":..,
    ///  "io":..,"panic":..,"budget":..},"refusals":{"400":..,"403":..,"426":..,"431":..,
    ///  "limit":..},"memory":{"held":..,"read_pauses":..,"refused_messages":..,
    ///  "accept_pauses":..,"closes":..,"drops":..},"rooms":[{"room":..,"members":..}]}
    /// ```
    ///
    /// `memory` is the memory budget: what is held now and each shedding step's count.
    ///
    /// Rates are per second, rounded; totals count since the server started.
    pub fn to_json(&self, out: &mut String) {
        let (t, p) = (&self.total, &self.previous);
        out.clear();
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            concat!(
                r#"{{"type":"stats","seq":{},"uptime_ms":{},"window_ms":{},"open":{},"#,
                r#""connections":{},"subscribers":{},"#,
                r#""rate":{{"messages_in":{},"messages_out":{},"bytes_in":{},"bytes_out":{}}},"#,
                r#""total":{{"opened":{},"closed":{},"accepted":{},"messages_in":{},"#,
                r#""messages_out":{},"bytes_in":{},"bytes_out":{},"http_requests":{},"#,
                r#""refused":{},"protocol_errors":{},"backlog_drops":{},"handler_panics":{},"#,
                r#""publishes":{},"publish_drops":{},"slow_subscriber_closes":{},"#,
                r#""backpressure_pauses":{}}},"#,
                r#""closes":{{"peer":{},"local":{},"shutdown":{},"protocol":{},"timeout":{},"#,
                r#""backlog":{},"io":{},"panic":{},"budget":{}}},"#,
                r#""refusals":{{"400":{},"403":{},"426":{},"431":{},"limit":{}}},"#,
                r#""memory":{{"held":{},"read_pauses":{},"refused_messages":{},"#,
                r#""accept_pauses":{},"closes":{},"drops":{}}},"#,
                r#""rooms":{}}}"#,
            ),
            self.seq,
            self.uptime_ms,
            self.window_ms,
            self.open,
            self.connections,
            self.subscribers,
            self.rate(t.messages_in, p.messages_in),
            self.rate(t.messages_out, p.messages_out),
            self.rate(t.bytes_in, p.bytes_in),
            self.rate(t.bytes_out, p.bytes_out),
            t.opened,
            t.closed,
            t.accepted,
            t.messages_in,
            t.messages_out,
            t.bytes_in,
            t.bytes_out,
            t.http_requests,
            t.refused,
            t.protocol_errors,
            t.backlog_drops,
            t.handler_panics,
            t.publishes,
            t.publish_drops,
            t.slow_subscriber_closes,
            t.backpressure_pauses,
            t.closes.peer,
            t.closes.local,
            t.closes.shutdown,
            t.closes.protocol,
            t.closes.timeout,
            t.closes.backlog,
            t.closes.io,
            t.closes.panic,
            t.closes.budget,
            t.refusals.bad_request,
            t.refusals.forbidden,
            t.refusals.upgrade_required,
            t.refusals.head_too_large,
            t.refusals.pending_limit,
            self.memory_held,
            t.budget_read_pauses,
            t.budget_refused_messages,
            t.budget_accept_pauses,
            t.budget_closes,
            t.budget_drops,
            self.rooms_json,
        );
    }
}

/// Echo on every WebSocket, stats pushed to `/stats` subscribers, static files for HTTP.
#[derive(Debug)]
pub struct App {
    files: StaticFiles,
    /// Milliseconds between pushes, announced in the hello message (0: no push).
    interval_ms: u64,
    subscribers: HashSet<ConnId>,
    seq: u64,
    previous: Stats,
    previous_ms: u64,
    /// Reused for every push.
    json: String,
    /// Subscribers found gone during a push.
    gone: Vec<ConnId>,
    /// Messages this large that are still arriving are echoed in parts as they arrive
    /// (`Handler::stream_from`); `None`: every message is echoed whole.
    stream_from: Option<u64>,
    rooms: Rooms,
}

impl App {
    /// An app serving `files`, announcing pushes every `interval_ms` (set the same value as
    /// `Config::tick_interval`; 0 when there is none).
    pub fn new(files: StaticFiles, interval_ms: u64) -> Self {
        App {
            files,
            interval_ms,
            subscribers: HashSet::new(),
            seq: 0,
            previous: Stats::default(),
            previous_ms: 0,
            json: String::new(),
            gone: Vec::new(),
            stream_from: Some(DEFAULT_STREAM_FROM),
            rooms: Rooms::default(),
        }
    }

    /// Echoes messages whose first frame announces at least `bytes` in parts as they arrive
    /// (`None`: assembles every message and echoes it whole).
    pub fn with_stream_from(mut self, bytes: Option<u64>) -> Self {
        self.stream_from = bytes;
        self
    }

    /// Counts room members in `counts`, which the apps of the other reactor threads share.
    pub fn with_room_counts(mut self, counts: RoomCounts) -> Self {
        self.rooms = Rooms::counting_in(counts);
        self
    }

    /// What plain HTTP requests are answered from.
    pub fn files(&self) -> &StaticFiles {
        &self.files
    }

    /// Stats subscribers connected now.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }
}

/// The largest rooms as a JSON array. Room names are plain ASCII segments
/// ([`room_name`]), so they need no escaping.
fn rooms_json(rooms: &Rooms) -> String {
    let mut out = String::from("[");
    for (i, (room, members)) in rooms.largest(ROOMS_IN_PUSH).into_iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, r#"{sep}{{"room":"{room}","members":{members}}}"#);
    }
    out.push(']');
    out
}

/// Whether a request target (path and query) is the stats path.
pub fn is_stats_path(target: &str) -> bool {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    &target[..end] == STATS_PATH
}

impl Handler for App {
    /// A room path whose name is not a plain short segment is refused (403).
    fn accept(&mut self, request: &Request<'_>) -> bool {
        !matches!(room_name(request.path), Some(Err(())))
    }

    fn on_open(&mut self, conn: &mut Conn<'_>, request: &Request<'_>) {
        if let Some(Ok(room)) = room_name(request.path) {
            match conn.subscribe(room.as_bytes()) {
                Ok(_) => self.rooms.join(conn.id(), room),
                Err(_) => conn.close(1008, "cannot join the room"),
            }
            return;
        }
        if is_stats_path(request.path) {
            self.subscribers.insert(conn.id());
            let hello = format!(
                r#"{{"type":"hello","interval_ms":{},"path":"{STATS_PATH}"}}"#,
                self.interval_ms
            );
            let _ = conn.send_text(&hello);
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        // The echo's path pays one length check while no room exists.
        if let Some(room) = self.rooms.room_of(conn.id()) {
            // Framed once, queued to every member under the slow-subscriber policy.
            conn.publish(room.as_bytes(), message, true);
            return;
        }
        // Backpressure and closed connections are handled by the server itself.
        let _ = conn.send(message);
    }

    fn stream_from(&self) -> Option<u64> {
        self.stream_from
    }

    fn on_message_part(&mut self, conn: &mut Conn<'_>, part: MessagePart<'_>) {
        // Each part is echoed as one fragment as soon as it arrives, so a large echo streams
        // back while the rest is still coming in.
        let _ = conn.send_part(part.kind, part.data, part.last);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _close: Close<'_>) {
        self.rooms.leave(id);
        if !self.subscribers.is_empty() {
            self.subscribers.remove(&id);
        }
    }

    fn on_http(&mut self, request: &Request<'_>) -> Response {
        self.files.respond(request.method, request.path)
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.uptime_ms();
        // The whole server's figures, every reactor thread's summed: each thread pushes them
        // to its own subscribers.
        let total = ctx.server_stats();
        self.seq += 1;
        let sample = StatsSample {
            seq: self.seq,
            uptime_ms: now,
            window_ms: now.saturating_sub(self.previous_ms),
            open: total.opened.saturating_sub(total.closed) as usize,
            connections: ctx.server_connection_count(),
            subscribers: self.subscribers.len(),
            rooms_json: rooms_json(&self.rooms),
            memory_held: ctx.memory_held(),
            total,
            previous: self.previous,
        };
        self.previous = total;
        self.previous_ms = now;
        if self.subscribers.is_empty() {
            return;
        }
        sample.to_json(&mut self.json);
        for &id in &self.subscribers {
            let Some(mut conn) = ctx.conn(id) else {
                self.gone.push(id);
                continue;
            };
            if conn.buffered_amount() > MAX_SUBSCRIBER_BACKLOG {
                continue; // not reading: it misses this one
            }
            match conn.send_text(&self.json) {
                // PartsOpen: an echo is being sent in parts; this push is skipped.
                SendStatus::Sent | SendStatus::Backpressure | SendStatus::PartsOpen => {}
                SendStatus::Closed | SendStatus::Dropped => self.gone.push(id),
            }
        }
        for id in self.gone.drain(..) {
            self.subscribers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_path_ignores_the_query() {
        assert!(is_stats_path("/stats"));
        assert!(is_stats_path("/stats?client=page"));
        assert!(!is_stats_path("/stats/"));
        assert!(!is_stats_path("/"));
        assert!(!is_stats_path("/statsx"));
    }

    #[test]
    fn push_reports_rates_between_ticks_and_totals() {
        let previous = Stats {
            messages_in: 100,
            messages_out: 100,
            bytes_in: 1_000,
            bytes_out: 2_000,
            ..Stats::default()
        };
        let total = Stats {
            opened: 5,
            messages_in: 350,
            messages_out: 351,
            bytes_in: 3_000,
            bytes_out: 2_000,
            backpressure_pauses: 4,
            closes: wsreactor::Closes {
                timeout: 2,
                ..Default::default()
            },
            refusals: wsreactor::Refusals {
                head_too_large: 1,
                ..Default::default()
            },
            ..Stats::default()
        };
        let sample = StatsSample {
            seq: 3,
            uptime_ms: 4_500,
            window_ms: 500,
            open: 2,
            connections: 3,
            subscribers: 1,
            rooms_json: r#"[{"room":"lobby","members":2}]"#.to_string(),
            memory_held: 4096,
            total,
            previous,
        };
        let mut json = String::from("stale");
        sample.to_json(&mut json);
        assert!(json.starts_with(r#"{"type":"stats","seq":3,"uptime_ms":4500,"#));
        assert!(json.contains(r#""open":2,"connections":3,"subscribers":1"#));
        assert!(json.contains(
            r#""rate":{"messages_in":500,"messages_out":502,"bytes_in":4000,"bytes_out":0}"#
        ));
        assert!(json.contains(r#""total":{"opened":5,"closed":0,"#));
        assert!(json.contains(r#""handler_panics":0,"publishes":0,"#));
        assert!(json.contains(r#""backpressure_pauses":4},"closes":{"peer":0,"#));
        assert!(json.contains(r#""timeout":2,"#));
        assert!(json.contains(r#""refusals":{"400":0,"403":0,"426":0,"431":1,"limit":0}"#));
        assert!(json.contains(r#""memory":{"held":4096,"read_pauses":0,"#));
        assert!(json.ends_with(r#""rooms":[{"room":"lobby","members":2}]}"#));
        // Balanced braces: one object with five nested ones and a room.
        assert_eq!(json.matches('{').count(), 7);
        assert_eq!(json.matches('}').count(), 7);
    }

    #[test]
    fn an_empty_window_has_zero_rates() {
        let sample = StatsSample {
            seq: 1,
            uptime_ms: 0,
            window_ms: 0,
            open: 0,
            connections: 0,
            subscribers: 0,
            rooms_json: "[]".to_string(),
            memory_held: 0,
            total: Stats {
                messages_in: 9,
                ..Stats::default()
            },
            previous: Stats::default(),
        };
        let mut json = String::new();
        sample.to_json(&mut json);
        assert!(json.contains(r#""rate":{"messages_in":0,"#));
    }
}
