//! Human-written durations (`"500ms"`, `"10s"`, `"15m"`, `"1h"`, `"2d"`, or bare seconds `"60"`),
//! shared by policy documents and the gateway configuration so both read them identically.

use std::time::Duration;

/// Parses a duration: a whole number followed by `ms`, `s`, `m`, `h` or `d`, or a bare whole
/// number of seconds. Zero is accepted here; callers that need a positive duration check it.
///
/// # Errors
///
/// A sentence naming the bad input and the accepted forms.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration \"{s}\"; expected a whole number followed by ms, s, m, h or d (e.g. \"15m\")")
    };
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let number: u64 = s[..digits_end].parse().map_err(|_| bad())?;
    let unit_ms: u64 = match &s[digits_end..] {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{s}\" is too large"))
}

/// Milliseconds of a duration as `u64`, saturating (durations here come from [`parse`], which
/// already bounds them to `u64` milliseconds).
pub(crate) fn as_millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases = [
            ("500ms", 500),
            ("10s", 10_000),
            ("15m", 900_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("60", 60_000),
            ("0s", 0),
            ("0", 0),
        ];
        for (input, ms) in cases {
            assert_eq!(parse(input), Ok(Duration::from_millis(ms)), "{input}");
        }
    }

    #[test]
    fn rejected_forms() {
        for input in [
            "", "s", "ms", "1.5h", "-1s", " 1s", "1s ", "1 s", "1w", "1H", "1h30m", "abc", "+5",
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(&format!("\"{input}\"")), "{input}: {err}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(parse("18446744073709551615d").is_err());
        assert!(parse("99999999999999999999999s").is_err());
    }
}
