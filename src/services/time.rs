//! Wall-clock times as people and APIs write them: RFC 3339 UTC timestamps and short
//! durations (`30d`, `12h`). No time zone database: everything is UTC.

use std::time::Duration;

/// Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-12-02T19:00:00Z` for Unix milliseconds `ms` (UTC, second precision).
pub fn fmt_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// [`fmt_utc_ms`] for a signed time (times before 1970 print as the epoch).
pub fn fmt_ms(ms: i64) -> String {
    fmt_utc_ms(u64::try_from(ms).unwrap_or(0))
}

/// Parses an RFC 3339 UTC timestamp (`2026-12-02T19:00:00Z`, fractional seconds and a
/// numeric offset accepted) into Unix milliseconds. A bare date means its midnight UTC.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.splitn(3, '-');
    let (y, m, d) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    let Some(time) = time else {
        return Some(ms);
    };
    let (clock, offset_min) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (c, sign * (num(oh)? * 60 + num(om)?))
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    let mut tp = hms.splitn(3, ':');
    let (h, mi, sec) = (num(tp.next()?)?, num(tp.next()?)?, num(tp.next()?)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    ms += (h * 3600 + mi * 60 + sec) * 1000;
    if let Some(f) = frac {
        let digits: String = f.chars().take(3).collect();
        let n = num(&digits)?;
        ms += n * 10_i64.pow(3 - digits.len() as u32);
        num(f)?;
    }
    Some(ms - offset_min * 60_000)
}

/// Parses a duration written as a number and a unit: `90s`, `15m`, `12h`, `30d`, `2w`
/// (several may follow each other: `1d12h`).
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; write it like 30d, 12h, 15m or 90s".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {c:?}; use s, m, h, d or w")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "{s:?}: the number needs a unit (s, m, h, d or w), as in {digits}d"
        ));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(fmt_utc_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_utc_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_utc_ms(1_796_238_000_999), "2026-12-02T19:00:00Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [0i64, 951_782_400_000, 1_796_238_000_000, 4_102_444_799_000] {
            assert_eq!(parse_rfc3339_ms(&fmt_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T19:00:00.250Z"),
            Some(1_796_238_000_250)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T21:00:00+02:00"),
            Some(1_796_238_000_000)
        );
        assert_eq!(parse_rfc3339_ms("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-12-02T25:00:00Z",
            "x",
            "2026-12-02T19:00",
            "-1-1-1",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "30", "d", "3x", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
