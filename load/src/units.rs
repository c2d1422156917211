//! Parsing of command-line quantities: sizes (20, 1KiB, 16MiB), durations in seconds (or with
//! ms/s/m), latencies (5ms, 500us), rates (`5000` or `5000/s`), and weighted lists
//! (`20:80,1KiB:15,64KiB:5`, `text:50,binary:50`).

use std::time::Duration;

/// Parses a byte size: a number with an optional B, K/KiB or M/MiB suffix.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("MiB").or_else(|| t.strip_suffix('M')) {
        (n, 1usize << 20)
    } else if let Some(n) = t.strip_suffix("KiB").or_else(|| t.strip_suffix('K')) {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix('B') {
        (n, 1)
    } else {
        (t, 1)
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|e| format!("bad size {s:?}: {e}"))?;
    n.checked_mul(mul)
        .ok_or_else(|| "size overflows".to_string())
}

/// Parses seconds (fractional, optional `s` suffix), 0 to 3600.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    let v: f64 = t.parse().map_err(|e| format!("bad duration {s:?}: {e}"))?;
    if !(0.0..=3600.0).contains(&v) {
        return Err("duration must be between 0 and 3600 s".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// Parses a duration with a unit: `500ms`, `10s`, `2m`, or bare seconds; at most an hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|e| format!("bad duration {s:?}: {e}"))?;
    let secs = v * mul;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} must be between 0 and 3600 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a latency: `5ms`, `500us` (or `µs`), `0.5ms`, `1s`; more than 0, at most 10 s.
pub fn parse_latency(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("latency {s:?} needs a unit: us, ms or s"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|e| format!("bad latency {s:?}: {e}"))?;
    let secs = v * mul;
    if !(secs > 0.0 && secs <= 10.0) {
        return Err(format!(
            "latency {s:?} must be more than 0 and at most 10 s"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a rate in events per second: `5000`, `5000/s` or `5k/s`; 0 means unlimited.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    let (num, mul) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1e3),
        None => (t, 1.0),
    };
    let v: f64 = num.parse().map_err(|e| format!("bad rate {s:?}: {e}"))?;
    let v = v * mul;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("rate {s:?} out of range"));
    }
    Ok(v)
}

/// Parses `ITEM[:WEIGHT],…` with `item` for each ITEM; a missing weight is 1.
pub fn parse_weighted<T>(
    s: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(T, u32)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (it, w) = match part.rsplit_once(':') {
            Some((it, w)) => (
                it,
                w.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("bad weight in {part:?}: {e}"))?,
            ),
            None => (part, 1),
        };
        out.push((item(it.trim())?, w));
    }
    if out.is_empty() {
        return Err(format!("{s:?}: empty list"));
    }
    Ok(out)
}

/// A size mix: `20`, or `20:80,1KiB:15,64KiB:5` (sizes with weights).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMix(pub Vec<(usize, u32)>);

/// Parses a [`SizeMix`].
pub fn parse_size_mix(s: &str) -> Result<SizeMix, String> {
    parse_weighted(s, parse_size).map(SizeMix)
}

/// A kind mix: `text`, `binary`, `mixed` (text:1,binary:1) or `text:30,binary:70`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindMix(pub Vec<(crate::payload::Kind, u32)>);

/// Parses a [`KindMix`].
pub fn parse_kind_mix(s: &str) -> Result<KindMix, String> {
    use crate::payload::Kind;
    if s.trim() == "mixed" {
        return Ok(KindMix(vec![(Kind::Text, 1), (Kind::Binary, 1)]));
    }
    parse_weighted(s, |k| match k {
        "text" => Ok(Kind::Text),
        "binary" => Ok(Kind::Binary),
        other => Err(format!("unknown kind {other:?} (text or binary)")),
    })
    .map(KindMix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("20"), Ok(20));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_secs("-1").is_err());
        assert_eq!(parse_rate("5000/s"), Ok(5000.0));
        assert_eq!(parse_rate("2.5k/s"), Ok(2500.0));
        assert!(parse_rate("fast").is_err());
        assert_eq!(
            parse_size_mix("20:80, 1KiB:15,64KiB:5"),
            Ok(SizeMix(vec![(20, 80), (1024, 15), (65536, 5)]))
        );
        assert_eq!(parse_size_mix("16MiB"), Ok(SizeMix(vec![(16 << 20, 1)])));
        assert!(parse_size_mix("20:x").is_err());
        let k = parse_kind_mix("text:50,binary:50").expect("kinds");
        assert_eq!(k.0.len(), 2);
        assert_eq!(
            parse_kind_mix("mixed").expect("mixed"),
            KindMix(vec![
                (crate::payload::Kind::Text, 1),
                (crate::payload::Kind::Binary, 1)
            ])
        );
        assert!(parse_kind_mix("json").is_err());
    }

    #[test]
    fn durations_and_latencies() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_latency("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_latency("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_latency("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_latency("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_latency("5").is_err(), "a unit is required");
        assert!(parse_latency("0ms").is_err());
        assert!(parse_latency("11s").is_err());
    }
}
