//! The binary's logger: a level filter (from `--log-level` or `RUST_LOG`) and one line per
//! record on stderr, as text or as a JSON object.
//!
//! Owns the line formats. It does not decide what is logged (the library and `main.rs` do,
//! through the `log` facade) and keeps no state beyond the filter: each record is formatted
//! into one buffer and written with one `write` on the locked stderr, so lines from the
//! metrics thread and the reactor never interleave.
//!
//! Text lines keep the form the binary always printed, `wsreactor: message`, with the level
//! after the prefix for anything but info (`wsreactor: warn: ...`) and the record's key-value
//! pairs after the message. There is no timestamp: the service manager (journald, Docker)
//! adds one. JSON lines carry `ts` (RFC 3339, UTC, milliseconds), `level`, `target`, `msg`
//! and every key-value pair as a string field.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `wsreactor: message key=value`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which records pass: a default level and levels for target prefixes, as in `RUST_LOG`
/// (`info`, `debug`, `wsreactor=debug,warn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Target prefix and its level; the longest matching prefix wins.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses `RUST_LOG`-style directives; unknown ones are reported and skipped.
    pub fn parse(spec: &str) -> Result<Filter, String> {
        let mut filter = Filter {
            default: LevelFilter::Info,
            targets: Vec::new(),
        };
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                Some((target, level)) => {
                    let level = parse_level(level)?;
                    filter.targets.push((target.trim().to_string(), level));
                }
                None => filter.default = parse_level(directive)?,
            }
        }
        filter
            .targets
            .sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        Ok(filter)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |&(_, level)| level)
    }

    /// The most verbose level any target gets: what `log::set_max_level` is told.
    fn max(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|&(_, level)| level)
            .fold(self.default, Ord::max)
    }
}

fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("unknown log level {text:?} (off, error, warn, info, debug, trace)"))
}

#[derive(Debug)]
struct StderrLogger {
    filter: Filter,
    format: LogFormat,
}

/// Installs the logger for the process.
pub fn install(filter: Filter, format: LogFormat) {
    log::set_max_level(filter.max());
    // Fails only if a logger is already installed (never, in this binary).
    let _ = log::set_logger(Box::leak(Box::new(StderrLogger { filter, format })));
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match self.format {
            LogFormat::Text => text_line(record),
            LogFormat::Json => json_line(record, SystemTime::now()),
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `wsreactor: [level: ]message[ key=value...]\n`.
pub fn text_line(record: &Record<'_>) -> String {
    let mut line = String::from("wsreactor: ");
    if record.level() != Level::Info {
        let _ = write!(line, "{}: ", record.level().as_str().to_ascii_lowercase());
    }
    let _ = write!(line, "{}", record.args());
    let mut pairs = Pairs::default();
    let _ = record.key_values().visit(&mut pairs);
    for (key, value) in pairs.0 {
        let _ = write!(line, " {key}={}", value.text);
    }
    line.push('\n');
    line
}

/// `{"ts":...,"level":...,"target":...,"msg":...,key:value...}\n`.
pub fn json_line(record: &Record<'_>, now: SystemTime) -> String {
    let mut line = String::from("{\"ts\":");
    push_json_string(&mut line, &rfc3339(now));
    line.push_str(",\"level\":");
    push_json_string(&mut line, &record.level().as_str().to_ascii_lowercase());
    line.push_str(",\"target\":");
    push_json_string(&mut line, record.target());
    line.push_str(",\"msg\":");
    push_json_string(&mut line, &record.args().to_string());
    let mut pairs = Pairs::default();
    let _ = record.key_values().visit(&mut pairs);
    for (key, value) in pairs.0 {
        line.push(',');
        push_json_string(&mut line, &key);
        line.push(':');
        if value.number {
            line.push_str(&value.text);
        } else {
            push_json_string(&mut line, &value.text);
        }
    }
    line.push_str("}\n");
    line
}

/// A record's key-value pairs, as text.
#[derive(Default)]
struct Pairs(Vec<(String, PairValue)>);

/// A value as text, and whether JSON may carry it bare (an integer or a boolean).
struct PairValue {
    text: String,
    number: bool,
}

impl<'kvs> log::kv::VisitSource<'kvs> for Pairs {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let number =
            value.to_u64().is_some() || value.to_i64().is_some() || value.to_bool().is_some();
        let text = value.to_string();
        self.0.push((key.to_string(), PairValue { text, number }));
        Ok(())
    }
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-01T12:40:05.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn directives_pick_the_longest_prefix() {
        let filter = Filter::parse("warn, wsreactor=debug, wsreactor::metrics=error").unwrap();
        assert_eq!(filter.level_for("other"), LevelFilter::Warn);
        assert_eq!(
            filter.level_for("wsreactor::connection"),
            LevelFilter::Debug
        );
        assert_eq!(
            filter.level_for("wsreactor::metrics::listener"),
            LevelFilter::Error
        );
        assert_eq!(filter.max(), LevelFilter::Debug);
        assert!(Filter::parse("loud").is_err());
        assert_eq!(Filter::parse("").unwrap().default, LevelFilter::Info);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.5Z: a leap day.
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_199_500);
        assert_eq!(rfc3339(leap), "2024-02-29T23:59:59.500Z");
    }

    #[test]
    fn json_lines_escape_and_carry_the_pairs() {
        let args = format_args!("a \"quoted\"\nline");
        let pairs = [
            ("listen", log::kv::Value::from("127.0.0.1:1")),
            ("opened", log::kv::Value::from(3u64)),
        ];
        let record = Record::builder()
            .args(args)
            .level(Level::Warn)
            .target("wsreactor::x")
            .key_values(&pairs)
            .build();
        let line = json_line(&record, UNIX_EPOCH);
        assert_eq!(
            line,
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"warn\",\"target\":\"wsreactor::x\",\
             \"msg\":\"a \\\"quoted\\\"\\nline\",\"listen\":\"127.0.0.1:1\",\"opened\":3}\n"
        );
        assert_eq!(
            text_line(&record),
            "wsreactor: warn: a \"quoted\"\nline listen=127.0.0.1:1 opened=3\n"
        );
    }
}
