//! Counters in the embedded store (SPEC §3.5): one row per consumed charge in
//! `counter_entries`, decided by [`window::admit`] inside one `BEGIN IMMEDIATE` transaction.
//!
//! - **Exactness.** `BEGIN IMMEDIATE` takes SQLite's write lock before anything is read, so
//!   every reservation — from this store, another `EmbeddedStore` on the same directory, or
//!   another process — sees all the ones before it. "Now" is read from the clock only once
//!   the lock is held, so a reservation never decides on a time older than an entry already
//!   written by whoever held the lock before it.
//! - **Clock going backwards** (wall clock stepped, or two processes' clocks disagreeing):
//!   an entry stamped later than "now" still counts, as if made now. That errs towards
//!   refusing, never towards handing out budget twice.
//! - **Deciding cheaply: running sums.** Adding up every entry in the window would cost
//!   O(entries) per call (a day-long spend cap hit 10 000 times a day: ~1 ms). Instead
//!   `counter_sums` keeps, per key, the sum of its entries made at or after `from_ms`. A
//!   decision moves `from_ms` up to the window's start and subtracts only the entries that
//!   left — each entry is read once on its way out — then asks [`window::admit`] about that
//!   sum (as one entry made now) plus the call's earlier charges on the key. Moving
//!   `from_ms` *back* (a longer window, a clock that went back) recomputes the sum from the
//!   entries. Every change to the entries keeps the sums right: a grant adds its amounts,
//!   a rollback subtracts what it deletes, pruning deletes only entries before `from_ms`,
//!   and the periodic sweep (below) drops every running sum, to be recomputed exactly on
//!   its key's next use — which also bounds the rounding that adding and subtracting
//!   floating-point amounts accumulates (relative 1e-16 per update, far below the 1e-9 that
//!   [`window::admit`] forgives).
//! - **Refusals are exact.** When the running sum says no, the key's entries are loaded
//!   and [`window::admit`] decides on them, so `retry_after_ms` is exact (and should the
//!   entry-by-entry sum fit after all, it stands). A refusal writes nothing.
//! - **Pruning.** Each entry carries `expires_ms`: its time plus the window it was charged
//!   under; past that it cannot count under that window in either mode (rolling or
//!   calendar). A grant deletes, for each key it charges, the entries that are older than
//!   the key's window start, older than the longest window this call charges the key with,
//!   and past their own `expires_ms` — a range at the start of the key's rows, so cheap.
//!   Once a minute (clock time, per store) a grant also sweeps expired entries of every
//!   key, so keys never charged again (a closed session's counters) do not stay forever.
//!   The table thus holds what can still count plus at most about a minute's worth of what
//!   expired.
//!
//!   Windows of one key can differ (the same counter name with two windows is a validation
//!   error, but a policy reload may change a window). A key later charged with a *shorter*
//!   window keeps the entries made under its longer one until they expire (the
//!   `expires_ms` condition), so going back to the longer window loses nothing. A key later
//!   charged with a *longer* window counts what is left of its past consumption: entries
//!   made within the old window; older ones are already gone. That is the price of a table
//!   that does not grow with the longest window ever used.
//! - **Rollback** deletes the reservation's rows under each of its keys: a search within
//!   the key's rows, no extra index to maintain on every write for this rare operation.

use super::EmbeddedStore;
use crate::counters::window::{self, Entry};
use crate::{Charge, CounterStore, Reservation, Reserve, StoreError, StoreFuture};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::sync::atomic::Ordering;

/// How often (clock time) a grant also deletes expired entries of every key.
const SWEEP_EVERY_MS: u64 = 60_000;

impl CounterStore for EmbeddedStore {
    /// Runs the whole transaction when first polled: SQLite work is synchronous and short,
    /// and the connection's lock is held only for the transaction.
    fn reserve<'a>(&'a self, charges: &'a [Charge]) -> StoreFuture<'a, Reserve> {
        Box::pin(async move { self.reserve_now(charges) })
    }

    fn rollback<'a>(&'a self, reservation: &'a Reservation) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.rollback_now(reservation) })
    }
}

