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
//! - **Deciding without reading: the entry cache.** Reading a key's entries back costs
//!   O(entries) per call (a day-long spend cap hit 10 000 times a day: ~1 ms), and keeping a
//!   running sum in a table costs a second page written per commit (~9 µs here, a third of
//!   a reservation). Instead the store keeps, per key it has charged, the key's entries made
//!   at or after `complete_from_ms` in memory, oldest first, with their sum. The cache is
//!   right exactly as long as no *other* connection has written the database, which SQLite
//!   says cheaply: `PRAGMA data_version` changes then. Each transaction reads it once the
//!   lock is held and, if it moved, forgets the whole cache ([`begin`]); a key is then read
//!   back once, on its next use. So a granted reservation writes one row per charge and nothing else,
//!   and two processes taking turns on one key pay a window's re-read per turn — the price
//!   of exactness across processes without a server.
//!   The cache changes only after the transaction that justifies it has committed, and any
//!   error forgets it, so it never runs ahead of the database.
//! - **Refusals are exact.** When the sum says no, [`window::admit`] decides on the cached
//!   entries themselves, so `retry_after_ms` is exact (and should the entry-by-entry sum fit
//!   after all — adding and subtracting floating-point amounts rounds — it stands). A
//!   refusal writes nothing.
//! - **Pruning.** Each entry carries `expires_ms`: its time plus the window it was charged
//!   under; past that it cannot count under that window in either mode (rolling or
//!   calendar). A call drops from the cache the entries of its keys made before the
//!   earliest window start it needs. In the database, at most once a second per key
//!   ([`PRUNE_EVERY_MS`]), a grant deletes the key's entries that are older than the key's
//!   window start, older than the longest window this call charges the key with, and past
//!   their own `expires_ms` — a range at the start of the key's rows, so cheap. Once a
//!   minute (clock time, per store) a grant also sweeps expired entries of every key, in the
//!   database and in the cache (which also recomputes each cached sum, bounding rounding),
//!   so keys never charged again (a closed session's counters) do not stay forever.
//!
//!   Windows of one key can differ (the same counter name with two windows is a validation
//!   error, but a policy reload may change a window). A key later charged with a *shorter*
//!   window keeps the entries made under its longer one until they expire (the
//!   `expires_ms` condition), so going back to the longer window loses nothing (the cache
//!   reads them back). A key later charged with a *longer* window counts what is left of its
//!   past consumption: entries made within the old window; older ones are already gone.
//!   That is the price of a table that does not grow with the longest window ever used.
//! - **Rollback** deletes the reservation's rows under each of its keys: a search within
//!   the key's rows, no extra index to maintain on every write for this rare operation.

use super::{begin, EmbeddedStore, Memory};
use crate::counters::window::{self, Entry};
use crate::{Charge, CounterStore, Reservation, Reserve, StoreError, StoreFuture};
use rand::RngCore;
use rusqlite::{params, Connection};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How often (clock time) a grant also deletes expired entries of every key.
pub(super) const SWEEP_EVERY_MS: u64 = 60_000;

/// How often (clock time), at most, a grant deletes a key's rows that can no longer count:
/// often enough that the table holds little more than what counts, rarely enough that a
/// busy key does not pay a delete per call.
const PRUNE_EVERY_MS: u64 = 1_000;

/// What this store knows of the stored counter entries, so that deciding needs no reads.
#[derive(Debug, Default)]
pub(super) struct CounterCache {
    /// Per counter key.
    pub(super) keys: HashMap<String, CachedKey>,
    /// When (clock time) to next delete expired entries of every key.
    pub(super) next_sweep_ms: u64,
    /// Owned counters (`owned.rs`): when a flush next deletes expired rows of the table.
    pub(super) next_table_sweep_ms: u64,
}

/// One key's stored entries, as far back as the calls on it have needed.
#[derive(Debug)]
pub(super) struct CachedKey {
    /// Every stored entry of the key made at or after this instant is in `entries`.
    pub(super) complete_from_ms: u64,
    /// Those entries, oldest first.
    entries: VecDeque<CachedEntry>,
    /// Their amounts added up (kept as entries come and go; recomputed on each sweep).
    total: f64,
    /// When the key's rows in the database were last pruned.
    pruned_at_ms: u64,
    /// Whether entries have left the cache since then (so the database may hold rows to
    /// prune).
    unpruned: bool,
}

