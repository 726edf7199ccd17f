//! Counters owned by one gateway: reservations decided in memory and made durable in the
//! audit journal, with no SQLite commit on the request line.
//!
//! A shared store decides each reservation inside a `BEGIN IMMEDIATE` transaction, so that
//! every process on the data directory sees every other's reservations (`counters.rs`). That
//! commit was the largest single cost of a rate-limited call through the gateway (about a
//! quarter of its CPU, and most of what a limit adds to its latency). A gateway that
//! *owns* the data directory's counters — an exclusive `flock` on `counters.lock`, taken by
//! [`EmbeddedStore::own_counters`] — knows that no one else writes `counter_entries`, so:
//!
//! - **Its cache is the truth.** It decides from its in-memory entries and never needs
//!   another connection's writes; `PRAGMA data_version` moving (the CLI writing a grant)
//!   no longer throws the cache away.
//! - **Durable like an audit record.** A granted reservation is one `counters` line in the
//!   audit journal — written with the call's record in the same `write(2)` — and queued; the
//!   periodic flush applies it to `counter_entries` in the transaction that moves the
//!   journal's mark, so it reaches the table exactly once, also when replayed after a crash
//!   (SIGKILL loses nothing once `write` returned). A rollback is a line too.
//! - **Reading back.** A key the cache does not hold back far enough (first use, a longer
//!   window than before) is read from the table — after the queue is committed, so that the
//!   table holds every reservation made.
//! - **Falling back.** Without a journal, while commits fail, or when the journal cannot be
//!   written, reservations take the shared store's synchronous path (which commits the
//!   queue first): a broken disk still refuses calls at once.
//!
//! A second gateway on the same directory cannot take the lock and refuses to start:
//! gateways that share counters share them through Redis (cluster mode).

use super::audit::write_batch;
use super::counters::{self, earliest_start, expires, load, SWEEP_EVERY_MS};
use super::{EmbeddedStore, Memory};
use crate::audit::AuditEntry;
use crate::{Charge, Reservation, StoreError};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The journal's pseudo-chain of counter changes (never a chain of `audit_log`).
pub(super) const COUNTERS: &str = "counters";

/// What a journaled reservation came to.
pub(super) enum Journaled {
    /// Decided: `None` granted (journaled, queued, cached), else the first charge that does
    /// not fit with its `retry_after_ms`.
    Decided(Option<(usize, u64)>),
    /// Not possible now (no journal, commits failing, the journal could not be written):
    /// take the synchronous path.
    Unavailable,
}

impl EmbeddedStore {
    /// Makes this store the only writer of the data directory's counters, for as long as it
    /// lives: reservations are then journaled (see the module documentation). Needs the
    /// audit journal ([`EmbeddedStore::journal_audit`]); without it the lock is still taken
    /// and reservations stay synchronous. Fails, naming the directory, if another store —
    /// another gateway — owns them.
    pub fn own_counters(&self) -> Result<(), StoreError> {
        self.lock_counters(true)?;
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters_owned = true;
        let journaled = self
            .audit_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        self.counters_journaled.store(journaled, Ordering::Release);
        Ok(())
    }

    /// Declares this store one of several that share the data directory's counters through
    /// SQLite (each reservation in its own transaction), for as long as it lives: a shared
    /// lock on `counters.lock`, so that no store can own them meanwhile, and this one does
    /// not start while another owns them. Fails, naming the directory, in that case.
    pub fn share_counters(&self) -> Result<(), StoreError> {
        self.lock_counters(false)
    }

