//! The embedded store: one SQLite database in the data directory, in WAL mode.

mod approvals;
mod audit;
mod counters;
mod grants;
mod journal;
mod owned;
mod pins;
mod secrets;

pub use grants::GrantsStamp;

use crate::{Clock, SessionRecord, SessionStore, StoreError, SystemClock};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: client sessions.
    "CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        grant_name TEXT NOT NULL,
        server TEXT NOT NULL,
        protocol_version TEXT NOT NULL,
        upstream_session TEXT,
        client_capabilities TEXT NOT NULL,
        created_unix INTEGER NOT NULL DEFAULT (unixepoch())
    )",
    // 2: counters (SPEC §3.5). `counter_entries`: one row per charge of a granted
    // reservation, in one B-tree ordered by key and time (a window's rows are adjacent, and
    // there is no secondary index to update on every write); `expires_ms` is the entry's
    // time plus the window it was charged under — past it, the entry can no longer count
    // and is deleted.
    // `counter_sums` (dropped by 3): per key, the running sum of its entries made at or after
    // `from_ms`.
    "CREATE TABLE counter_entries (
        key TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        reservation TEXT NOT NULL,
        charge INTEGER NOT NULL,
        amount REAL NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (key, at_ms, reservation, charge)
    ) WITHOUT ROWID;
    CREATE TABLE counter_sums (
        key TEXT PRIMARY KEY,
        from_ms INTEGER NOT NULL,
        total REAL NOT NULL
    ) WITHOUT ROWID;",
    // 3: running sums live in memory (embedded/counters.rs): writing them cost a second page
    // per reservation.
    "DROP TABLE counter_sums;",
    // 4: the audit log (audit.rs): every chain's entries in one table, in append order.
    // No secondary index: an append writes one page, queries scan.
    "CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        chain TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE TABLE audit_pruned (
        chain TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    );",
    // 5: how far each audit journal segment (embedded/journal.rs) is in `audit_log`, moved
    // on in the transaction that moves its entries.
    "CREATE TABLE audit_journal (
        segment TEXT PRIMARY KEY,
        upto INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 6: grants minted at runtime (grants.rs): the grant as JSON, its token's hash beside it.
    "CREATE TABLE grants (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );",
    // 7: pinned tool definitions (pins.rs): the approved definition of each server's tool,
    // and beside it a different one the server served since, while that waits for approval.
    "CREATE TABLE tool_pins (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        definition TEXT NOT NULL,
        approved_at TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        served_sha256 TEXT,
        served_definition TEXT,
        served_at TEXT,
        PRIMARY KEY (server, tool)
    ) WITHOUT ROWID;",
    // 8: approval requests (approvals.rs): the request as JSON, found by id or by the
    // digest of the call it is bound to.
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        key_digest TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX approvals_by_key ON approvals (key_digest, created_ms);",
    // 9: keys the gateway makes once and keeps (secrets.rs), e.g. the one that signs the
    // state of an approval asked in-band in protocol 2026-07-28.
    "CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;",
];

/// What a store remembers of the database so that its hot paths need not read it back:
/// right exactly as long as no other connection has written (see [`begin`]).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// `PRAGMA data_version` as of this store's last transaction; another value means
    /// another connection has written since, and nothing here can be trusted.
    data_version: Option<i64>,
    /// Counter entries by key.
    counters: counters::CounterCache,
    /// The last entry of each audit chain: `(seq, hash)`.
    chain_heads: std::collections::HashMap<String, (u64, String)>,
    /// This store owns the counters (`owned.rs`): `counters` is the truth, ahead of the
    /// table, and is never forgotten.
    counters_owned: bool,
}

impl Memory {
    /// Forgets everything that may be stale: the next use of each part reads the database
    /// again. Owned counters are not stale (nobody else writes them) and may be ahead of
    /// the table, so they stay.
    fn forget(&mut self) {
        self.data_version = None;
        if !self.counters_owned {
            self.counters = counters::CounterCache::default();
        }
        self.chain_heads.clear();
    }

    /// What a commit of owned counters' journal lines and audit entries needs — all but the
    /// counter cache — moved out, to be given back with [`Memory::take_back`].
    fn lend(&mut self) -> Memory {
        Memory {
            data_version: self.data_version,
            counters: counters::CounterCache {
                next_table_sweep_ms: self.counters.next_table_sweep_ms,
                ..counters::CounterCache::default()
            },
            chain_heads: std::mem::take(&mut self.chain_heads),
            counters_owned: true,
        }
    }

