//! The audit log in the embedded store: chained entries in `audit_log`, written by group
//! commit.
//!
//! - **Durable before the answer.** [`EmbeddedStore::append_audit`] returns once its
//!   entries are committed: in WAL mode a commit is in the operating system's hands, so it
//!   survives the gateway being killed (SIGKILL) at any later moment. (Surviving power loss
//!   as well needs `synchronous = FULL`, an fsync per commit: `audit.durability = "fsync"`.)
//! - **Group commit.** Appenders queue their entries, then take the connection. Whoever
//!   gets it first writes *everything* queued in one transaction and marks each queued
//!   batch done, so concurrent appenders share one commit instead of queueing for one each;
//!   an appender that finds its batch done returns at once. Throughput grows with load
//!   while a lone call still pays just one commit.
//! - **Journaled when it can be.** Once the gateway starts the journal
//!   ([`EmbeddedStore::journal_audit`]), an append writes its entries to an append-only file
//!   and queues them — durable against a killed process without a commit on the request
//!   line — and the periodic flush commits the queue (see `journal.rs`). While commits fail,
//!   appends commit themselves again, so a broken store refuses calls at once.
//! - **One chain across processes.** The head of each chain (`(seq, hash)` of its last
//!   entry) is read under the write lock and remembered while no other connection writes
//!   (`PRAGMA data_version`, see [`super::begin`]), so several gateways on one data
//!   directory extend one chain without forks.

use super::counters::{invalid, reservation_id, reserve_within};
use super::journal::{self, Journal, Mark};
use super::owned::{self, Journaled};
use super::{begin, EmbeddedStore, Memory};
use crate::audit::{
    admin_events, chain_hash, merge, verify, AdminRecord, AuditEntry, AuditFilter, Broken,
    MergedRecord, StoredEntry, Verified, ADMIN, CALLS, GENESIS,
};
use crate::{AuditLog, Charge, Reservation, Reserve, StoreError, StoreFuture};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How many entries queued for later (`append_later`) are kept for another try after
/// failed commits; beyond it the oldest are dropped, and the next flush says how many.
pub const MAX_QUEUED_LATER: usize = 100_000;

/// Entries queued by one appender, and where the outcome of their commit goes.
#[derive(Debug)]
pub(super) struct Queued {
    /// `(chain, body)` per entry.
    pub(super) entries: Vec<journal::Entry>,
    /// Someone waits for the outcome (an append); else (`append_later`) a failed commit
    /// queues the entries again instead of losing them.
    awaited: bool,
    /// Set once the entries are committed (or could not be).
    done: Arc<OnceLock<Result<(), StoreError>>>,
    /// Where the entries end in the journal, if they are in it: then they are never dropped
    /// from the queue (the journal's mark must only move past committed entries).
    pub(super) journaled: Option<Mark>,
}

impl Queued {
    /// `entries` queued as their chains and bodies.
    pub(super) fn of(entries: &[AuditEntry], awaited: bool) -> Queued {
        Queued::new(
            entries.iter().map(|e| (e.chain(), e.body())).collect(),
            awaited,
        )
    }

    pub(super) fn new(entries: Vec<journal::Entry>, awaited: bool) -> Queued {
        Queued {
            entries,
            awaited,
            done: Arc::new(OnceLock::new()),
            journaled: None,
        }
    }
}

impl AuditLog for EmbeddedStore {
    /// Like [`EmbeddedStore::append_audit`], but a follower waits without blocking its
    /// thread: on a runtime with few worker threads, appenders blocked in a wait would stop
    /// the very requests whose records make the next batch bigger.
    fn append<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            if self.journal_entries(entries) {
                return Ok(());
            }
            let done = self.queue_audit(entries, true);
            loop {
                // Registered before looking, so that a commit ending in between still wakes us.
                let committed = self.audit_notify.notified();
                tokio::pin!(committed);
                committed.as_mut().enable();
                if let Some(outcome) = done.get() {
                    return outcome.clone();
                }
                if self.try_lead() {
                    let outcome = self.lead_commit(&done);
                    self.end_lead();
                    return outcome;
                }
                committed.await;
            }
        })
    }

    fn append_later(&self, entries: Vec<AuditEntry>) {
        self.queue_audit(&entries, false);
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.flush_audit() })
    }
}