/// One stored entry, as the cache holds it.
#[derive(Debug, Clone)]
pub(super) struct CachedEntry {
    pub(super) at_ms: u64,
    pub(super) amount: f64,
    pub(super) expires_ms: u64,
    /// The reservation that made it (for rollback).
    pub(super) reservation: Arc<str>,
}

impl CachedKey {
    /// The sum of the entries made at or after `from_ms` (which must be at or after
    /// `complete_from_ms`).
    fn sum_from(&self, from_ms: u64) -> f64 {
        if from_ms <= self.complete_from_ms {
            return self.total;
        }
        let first = self.entries.partition_point(|e| e.at_ms < from_ms);
        self.entries.range(first..).map(|e| e.amount).sum()
    }

    /// The entries made at or after `from_ms`, as [`window::admit`] takes them; one from
    /// "the future" (a clock that went back) counts as made now.
    fn window_entries(&self, from_ms: u64, now_ms: u64) -> Vec<Entry> {
        let first = self.entries.partition_point(|e| e.at_ms < from_ms);
        self.entries
            .range(first..)
            .map(|e| Entry {
                at_ms: e.at_ms.min(now_ms),
                amount: e.amount,
            })
            .collect()
    }

    /// Drops the entries made before `from_ms`, which must be at or after `complete_from_ms`.
    pub(super) fn advance_to(&mut self, from_ms: u64) {
        while self.entries.front().is_some_and(|e| e.at_ms < from_ms) {
            let gone = self.entries.pop_front().expect("front exists");
            self.total -= gone.amount;
            self.unpruned = true;
        }
        self.complete_from_ms = from_ms;
        if self.entries.is_empty() {
            // Nothing left to round: start from an exact zero.
            self.total = 0.0;
        }
    }