impl EmbeddedStore {
    fn reserve_now(&self, charges: &[Charge]) -> Result<Reserve, StoreError> {
        const WHAT: &str = "reserve counters";
        if let Some(problem) = charges.iter().find_map(invalid) {
            return Err(self.error(WHAT, problem));
        }
        let id = reservation_id();
        let keys: Vec<String> = charges.iter().map(|c| c.key.clone()).collect();
        if charges.is_empty() {
            return Ok(Reserve::Granted(Reservation { id, keys }));
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(WHAT, e))?;
        // Read only now that the write lock is held (see the module documentation).
        let now_ms = self.clock.now_ms();
        let mut sums = Vec::with_capacity(charges.len());
        if let Some((charge, retry_after_ms)) =
            first_exceeded(&tx, charges, now_ms, &mut sums).map_err(|e| self.error(WHAT, e))?
        {
            // Dropping the transaction rolls it back; nothing was written anyway.
            drop(tx);
            return Ok(Reserve::Exceeded {
                charge,
                retry_after_ms,
            });
        }
        record(&tx, charges, now_ms, &id, &mut sums).map_err(|e| self.error(WHAT, e))?;
        if now_ms >= self.next_counter_sweep_ms.load(Ordering::Relaxed) {
            sweep(&tx, now_ms).map_err(|e| self.error(WHAT, e))?;
            self.next_counter_sweep_ms
                .store(now_ms.saturating_add(SWEEP_EVERY_MS), Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.error(WHAT, e))?;
        Ok(Reserve::Granted(Reservation { id, keys }))
    }

    fn rollback_now(&self, reservation: &Reservation) -> Result<(), StoreError> {
        const WHAT: &str = "roll back counter reservation";
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.error(WHAT, e))?;
        for (index, key) in reservation.keys.iter().enumerate() {
            if !reservation.keys[..index].contains(key) {
                forget(&tx, key, &reservation.id).map_err(|e| self.error(WHAT, e))?;
            }
        }
        tx.commit().map_err(|e| self.error(WHAT, e))
    }

    fn error(&self, what: &str, error: impl std::fmt::Display) -> StoreError {
        StoreError::new(&format!("{} ({what})", self.path.display()), error)
    }
}

/// Why a charge cannot be stored, if it cannot: amounts must be finite and not negative (a
/// negative one would hand budget out), and `max` must be a number.
fn invalid(charge: &Charge) -> Option<String> {
    if !charge.amount.is_finite() || charge.amount < 0.0 {
        Some(format!(
            "counter {:?}: amount {} is not a finite, non-negative number",
            charge.key, charge.amount
        ))
    } else if charge.max.is_nan() {
        Some(format!("counter {:?}: max is not a number", charge.key))
    } else {
        None
    }
}

/// A fresh, unguessable reservation id (128 random bits, hex).
fn reservation_id() -> String {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds as SQLite stores them (saturating; real times are far below `i64::MAX`).
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A key's running sum as this call sees it: what its stored entries made at or after
/// `from_ms` add up to (this call's own charges not included until [`record`]).
struct RunningSum<'a> {
    key: &'a str,
    from_ms: u64,
    total: f64,
}

/// What the stored entries of `key` made at or after `from_ms` add up to, from the running
/// sum (this call's copy if it has one, else the stored one) when it can, else from the
/// entries; `sums` is left holding the answer for `from_ms`.
fn running_sum<'a>(
    conn: &Connection,
    sums: &mut Vec<RunningSum<'a>>,
    key: &'a str,
    from_ms: u64,
) -> rusqlite::Result<f64> {
    let slot = sums.iter().position(|s| s.key == key);
    let known = match slot {
        Some(i) => Some((sums[i].from_ms, sums[i].total)),
        None => conn
            .prepare_cached("SELECT from_ms, total FROM counter_sums WHERE key = ?1")?
            .query_row([key], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
            })
            .optional()?,
    };
    let total = match known {
        Some((known_from, total)) if known_from == from_ms => total,
        // The window moved on: subtract what left it.
        Some((known_from, total)) if known_from < from_ms => {
            total - sum_between(conn, key, known_from, from_ms - 1)?
        }
        // No sum yet, or the window start moved back: add up the entries.
        _ => sum_between(conn, key, from_ms, u64::MAX)?,
    };
    match slot {
        Some(i) => {
            sums[i].from_ms = from_ms;
            sums[i].total = total;
        }
        None => sums.push(RunningSum {
            key,
            from_ms,
            total,
        }),
    }
    Ok(total)
}