    /// Takes `counters.lock`, exclusively or shared, and keeps it while the store lives.
    fn lock_counters(&self, exclusive: bool) -> Result<(), StoreError> {
        let what = if exclusive {
            "own the counters"
        } else {
            "share the counters"
        };
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        let path = dir.join("counters.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.error(what, format!("{}: {e}", path.display())))?;
        let locked = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) if exclusive => {
                return Err(self.error(
                    what,
                    format!(
                        "another gateway is serving from {}: counters in one data directory \
                         are exact for one gateway at a time (gateways share counters through \
                         [store] redis_url)",
                        dir.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(self.error(
                    what,
                    format!(
                        "a gateway is serving from {}: connect to it (`toolgate connect`), or \
                         give this one its own --data-dir",
                        dir.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(self.error(what, format!("{}: {e}", path.display())))
            }
        }
        *self.counters_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }

    /// Reserves `charges` (as reservation `id`) in memory and journals it with `entries`
    /// (the call's record, written only if granted).
    pub(super) fn reserve_journaled(
        &self,
        charges: &[Charge],
        entries: &[AuditEntry],
        id: &str,
    ) -> Result<Journaled, StoreError> {
        if !self.counters_journaled.load(Ordering::Acquire)
            || self.audit_failing.load(Ordering::Acquire)
        {
            return Ok(Journaled::Unavailable);
        }
        {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let now_ms = self.clock.now_ms();
            if covered(&mut memory, charges, now_ms) {
                return Ok(self.decide(&mut memory, charges, entries, id, now_ms));
            }
        }
        // Some key must be read back: first make the table hold every reservation made
        // (memory stays locked from the commit to the decision, so none slips in between).
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if self.commit_queue_locked(&mut conn, &mut memory).is_err() {
            return Ok(Journaled::Unavailable);
        }
        let now_ms = self.clock.now_ms();
        for charge in charges {
            let from_ms = earliest_start(charges, &charge.key, now_ms);
            load(&conn, &mut memory.counters, &charge.key, from_ms)
                .map_err(|e| self.error("read counters back", e))?;
        }
        Ok(self.decide(&mut memory, charges, entries, id, now_ms))
    }

    /// Rolls `reservation` back in memory and journals that; `false` if that is not possible
    /// now (take the synchronous path).
    pub(super) fn rollback_journaled(&self, reservation: &Reservation) -> bool {
        if !self.counters_journaled.load(Ordering::Acquire)
            || self.audit_failing.load(Ordering::Acquire)
        {
            return false;
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let line = json!({"rollback": reservation.id, "keys": reservation.keys}).to_string();
        if !self.journal_and_queue(vec![(COUNTERS, line)]) {
            return false;
        }
        counters::forget_reservation(&mut memory.counters, reservation);
        true
    }

    /// Decides `charges` on keys the cache covers; journals and caches a grant.
    fn decide(
        &self,
        memory: &mut Memory,
        charges: &[Charge],
        entries: &[AuditEntry],
        id: &str,
        now_ms: u64,
    ) -> Journaled {
        let cache = &mut memory.counters;
        if let Some(refused) = counters::first_exceeded(cache, charges, now_ms) {
            return Journaled::Decided(Some(refused));
        }
        let rows: Vec<Value> = charges
            .iter()
            .map(|c| json!([c.key, c.amount, expires(now_ms, c)]))
            .collect();
        let mut lines = vec![(
            COUNTERS,
            json!({"reserve": id, "at_ms": now_ms, "charges": rows}).to_string(),
        )];
        lines.extend(entries.iter().map(|e| (e.chain(), e.body())));
        if !self.journal_and_queue(lines) {
            return Journaled::Unavailable;
        }
        counters::remember(cache, charges, id, now_ms);
        if now_ms >= cache.next_sweep_ms {
            counters::sweep_cache(cache, now_ms);
            cache.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        Journaled::Decided(None)
    }

    /// Commits everything queued, with the connection and memory already held.
    fn commit_queue_locked(
        &self,
        conn: &mut Connection,
        memory: &mut Memory,
    ) -> Result<(), StoreError> {
        self.with_queue_locked(
            conn,
            memory,
            "append to the audit log",
            |conn, memory, batch| {
                if batch.is_empty() {
                    return Ok(());
                }
                write_batch(conn, memory, batch)
            },
        )
    }
}

/// Whether the cache holds every key of `charges` back to the earliest window start the
/// call needs on it (else it must be read back). Keys it covers drop the entries made
/// before that start, so that their sums stay running totals (a sum from a later start
/// would add up the window entry by entry, on every call).
fn covered(memory: &mut Memory, charges: &[Charge], now_ms: u64) -> bool {
    charges.iter().all(|charge| {
        let from_ms = earliest_start(charges, &charge.key, now_ms);
        match memory.counters.keys.get_mut(&charge.key) {
            Some(cached) if cached.complete_from_ms <= from_ms => {
                cached.advance_to(from_ms);
                true
            }
            _ => false,
        }
    })
}

/// Applies one journaled counter change in `tx` (part of the commit that moves the
/// journal's mark past it). Expired rows are swept along, at most once a minute.
pub(super) fn apply(tx: &Connection, memory: &mut Memory, body: &str) -> rusqlite::Result<()> {
    let unreadable = || {
        rusqlite::Error::ToSqlConversionFailure(
            format!("unreadable counters line in the audit journal: {body}").into(),
        )
    };
    let line: Value = serde_json::from_str(body).map_err(|_| unreadable())?;
    if let Some(id) = line.get("reserve").and_then(Value::as_str) {
        let at_ms = line
            .get("at_ms")
            .and_then(Value::as_u64)
            .ok_or_else(unreadable)?;
        let rows = line
            .get("charges")
            .and_then(Value::as_array)
            .ok_or_else(unreadable)?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO counter_entries (key, at_ms, reservation, charge, amount, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (index, row) in rows.iter().enumerate() {
            let (Some(key), Some(amount), Some(expires_ms)) = (
                row.get(0).and_then(Value::as_str),
                row.get(1).and_then(Value::as_f64),
                row.get(2).and_then(Value::as_u64),
            ) else {
                return Err(unreadable());
            };
            insert.execute(params![
                key,
                counters::sql_ms(at_ms),
                id,
                index as i64,
                amount,
                counters::sql_ms(expires_ms)
            ])?;
        }
        if at_ms >= memory.counters.next_table_sweep_ms {
            tx.prepare_cached("DELETE FROM counter_entries WHERE expires_ms <= ?1")?
                .execute([counters::sql_ms(at_ms)])?;
            memory.counters.next_table_sweep_ms = at_ms.saturating_add(SWEEP_EVERY_MS);
        }
        return Ok(());
    }
    if let Some(id) = line.get("rollback").and_then(Value::as_str) {
        let keys = line
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(unreadable)?;
        let mut forget =
            tx.prepare_cached("DELETE FROM counter_entries WHERE key = ?1 AND reservation = ?2")?;
        for key in keys {
            forget.execute(params![key.as_str().ok_or_else(unreadable)?, id])?;
        }
        return Ok(());
    }
    Err(unreadable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::CallRecord;
    use crate::embedded::{scratch, TestClock};
    use crate::Reserve;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    const T0: u64 = 1_800_000_000_000;

    /// A gateway's store: journal started, counters owned.
    fn owner(dir: &std::path::Path, clock: &Arc<TestClock>) -> EmbeddedStore {
        let store = EmbeddedStore::open_with_clock(dir, clock.clone()).unwrap();
        store.recover_audit_journals().unwrap();
        store.journal_audit().unwrap();
        store.own_counters().unwrap();
        store
    }

    fn record(id: &str) -> AuditEntry {
        AuditEntry::Call(CallRecord {
            ts: "2027-01-15T08:00:00.000Z".into(),
            request_id: id.into(),
            decision: "allow".into(),
            forwarded: true,
            ..CallRecord::default()
        })
    }

    fn count(store: &EmbeddedStore, sql: &str) -> i64 {
        store
            .with("count", |c| c.query_row(sql, [], |r| r.get(0)))
            .unwrap()
    }

    fn rows(store: &EmbeddedStore) -> i64 {
        count(store, "SELECT COUNT(*) FROM counter_entries")
    }

    fn records(store: &EmbeddedStore) -> i64 {
        count(
            store,
            "SELECT COUNT(*) FROM audit_log WHERE chain = 'calls'",
        )
    }

    fn granted(outcome: Result<Reserve, StoreError>) -> Reservation {
        match outcome.unwrap() {
            Reserve::Granted(r) => r,
            Reserve::Exceeded { .. } => panic!("refused"),
        }
    }

    fn refused(outcome: Result<Reserve, StoreError>) -> u64 {
        match outcome.unwrap() {
            Reserve::Exceeded { retry_after_ms, .. } => retry_after_ms,
            Reserve::Granted(_) => panic!("granted"),
        }
    }

    #[test]
    fn reservations_are_exact_and_commit_nothing_until_the_flush() {
        let dir = scratch("owned-exact");
        let clock = Arc::new(TestClock(AtomicU64::new(T0)));
        let store = owner(&dir, &clock);
        let three = [Charge::rolling("k", 60_000, 3.0, 1.0)];
        for i in 0..3 {
            granted(store.reserve_and_append(&three, &[record(&format!("r{i}"))]));
            clock.0.fetch_add(1_000, Ordering::SeqCst);
        }
        // The fourth waits until the first leaves the minute: 60 s after it, 3 s later now.
        assert_eq!(
            refused(store.reserve_and_append(&three, &[record("r3")])),
            57_000
        );
        // Nothing committed yet: the reservations and records are in the journal only.
        assert_eq!((rows(&store), records(&store)), (0, 0));
        store.flush_audit().unwrap();
        // The refused call's record was not written (the caller records the refusal).
        assert_eq!((rows(&store), records(&store)), (3, 3));
        // Flushes commit with the chain heads lent out of the store's memory: the chain
        // still verifies after several, and it continues where it was.
        clock.0.fetch_add(60_000, Ordering::SeqCst);
        for i in 4..7 {
            granted(store.reserve_and_append(&three, &[record(&format!("r{i}"))]));
            store.flush_audit().unwrap();
        }
        assert_eq!(records(&store), 6);
        for chain in store.audit_verify().unwrap() {
            assert!(chain.is_ok(), "{chain:?}");
        }
        // Back in the table exactly as a synchronous reservation writes them: a store that
        // does not own the counters (as after this gateway stops) counts them.
        drop(store);
        let reader = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        assert_eq!(refused(reader.reserve_now(&three)), 60_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_killed_owner_loses_no_reservation_and_a_rollback_never_comes_back() {
        let dir = scratch("owned-killed");
        let clock = Arc::new(TestClock(AtomicU64::new(T0)));
        let store = owner(&dir, &clock);
        let two = [
            Charge::rolling("k", 60_000, 2.0, 1.0),
            Charge::rolling("all", 60_000, 100.0, 1.0),
        ];
        let first = granted(store.reserve_and_append(&two, &[record("a")]));
        store.flush_audit().unwrap();
        // Rolled back after its flush, then a second reservation and a third rolled back
        // before any flush: the table must end with the second alone.
        store.rollback_now(&first).unwrap();
        granted(store.reserve_and_append(&two, &[record("b")]));
        let third = granted(store.reserve_and_append(&two, &[record("c")]));
        store.rollback_now(&third).unwrap();
        assert_eq!(rows(&store), 2, "only the first is in the table yet");
        store.abandon_journal(); // SIGKILL: nothing flushed, the journal left behind
        drop(store);
        let next = owner(&dir, &clock);
        assert_eq!(rows(&next), 2, "the second reservation: one row per charge");
        assert_eq!(records(&next), 3, "a, b and c were recorded");
        granted(next.reserve_and_append(&two, &[record("d")]));
        refused(next.reserve_and_append(&two, &[record("e")]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_owner_is_refused_until_the_first_is_gone() {
        let dir = scratch("owned-second");
        let clock = Arc::new(TestClock(AtomicU64::new(T0)));
        let first = owner(&dir, &clock);
        let second = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        second.journal_audit().unwrap();
        let refusal = second.own_counters().unwrap_err().to_string();
        assert!(
            refusal.contains("another gateway is serving from") && refusal.contains("redis_url"),
            "{refusal}"
        );
        drop(first);
        second.own_counters().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reading_a_key_back_and_other_writers_do_not_lose_queued_reservations() {
        let dir = scratch("owned-reload");
        let clock = Arc::new(TestClock(AtomicU64::new(T0)));
        let store = owner(&dir, &clock);
        let minute = [Charge::rolling("k", 60_000, 10.0, 1.0)];
        for _ in 0..3 {
            granted(store.reserve_now(&minute));
        }
        // Another connection writes the database (as `toolgate grant create` would): the
        // owner's memory of it is stale, but its counters are not.
        let other = EmbeddedStore::open_with_clock(&dir, clock.clone()).unwrap();
        other.append_audit(&[record("elsewhere")]).unwrap();
        // The same key under a longer window must be read back from the table, while three
        // reservations are still only queued: they count.
        let hour = [Charge::rolling("k", 3_600_000, 4.0, 1.0)];
        granted(store.reserve_now(&hour));
        let retry = refused(store.reserve_now(&hour));
        assert_eq!(
            retry, 3_600_000,
            "the first entry leaves the hour in an hour"
        );
        store.flush_audit().unwrap();
        assert_eq!(rows(&store), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_commit_falls_back_to_synchronous_reservations() {
        let dir = scratch("owned-failing");
        let clock = Arc::new(TestClock(AtomicU64::new(T0)));
        let store = owner(&dir, &clock);
        let one = [Charge::rolling("k", 60_000, 5.0, 1.0)];
        granted(store.reserve_and_append(&one, &[record("a")]));
        store
            .with("break", |c| {
                c.execute_batch("ALTER TABLE audit_log RENAME TO gone")
            })
            .unwrap();
        assert!(store.flush_audit().is_err());
        // While commits fail, a reservation commits itself (with the queue) and so fails:
        // the call is refused at once, not journaled past a broken store.
        assert!(store.reserve_and_append(&one, &[record("b")]).is_err());
        store
            .with("mend", |c| {
                c.execute_batch("ALTER TABLE gone RENAME TO audit_log")
            })
            .unwrap();
        granted(store.reserve_and_append(&one, &[record("c")]));
        store.flush_audit().unwrap();
        assert_eq!((rows(&store), records(&store)), (2, 2), "a and c");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
