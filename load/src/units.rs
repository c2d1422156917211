//! Parsing of command-line quantities: sizes (20, 1KiB, 16MiB) and durations in seconds.

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
    }
}
