//! The arithmetic of windows, pure: given what a counter has consumed and when, may a new
//! amount be consumed now, and if not, how long until it may?

/// Amounts are sums of possibly fractional numbers; this much rounding is forgiven so that
/// ten charges of 0.1 fit a max of 1.
const EPSILON: f64 = 1e-9;

/// One consumption recorded on a counter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// When it was consumed (ms since the epoch).
    pub at_ms: u64,
    /// How much.
    pub amount: f64,
}

/// The first instant whose entries still count at `now_ms`.
///
/// Rolling: an entry counts while it lies in the trailing window `(now - window, now]`, so
/// "never more than max within any trailing window" holds. Calendar: the current aligned
/// window `[floor(now / window) * window, …)` in UTC.
pub fn counts_from(now_ms: u64, window_ms: u64, calendar: bool) -> u64 {
    let window_ms = window_ms.max(1);
    if calendar {
        now_ms - now_ms % window_ms
    } else {
        (now_ms + 1).saturating_sub(window_ms)
    }
}

/// Whether `amount` may be consumed at `now_ms` on a counter holding `entries` (any order;
/// entries that no longer count are ignored). `Err` carries the milliseconds until it may,
/// at the soonest, assuming nothing else is consumed meanwhile.
pub fn admit(
    entries: &[Entry],
    now_ms: u64,
    window_ms: u64,
    calendar: bool,
    max: f64,
    amount: f64,
) -> Result<(), u64> {
    let window_ms = window_ms.max(1);
    let from = counts_from(now_ms, window_ms, calendar);
    let mut live: Vec<Entry> = entries
        .iter()
        .copied()
        .filter(|e| e.at_ms >= from && e.at_ms <= now_ms)
        .collect();
    let used: f64 = live.iter().map(|e| e.amount).sum();
    if used + amount <= max + EPSILON {
        return Ok(());
    }
    if calendar {
        return Err(from + window_ms - now_ms);
    }
    if amount > max + EPSILON {
        // Never fits; the honest soonest is "after a whole window", when nothing counts.
        return Err(window_ms);
    }
    // Entries leave the window oldest first: an entry at t stops counting at t + window.
    live.sort_by_key(|e| e.at_ms);
    let excess = used + amount - max;
    let mut freed = 0.0;
    for e in &live {
        freed += e.amount;
        if freed + EPSILON >= excess {
            return Err(e.at_ms + window_ms - now_ms);
        }
    }
    Err(window_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(at_ms: u64, amount: f64) -> Entry {
        Entry { at_ms, amount }
    }

    #[test]
    fn rolling_window_counts_the_trailing_window_only() {
        // max 2 per 1000 ms
        let entries = [e(1000, 1.0), e(1500, 1.0)];
        assert_eq!(admit(&entries, 1600, 1000, false, 2.0, 1.0), Err(400));
        assert_eq!(admit(&entries, 1999, 1000, false, 2.0, 1.0), Err(1));
        assert_eq!(admit(&entries, 2000, 1000, false, 2.0, 1.0), Ok(()));
        assert_eq!(admit(&entries, 2000, 1000, false, 2.0, 2.0), Err(500));
    }

    #[test]
    fn calendar_window_resets_at_the_boundary() {
        let entries = [e(60_000, 1.0), e(119_999, 1.0)];
        assert_eq!(admit(&entries, 119_999, 60_000, true, 2.0, 1.0), Err(1));
        assert_eq!(admit(&entries, 120_000, 60_000, true, 2.0, 1.0), Ok(()));
    }

    #[test]
    fn fractional_amounts_sum_without_rounding_surprises() {
        let entries: Vec<Entry> = (0..9).map(|i| e(100 + i, 0.1)).collect();
        assert_eq!(admit(&entries, 200, 1000, false, 1.0, 0.1), Ok(()));
        assert!(admit(&entries, 200, 1000, false, 1.0, 0.2).is_err());
    }

    #[test]
    fn an_amount_larger_than_max_never_fits() {
        assert_eq!(admit(&[], 5, 1000, false, 10.0, 11.0), Err(1000));
    }
}