    /// Adds an entry just stored, keeping the entries in time order.
    pub(super) fn add(&mut self, entry: CachedEntry) {
        self.total += entry.amount;
        let at = self.entries.partition_point(|e| e.at_ms <= entry.at_ms);
        self.entries.insert(at, entry);
    }
}

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
    pub(super) fn reserve_now(&self, charges: &[Charge]) -> Result<Reserve, StoreError> {
        const WHAT: &str = "reserve counters";
        if let Some(problem) = charges.iter().find_map(invalid) {
            return Err(self.error(WHAT, problem));
        }
        let id = reservation_id();
        let keys: Vec<String> = charges.iter().map(|c| c.key.clone()).collect();
        if charges.is_empty() {
            return Ok(Reserve::Granted(Reservation { id, keys }));
        }
        if self.owns_counters() {
            // Journaled, or synchronously with the queue (see `owned.rs`).
            return self.reserve_and_append(charges, &[]);
        }
        let outcome = self.write(WHAT, |conn, memory| {
            reserve_in(conn, memory, &*self.clock, charges, &id)
        })?;
        match outcome {
            None => Ok(Reserve::Granted(Reservation { id, keys })),
            Some((charge, retry_after_ms)) => Ok(Reserve::Exceeded {
                charge,
                retry_after_ms,
            }),
        }
    }

    pub(super) fn rollback_now(&self, reservation: &Reservation) -> Result<(), StoreError> {
        const WHAT: &str = "roll back counter reservation";
        if !self.owns_counters() {
            return self.write(WHAT, |conn, memory| {
                rollback_in(conn, memory, reservation, &[])
            });
        }
        if self.rollback_journaled(reservation) {
            return Ok(());
        }
        // Synchronously, with the queue: a reservation still queued must be in the table
        // before its rows are deleted, or the flush would bring them back.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        self.with_queue_locked(&mut conn, &mut memory, WHAT, |conn, memory, batch| {
            rollback_in(conn, memory, reservation, batch)
        })
    }

    /// Whether this store owns the data directory's counters (`owned.rs`).
    fn owns_counters(&self) -> bool {
        self.counters_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// The reservation itself: `None` when granted (and committed), else the first charge that
/// does not fit with its `retry_after_ms`.
fn reserve_in(
    conn: &mut Connection,
    memory: &mut Memory,
    clock: &dyn crate::Clock,
    charges: &[Charge],
    id: &str,
) -> rusqlite::Result<Option<(usize, u64)>> {
    let tx = begin(conn, memory)?;
    let staged = match reserve_within(&tx, memory, clock, charges, id)? {
        Ok(staged) => staged,
        // Dropping the transaction rolls it back; nothing was written anyway.
        Err(refused) => return Ok(Some(refused)),
    };
    tx.commit()?;
    staged.committed(memory, charges, id);
    Ok(None)
}

/// A granted reservation written in a transaction not yet committed: what the cache must
/// learn once it is.
#[must_use = "the cache must learn of a committed reservation"]
pub(super) struct Staged {
    now_ms: u64,
    /// The transaction also swept every key's expired entries.
    swept: bool,
}

/// Decides `charges` and, if they fit, writes them in `tx` (which must come from
/// [`begin`]): `Ok(Staged)` to pass to [`Staged::committed`] once `tx` commits, or
/// `Err((charge, retry_after_ms))` for the first charge that does not fit (nothing
/// written).
pub(super) fn reserve_within(
    tx: &Connection,
    memory: &mut Memory,
    clock: &dyn crate::Clock,
    charges: &[Charge],
    id: &str,
) -> rusqlite::Result<Result<Staged, (usize, u64)>> {
    let cache = &mut memory.counters;
    // Read only now that the write lock is held (see the module documentation).
    let now_ms = clock.now_ms();
    // Each key of the call, cached back to the earliest window start the call needs on it.
    for (index, charge) in charges.iter().enumerate() {
        if charges[..index].iter().any(|c| c.key == charge.key) {
            continue;
        }
        load(
            tx,
            cache,
            &charge.key,
            earliest_start(charges, &charge.key, now_ms),
        )?;
    }
    if let Some(refused) = first_exceeded(cache, charges, now_ms) {
        return Ok(Err(refused));
    }
    record(tx, cache, charges, now_ms, id)?;
    let swept = now_ms >= cache.next_sweep_ms;
    if swept {
        tx.prepare_cached("DELETE FROM counter_entries WHERE expires_ms <= ?1")?
            .execute([sql_ms(now_ms)])?;
    }
    Ok(Ok(Staged { now_ms, swept }))
}

impl Staged {
    /// Teaches the cache what the committed transaction wrote.
    pub(super) fn committed(self, memory: &mut Memory, charges: &[Charge], id: &str) {
        let cache = &mut memory.counters;
        remember(cache, charges, id, self.now_ms);
        if self.swept {
            sweep_cache(cache, self.now_ms);
            cache.next_sweep_ms = self.now_ms.saturating_add(SWEEP_EVERY_MS);
        }
    }
}

/// Adds reservation `id`'s entries, made at `now_ms`, to the keys of `charges` the cache
/// holds (a key it does not hold is read back whole on its next use).
pub(super) fn remember(cache: &mut CounterCache, charges: &[Charge], id: &str, now_ms: u64) {
    let reservation: Arc<str> = Arc::from(id);
    for charge in charges {
        if let Some(key) = cache.keys.get_mut(&charge.key) {
            key.add(CachedEntry {
                at_ms: now_ms,
                amount: charge.amount,
                expires_ms: expires(now_ms, charge),
                reservation: Arc::clone(&reservation),
            });
        }
    }
}

/// The earliest window start any charge of the call needs on `key`.
pub(super) fn earliest_start(charges: &[Charge], key: &str, now_ms: u64) -> u64 {
    charges
        .iter()
        .filter(|c| c.key == key)
        .map(|c| window::counts_from(now_ms, c.window_ms, c.calendar))
        .min()
        .unwrap_or(now_ms)
}

/// Makes `key`'s cache hold its entries made at or after `from_ms`: dropping older ones, or
/// reading the key back when the cache does not reach back that far (or has no such key).
pub(super) fn load(
    conn: &Connection,
    cache: &mut CounterCache,
    key: &str,
    from_ms: u64,
) -> rusqlite::Result<()> {
    if let Some(cached) = cache.keys.get_mut(key) {
        if cached.complete_from_ms <= from_ms {
            cached.advance_to(from_ms);
            return Ok(());
        }
    }
    let mut statement = conn.prepare_cached(
        "SELECT at_ms, amount, expires_ms, reservation FROM counter_entries
         WHERE key = ?1 AND at_ms >= ?2 ORDER BY at_ms",
    )?;
    let mut reservations: HashMap<String, Arc<str>> = HashMap::new();
    let rows = statement.query_map(params![key, sql_ms(from_ms)], |r| {
        Ok((
            r.get::<_, i64>(0)?.max(0) as u64,
            r.get::<_, f64>(1)?,
            r.get::<_, i64>(2)?.max(0) as u64,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut entries = VecDeque::new();
    let mut total = 0.0;
    for row in rows {
        let (at_ms, amount, expires_ms, reservation) = row?;
        let reservation = reservations
            .entry(reservation)
            .or_insert_with_key(|id| Arc::from(id.as_str()))
            .clone();
        total += amount;
        entries.push_back(CachedEntry {
            at_ms,
            amount,
            expires_ms,
            reservation,
        });
    }
    let pruned_at_ms = cache.keys.get(key).map_or(0, |k| k.pruned_at_ms);
    cache.keys.insert(
        key.to_owned(),
        CachedKey {
            complete_from_ms: from_ms,
            entries,
            total,
            pruned_at_ms,
            // Rows before `from_ms` may be waiting to be pruned.
            unpruned: true,
        },
    );
    Ok(())
}

/// The first charge that does not fit at `now_ms`, with its `retry_after_ms`. A charge
/// sees what is stored plus the earlier charges of this same call on the same key. Every
/// key of `charges` must be cached back to its charges' window starts ([`load`]).
pub(super) fn first_exceeded(
    cache: &mut CounterCache,
    charges: &[Charge],
    now_ms: u64,
) -> Option<(usize, u64)> {
    for (index, charge) in charges.iter().enumerate() {
        let from_ms = window::counts_from(now_ms, charge.window_ms, charge.calendar);
        let pending = charges[..index]
            .iter()
            .filter(|earlier| earlier.key == charge.key)
            .map(|earlier| Entry {
                at_ms: now_ms,
                amount: earlier.amount,
            });
        let cached = cache.keys.get_mut(&charge.key).expect("loaded");
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
        // The sum is all the yes/no needs: present it as one entry made now.
        let mut summed = vec![Entry {
            at_ms: now_ms,
            amount: cached.sum_from(from_ms),
        }];
        summed.extend(pending.clone());
        if admit(&summed).is_ok() {
            continue;
        }
        // Refused: the entries themselves decide, and say when it would fit again.
        let mut entries = cached.window_entries(from_ms, now_ms);
        let exact: f64 = entries.iter().map(|e| e.amount).sum();
        entries.extend(pending);
        if let Err(retry_after_ms) = admit(&entries) {
            return Some((index, retry_after_ms));
        }
        // The sum was off by rounding and the entry-by-entry sum fits: it stands, and the
        // exact sum carries on.
        if from_ms <= cached.complete_from_ms {
            cached.total = exact;
        }
    }
    None
}

/// When an entry made at `now_ms` for `charge` stops counting under its window.
pub(super) fn expires(now_ms: u64, charge: &Charge) -> u64 {
    now_ms.saturating_add(charge.window_ms.max(1))
}

/// Writes one entry per charge and, at most every [`PRUNE_EVERY_MS`] per key, deletes the
/// charged keys' rows that can no longer count (see the module documentation).
fn record(
    conn: &Connection,
    cache: &mut CounterCache,
    charges: &[Charge],
    now_ms: u64,
    id: &str,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO counter_entries (key, at_ms, reservation, charge, amount, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (index, charge) in charges.iter().enumerate() {
        insert.execute(params![
            charge.key,
            sql_ms(now_ms),
            id,
            index as i64,
            charge.amount,
            sql_ms(expires(now_ms, charge))
        ])?;
    }
    for (index, charge) in charges.iter().enumerate() {
        if charges[..index].iter().any(|c| c.key == charge.key) {
            continue;
        }
        let cached = cache.keys.get_mut(&charge.key).expect("loaded");
        if !cached.unpruned || now_ms < cached.pruned_at_ms.saturating_add(PRUNE_EVERY_MS) {
            continue;
        }
        let longest = charges
            .iter()
            .filter(|c| c.key == charge.key)
            .map(|c| c.window_ms.max(1))
            .max()
            .unwrap_or(1);
        // Only rows the cache no longer holds (before `complete_from_ms`).
        let before = now_ms
            .checked_sub(longest)
            .zip(cached.complete_from_ms.checked_sub(1))
            .map(|(a, b)| a.min(b));
        if let Some(before) = before {
            conn.prepare_cached(
                "DELETE FROM counter_entries WHERE key = ?1 AND at_ms <= ?2 AND expires_ms <= ?3",
            )?
            .execute(params![charge.key, sql_ms(before), sql_ms(now_ms)])?;
        }
        // Should the commit fail, the cache is forgotten, these marks with it.
        cached.pruned_at_ms = now_ms;
        cached.unpruned = false;
    }
    Ok(())
}

/// The cache's side of the periodic sweep: drops the expired entries the database has just
/// deleted, and keys left with none; recomputes each sum.
pub(super) fn sweep_cache(cache: &mut CounterCache, now_ms: u64) {
    cache.keys.retain(|_, cached| {
        cached.entries.retain(|e| e.expires_ms > now_ms);
        cached.total = cached.entries.iter().map(|e| e.amount).sum();
        !cached.entries.is_empty()
    });
}

/// Deletes the reservation's entries under each of its keys, in the database and then in
/// the cache.
fn rollback_in(
    conn: &mut Connection,
    memory: &mut Memory,
    reservation: &Reservation,
    batch: &[super::audit::Queued],
) -> rusqlite::Result<()> {
    let tx = begin(conn, memory)?;
    super::audit::write_entries(&tx, memory, batch)?;
    let cache = &mut memory.counters;
    let mut forget =
        tx.prepare_cached("DELETE FROM counter_entries WHERE key = ?1 AND reservation = ?2")?;
    for (index, key) in reservation.keys.iter().enumerate() {
        if !reservation.keys[..index].contains(key) {
            forget.execute([key, &reservation.id])?;
        }
    }
    drop(forget);
    tx.commit()?;
    forget_reservation(cache, reservation);
    Ok(())
}

/// Drops `reservation`'s entries from the cache.
pub(super) fn forget_reservation(cache: &mut CounterCache, reservation: &Reservation) {
    for key in &reservation.keys {
        if let Some(cached) = cache.keys.get_mut(key) {
            let before = cached.entries.len();
            cached.entries.retain(|e| *e.reservation != *reservation.id);
            if cached.entries.len() != before {
                cached.total = cached.entries.iter().map(|e| e.amount).sum();
            }
        }
    }
}

/// Why a charge cannot be stored, if it cannot: amounts must be finite and not negative (a
/// negative one would hand budget out), and `max` must be a number.
pub(super) fn invalid(charge: &Charge) -> Option<String> {
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
pub(super) fn reservation_id() -> String {
    let mut rng = rand::rng();
    let id = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    format!("{id:032x}")
}

/// Milliseconds as SQLite stores them (saturating; real times are far below `i64::MAX`).
pub(super) fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{scratch, TestClock};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    fn block_on<T>(future: StoreFuture<'_, T>) -> Result<T, StoreError> {
        let mut future = future;
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
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
        conn.execute_batch(
            "DROP TABLE counter_entries; DROP TABLE audit_log; DROP TABLE audit_pruned;
             DROP TABLE audit_journal; DROP TABLE grants; DROP TABLE tool_pins;
             DROP TABLE approvals; DROP TABLE secrets;
             UPDATE schema_version SET version = 1;",
        )
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
        assert_eq!(version as usize, super::super::MIGRATIONS.len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every cached key against the database: `(key, what differs)` for each key whose
    /// cached entries are not exactly its stored entries from `complete_from_ms` on, or
    /// whose sum is off by more than rounding.
    fn cache_mismatches(store: &EmbeddedStore) -> Vec<(String, String)> {
        let memory = store.memory.lock().unwrap();
        let cache = &memory.counters;
        let mut wrong = Vec::new();
        for (key, cached) in &cache.keys {
            let mut stored: Vec<(u64, u64, String)> = store
                .with("check cache", |c| {
                    let mut statement = c.prepare(
                        "SELECT at_ms, amount, reservation FROM counter_entries
                         WHERE key = ?1 AND at_ms >= ?2 ORDER BY at_ms, reservation",
                    )?;
                    let rows = statement.query_map(
                        params![key, sql_ms(cached.complete_from_ms)],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)? as u64,
                                r.get::<_, f64>(1)?.to_bits(),
                                r.get(2)?,
                            ))
                        },
                    )?;
                    rows.collect()
                })
                .unwrap();
            let mut held: Vec<(u64, u64, String)> = cached
                .entries
                .iter()
                .map(|e| (e.at_ms, e.amount.to_bits(), e.reservation.to_string()))
                .collect();
            held.sort();
            stored.sort();
            if held != stored {
                wrong.push((key.clone(), format!("cached {held:?}, stored {stored:?}")));
            }
            let exact: f64 = cached.entries.iter().map(|e| e.amount).sum();
            if (cached.total - exact).abs() > 1e-9 {
                wrong.push((
                    key.clone(),
                    format!("sum {} of entries {exact}", cached.total),
                ));
            }
        }
        wrong
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// The cache stays equal to the database through grants, refusals, rollbacks,
        /// windows changing, the clock jumping ahead (sweeps) and going back. (A sum that
        /// is too high would not show in decisions — a refusal is re-checked on the entries
        /// — only in speed; this catches it.)
        #[test]
        fn the_cache_always_equals_the_stored_entries(
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
                prop_assert_eq!(cache_mismatches(&store), vec![]);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