    /// Takes back what [`Memory::lend`] lent, as the commit left it.
    fn take_back(&mut self, lent: Memory) {
        self.data_version = lent.data_version;
        self.chain_heads = lent.chain_heads;
        self.counters.next_table_sweep_ms = lent.counters.next_table_sweep_ms;
    }
}

/// Starts a write transaction (taking SQLite's write lock before anything is read) and
/// makes sure `memory` is still right for it: `PRAGMA data_version` changes exactly when
/// another connection — another store, another process — has committed since this one's
/// last transaction.
fn begin<'c>(conn: &'c mut Connection, memory: &mut Memory) -> rusqlite::Result<Tx<'c>> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let tx = Tx { conn, open: true };
    let version: i64 = tx
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    if memory.data_version != Some(version) {
        memory.forget();
        memory.data_version = Some(version);
    }
    Ok(tx)
}

/// A write transaction, rolled back unless committed. Unlike `rusqlite::Transaction` it
/// begins and commits with cached statements: every reservation and every audit commit
/// runs one, and parsing `BEGIN IMMEDIATE` and `COMMIT` afresh each time is measurable.
struct Tx<'c> {
    conn: &'c Connection,
    /// Not yet committed or rolled back.
    open: bool,
}

impl Tx<'_> {
    /// Commits.
    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed COMMIT may have rolled back already: then this fails, harmlessly.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// SQLite in `data_dir/toolgate.db`.
