//! The one reader of stored times: RFC 3339 text to µs since the epoch.
//!
//! Every reader of log records (the projection's columns, the dedup index's `received_at`)
//! takes times through [`parse_time_micros`]. Validation is stricter and separate:
//! [`crate::parse_rfc3339`] decides what an event may be sent with; what it accepts is
//! written back in the canonical form, which the fast path here reads without chrono.

/// Parses RFC 3339 into µs since the epoch. Fast path for `YYYY-MM-DDTHH:MM:SS[.f]Z` (the
/// form shiplog writes); any other form (an offset) goes through chrono.
pub fn parse_time_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        && b[13] == b':'
        && b[16] == b':'
        && (b[b.len() - 1] == b'Z' || b[b.len() - 1] == b'z')
    {
        let d = |i: usize| -> Option<i64> {
            let c = b[i];
            c.is_ascii_digit().then(|| (c - b'0') as i64)
        };
        let n2 = |i: usize| Some(d(i)? * 10 + d(i + 1)?);
        let year = n2(0)? * 100 + n2(2)?;
        let (month, day, hour, min, sec) = (n2(5)?, n2(8)?, n2(11)?, n2(14)?, n2(17)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let mut micros = 0i64;
        let rest = &b[19..b.len() - 1];
        if !rest.is_empty() {
            if rest[0] != b'.' || rest.len() < 2 {
                return slow_time(s);
            }
            let mut scale = 100_000i64;
            for &c in &rest[1..] {
                if !c.is_ascii_digit() {
                    return slow_time(s);
                }
                micros += (c - b'0') as i64 * scale;
                scale /= 10;
            }
        }
        let days = days_from_civil(year, month, day);
        return Some(((days * 24 + hour) * 60 + min) * 60_000_000 + sec * 1_000_000 + micros);
    }
    slow_time(s)
}

fn slow_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_time_matches_chrono() {
        for s in [
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.123456Z",
            "2026-11-21T10:00:00.1Z",
            "2024-02-29T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "2026-11-21T10:00:00+02:00",
            "2026-11-21T10:00:00.5-05:30",
        ] {
            let want = chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_micros();
            assert_eq!(parse_time_micros(s), Some(want), "{s}");
        }
        assert_eq!(parse_time_micros("yesterday"), None);
    }
}