impl EmbeddedStore {
    /// Appends `entries` to their chains and returns once they are committed (with
    /// everything queued before them).
    pub fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let done = self.queue_audit(entries, true);
        self.commit_queued(&done)
    }

    /// Starts the audit journal in the data directory's `audit-journal` folder: from now
    /// on appends are durable once written there, and committed by the next flush.
    pub fn journal_audit(&self) -> Result<(), StoreError> {
        let dir = self.journal_dir();
        let journal = Journal::create(&dir).map_err(|e| {
            self.error("start the audit journal", format!("{}: {e}", dir.display()))
        })?;
        if let Some(old) = self
            .audit_journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(journal)
        {
            old.close();
        }
        Ok(())
    }

    fn journal_dir(&self) -> std::path::PathBuf {
        self.path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("audit-journal")
    }

    /// Writes `entries` to the journal and queues them for the next commit: `false` when
    /// there is no journal, commits are failing, or the write failed (the caller commits
    /// them itself then, and a failure of that commit refuses the call).
    fn journal_entries(&self, entries: &[AuditEntry]) -> bool {
        if self.audit_failing.load(Ordering::Acquire) {
            return false;
        }
        self.journal_and_queue(entries.iter().map(|e| (e.chain(), e.body())).collect())
    }

    /// Writes `lines` to the journal and queues them for the next commit: `false` when there
    /// is no journal or the write failed.
    pub(super) fn journal_and_queue(&self, lines: Vec<journal::Entry>) -> bool {
        let mut journal = self.audit_journal.lock().unwrap_or_else(|e| e.into_inner());
        let Some(journal) = journal.as_mut() else {
            return false;
        };
        let mut queued = Queued::new(lines, false);
        let Ok(mark) = journal.append(&journal::encode(&queued.entries)) else {
            return false;
        };
        queued.journaled = Some(mark);
        // Queued while the journal is still held, so that the queue's order is the journal's.
        self.audit_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(queued);
        true
    }

    /// Queues `entries` for the next commit, without waiting for it (`awaited`: the caller
    /// will wait for the outcome).
    fn queue_audit(
        &self,
        entries: &[AuditEntry],
        awaited: bool,
    ) -> Arc<OnceLock<Result<(), StoreError>>> {
        let queued = Queued::of(entries, awaited);
        let done = Arc::clone(&queued.done);
        self.audit_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(queued);
        done
    }

    /// Commits whatever is queued (nothing to do if nothing is), and reports entries
    /// queued for later that had to be dropped since the last flush.
    pub fn flush_audit(&self) -> Result<(), StoreError> {
        if self
            .audit_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return self.dropped_audit();
        }
        // An awaited marker with no entries: committed with everything queued before it.
        let marker = self.queue_audit(&[], true);
        self.commit_queued(&marker)?;
        self.dropped_audit()
    }

    /// An error if entries queued for later were dropped since the last report.
    fn dropped_audit(&self) -> Result<(), StoreError> {
        match self.audit_dropped.swap(0, Ordering::AcqRel) {
            0 => Ok(()),
            n => Err(self.error(
                "append to the audit log",
                format!(
                    "{n} entries queued for later (outcomes) were dropped: commits kept failing \
                     and at most {MAX_QUEUED_LATER} are kept"
                ),
            )),
        }
    }

    /// Hands each committed (or failed) batch its outcome; on failure, entries nobody waits
    /// for go back to the front of the queue for the next commit (bounded, except for
    /// journaled ones). Also tells the journal how far the database now holds it.
    pub(super) fn settle_batch(&self, batch: Vec<Queued>, outcome: &Result<(), StoreError>) {
        self.audit_failing
            .store(outcome.is_err(), Ordering::Release);
        if outcome.is_ok() {
            let marks: Vec<Mark> = batch.iter().filter_map(|q| q.journaled.clone()).collect();
            if !marks.is_empty() {
                if let Some(journal) = self
                    .audit_journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    journal.committed(&marks);
                }
            }
        }
        let mut again = Vec::new();
        for queued in batch {
            if outcome.is_err() && !queued.awaited {
                again.push(queued);
            } else {
                let _ = queued.done.set(outcome.clone());
            }
        }
        if again.is_empty() {
            return;
        }
        let mut queue = self.audit_queue.lock().unwrap_or_else(|e| e.into_inner());
        again.append(&mut queue);
        let mut held: usize = again
            .iter()
            .filter(|q| q.journaled.is_none())
            .map(|q| q.entries.len())
            .sum();
        again.retain(|queued| {
            let droppable = !queued.awaited && queued.journaled.is_none();
            if held <= MAX_QUEUED_LATER || !droppable {
                return true;
            }
            held -= queued.entries.len();
            self.audit_dropped
                .fetch_add(queued.entries.len() as u64, Ordering::AcqRel);
            false
        });
        *queue = again;
    }

    /// Returns once the batch whose outcome is `done` is committed: by another appender
    /// already committing (this one waits for it, and commits itself only if its batch came
    /// too late for that commit), or by this one, which then commits everything queued.
    ///
    /// Followers wait to be told a commit ended, not on the connection: were they to queue
    /// for the connection only to find their batch done, each would cost a lock hand-over
    /// and a thread wake-up in turn, and 64 appenders would get little more than one
    /// commit's worth of throughput each.
    fn commit_queued(&self, done: &OnceLock<Result<(), StoreError>>) -> Result<(), StoreError> {
        loop {
            if let Some(outcome) = done.get() {
                return outcome.clone();
            }
            if self.try_lead() {
                let outcome = self.lead_commit(done);
                self.end_lead();
                return outcome;
            }
            let ended = self.audit_ended.lock().unwrap_or_else(|e| e.into_inner());
            if done.get().is_none() && self.audit_leading.load(Ordering::Acquire) {
                // Bounded: a wake-up missed between the look and the wait costs at most this.
                let _ = self
                    .audit_committed
                    .wait_timeout(ended, Duration::from_micros(500))
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Runs `write` — one write transaction that writes `batch`, everything queued, ahead of
    /// its own work — with the connection and memory (already locked), then hands each
    /// queued batch its outcome and wakes the appenders that may be waiting for them. A
    /// failure forgets the memory (the failed transaction may have moved it along).
    pub(super) fn with_queue_locked<T>(
        &self,
        conn: &mut Connection,
        memory: &mut Memory,
        what: &str,
        write: impl FnOnce(&mut Connection, &mut Memory, &[Queued]) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let batch =
            std::mem::take(&mut *self.audit_queue.lock().unwrap_or_else(|e| e.into_inner()));
        let outcome = write(conn, memory, &batch).map_err(|e| self.error(what, e));
        if outcome.is_err() {
            memory.forget();
        }
        let woken = !batch.is_empty();
        self.settle_batch(batch, &outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        if woken {
            self.wake_appenders();
        }
        outcome
    }

    /// Becomes the appender that commits the queue, unless another is.
    fn try_lead(&self) -> bool {
        self.audit_leading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends a commit of the queue and wakes every appender waiting for one.
    fn end_lead(&self) {
        self.audit_leading.store(false, Ordering::Release);
        self.wake_appenders();
    }

    /// Wakes appenders waiting for a commit (synchronous and asynchronous ones).
    pub(super) fn wake_appenders(&self) {
        drop(self.audit_ended.lock().unwrap_or_else(|e| e.into_inner()));
        self.audit_committed.notify_all();
        self.audit_notify.notify_waiters();
    }

    /// The leader's part of [`EmbeddedStore::commit_queued`].
    fn lead_commit(&self, done: &OnceLock<Result<(), StoreError>>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(outcome) = done.get() {
            // Committed meanwhile, with a reservation (reserve_and_append).
            return outcome.clone();
        }
        let batch =
            std::mem::take(&mut *self.audit_queue.lock().unwrap_or_else(|e| e.into_inner()));
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = if memory.counters_owned {
            // Owned reservations are decided under the memory lock on the request line, and
            // this commit does not need the counters: it works on the rest, lent out, so
            // that they need not wait for it. (Everything else that uses the rest holds the
            // connection, as this does.)
            let mut lent = memory.lend();
            drop(memory);
            let outcome = write_batch(&mut conn, &mut lent, &batch);
            memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.take_back(lent);
            outcome
        } else {
            write_batch(&mut conn, &mut memory, &batch)
        }
        .map_err(|e| self.error("append to the audit log", e));
        if outcome.is_err() {
            memory.forget();
        }
        self.settle_batch(batch, &outcome);
        drop(memory);
        drop(conn);
        done.get()
            .cloned()
            .expect("our batch was queued before we took the connection, so it was written")
    }

    /// Reserves `charges` and, only if they fit, appends `entries` — the call's record — in
    /// the same commit, with whatever audit entries are queued: a rate-limited call costs one
    /// commit, not one for its counters and another for its record. (A refusal writes no
    /// counter rows and not `entries`; the caller records the refusal as it sees fit.)
    pub fn reserve_and_append(
        &self,
        charges: &[Charge],
        entries: &[AuditEntry],
    ) -> Result<Reserve, StoreError> {
        const WHAT: &str = "reserve counters and append to the audit log";
        if let Some(problem) = charges.iter().find_map(invalid) {
            return Err(self.error(WHAT, problem));
        }
        let id = reservation_id();
        let keys: Vec<String> = charges.iter().map(|c| c.key.clone()).collect();
        if charges.is_empty() && entries.is_empty() {
            return Ok(Reserve::Granted(Reservation { id, keys }));
        }
        if !charges.is_empty() {
            match self.reserve_journaled(charges, entries, &id)? {
                Journaled::Decided(None) => return Ok(Reserve::Granted(Reservation { id, keys })),
                Journaled::Decided(Some((charge, retry_after_ms))) => {
                    return Ok(Reserve::Exceeded {
                        charge,
                        retry_after_ms,
                    })
                }
                Journaled::Unavailable => {}
            }
        }
        let own = Queued::of(entries, true);
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let outcome =
            self.with_queue_locked(&mut conn, &mut memory, WHAT, |conn, memory, batch| {
                reserve_and_write(conn, memory, &*self.clock, charges, &id, &own, batch)
            });
        match outcome? {
            None => Ok(Reserve::Granted(Reservation { id, keys })),
            Some((charge, retry_after_ms)) => Ok(Reserve::Exceeded {
                charge,
                retry_after_ms,
            }),
        }
    }

    /// Commits what gateways killed before their flush left in the audit journal (segments
    /// no live process holds), then forgets the marks of segments that are gone. Returns
    /// how many entries were recovered. A gateway runs this before it starts; the audit
    /// commands do too, so that they show those entries.
    pub fn recover_audit_journals(&self) -> Result<u64, StoreError> {
        const WHAT: &str = "recover the audit journal";
        let dir = self.journal_dir();
        let io = |e: std::io::Error| self.error(WHAT, format!("{}: {e}", dir.display()));
        let mut recovered = 0;
        for orphan in journal::orphans(&dir).map_err(io)? {
            let upto: i64 = self
                .with(WHAT, |c| {
                    c.prepare_cached("SELECT upto FROM audit_journal WHERE segment = ?1")?
                        .query_row([&orphan.name], |r| r.get(0))
                        .optional()
                })?
                .unwrap_or(0);
            let (entries, end) = journal::parse(&orphan.contents, upto.max(0) as u64, known_chain)
                .map_err(|e| self.error(WHAT, format!("{}: {e}", orphan.path.display())))?;
            if !entries.is_empty() {
                recovered += entries.len() as u64;
                let mut queued = Queued::new(entries, true);
                queued.journaled = Some(Mark {
                    segment: Arc::from(orphan.name.as_str()),
                    end,
                });
                self.write(WHAT, |conn, memory| {
                    write_batch(conn, memory, std::slice::from_ref(&queued))
                })?;
            }
            // Committed: a removal that fails leaves nothing past the mark to replay.
            let _ = std::fs::remove_file(&orphan.path);
        }
        let present = journal::segment_names(&dir).map_err(io)?;
        self.with(WHAT, |c| {
            let marked: Vec<String> = c
                .prepare_cached("SELECT segment FROM audit_journal")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for gone in marked.iter().filter(|m| !present.contains(m)) {
                c.prepare_cached("DELETE FROM audit_journal WHERE segment = ?1")?
                    .execute([gone])?;
            }
            Ok(())
        })?;
        Ok(recovered)
    }

    /// Entries of `chain` after row `after` (0: from the start), oldest first, at most
    /// `limit`, with their row ids (for following the log: pass the last id back).
    pub fn audit_entries(
        &self,
        chain: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredEntry)>, StoreError> {
        self.with("read the audit log", |c| {
            let mut statement = c.prepare_cached(
                "SELECT id, chain, seq, body, prev_hash, hash FROM audit_log
                 WHERE chain = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = statement.query_map(
                params![chain, after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        r.get(0)?,
                        StoredEntry {
                            chain: r.get(1)?,
                            seq: r.get::<_, i64>(2)?.max(0) as u64,
                            body: r.get(3)?,
                            prev_hash: r.get(4)?,
                            hash: r.get(5)?,
                        },
                    ))
                },
            )?;
            rows.collect()
        })
    }

    /// Every entry of `chain`, oldest first.
    fn whole_chain(&self, chain: &str) -> Result<Vec<StoredEntry>, StoreError> {
        Ok(self
            .audit_entries(chain, 0, usize::MAX)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// Call records with their outcomes merged, oldest first (a scan of the calls chain).
    pub fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<MergedRecord>, StoreError> {
        Ok(merge(&self.whole_chain(CALLS)?, filter))
    }

    /// The admin stream, oldest first (`filter`'s time range and limit apply).
    pub fn audit_admin(&self, filter: &AuditFilter) -> Result<Vec<AdminRecord>, StoreError> {
        Ok(admin_events(&self.whole_chain(ADMIN)?, filter))
    }

    /// Verifies every chain, from where pruning left it.
    pub fn audit_verify(&self) -> Result<Vec<Result<Verified, Broken>>, StoreError> {
        let mut results = Vec::new();
        for chain in [CALLS, ADMIN] {
            let start = self.with("read the audit log", |c| pruned_head(c, chain))?;
            let entries = self.whole_chain(chain)?;
            results.push(verify(chain, (start.0, &start.1), &entries));
        }
        Ok(results)
    }

    /// Deletes each chain's entries older than `before` (RFC 3339) — the longest run of
    /// them at the chain's start — and records the last one deleted, so that `verify`
    /// starts from it. Returns how many entries went.
    pub fn audit_prune(&self, before: &str) -> Result<u64, StoreError> {
        self.write("prune the audit log", |conn, memory| {
            prune(conn, memory, before)
        })
    }
}

/// The chain name of a journal line, if it is one of the embedded store's.
fn known_chain(chain: &str) -> Option<&'static str> {
    [CALLS, ADMIN, owned::COUNTERS]
        .into_iter()
        .find(|known| *known == chain)
}

/// Writes every queued entry in one transaction.
pub(super) fn write_batch(
    conn: &mut Connection,
    memory: &mut Memory,
    batch: &[Queued],
) -> rusqlite::Result<()> {
    let tx = begin(conn, memory)?;
    // The heads move on before the commit; should it fail, the caller forgets `memory`,
    // these heads with it.
    write_entries(&tx, memory, batch)?;
    tx.commit()
}

/// Appends the entries of `batch` to their chains in `tx`, moving the chain heads along;
/// applies the journaled counter changes among them (`owned.rs`).
pub(super) fn write_entries(
    tx: &Connection,
    memory: &mut Memory,
    batch: &[Queued],
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_log (chain, seq, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (chain, body) in batch.iter().flat_map(|q| q.entries.iter()) {
        if *chain == owned::COUNTERS {
            owned::apply(tx, memory, body)?;
            continue;
        }
        let heads = &mut memory.chain_heads;
        if !heads.contains_key(*chain) {
            heads.insert((*chain).to_owned(), chain_head(tx, chain)?);
        }
        let head = heads.get_mut(*chain).expect("just ensured");
        let hash = chain_hash(&head.1, body);
        let seq = head.0 + 1;
        insert.execute(params![chain, seq as i64, body, head.1, hash])?;
        *head = (seq, hash);
    }
    // Queue order is journal order, so the last mark of each segment is its furthest.
    let mut furthest: HashMap<&str, u64> = HashMap::new();
    for mark in batch.iter().filter_map(|q| q.journaled.as_ref()) {
        furthest.insert(&mark.segment, mark.end);
    }
    for (segment, upto) in furthest {
        tx.prepare_cached(
            "INSERT INTO audit_journal (segment, upto) VALUES (?1, ?2)
             ON CONFLICT (segment) DO UPDATE SET upto = excluded.upto",
        )?
        .execute(params![segment, upto as i64])?;
    }
    Ok(())
}

/// [`EmbeddedStore::reserve_and_append`]'s transaction: `Ok(None)` when granted and
/// committed with `own`, `Ok(Some((charge, retry_after_ms)))` when refused (`batch`
/// committed all the same).
fn reserve_and_write(
    conn: &mut Connection,
    memory: &mut Memory,
    clock: &dyn crate::Clock,
    charges: &[Charge],
    id: &str,
    own: &Queued,
    batch: &[Queued],
) -> rusqlite::Result<Option<(usize, u64)>> {
    let tx = begin(conn, memory)?;
    // Queued entries first: they were made earlier, and journaled reservations among them
    // must be in the table before this one is decided. (Heads move on before the commit,
    // as in `write_batch`.)
    write_entries(&tx, memory, batch)?;
    let staged = reserve_within(&tx, memory, clock, charges, id)?;
    if staged.is_ok() {
        write_entries(&tx, memory, std::slice::from_ref(own))?;
    }
    tx.commit()?;
    Ok(match staged {
        Ok(staged) => {
            staged.committed(memory, charges, id);
            None
        }
        Err(refused) => Some(refused),
    })
}

/// The last entry of `chain` as stored (or as pruned away, or the genesis).
fn chain_head(conn: &Connection, chain: &str) -> rusqlite::Result<(u64, String)> {
    let last = conn
        .prepare_cached(
            "SELECT seq, hash FROM audit_log WHERE chain = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row([chain], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
        })
        .optional()?;
    match last {
        Some(head) => Ok(head),
        None => pruned_head(conn, chain),
    }
}

/// Where `chain` starts: the last entry pruned away, or the genesis.
fn pruned_head(conn: &Connection, chain: &str) -> rusqlite::Result<(u64, String)> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_pruned WHERE chain = ?1")?
        .query_row([chain], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, GENESIS.to_owned())))
}

fn prune(conn: &mut Connection, memory: &mut Memory, before: &str) -> rusqlite::Result<u64> {
    let tx = begin(conn, memory)?;
    let mut deleted = 0;
    for chain in [CALLS, ADMIN] {
        // The first entry that is not older than `before` ends the run.
        let keep_from: Option<i64> = tx
            .prepare_cached(
                "SELECT MIN(id) FROM audit_log
                 WHERE chain = ?1 AND COALESCE(json_extract(body, '$.ts'), '') >= ?2",
            )?
            .query_row(params![chain, before], |r| r.get(0))?;
        let last_gone: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT seq, hash FROM audit_log WHERE chain = ?1 AND id < ?2
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![chain, keep_from.unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((seq, hash)) = last_gone else {
            continue;
        };
        deleted += tx
            .prepare_cached("DELETE FROM audit_log WHERE chain = ?1 AND id < ?2")?
            .execute(params![chain, keep_from.unwrap_or(i64::MAX)])? as u64;
        tx.prepare_cached(
            "INSERT INTO audit_pruned (chain, seq, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )?
        .execute(params![chain, seq, hash])?;
    }
    tx.commit()?;
    Ok(deleted)
}

#[cfg(test)]
impl EmbeddedStore {
    /// Dies as a killed process would: the journal's files are closed (and so unlocked)
    /// but left as they are, and nothing queued is committed.
    pub(super) fn abandon_journal(&self) {
        drop(self.audit_journal.lock().unwrap().take());
        self.audit_queue.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{CallOutcome, CallRecord};
    use crate::embedded::scratch;
    use crate::AuditLog;

    fn call(id: &str, ts: &str) -> AuditEntry {
        AuditEntry::Call(CallRecord {
            ts: ts.into(),
            request_id: id.into(),
            decision: "allow".into(),
            forwarded: true,
            ..CallRecord::default()
        })
    }

    fn outcome(id: &str, ts: &str) -> AuditEntry {
        AuditEntry::Outcome(CallOutcome {
            ts: ts.into(),
            request_id: id.into(),
            upstream_status: "ok".into(),
            latency_ms: 2.0,
        })
    }

    fn sql(store: &EmbeddedStore, statement: &str) {
        store
            .with("tamper", |c| c.execute_batch(statement))
            .unwrap();
    }

    fn first_broken(store: &EmbeddedStore) -> Option<Broken> {
        store
            .audit_verify()
            .unwrap()
            .into_iter()
            .find_map(Result::err)
    }

    #[test]
    fn appended_entries_chain_across_stores_and_merge_in_queries() {
        let dir = scratch("chain");
        let a = EmbeddedStore::open(&dir).unwrap();
        let b = EmbeddedStore::open(&dir).unwrap();
        a.append_audit(&[call("r1", "2026-01-01T00:00:00.000Z")])
            .unwrap();
        b.append_audit(&[call("r2", "2026-01-01T00:00:01.000Z")])
            .unwrap();
        a.append_audit(&[outcome("r1", "2026-01-01T00:00:02.000Z")])
            .unwrap();
        let verified = a.audit_verify().unwrap();
        assert_eq!(verified[0].as_ref().unwrap().entries, 3);
        let records = b.audit_query(&AuditFilter::default()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].call.request_id, "r1");
        assert_eq!(records[0].upstream_status.as_deref(), Some("ok"));
        assert_eq!(records[1].upstream_status, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_appenders_share_commits_and_keep_one_chain() {
        let dir = scratch("group");
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..200 {
                        store
                            .append_audit(&[call(&format!("{t}-{i}"), "2026-01-01T00:00:00.000Z")])
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let verified = store.audit_verify().unwrap();
        assert_eq!(verified[0].as_ref().unwrap().entries, 1_600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn async_and_blocking_appenders_together_lose_nothing() {
        let dir = scratch("async");
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        let blocking = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..300 {
                    store
                        .append_audit(&[call(&format!("b{i}"), "2026-01-01T00:00:00.000Z")])
                        .unwrap();
                }
            })
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|t| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0..20 {
                            let entry = [call(&format!("a{t}-{i}"), "2026-01-01T00:00:00.000Z")];
                            AuditLog::append(&*store, &entry).await.unwrap();
                            if i % 5 == 0 {
                                store.append_later(vec![outcome(&format!("a{t}-{i}"), "x")]);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            AuditLog::flush(&*store).await.unwrap();
        });
        blocking.join().unwrap();
        let verified = store.audit_verify().unwrap();
        assert_eq!(verified[0].as_ref().unwrap().entries, 300 + 2_000 + 400);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_queued_for_later_survive_failed_commits() {
        let dir = scratch("requeue");
        let store = EmbeddedStore::open(&dir).unwrap();
        store
            .append_audit(&[call("r1", "2026-01-01T00:00:00.000Z")])
            .unwrap();
        store.append_later(vec![outcome("r1", "2026-01-01T00:00:01.000Z")]);
        // The log cannot be written for a while (as a broken disk would make it).
        let other = rusqlite::Connection::open(dir.join("toolgate.db")).unwrap();
        other
            .execute_batch("ALTER TABLE audit_log RENAME TO audit_log_away")
            .unwrap();
        let err = store
            .append_audit(&[call("r2", "2026-01-01T00:00:02.000Z")])
            .unwrap_err();
        assert!(err.message.contains("append to the audit log"), "{err}");
        assert!(store.flush_audit().is_err());
        other
            .execute_batch("ALTER TABLE audit_log_away RENAME TO audit_log")
            .unwrap();
        // Back: the outcome queued before the failures is written; the refused append is
        // the caller's to handle (the gateway refused that call).
        store.flush_audit().unwrap();
        let records = store.audit_query(&AuditFilter::default()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].upstream_status.as_deref(), Some("ok"));
        assert_eq!(first_broken(&store), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn append(store: &EmbeddedStore, entry: AuditEntry) -> Result<(), StoreError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(AuditLog::append(store, &[entry]))
    }

    fn request_ids(store: &EmbeddedStore) -> Vec<String> {
        let records = store.audit_query(&AuditFilter::default()).unwrap();
        records.into_iter().map(|r| r.call.request_id).collect()
    }

    #[test]
    fn journaled_entries_of_a_killed_store_are_recovered_exactly_once() {
        let dir = scratch("journal");
        let store = EmbeddedStore::open(&dir).unwrap();
        store.journal_audit().unwrap();
        append(&store, call("r1", "2026-01-01T00:00:00.000Z")).unwrap();
        store.flush_audit().unwrap();
        append(&store, call("r2", "2026-01-01T00:00:01.000Z")).unwrap();
        append(&store, call("r3", "2026-01-01T00:00:02.000Z")).unwrap();
        assert_eq!(
            request_ids(&store),
            ["r1"],
            "r2 and r3 wait in the journal for a flush"
        );
        // Another store (the audit commands) leaves a live gateway's journal alone.
        let reader = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(reader.recover_audit_journals().unwrap(), 0);
        store.abandon_journal();
        drop(store);
        // r1 was committed with its mark, so only what came after it is replayed.
        assert_eq!(reader.recover_audit_journals().unwrap(), 2);
        assert_eq!(reader.recover_audit_journals().unwrap(), 0);
        assert_eq!(request_ids(&reader), ["r1", "r2", "r3"]);
        assert_eq!(first_broken(&reader), None);
        let left = std::fs::read_dir(reader.journal_dir()).unwrap().count();
        assert_eq!(left, 0, "a replayed segment is deleted");
        let marks: i64 = reader
            .with("marks", |c| {
                c.query_row("SELECT COUNT(*) FROM audit_journal", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(marks, 0, "the marks of deleted segments are forgotten");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_clean_stop_leaves_no_journal_and_a_failing_store_refuses_appends_at_once() {
        let dir = scratch("journal-failing");
        let store = EmbeddedStore::open(&dir).unwrap();
        store.journal_audit().unwrap();
        append(&store, call("r1", "2026-01-01T00:00:00.000Z")).unwrap();
        let other = rusqlite::Connection::open(dir.join("toolgate.db")).unwrap();
        other
            .execute_batch("ALTER TABLE audit_log RENAME TO audit_log_away")
            .unwrap();
        // The journal took r1; the flush that would commit it fails, and from then on an
        // append must commit itself, so it is refused while the store is broken.
        assert!(store.flush_audit().is_err());
        let err = append(&store, call("r2", "2026-01-01T00:00:01.000Z")).unwrap_err();
        assert!(err.message.contains("append to the audit log"), "{err}");
        other
            .execute_batch("ALTER TABLE audit_log_away RENAME TO audit_log")
            .unwrap();
        // The first commit that works carries r1 along and restores journaling.
        append(&store, call("r3", "2026-01-01T00:00:02.000Z")).unwrap();
        assert_eq!(request_ids(&store), ["r1", "r3"]);
        append(&store, call("r4", "2026-01-01T00:00:03.000Z")).unwrap();
        assert_eq!(request_ids(&store), ["r1", "r3"], "journaled again");
        store.flush_audit().unwrap();
        let journal_dir = store.journal_dir();
        drop(store);
        assert_eq!(std::fs::read_dir(&journal_dir).unwrap().count(), 0);
        let reopened = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(reopened.recover_audit_journals().unwrap(), 0);
        assert_eq!(request_ids(&reopened), ["r1", "r3", "r4"]);
        assert_eq!(first_broken(&reopened), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verify_names_an_edited_a_deleted_and_an_inserted_row() {
        let dir = scratch("tamper");
        let store = EmbeddedStore::open(&dir).unwrap();
        for i in 1..=5 {
            store
                .append_audit(&[call(&format!("r{i}"), "2026-01-01T00:00:00.000Z")])
                .unwrap();
        }
        assert_eq!(first_broken(&store), None);

        sql(
            &store,
            "UPDATE audit_log SET body = replace(body, '\"allow\"', '\"deny\"') WHERE seq = 2",
        );
        let broken = first_broken(&store).unwrap();
        assert_eq!(
            (broken.seq, broken.reason.contains("altered")),
            (2, true),
            "{broken}"
        );
        sql(
            &store,
            "UPDATE audit_log SET body = replace(body, '\"deny\"', '\"allow\"') WHERE seq = 2",
        );
        assert_eq!(first_broken(&store), None);

        sql(&store, "DELETE FROM audit_log WHERE seq = 3");
        let broken = first_broken(&store).unwrap();
        assert_eq!(broken.seq, 4, "{broken}");
        assert!(broken.reason.contains("missing"), "{broken}");

        let dir2 = scratch("tamper-insert");
        let store = EmbeddedStore::open(&dir2).unwrap();
        for i in 1..=3 {
            store
                .append_audit(&[call(&format!("r{i}"), "2026-01-01T00:00:00.000Z")])
                .unwrap();
        }
        // A forged row between 1 and 2, hashed correctly after 1.
        let (prev, body) = (
            "(SELECT hash FROM audit_log WHERE seq = 1)",
            "'{\"kind\":\"call\"}'",
        );
        sql(
            &store,
            &format!(
                "UPDATE audit_log SET id = id + 10 WHERE seq >= 2;
                 INSERT INTO audit_log (id, chain, seq, body, prev_hash, hash)
                 VALUES (2, 'calls', 2, {body}, {prev}, 'x')"
            ),
        );
        let forged_hash = {
            let rows = store.audit_entries(CALLS, 0, 10).unwrap();
            chain_hash(&rows[1].1.prev_hash, &rows[1].1.body)
        };
        sql(
            &store,
            &format!("UPDATE audit_log SET hash = '{forged_hash}' WHERE id = 2"),
        );
        let broken = first_broken(&store).unwrap();
        assert_eq!(broken.seq, 2, "{broken}");
        assert!(broken.reason.contains("inserted"), "{broken}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    }

    #[test]
    fn a_reservation_and_its_record_commit_together_or_the_record_is_not_written() {
        let dir = scratch("ledger");
        let store = EmbeddedStore::open(&dir).unwrap();
        let one_a_minute = [Charge::rolling("k", 60_000, 1.0, 1.0)];
        // Queued outcomes ride along with the next commit, granted or not.
        store.append_later(vec![outcome("r0", "2026-01-01T00:00:00.000Z")]);
        let granted = store
            .reserve_and_append(&one_a_minute, &[call("r1", "2026-01-01T00:00:00.000Z")])
            .unwrap();
        assert!(matches!(granted, Reserve::Granted(_)), "{granted:?}");
        store.append_later(vec![outcome("r1", "2026-01-01T00:00:01.000Z")]);
        let refused = store
            .reserve_and_append(&one_a_minute, &[call("r2", "2026-01-01T00:00:02.000Z")])
            .unwrap();
        assert!(
            matches!(refused, Reserve::Exceeded { charge: 0, .. }),
            "{refused:?}"
        );
        let bodies: Vec<String> = store
            .audit_entries(CALLS, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.body)
            .collect();
        assert_eq!(bodies.len(), 3, "{bodies:?}");
        assert!(bodies[0].contains("\"r0\"") && bodies[0].contains("outcome"));
        assert!(bodies[1].contains("\"r1\"") && bodies[1].contains("\"call\""));
        assert!(bodies[2].contains("\"r1\"") && bodies[2].contains("outcome"));
        assert_eq!(first_broken(&store), None);
        // The granted reservation counts, in this store and in one opened afterwards.
        let reopened = EmbeddedStore::open(&dir).unwrap();
        let again = reopened
            .reserve_and_append(&one_a_minute, &[call("r3", "2026-01-01T00:00:03.000Z")])
            .unwrap();
        assert!(matches!(again, Reserve::Exceeded { .. }), "{again:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pruning_keeps_the_rest_verifiable_and_appends_continue_the_chain() {
        let dir = scratch("prune");
        let store = EmbeddedStore::open(&dir).unwrap();
        for (i, ts) in ["2026-01-01", "2026-01-02", "2026-01-03"]
            .iter()
            .enumerate()
        {
            store
                .append_audit(&[call(&format!("r{i}"), &format!("{ts}T00:00:00.000Z"))])
                .unwrap();
        }
        assert_eq!(store.audit_prune("2026-01-02T12:00:00.000Z").unwrap(), 2);
        assert_eq!(first_broken(&store), None);
        let reopened = EmbeddedStore::open(&dir).unwrap();
        reopened
            .append_audit(&[call("r9", "2026-01-04T00:00:00.000Z")])
            .unwrap();
        let verified = reopened.audit_verify().unwrap();
        assert_eq!(verified[0].as_ref().unwrap().entries, 2);
        // Pruning everything still leaves a chain that continues from the recorded head.
        assert_eq!(reopened.audit_prune("2027-01-01T00:00:00.000Z").unwrap(), 2);
        reopened
            .append_audit(&[call("r10", "2027-01-02T00:00:00.000Z")])
            .unwrap();
        assert_eq!(first_broken(&reopened), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