pub struct EmbeddedStore {
    /// The database file.
    path: PathBuf,
    /// One connection; SQLite serializes writers anyway, and every statement here is short.
    conn: Mutex<Connection>,
    /// "Now" for counters; the system clock except in tests.
    clock: Arc<dyn Clock>,
    /// What this store remembers of the database (locked after `conn`, never before).
    memory: Mutex<Memory>,
    /// Audit entries waiting for the next group commit.
    audit_queue: Mutex<Vec<audit::Queued>>,
    /// Whether an appender is committing the queue (the others wait for it).
    audit_leading: AtomicBool,
    /// Synchronous appenders wait on this (with `audit_ended`) for a commit to end.
    audit_committed: Condvar,
    /// The mutex `audit_committed` needs; it guards nothing else.
    audit_ended: Mutex<()>,
    /// Asynchronous appenders wait on this for a commit to end.
    audit_notify: tokio::sync::Notify,
    /// Entries queued for later dropped since the last flush (see `MAX_QUEUED_LATER`).
    audit_dropped: AtomicU64,
    /// Where appends are made durable without a commit, once
    /// [`EmbeddedStore::journal_audit`] started it (locked before `audit_queue`).
    audit_journal: Mutex<Option<journal::Journal>>,
    /// The last commit of audit entries failed: appends commit (not journal) until one
    /// succeeds, so that a store that cannot take records refuses calls at once.
    audit_failing: AtomicBool,
    /// `counters.lock`, held exclusively while this store owns the counters
    /// ([`EmbeddedStore::own_counters`]).
    counters_lock: Mutex<Option<std::fs::File>>,
    /// Reservations are journaled (owned counters and a journal).
    counters_journaled: AtomicBool,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let journal = self
            .audit_journal
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(journal) = journal.take() {
            journal.close();
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`, which is created readable by its
    /// owner only: it will hold grants and the audit log. Counters use the system clock.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with_clock(data_dir, Arc::new(SystemClock))
    }

    /// Like [`EmbeddedStore::open`], with `clock` as the counters' notion of "now" (tests
    /// inject a clock they advance by hand).
    pub fn open_with_clock(
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<EmbeddedStore, StoreError> {
        let context = format!("embedded store in {}", data_dir.display());
        create_private_dir(data_dir).map_err(|e| StoreError::new(&context, e))?;
        let path = data_dir.join("toolgate.db");
        let conn = Connection::open(&path).map_err(|e| StoreError::new(&context, e))?;
        // busy_timeout first: another process may hold the database while this one opens it.
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .and_then(|()| enable_wal(&conn))
            .and_then(|()| {
                conn.execute_batch(
                    "PRAGMA synchronous = NORMAL;
                     CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);",
                )
            })
            .map_err(|e| StoreError::new(&context, e))?;
        migrate(&conn).map_err(|e| StoreError::new(&context, e))?;
        Ok(EmbeddedStore {
            path,
            conn: Mutex::new(conn),
            clock,
            memory: Mutex::default(),
            audit_queue: Mutex::default(),
            audit_leading: AtomicBool::new(false),
            audit_committed: Condvar::new(),
            audit_ended: Mutex::new(()),
            audit_notify: tokio::sync::Notify::new(),
            audit_dropped: AtomicU64::new(0),
            audit_journal: Mutex::new(None),
            audit_failing: AtomicBool::new(false),
            counters_lock: Mutex::new(None),
            counters_journaled: AtomicBool::new(false),
        })
    }

    /// Moves WAL checkpoints off the writers: the commit that crosses SQLite's
    /// auto-checkpoint threshold (1000 pages) otherwise copies the log back into the
    /// database, with an fsync, while every caller waits — the long tail of a gateway's
    /// latency. A thread of its own, on its own connection, checkpoints every
    /// `every` instead (PASSIVE: it never blocks writers), until the store is dropped.
    pub fn checkpoint_in_background(self: &Arc<Self>, every: Duration) -> Result<(), StoreError> {
        let checkpointer = Connection::open(&self.path)
            .and_then(|c| c.execute_batch("PRAGMA busy_timeout = 5000;").map(|()| c))
            .map_err(|e| self.error("open the checkpointer", e))?;
        self.with("turn off auto-checkpoints", |c| {
            c.execute_batch("PRAGMA wal_autocheckpoint = 0;")
        })?;
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("toolgate-checkpoint".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                if store.upgrade().is_none() {
                    return;
                }
                if let Err(e) =
                    checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    // The next round tries again; the log only grows meanwhile.
                    eprintln!("toolgate: WAL checkpoint failed: {e}");
                }
            })
            .map_err(|e| self.error("start the checkpointer", e))?;
        Ok(())
    }

    /// Makes every commit wait for the disk (`synchronous = FULL`): records then survive
    /// power loss too, not just a killed gateway, at the price of an fsync per commit.
    pub fn fsync_every_commit(&self) -> Result<(), StoreError> {
        self.with("set synchronous = FULL", |c| {
            c.execute_batch("PRAGMA synchronous = FULL;")
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|e| self.error(what, e))
    }

    /// Runs `f` — a write transaction, see [`begin`] — with the connection and what the
    /// store remembers of the database. Should it fail, the store forgets what it remembers
    /// (the failed transaction may have moved it along), so the next use reads the database
    /// again.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection, &mut Memory) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = f(&mut conn, &mut memory);
        if outcome.is_err() {
            memory.forget();
        }
        outcome.map_err(|e| self.error(what, e))
    }

    /// An error of operation `what` on this store's database.
    pub(super) fn error(&self, what: &str, error: impl fmt::Display) -> StoreError {
        StoreError::new(&format!("{} ({what})", self.path.display()), error)
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Puts the database in WAL mode. Switching a new database to WAL needs an exclusive lock,
/// and SQLite answers "database is locked" at once, without waiting out `busy_timeout`, when
/// another connection is opening it at the same moment (two gateways started together):
/// retry for as long as `busy_timeout` would have waited.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy = match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            // Not switched (the previous mode is answered): someone holds the database.
            Ok(mode) => rusqlite::Error::InvalidParameterName(format!(
                "cannot switch the database to WAL mode (it stays in {mode} mode)"
            )),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => e,
            Err(e) => return Err(e),
        };
        if Instant::now() >= deadline {
            return Err(busy);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version = |conn: &Connection| -> rusqlite::Result<usize> {
        let current: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok(current.max(0) as usize)
    };
    let current = version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {current}, newer than this toolgate ({}); upgrade toolgate",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        // Another process opening the same data directory may be migrating too: take the
        // write lock first, then look again at what is left to do.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        if version(conn)? > index {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        conn.execute_batch(sql)?;
        conn.execute("DELETE FROM schema_version", [])?;
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [index as i64 + 1],
        )?;
        conn.execute_batch("COMMIT")?;
    }
    Ok(())
}

impl SessionStore for EmbeddedStore {
    fn save_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        self.with("save session", |c| {
            c.execute(
                "INSERT OR REPLACE INTO sessions
                 (id, grant_name, server, protocol_version, upstream_session, client_capabilities)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id,
                    s.grant,
                    s.server,
                    s.protocol_version,
                    s.upstream_session,
                    s.client_capabilities.to_string()
                ],
            )
            .map(drop)
        })
    }

    fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.with("delete session", |c| {
            c.execute("DELETE FROM sessions WHERE id = ?1", [id])
                .map(drop)
        })
    }

    fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.with("load sessions", |c| {
            let mut statement = c.prepare(
                "SELECT id, grant_name, server, protocol_version, upstream_session, client_capabilities
                 FROM sessions ORDER BY created_unix",
            )?;
            let rows = statement.query_map([], |r| {
                let capabilities: String = r.get(5)?;
                Ok(SessionRecord {
                    id: r.get(0)?,
                    grant: r.get(1)?,
                    server: r.get(2)?,
                    protocol_version: r.get(3)?,
                    upstream_session: r.get(4)?,
                    client_capabilities: serde_json::from_str(&capabilities)
                        .unwrap_or(serde_json::Value::Null),
                })
            })?;
            rows.collect()
        })
    }
}

/// A clock a test sets by hand (milliseconds since the epoch).
#[cfg(test)]
pub(crate) struct TestClock(pub(crate) std::sync::atomic::AtomicU64);

#[cfg(test)]
impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A fresh directory name for a test's store (not created; removed if it exists).
#[cfg(test)]
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "toolgate-store-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            grant: "g".into(),
            server: "s".into(),
            protocol_version: "2025-11-25".into(),
            upstream_session: Some("up-1".into()),
            client_capabilities: json!({"elicitation": {}}),
        }
    }

    #[test]
    fn sessions_survive_reopening_the_store() {
        let dir = scratch("sessions");
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            store.save_session(&record("a")).unwrap();
            store.save_session(&record("b")).unwrap();
            store.delete_session("a").unwrap();
        }
        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(store.load_sessions().unwrap(), vec![record("b")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "data dir must be private");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gateways_starting_together_on_a_new_data_dir_all_open_it() {
        // Switching a new database to WAL fails at once, busy_timeout or not, while another
        // connection is opening it; migrations could run twice. Neither may fail an open.
        for round in 0..20 {
            let dir = scratch(&format!("race-{round}"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, start) = (dir.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        EmbeddedStore::open(&dir).map(drop)
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_error() {
        let dir = scratch("newer");
        drop(EmbeddedStore::open(&dir).unwrap());
        let conn = Connection::open(dir.join("toolgate.db")).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        drop(conn);
        let err = EmbeddedStore::open(&dir).unwrap_err();
        assert!(err.message.contains("newer than this toolgate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_data_dir_is_named_in_the_error() {
        let file = scratch("file");
        std::fs::write(&file, b"not a dir").unwrap();
        let err = EmbeddedStore::open(&file).unwrap_err();
        assert!(err.message.contains(&file.display().to_string()), "{err}");
        let _ = std::fs::remove_file(&file);
    }

    /// The size the WAL grows to while `rounds` commits of a few pages each are written,
    /// with or without the background checkpointer.
    fn wal_growth(tag: &str, background: bool) -> u64 {
        let dir = scratch(tag);
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        if background {
            store
                .checkpoint_in_background(Duration::from_millis(5))
                .unwrap();
        } else {
            store
                .with("no checkpoints", |c| {
                    c.execute_batch("PRAGMA wal_autocheckpoint = 0;")
                })
                .unwrap();
        }
        let mut largest = 0;
        for round in 0..60 {
            let records: Vec<SessionRecord> = (0..20)
                .map(|i| SessionRecord {
                    id: format!("s-{round}-{i}"),
                    grant: "g".repeat(200),
                    server: "s".into(),
                    protocol_version: "2025-06-18".into(),
                    upstream_session: None,
                    client_capabilities: serde_json::json!({"pad": "x".repeat(500)}),
                })
                .collect();
            for record in &records {
                store.save_session(record).unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
            let wal = std::fs::metadata(dir.join("toolgate.db-wal")).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        largest
    }

    #[test]
    fn the_background_checkpointer_keeps_the_wal_small() {
        // 1200 small commits: about 12 MB of WAL when nothing checkpoints, 0.3 MB with the
        // checkpointer (measured here); the bounds leave a wide margin.
        let unchecked = wal_growth("wal-unchecked", false);
        let checked = wal_growth("wal-checked", true);
        assert!(
            unchecked > 3 << 20,
            "without checkpoints the WAL grew to {unchecked} bytes"
        );
        assert!(
            checked < unchecked / 4,
            "with the background checkpointer the WAL still grew to {checked} bytes (vs {unchecked})"
        );
    }
}
