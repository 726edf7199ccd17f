//! Wall-clock helpers without a date library: RFC 3339 parsing and formatting, Unix time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds: fixed width, so texts sort as times do
/// (the audit log's filters compare them as text).
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let (days, ms_of_day) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    let (year, month, day) = civil_from_days(days);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

/// The civil date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Normalizes a time bound (`--since`/`--until`, the admin API's `since`/`until`) to the audit log's fixed time form
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`), which the store compares as text.
///
/// RFC 3339 is tried first: a bare number is a duration in seconds to
/// `toolgate_policy::duration::parse`, and no RFC 3339 text is one.
pub fn parse_time_bound(text: &str) -> Result<String, String> {
    if let Some(ms) = parse_rfc3339_ms(text) {
        return Ok(format_rfc3339_ms(ms));
    }
    if let Ok(ago) = toolgate_policy::duration::parse(text) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(format_rfc3339_ms(now_unix_ms().saturating_sub(ago)));
    }
    Err(format!(
        "{text:?} is neither an RFC 3339 time (e.g. 2026-01-02T15:04:05Z) nor a duration \
         meaning that long ago (e.g. 7d, 30m, 90s)"
    ))
}

/// Parses RFC 3339 to Unix milliseconds, keeping the fraction that `parse_rfc3339` (whole
/// seconds) drops.
///
/// A finer fraction is rounded *up* to the next millisecond. Records carry whole
/// milliseconds, so for both bounds that is exact: with `since = .1234`, a record at `.123`
/// is earlier and must be excluded (`ts >= .124` does), and with `until = .1234` a record
/// at `.123` is earlier and must be included (`ts < .124` does) while `.124` is not.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let seconds = parse_rfc3339(text)?;
    // parse_rfc3339 accepted it, so bytes 0..19 are `YYYY-MM-DDTHH:MM:SS` (ASCII) and any
    // fraction follows directly.
    let digits: Vec<i64> = text
        .get(19..)
        .and_then(|rest| rest.strip_prefix('.'))
        .map(|frac| {
            frac.bytes()
                .take_while(u8::is_ascii_digit)
                .map(|d| i64::from(d - b'0'))
                .collect()
        })
        .unwrap_or_default();
    let mut ms = 0;
    for i in 0..3 {
        ms = ms * 10 + digits.get(i).copied().unwrap_or(0);
    }
    if digits.iter().skip(3).any(|&d| d != 0) {
        ms += 1;
    }
    seconds.checked_mul(1000)?.checked_add(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_milliseconds_and_round_trips() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(951_825_600_123),
            "2000-02-29T12:00:00.123Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        for ms in [0, 1_798_761_600_000, 4_102_444_799_999, 1_795_647_664_424] {
            let text = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339(&text), Some(ms.div_euclid(1000)), "{text}");
        }
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2027-01-01T00:00:00Z"), Some(1_798_761_600));
        assert_eq!(
            parse_rfc3339("2027-01-01T01:00:00.5+01:00"),
            Some(1_798_761_600)
        );
        assert_eq!(parse_rfc3339("2000-02-29T12:00:00Z"), Some(951_825_600));
        for bad in [
            "2027-01-01",
            "2027-13-01T00:00:00Z",
            "2027-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