/// What the entries of `key` made between `from_ms` and `to_ms` (inclusive) add up to.
fn sum_between(conn: &Connection, key: &str, from_ms: u64, to_ms: u64) -> rusqlite::Result<f64> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(amount), 0.0) FROM counter_entries
         WHERE key = ?1 AND at_ms BETWEEN ?2 AND ?3",
    )?
    .query_row(params![key, sql_ms(from_ms), sql_ms(to_ms)], |r| r.get(0))
}

/// The first charge that does not fit at `now_ms`, with its `retry_after_ms`. A charge
/// sees what is stored plus the earlier charges of this same call on the same key.
fn first_exceeded<'a>(
    conn: &Connection,
    charges: &'a [Charge],
    now_ms: u64,
    sums: &mut Vec<RunningSum<'a>>,
) -> rusqlite::Result<Option<(usize, u64)>> {
    for (index, charge) in charges.iter().enumerate() {
        let from_ms = window::counts_from(now_ms, charge.window_ms, charge.calendar);
        let pending = charges[..index]
            .iter()
            .filter(|earlier| earlier.key == charge.key)
            .map(|earlier| Entry {
                at_ms: now_ms,
                amount: earlier.amount,
            });
        let stored = running_sum(conn, sums, &charge.key, from_ms)?;
        // The sum is all the yes/no needs: present it as one entry made now.
        let mut entries = vec![Entry {
            at_ms: now_ms,
            amount: stored,
        }];
        entries.extend(pending.clone());
        let admit = |entries: &[Entry]| {
            window::admit(
                entries,
                now_ms,
                charge.window_ms,
                charge.calendar,
                charge.max,
                charge.amount,
            )
        };
        if admit(&entries).is_ok() {
            continue;
        }
        // Refused: the real entries decide, and say when it would fit again.
        let mut statement = conn.prepare_cached(
            "SELECT at_ms, amount FROM counter_entries WHERE key = ?1 AND at_ms >= ?2",
        )?;
        let rows = statement.query_map(params![charge.key, sql_ms(from_ms)], |r| {
            let at_ms: i64 = r.get(0)?;
            Ok(Entry {
                // An entry from "the future" (a clock that went back) counts as made now.
                at_ms: (at_ms.max(0) as u64).min(now_ms),
                amount: r.get(1)?,
            })
        })?;
        let mut entries = rows.collect::<rusqlite::Result<Vec<Entry>>>()?;
        let exact: f64 = entries.iter().map(|e| e.amount).sum();
        entries.extend(pending);
        if let Err(retry_after_ms) = admit(&entries) {
            return Ok(Some((index, retry_after_ms)));
        }
        // The running sum was off by rounding and the entry-by-entry sum fits: it stands,
        // and the exact sum carries on.
        if let Some(sum) = sums.iter_mut().find(|s| s.key == charge.key) {
            sum.total = exact;
        }
    }
    Ok(None)
}

/// Writes one entry per charge, stores the running sums, and deletes the charged keys'
/// entries that can no longer count (see the module documentation).
fn record(
    conn: &Connection,
    charges: &[Charge],
    now_ms: u64,
    id: &str,
    sums: &mut [RunningSum<'_>],
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO counter_entries (key, at_ms, reservation, charge, amount, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (index, charge) in charges.iter().enumerate() {
        let expires_ms = now_ms.saturating_add(charge.window_ms.max(1));
        insert.execute(params![
            charge.key,
            sql_ms(now_ms),
            id,
            index as i64,
            charge.amount,
            sql_ms(expires_ms)
        ])?;
        // Made now, so at or after the window start (never later than now): it counts.
        if let Some(sum) = sums.iter_mut().find(|s| s.key == charge.key) {
            sum.total += charge.amount;
        }
    }
    let mut store = conn.prepare_cached(
        "INSERT INTO counter_sums (key, from_ms, total) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET from_ms = excluded.from_ms, total = excluded.total",
    )?;
    let mut prune = conn.prepare_cached(
        "DELETE FROM counter_entries WHERE key = ?1 AND at_ms <= ?2 AND expires_ms <= ?3",
    )?;
    for sum in sums.iter() {
        store.execute(params![sum.key, sql_ms(sum.from_ms), sum.total])?;
        let longest = charges
            .iter()
            .filter(|c| c.key == sum.key)
            .map(|c| c.window_ms.max(1))
            .max()
            .unwrap_or(1);
        // Only entries the running sum no longer includes (before `from_ms`).
        let before = now_ms
            .checked_sub(longest)
            .zip(sum.from_ms.checked_sub(1))
            .map(|(a, b)| a.min(b));
        if let Some(before) = before {
            prune.execute(params![sum.key, sql_ms(before), sql_ms(now_ms)])?;
        }
    }
    Ok(())
}

/// Deletes every expired entry of every key, and every running sum (each is recomputed
/// from the entries on its key's next use).
fn sweep(conn: &Connection, now_ms: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM counter_entries WHERE expires_ms <= ?1")?
        .execute([sql_ms(now_ms)])?;
    conn.prepare_cached("DELETE FROM counter_sums")?
        .execute([])?;
    Ok(())
}

/// Deletes reservation `id`'s entries under `key`, taking them out of the key's running
/// sum where it includes them.
fn forget(conn: &Connection, key: &str, id: &str) -> rusqlite::Result<()> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM counter_entries WHERE key = ?1 AND reservation = ?2
             RETURNING at_ms, amount",
        )?
        .query_map([key, id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut unsum = conn.prepare_cached(
        "UPDATE counter_sums SET total = total - ?2 WHERE key = ?1 AND from_ms <= ?3",
    )?;
    for (at_ms, amount) in deleted {
        unsum.execute(params![key, amount, at_ms])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clock;
    use proptest::prelude::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn block_on<T>(future: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let mut future = future;
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "toolgate-store-counters-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn charge(key: &str, window_ms: u64, max: f64, amount: f64) -> Charge {
        Charge::rolling(key, window_ms, max, amount)
    }

    fn rows(store: &EmbeddedStore) -> i64 {
        store
            .with("count", |c| {
                c.query_row("SELECT COUNT(*) FROM counter_entries", [], |r| r.get(0))
            })
            .unwrap()
    }

    #[test]
    fn a_grant_prunes_its_keys_and_a_periodic_sweep_prunes_every_key() {
        let dir = scratch("prune");
        let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
        let store = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        for key in ["a", "b", "c"] {
            let granted = block_on(store.reserve(&[charge(key, 1_000, 10.0, 1.0)])).unwrap();
            assert!(matches!(granted, Reserve::Granted(_)));
        }
        // A day-long window on another key: its entry must outlive the short ones.
        block_on(store.reserve(&[charge("long", 86_400_000, 10.0, 1.0)])).unwrap();
        assert_eq!(rows(&store), 4);
        // A second later "a" is charged again: its expired entry goes, the others wait.
        clock.0.fetch_add(1_000, Ordering::SeqCst);
        block_on(store.reserve(&[charge("a", 1_000, 10.0, 1.0)])).unwrap();
        assert_eq!(rows(&store), 4);
        // A refusal writes nothing, prunes nothing.
        let refused = block_on(store.reserve(&[charge("a", 1_000, 1.0, 1.0)])).unwrap();
        assert!(matches!(refused, Reserve::Exceeded { .. }));
        assert_eq!(rows(&store), 4);
        // A minute on, the first grant sweeps every key: only "long" and the new "d" stay.
        clock.0.fetch_add(SWEEP_EVERY_MS, Ordering::SeqCst);
        block_on(store.reserve(&[charge("d", 1_000, 10.0, 1.0)])).unwrap();
        assert_eq!(rows(&store), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_charged_with_a_shorter_window_keeps_entries_its_longer_window_needs() {
        let dir = scratch("shrink");
        let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
        let store = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        block_on(store.reserve(&[charge("k", 60_000, 1.0, 1.0)])).unwrap();
        clock.0.fetch_add(5_000, Ordering::SeqCst);
        // Reloaded with a 1 s window: the minute-old entry does not count.
        let granted = block_on(store.reserve(&[charge("k", 1_000, 1.0, 1.0)])).unwrap();
        assert!(matches!(granted, Reserve::Granted(_)));
        // Two seconds on, a grant on "k" prunes the expired 1 s entry, not the minute one.
        clock.0.fetch_add(2_000, Ordering::SeqCst);
        let granted = block_on(store.reserve(&[charge("k", 1_000, 1.0, 1.0)])).unwrap();
        assert!(matches!(granted, Reserve::Granted(_)));
        assert_eq!(rows(&store), 2);
        // Back to the minute window: the entry made under it still counts (the pruned one
        // does not: see the module documentation on lengthened windows).
        let refused = block_on(store.reserve(&[charge("k", 60_000, 2.0, 1.0)])).unwrap();
        assert_eq!(
            refused,
            Reserve::Exceeded {
                charge: 0,
                retry_after_ms: 53_000
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_from_the_future_counts_as_made_now() {
        let dir = scratch("backwards");
        let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
        let store = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        block_on(store.reserve(&[charge("k", 1_000, 1.0, 1.0)])).unwrap();
        clock.0.store(990_000, Ordering::SeqCst);
        let refused = block_on(store.reserve(&[charge("k", 1_000, 1.0, 1.0)])).unwrap();
        assert_eq!(
            refused,
            Reserve::Exceeded {
                charge: 0,
                retry_after_ms: 1_000
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_amounts_are_errors_naming_the_store_and_the_counter() {
        let dir = scratch("bad");
        let store = EmbeddedStore::open(&dir).unwrap();
        for amount in [f64::NAN, -1.0, f64::INFINITY] {
            let err = block_on(store.reserve(&[charge("spend", 1_000, 1.0, amount)])).unwrap_err();
            assert!(err.message.contains("toolgate.db"), "{err}");
            assert!(err.message.contains("reserve counters"), "{err}");
            assert!(err.message.contains("\"spend\""), "{err}");
        }
        assert_eq!(rows(&store), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_counter_migration_applies_to_a_version_one_database() {
        let dir = scratch("upgrade");
        drop(EmbeddedStore::open(&dir).unwrap());
        let conn = Connection::open(dir.join("toolgate.db")).unwrap();
        conn.execute_batch("DROP TABLE counter_entries; DROP TABLE counter_sums; UPDATE schema_version SET version = 1;")
            .unwrap();
        drop(conn);
        let store = EmbeddedStore::open(&dir).unwrap();
        let granted = block_on(store.reserve(&[charge("k", 1_000, 1.0, 1.0)])).unwrap();
        assert!(matches!(granted, Reserve::Granted(_)));
        let version: i64 = store
            .with("version", |c| {
                c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(version, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every stored running sum against its entries: `(key, running, exact)` where they
    /// differ by more than rounding.
    fn wrong_sums(store: &EmbeddedStore) -> Vec<(String, f64, f64)> {
        store
            .with("check sums", |c| {
                let mut statement = c.prepare(
                    "SELECT s.key, s.total, (SELECT COALESCE(SUM(e.amount), 0.0)
                       FROM counter_entries e WHERE e.key = s.key AND e.at_ms >= s.from_ms)
                     FROM counter_sums s",
                )?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<rusqlite::Result<Vec<(String, f64, f64)>>>()
            })
            .unwrap()
            .into_iter()
            .filter(|(_, running, exact)| (running - exact).abs() > 1e-9)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// The running sums stay equal to their entries through grants, refusals,
        /// rollbacks, windows changing, the clock jumping ahead (sweeps) and going back.
        /// (A sum that is too high would not show in decisions — a refusal is re-checked
        /// on the entries — only in speed; this catches it.)
        #[test]
        fn running_sums_always_equal_their_entries(
            ops in prop::collection::vec(
                (
                    prop_oneof![8 => 0..2_000i64, 1 => -3_000..0i64, 1 => 0..70_000i64],
                    0..3usize,
                    prop_oneof![Just(500u64), Just(2_000), Just(5_000)],
                    any::<bool>(),
                    1..=8u32,
                    0..6usize,
                ),
                1..80,
            )
        ) {
            let dir = scratch("sums");
            let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
            let store = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
            let mut granted: Vec<Reservation> = Vec::new();
            for (advance, key, window_ms, calendar, quarters, rollback) in ops {
                let now = clock.0.load(Ordering::SeqCst) as i64 + advance;
                clock.0.store(now.max(0) as u64, Ordering::SeqCst);
                if rollback == 0 && !granted.is_empty() {
                    let pick = granted.len() / 2;
                    block_on(store.rollback(&granted[pick])).unwrap();
                } else {
                    let one = Charge {
                        calendar,
                        ..charge(&format!("k{key}"), window_ms, 4.0, f64::from(quarters) / 4.0)
                    };
                    // Sometimes the same key twice, under two windows.
                    let two = Charge { window_ms: 1_000, ..one.clone() };
                    let charges = if rollback == 1 { vec![one, two] } else { vec![one] };
                    if let Reserve::Granted(r) = block_on(store.reserve(&charges)).unwrap() {
                        granted.push(r);
                    }
                }
                prop_assert_eq!(wrong_sums(&store), vec![]);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
