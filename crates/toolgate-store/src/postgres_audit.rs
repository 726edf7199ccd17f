//! The audit log in PostgreSQL: the cluster audit log (SPEC §8, §9).
//!
//! Any number of gateway replicas append to one audit table. The records, their chaining and
//! their verification are those of [`crate::audit`]; this module stores them.
//!
//! # One chain per replica and stream
//!
//! Every [`PostgresAuditLog`] has a *replica id* (16 random hex digits unless given with
//! [`PostgresAuditLog::with_replica`]) and writes the chains `calls@<replica>` and
//! `admin@<replica>`. Nobody else appends to them, so the instance keeps their heads
//! (`(seq, hash)` of the last entry) in memory after reading them once, and appending costs
//! no read. A single chain shared by all replicas would need every append to read the head
//! under a lock held across the cluster. `UNIQUE (chain, seq)` turns a second live instance
//! with the same replica id (a misconfiguration) into failed appends, never a forked chain:
//! a failed batch makes the writer read its heads again.
//!
//! Queries read a *stream* — `calls` or `admin` — across the chains of every replica, in
//! table order (`id`); verification walks each chain on its own.
//!
//! # Schema
//!
//! The store creates and migrates its tables itself, on first use (see [`MIGRATIONS`]), inside
//! one transaction that holds a transaction-level advisory lock, so replicas starting together
//! migrate once. The version is kept in `<prefix>audit_schema_version`. With the default prefix
//! [`DEFAULT_TABLE_PREFIX`]:
//!
//! - `toolgate_audit_log (id BIGSERIAL PRIMARY KEY, chain, seq, body, prev_hash, hash,
//!   UNIQUE (chain, seq))` — every entry of every chain;
//! - `toolgate_audit_pruned (chain PRIMARY KEY, seq, hash)` — per chain, the last entry pruned
//!   away, where verification starts.
//!
//! # Writing: group commit
//!
//! Appends go to one writer task per instance (started on first use), which owns a connection:
//! it takes *every* batch waiting, plus entries queued with [`AuditLog::append_later`], and
//! writes them in one transaction with one multi-row `INSERT` (`unnest` of five arrays, a
//! statement prepared once per connection). Concurrent appenders therefore share round trips
//! and commits, and a lone append costs two round trips: `BEGIN` + advisory lock + `INSERT`
//! pipelined, then `COMMIT`. An append resolves only after `COMMIT` succeeded.
//!
//! # Table order is commit order
//!
//! Every write transaction first takes one advisory lock per table (`pg_advisory_xact_lock`),
//! so the transactions of all replicas commit one after another and ids grow in commit order: a
//! reader following the log by id (`audit tail`, see [`PostgresAuditLog::audit_entries`])
//! never misses a row that another replica committed late with a smaller id. The lock is held
//! for one `INSERT` and its `COMMIT`; group commit keeps the number of transactions low. The
//! price: the commits of different replicas cannot share a WAL flush (with two replicas on one
//! machine, about 30% of the throughput). Pruning does not take it (see
//! [`PostgresAuditLog::audit_prune`]).
//!
//! # Failures
//!
//! Every append (and flush) has a deadline ([`DEFAULT_TIMEOUT`], see
//! [`PostgresAuditLog::with_timeout`]), connecting included; reads and pruning have a longer
//! one ([`DEFAULT_READ_TIMEOUT`]). A failure is a [`StoreError`] reading
//! `postgres audit log at <url without password>: <operation>: <cause>`; nothing panics.
//! Connections are made lazily — [`PostgresAuditLog::connect`] only checks the URL, so a gateway
//! starts while PostgreSQL is down — and made again after any failure that may have broken
//! them, so the gateway recovers by itself when PostgreSQL comes back. An operation that finds
//! its connection broken before anything could have been committed retries once on a fresh
//! connection within the same deadline; a `COMMIT` whose answer was lost is reported as a
//! failure (its entries may or may not have been written) and not retried, so nothing is
//! written twice. After any failed write the chain heads are read again.
//!
//! Entries queued with `append_later` that a failed transaction carried are queued again, up
//! to [`MAX_QUEUED_LATER`] (beyond that the oldest are dropped, and the next
//! [`flush`](AuditLog::flush) reports how many).
//!
//! TLS is not supported yet: a URL requiring it (`sslmode=require`) is refused by `connect`.

use crate::audit::{
    admin_events, chain_hash, merge, verify, AdminRecord, AuditEntry, AuditFilter, Broken,
    MergedRecord, StoredEntry, Verified, ADMIN, CALLS, GENESIS,
};
use crate::{AuditLog, StoreError, StoreFuture};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Row as PgRow, Statement};

pub use approvals::APPROVALS_CHAIN;
pub use grants::{GrantsWatch, GRANTS_CHAIN};
pub use pins::TOOLS_CHAIN;

/// Runs `$attempt` — a future of `Result<T, Failed>` using `$conn: &mut Conn` — on the
/// connection of `$link` (a `&mut Link`) within `$timeout`; when the connection turns out
/// broken and the attempt cannot have taken effect, once more on a fresh connection (so the
/// attempt must be safe to repeat after a rollback). Evaluates to `Result<T, String>`.
///
/// A macro, not a method taking an async closure: the futures of a closure generic over the
/// connection's lifetime cannot be proven `Send`, and the writer runs on a spawned task.
macro_rules! on_connection {
    ($link:expr, $timeout:expr, |$conn:ident| $attempt:expr) => {{
        let link: &mut Link = $link;
        let timeout: Duration = $timeout;
        let attempts = async {
            let mut retried = false;
            loop {
                let $conn: &mut Conn = link.connected().await?;
                let failed: Failed = match $attempt.await {
                    Ok(value) => break Ok(value),
                    Err(failed) => failed,
                };
                if let Some(cause) = link.failed(failed, &mut retried) {
                    break Err(cause);
                }
            }
        };
        if tokio::runtime::Handle::try_current().is_err() {
            Err(NO_RUNTIME.to_string())
        } else {
            match tokio::time::timeout(timeout, attempts).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => {
                    // A connection that lets a deadline pass may be dead without knowing it
                    // (and may be inside a transaction): replace it.
                    link.conn = None;
                    Err(format!("no answer within {timeout:?}"))
                }
            }
        }
    }};
}

// After the macro, which it uses.
/// Runs `work` in a transaction holding the audit table's write lock; rolls back when it
/// fails or when it returns `commit == false`.
macro_rules! locked_transaction {
    ($client:expr, $tables:expr, $work:expr) => {{
        let client: &tokio_postgres::Client = $client;
        let outcome = async {
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({})",
                    $tables.write_lock
                ))
                .await?;
            let (value, commit) = $work.await?;
            if commit {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(Failed::in_doubt)?;
            } else {
                client.batch_execute("ROLLBACK").await?;
            }
            Ok::<_, Failed>(value)
        }
        .await;
        if outcome.is_err() {
            // Leave no transaction open on a connection that is kept.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        outcome
    }};
}

mod approvals;
mod grants;
mod pins;
mod secrets;

/// Why an operation failed without a tokio runtime.
const NO_RUNTIME: &str = "the postgres audit log needs a tokio runtime";

/// What the table names start with, unless changed with
/// [`PostgresAuditLog::with_table_prefix`].
pub const DEFAULT_TABLE_PREFIX: &str = "toolgate_";

/// How long one append or flush may take, connecting included, before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one read (query, verification) or pruning may take: they scan the log.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many entries wait for a commit after [`AuditLog::append_later`]; while
/// PostgreSQL is unreachable, older ones beyond it are dropped (and reported by the next
/// flush).
pub const MAX_QUEUED_LATER: usize = 100_000;

/// At most this many entries queued by `append_later` go into one transaction, and pruning
/// deletes at most this many per statement: what a transaction carries must fit its deadline,
/// even after an outage left a backlog, or when pruning first meets years of entries.
pub const ROWS_PER_TRANSACTION: usize = 10_000;

/// The longest table prefix: PostgreSQL names have at most 63 bytes, and the longest table
/// name appended to the prefix is `audit_schema_version` (20).
const MAX_PREFIX_LEN: usize = 63 - 20;

/// Schema migrations, applied in order; the index + 1 is the schema version. `{log}` and
/// `{pruned}` stand for the table names (prefix included).
pub const MIGRATIONS: &[&str] = &[
    // 1: every chain's entries in one table, in append order (`id`); `UNIQUE (chain, seq)`
    // keeps each chain free of forks (and is the index that reads a chain's head). Per chain,
    // the last entry pruned away.
    "CREATE TABLE {log} (
        id BIGSERIAL PRIMARY KEY,
        chain TEXT NOT NULL,
        seq BIGINT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (chain, seq)
    );
    CREATE TABLE {pruned} (
        chain TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL
    );",
    // 2: grants minted at runtime (postgres_audit/grants.rs), shared by every replica.
    "CREATE TABLE {grants} (
        name TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );",
    // 3: pinned tool definitions (postgres_audit/pins.rs), shared by every replica.
    "CREATE TABLE {pins} (
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
    );",
    // 4: approval requests (postgres_audit/approvals.rs), shared by every replica.
    "CREATE TABLE {approvals} (
        id TEXT PRIMARY KEY,
        key_digest TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX {approvals}_by_key ON {approvals} (key_digest, created_ms);",
    // 5: keys made once and shared by every replica (postgres_audit/secrets.rs).
    "CREATE TABLE {secrets} (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );",
];

/// The audit log of a cluster deployment: entries in PostgreSQL, shared by every gateway that
/// points at the same database (and table prefix). See the [module docs](self).
///
/// Needs a tokio runtime (the writer task and the connections run on it). Entries queued with
/// [`AuditLog::append_later`] and not yet flushed are lost when it is dropped: flush first.
pub struct PostgresAuditLog {
    shared: Arc<Shared>,
    /// Feeds the writer task; `None` until the first append or flush starts it.
    writer: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// The connection for reads, pruning and `ping` (not the writer's: a long scan must not
    /// hold up appends).
    reader: tokio::sync::Mutex<Link>,
}

/// What an instance was configured with.
#[derive(Clone)]
struct Settings {
    config: Config,
    /// The database, without the password, for messages.
    target: String,
    timeout: Duration,
    read_timeout: Duration,
    replica: String,
    tables: Tables,
    /// [`MAX_QUEUED_LATER`] and [`ROWS_PER_TRANSACTION`] (other values only in tests).
    max_queued: usize,
    per_transaction: usize,
    /// Whether a commit waits for PostgreSQL's disk (`synchronous_commit`; see
    /// [`PostgresAuditLog::with_synchronous_commit`]).
    synchronous_commit: bool,
}

/// The table names and the advisory lock keys derived from them.
#[derive(Clone, Debug)]
struct Tables {
    log: String,
    pruned: String,
    /// Minted grants; also the name of the channel their changes are announced on.
    grants: String,
    /// Pinned tool definitions.
    pins: String,
    /// Approval requests.
    approvals: String,
    /// Keys made once (see `secrets.rs`).
    secrets: String,
    version: String,
    /// Held by every write transaction (see the module docs).
    write_lock: i64,
    /// Held while migrating.
    migrate_lock: i64,
}

/// What the instance, its writer task and its reader share.
struct Shared {
    settings: Settings,
    /// Whether this instance has brought the schema up to date (once per instance).
    migrated: AtomicBool,
    /// Entries queued by `append_later`, oldest first.
    later: Mutex<Vec<Row>>,
    /// Entries dropped from `later` because it was full, not yet reported by a flush.
    dropped: AtomicU64,
    /// Transactions the writer committed.
    commits: AtomicU64,
}

/// One entry to write.
#[derive(Debug, Clone)]
struct Row {
    chain: String,
    body: String,
}

/// Entries of one appender (none for a flush) and where the outcome goes.
struct Job {
    rows: Vec<Row>,
    reply: oneshot::Sender<Result<(), String>>,
}

impl fmt::Debug for PostgresAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.shared.settings;
        f.debug_struct("PostgresAuditLog")
            .field("target", &settings.target)
            .field("replica", &settings.replica)
            .field("table", &settings.tables.log)
            .field("timeout", &settings.timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresAuditLog {
    /// An audit log in the PostgreSQL database at `url` (`postgres://[user[:password]@]host
    /// [:port][/database][?options]`, or libpq's `key=value` form). Connects lazily: this only
    /// checks the URL, so a gateway starts even while PostgreSQL is down (appends fail until it
    /// is back). The replica id is random; the tables are created on first use.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let invalid = |why: String| StoreError {
            message: format!(
                "postgres audit log: invalid postgres url {}: {why}",
                redacted(url)
            ),
        };
        let config: Config = url.parse().map_err(|e| invalid(describe(&e)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(invalid("it names no host".to_string()));
        }
        if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
            return Err(invalid(
                "TLS is not supported yet (sslmode=require); use a connection without TLS \
                 (e.g. through a local proxy that adds it)"
                    .to_string(),
            ));
        }
        Ok(Self::from_settings(Settings {
            target: target(&config),
            config,
            timeout: DEFAULT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            replica: format!("{:016x}", rand::random::<u64>()),
            tables: Tables::new(DEFAULT_TABLE_PREFIX),
            max_queued: MAX_QUEUED_LATER,
            per_transaction: ROWS_PER_TRANSACTION,
            synchronous_commit: true,
        }))
    }

    fn from_settings(settings: Settings) -> Self {
        let shared = Arc::new(Shared {
            settings,
            migrated: AtomicBool::new(false),
            later: Mutex::default(),
            dropped: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        PostgresAuditLog {
            reader: tokio::sync::Mutex::new(Link::new(Arc::clone(&shared))),
            shared,
            writer: Mutex::new(None),
        }
    }

    /// The same log with `change` applied to its settings (a fresh instance: builders are for
    /// construction, before first use).
    fn rebuild(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.shared.settings.clone();
        change(&mut settings);
        Self::from_settings(settings)
    }

    /// Sets the deadline of each append and flush (connecting included) instead of
    /// [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|s| s.timeout = timeout)
    }

    /// Whether a commit waits until PostgreSQL has flushed it to disk (the default, and
    /// PostgreSQL's). Off, a commit returns once PostgreSQL has it in memory: entries then
    /// survive the gateway being killed — the audit log's `durability = "process"` — but a
    /// crash of the PostgreSQL server can lose its last fraction of a second, and a commit
    /// costs a round trip instead of a disk flush.
    pub fn with_synchronous_commit(self, on: bool) -> Self {
        self.rebuild(|s| s.synchronous_commit = on)
    }

    /// Sets the deadline of each read and pruning instead of [`DEFAULT_READ_TIMEOUT`].
    pub fn with_read_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|s| s.read_timeout = timeout)
    }

    /// Names this instance's chains `calls@<replica>` and `admin@<replica>` instead of using a
    /// random id. A stable id (e.g. the host name) lets a restarted replica continue its
    /// chains; it must never be used by two live instances at once (their appends would fail
    /// whenever they race).
    pub fn with_replica(self, replica: impl Into<String>) -> Self {
        let replica = replica.into();
        self.rebuild(|s| s.replica = replica)
    }

    /// Puts `prefix` instead of [`DEFAULT_TABLE_PREFIX`] before the table names, e.g. to keep
    /// several deployments (or test runs) apart in one database. Lower-case ASCII letters,
    /// digits and `_`, not starting with a digit, at most 43 bytes; an empty prefix is allowed.
    /// (For another schema, set `search_path` in the URL: `?options=-csearch_path%3Daudit`.)
    pub fn with_table_prefix(self, prefix: &str) -> Result<Self, StoreError> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if prefix.len() > MAX_PREFIX_LEN
            || !prefix.chars().all(allowed)
            || prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(StoreError {
                message: format!(
                    "postgres audit log: invalid table prefix {prefix:?}: use lower-case ASCII \
                     letters, digits and '_', not starting with a digit, at most \
                     {MAX_PREFIX_LEN} bytes"
                ),
            });
        }
        Ok(self.rebuild(|s| s.tables = Tables::new(prefix)))
    }

    /// Not part of the API: a test hook. Bounds the entries queued by `append_later` to
    /// `max_queued` instead of [`MAX_QUEUED_LATER`], and writes (of those) or prunes at most
    /// `per_transaction` entries per transaction instead of [`ROWS_PER_TRANSACTION`] (both at
    /// least 1).
    #[doc(hidden)]
    pub fn with_queue_limits(self, max_queued: usize, per_transaction: usize) -> Self {
        self.rebuild(|s| {
            s.max_queued = max_queued.max(1);
            s.per_transaction = per_transaction.max(1);
        })
    }

    /// This instance's replica id.
    pub fn replica(&self) -> &str {
        &self.shared.settings.replica
    }

    /// The chain this instance writes the entries of `stream` ([`CALLS`] or [`ADMIN`]) to.
    pub fn chain(&self, stream: &str) -> String {
        format!("{stream}@{}", self.shared.settings.replica)
    }

    /// The table holding the entries (prefix included).
    pub fn table(&self) -> &str {
        &self.shared.settings.tables.log
    }

    /// How many transactions this instance's writer has committed: with group commit, fewer
    /// than the appends when they overlap.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Checks that PostgreSQL answers (and brings the schema up to date), e.g. to report at
    /// startup whether the store is reachable. Not needed before use.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            conn.client.batch_execute("SELECT 1").await?;
            Ok(())
        })
        .map_err(|cause| self.shared.error("ping", &cause))
    }

    /// Entries of every chain of `stream` ([`CALLS`] or [`ADMIN`], i.e. chains named
    /// `<stream>@<replica>`) with an id above `after` (0: from the start), in table order, at
    /// most `limit`, with their ids (for following the log: pass the last id back). Ids grow in
    /// commit order (see the module docs), so following never skips an entry.
    pub async fn audit_entries(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredEntry)>, StoreError> {
        let sql = format!(
            "SELECT id, chain, seq, body, prev_hash, hash FROM {}
             WHERE left(chain, char_length($1)) = $1 AND id > $2 ORDER BY id LIMIT $3",
            self.shared.settings.tables.log
        );
        let prefix = format!("{stream}@");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let timeout = self.shared.settings.read_timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let rows = conn.client.query(&sql, &[&prefix, &after, &limit]).await?;
            rows.iter().map(stored).collect::<Result<Vec<_>, Failed>>()
        })
        .map_err(|cause| self.shared.error("read the audit log", &cause))
    }

    /// Every entry of `stream`, in table order.
    async fn whole_stream(&self, stream: &str) -> Result<Vec<StoredEntry>, StoreError> {
        Ok(self
            .audit_entries(stream, 0, usize::MAX)
            .await?
            .into_iter()
            .map(|(_, entry)| entry)
            .collect())
    }

    /// Call records of every replica with their outcomes merged, oldest first (in table
    /// order), those `filter` wants.
    pub async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<MergedRecord>, StoreError> {
        Ok(merge(&self.whole_stream(CALLS).await?, filter))
    }

    /// The admin events of every replica, oldest first (`filter`'s time range and limit
    /// apply).
    pub async fn audit_admin(&self, filter: &AuditFilter) -> Result<Vec<AdminRecord>, StoreError> {
        Ok(admin_events(&self.whole_stream(ADMIN).await?, filter))
    }

    /// Verifies every chain in the table (of every replica, calls chains first), each from
    /// where pruning left it, in one consistent snapshot. A chain pruned away entirely verifies
    /// with no entries and its pruned head.
    pub async fn audit_verify(&self) -> Result<Vec<Result<Verified, Broken>>, StoreError> {
        let tables = &self.shared.settings.tables;
        let pruned_sql = format!("SELECT chain, seq, hash FROM {}", tables.pruned);
        let chains_sql = format!("SELECT DISTINCT chain FROM {}", tables.log);
        let chain_sql = format!(
            "SELECT id, chain, seq, body, prev_hash, hash FROM {} WHERE chain = $1 ORDER BY id",
            tables.log
        );
        let timeout = self.shared.settings.read_timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            // One snapshot: a pruned part committed between two reads must not look like
            // deleted entries.
            let tx = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut starts = HashMap::new();
            for row in tx.query(&pruned_sql, &[]).await? {
                let chain: String = row.try_get(0)?;
                starts.insert(
                    chain,
                    (seq_of(row.try_get(1)?), row.try_get::<_, String>(2)?),
                );
            }
            let mut chains: BTreeSet<(bool, String)> = BTreeSet::new();
            for row in tx.query(&chains_sql, &[]).await? {
                let chain: String = row.try_get(0)?;
                chains.insert((!chain.starts_with("calls@"), chain));
            }
            for chain in starts.keys() {
                chains.insert((!chain.starts_with("calls@"), chain.clone()));
            }
            let mut results = Vec::with_capacity(chains.len());
            for (_, chain) in chains {
                let entries = tx
                    .query(&chain_sql, &[&chain])
                    .await?
                    .iter()
                    .map(|row| stored(row).map(|(_, entry)| entry))
                    .collect::<Result<Vec<_>, _>>()?;
                let (seq, hash) = starts
                    .get(&chain)
                    .cloned()
                    .unwrap_or_else(|| (0, GENESIS.to_string()));
                results.push(verify(&chain, (seq, &hash), &entries));
            }
            tx.commit().await?;
            Ok::<_, Failed>(results)
        })
        .map_err(|cause| self.shared.error("verify the audit log", &cause))
    }

    /// Deletes each chain's entries older than `before` (RFC 3339, compared with the body's
    /// `ts`) — the longest run of them at the chain's start — and records the last one deleted,
    /// so that verification starts from it and appends continue after it. Returns how many
    /// entries went.
    ///
    /// Safe while replicas append, and it does not hold them up: it takes no lock beyond the
    /// rows it deletes, which nobody appends to. It deletes in parts of at most
    /// [`ROWS_PER_TRANSACTION`] entries, oldest first, each part in one statement that also
    /// records its last entry (so an interrupted pruning leaves a verifiable chain, and the
    /// next one carries on); the deadline applies to each statement.
    pub async fn audit_prune(&self, before: &str) -> Result<u64, StoreError> {
        const WHAT: &str = "prune the audit log";
        let settings = &self.shared.settings;
        let (log, pruned) = (&settings.tables.log, &settings.tables.pruned);
        let chains_sql = format!("SELECT DISTINCT chain FROM {log}");
        // Where the run ends: the first entry not older than `before` (found in id order, so
        // only the run itself is read), or past the chain's present last entry (entries
        // appended from now on are not older than `before`).
        let keep_sql = format!(
            "SELECT COALESCE(
                 (SELECT id FROM {log}
                  WHERE chain = $1 AND COALESCE(body::jsonb ->> 'ts', '') COLLATE \"C\" >= $2
                  ORDER BY id LIMIT 1),
                 (SELECT id + 1 FROM {log} WHERE chain = $1 ORDER BY seq DESC LIMIT 1),
                 0)"
        );
        // One part: the oldest entries before the end of the run, deleted, the last of them
        // recorded (never moving a recorded head back, should two prunings overlap).
        let part_sql = format!(
            "WITH gone AS (
                 DELETE FROM {log} WHERE id IN (
                     SELECT id FROM {log} WHERE chain = $1 AND id < $2 ORDER BY id LIMIT $3
                 )
                 RETURNING id, seq, hash
             ), last AS (
                 SELECT seq, hash FROM gone ORDER BY id DESC LIMIT 1
             ), recorded AS (
                 INSERT INTO {pruned} AS p (chain, seq, hash) SELECT $1, seq, hash FROM last
                 ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
                 WHERE p.seq < excluded.seq
             )
             SELECT count(*) FROM gone"
        );
        let part = i64::try_from(settings.per_transaction).unwrap_or(i64::MAX);
        let timeout = settings.read_timeout;
        let mut reader = self.reader.lock().await;
        let chains = on_connection!(&mut reader, timeout, |conn| async {
            let rows = conn.client.query(&chains_sql, &[]).await?;
            rows.iter()
                .map(|row| row.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failed::from)
        })
        .map_err(|cause| self.shared.error(WHAT, &cause))?;
        let mut deleted = 0u64;
        for chain in chains {
            let keep: i64 = on_connection!(&mut reader, timeout, |conn| async {
                let row = conn.client.query_one(&keep_sql, &[&chain, &before]).await?;
                Ok::<_, Failed>(row.try_get(0)?)
            })
            .map_err(|cause| self.shared.error(WHAT, &cause))?;
            loop {
                // Repeating a part whose answer was lost is harmless: it deletes the next
                // entries of the run, if any.
                let gone: i64 = on_connection!(&mut reader, timeout, |conn| async {
                    let row = conn
                        .client
                        .query_one(&part_sql, &[&chain, &keep, &part])
                        .await?;
                    Ok::<_, Failed>(row.try_get(0)?)
                })
                .map_err(|cause| self.shared.error(WHAT, &cause))?;
                deleted += u64::try_from(gone).unwrap_or(0);
                if gone < part {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// The rows of `entries`, on this instance's chains.
    fn rows(&self, entries: &[AuditEntry]) -> Vec<Row> {
        entries
            .iter()
            .map(|entry| Row {
                chain: self.chain(entry.chain()),
                body: entry.body(),
            })
            .collect()
    }

    /// Hands `rows` (none: a flush) to the writer task and waits for their commit.
    async fn submit(&self, rows: Vec<Row>, what: &str) -> Result<(), StoreError> {
        let timeout = self.shared.settings.timeout;
        let (reply, answer) = oneshot::channel();
        self.send(Job { rows, reply })
            .map_err(|cause| self.shared.error(what, &cause))?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(|cause| self.shared.error(what, &cause)),
            Ok(Err(_)) => Err(self
                .shared
                .error(what, "the writer task stopped (its runtime shut down)")),
            // Its entries are not written if the writer has not taken them yet (it skips
            // batches nobody waits for any more); if it has, they may be.
            Err(_) => Err(self
                .shared
                .error(what, &format!("no answer within {timeout:?}"))),
        }
    }

    /// Queues `job` for the writer task, starting it (again) if it is not running.
    fn send(&self, job: Job) -> Result<(), String> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let job = match writer.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                // The task is gone (its runtime shut down): start another on this one.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NO_RUNTIME.to_string())?;
        let (sender, jobs) = mpsc::unbounded_channel();
        runtime.spawn(Writer::new(Arc::clone(&self.shared)).run(jobs));
        sender
            .send(job)
            .map_err(|_| "the writer task could not be started".to_string())?;
        *writer = Some(sender);
        Ok(())
    }
}

impl AuditLog for PostgresAuditLog {
    fn append<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            self.submit(self.rows(entries), "append to the audit log")
                .await
        })
    }

    fn append_later(&self, entries: Vec<AuditEntry>) {
        let rows = self.rows(&entries);
        let mut later = self.shared.later();
        later.extend(rows);
        self.shared.trim(&mut later);
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            const WHAT: &str = "flush the audit log";
            // One transaction (and deadline) per part of the backlog; entries queued meanwhile
            // may ride along but do not prolong the flush.
            let per_transaction = self.shared.settings.per_transaction;
            let parts = self.shared.later().len().div_ceil(per_transaction);
            for _ in 0..parts.max(1) {
                self.submit(Vec::new(), WHAT).await?;
                if self.shared.later().is_empty() {
                    break;
                }
            }
            match self.shared.dropped.swap(0, Ordering::Relaxed) {
                0 => Ok(()),
                dropped => Err(self.shared.error(
                    WHAT,
                    &format!(
                        "{dropped} queued entries were dropped: more than {} waited while \
                         the database was unavailable",
                        self.shared.settings.max_queued
                    ),
                )),
            }
        })
    }
}

impl Shared {
    fn error(&self, what: &str, cause: &str) -> StoreError {
        StoreError {
            message: format!(
                "postgres audit log at {}: {what}: {cause}",
                self.settings.target
            ),
        }
    }

    fn later(&self) -> MutexGuard<'_, Vec<Row>> {
        self.later.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the oldest queued entries beyond [`MAX_QUEUED_LATER`], counting them.
    fn trim(&self, later: &mut Vec<Row>) {
        let max = self.settings.max_queued;
        if later.len() > max {
            let excess = later.len() - max;
            later.drain(..excess);
            self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        }
    }
}

impl Tables {
    fn new(prefix: &str) -> Self {
        let log = format!("{prefix}audit_log");
        Tables {
            write_lock: lock_key("append", &log),
            migrate_lock: lock_key("migrate", &log),
            pruned: format!("{prefix}audit_pruned"),
            grants: format!("{prefix}grants"),
            pins: format!("{prefix}tool_pins"),
            approvals: format!("{prefix}approvals"),
            secrets: format!("{prefix}secrets"),
            version: format!("{prefix}audit_schema_version"),
            log,
        }
    }

    /// The head of chain `$1`: `(seq, hash)` of its last entry, or of the last one pruned
    /// away; no row for a chain never written.
    fn head_sql(&self) -> String {
        format!(
            "SELECT seq, hash FROM (
                 (SELECT seq, hash, 0 AS o FROM {} WHERE chain = $1 ORDER BY seq DESC LIMIT 1)
                 UNION ALL
                 (SELECT seq, hash, 1 AS o FROM {} WHERE chain = $1)
             ) AS h ORDER BY o LIMIT 1",
            self.log, self.pruned
        )
    }

    /// `sql` with the table names filled in.
    fn fill(&self, sql: &str) -> String {
        sql.replace("{log}", &self.log)
            .replace("{pruned}", &self.pruned)
            .replace("{grants}", &self.grants)
            .replace("{pins}", &self.pins)
            .replace("{approvals}", &self.approvals)
            .replace("{secrets}", &self.secrets)
    }
}

/// An advisory lock key for `purpose` on `table`: the first 8 bytes of a SHA-256, so that
/// deployments with different prefixes do not wait for each other.
fn lock_key(purpose: &str, table: &str) -> i64 {
    let digest = Sha256::digest(format!("toolgate {purpose} {table}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The task that writes every append of one instance (see *Writing* in the module docs).
struct Writer {
    shared: Arc<Shared>,
    link: Link,
    /// The heads of this instance's chains as committed: `(seq, hash)` of their last entry.
    /// Empty until read, and again after any failed write.
    heads: HashMap<String, (u64, String)>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Writer {
            link: Link::new(Arc::clone(&shared)),
            shared,
            heads: HashMap::new(),
        }
    }

    /// Writes batches until the log is dropped.
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = jobs.recv().await {
            // Let the appenders that the last commit answered (and that append again at once)
            // queue before draining: a few microseconds against a commit's milliseconds. In the
            // concurrent test this raised appends per commit from about 4 to about 7 of 8.
            tokio::task::yield_now().await;
            let mut batch = vec![first];
            while let Ok(job) = jobs.try_recv() {
                batch.push(job);
            }
            self.commit(batch).await;
        }
    }

    /// Writes the entries of `batch` and the oldest entries queued by `append_later` (at most
    /// [`ROWS_PER_TRANSACTION`]) in one transaction, and answers every job.
    async fn commit(&mut self, mut batch: Vec<Job>) {
        // An appender that stopped waiting (deadline passed, request cancelled) was told its
        // entries failed, or nobody looks: do not write them.
        batch.retain(|job| !job.reply.is_closed());
        let outcome = self.write_round(&batch).await;
        for job in batch {
            let _ = job.reply.send(outcome.clone());
        }
    }

    /// One transaction: the oldest queued `append_later` entries and every entry of
    /// `appends`.
    async fn write_round(&mut self, appends: &[Job]) -> Result<(), String> {
        let later: Vec<Row> = {
            let mut queue = self.shared.later();
            let take = queue.len().min(self.shared.settings.per_transaction);
            queue.drain(..take).collect()
        };
        let rows: Vec<&Row> = later
            .iter()
            .chain(appends.iter().flat_map(|job| job.rows.iter()))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let tables = &self.shared.settings.tables;
        let heads = &mut self.heads;
        let outcome = on_connection!(&mut self.link, self.shared.settings.timeout, |conn| {
            write(conn, tables, &mut *heads, &rows)
        });
        match &outcome {
            Ok(()) => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.heads.clear();
                // Back to the front of the queue, for the next transaction.
                let mut queue = self.shared.later();
                let newer = std::mem::replace(&mut *queue, later);
                queue.extend(newer);
                self.shared.trim(&mut queue);
            }
        }
        outcome
    }
}

/// Appends `rows` to their chains in one transaction, moving `heads` along once committed.
async fn write(
    conn: &mut Conn,
    tables: &Tables,
    heads: &mut HashMap<String, (u64, String)>,
    rows: &[&Row],
) -> Result<(), Failed> {
    let insert = conn
        .prepared(
            "insert",
            &format!(
                "INSERT INTO {} (chain, seq, body, prev_hash, hash)
                 SELECT chain, seq, body, prev_hash, hash
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
                     WITH ORDINALITY AS u (chain, seq, body, prev_hash, hash, n)
                 ORDER BY n",
                tables.log
            ),
        )
        .await?;
    let head = conn.prepared("head", &tables.head_sql()).await?;
    // Plain text, one message: `BEGIN` cannot fail, so if the lock does, the transaction is
    // aborted and the pipelined `INSERT` fails too instead of committing on its own.
    let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({})", tables.write_lock);
    let mut missing: Vec<&str> = rows
        .iter()
        .map(|row| row.chain.as_str())
        .filter(|chain| !heads.contains_key(*chain))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let client = &conn.client;
    let outcome = async {
        let mut staged = heads.clone();
        if missing.is_empty() {
            // The usual case: everything in one round trip, then COMMIT.
            let columns = Columns::new(&mut staged, rows)?;
            let params = columns.params();
            let (began, inserted) = tokio::join!(
                client.batch_execute(&begin),
                client.execute(&insert, &params)
            );
            began?;
            inserted?;
        } else {
            // Heads unknown (first write, or after a failure): read them under the lock.
            client.batch_execute(&begin).await?;
            for chain in missing {
                let found = client.query_opt(&head, &[&chain]).await?;
                let at = match found {
                    Some(row) => (seq_of(row.try_get(0)?), row.try_get(1)?),
                    None => (0, GENESIS.to_string()),
                };
                staged.insert(chain.to_string(), at);
            }
            let columns = Columns::new(&mut staged, rows)?;
            client.execute(&insert, &columns.params()).await?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Failed::in_doubt)?;
        Ok(staged)
    }
    .await;
    match outcome {
        Ok(staged) => {
            *heads = staged;
            Ok(())
        }
        Err(failed) => {
            // Leave no transaction open on a connection that is kept (a warning if none is).
            let _ = client.batch_execute("ROLLBACK").await;
            Err(failed)
        }
    }
}

/// The `INSERT`'s five arrays.
struct Columns<'r> {
    chains: Vec<&'r str>,
    seqs: Vec<i64>,
    bodies: Vec<&'r str>,
    prev_hashes: Vec<String>,
    hashes: Vec<String>,
}

impl<'r> Columns<'r> {
    /// Chains `rows` after `heads`, which move along to the new last entries.
    fn new(heads: &mut HashMap<String, (u64, String)>, rows: &[&'r Row]) -> Result<Self, Failed> {
        let mut columns = Columns {
            chains: Vec::with_capacity(rows.len()),
            seqs: Vec::with_capacity(rows.len()),
            bodies: Vec::with_capacity(rows.len()),
            prev_hashes: Vec::with_capacity(rows.len()),
            hashes: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let head = heads
                .entry(row.chain.clone())
                .or_insert_with(|| (0, GENESIS.to_string()));
            let seq = head.0 + 1;
            let hash = chain_hash(&head.1, &row.body);
            columns.chains.push(&row.chain);
            columns.seqs.push(
                i64::try_from(seq)
                    .map_err(|_| Failed::logic(format!("chain {} is full", row.chain)))?,
            );
            columns.bodies.push(&row.body);
            columns
                .prev_hashes
                .push(std::mem::replace(&mut head.1, hash.clone()));
            columns.hashes.push(hash);
            head.0 = seq;
        }
        Ok(columns)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
        [
            &self.chains,
            &self.seqs,
            &self.bodies,
            &self.prev_hashes,
            &self.hashes,
        ]
    }
}

/// One row of the log as `(id, entry)`; the columns are `id, chain, seq, body, prev_hash,
/// hash`.
fn stored(row: &PgRow) -> Result<(i64, StoredEntry), Failed> {
    Ok((
        row.try_get(0)?,
        StoredEntry {
            chain: row.try_get(1)?,
            seq: seq_of(row.try_get(2)?),
            body: row.try_get(3)?,
            prev_hash: row.try_get(4)?,
            hash: row.try_get(5)?,
        },
    ))
}

/// A stored sequence number (never negative unless tampered with; then 0, which verification
/// reports).
fn seq_of(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// A connection to PostgreSQL, made when first needed and again after it broke.
struct Link {
    shared: Arc<Shared>,
    conn: Option<Conn>,
}

/// An open connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// The statement `name` (`sql`), prepared on first use.
    async fn prepared(&mut self, name: &'static str, sql: &str) -> Result<Statement, Failed> {
        if let Some(statement) = self.statements.get(name) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(name, statement.clone());
        Ok(statement)
    }
}

/// Why an attempt failed, and what that means for the connection and for retrying.
struct Failed {
    cause: String,
    /// The connection may be unusable: replace it.
    broken: bool,
    /// A `COMMIT` was sent and its answer lost: it may have taken effect, so no retry.
    in_doubt: bool,
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Failed {
            cause: describe(&e),
            broken: breaks_connection(&e),
            in_doubt: false,
        }
    }
}

impl Failed {
    /// A failed `COMMIT`.
    fn in_doubt(e: tokio_postgres::Error) -> Self {
        Failed {
            in_doubt: true,
            ..Failed::from(e)
        }
    }

    /// A failure of the store's own making (no database error).
    fn logic(cause: String) -> Self {
        Failed {
            cause,
            broken: false,
            in_doubt: false,
        }
    }
}

impl Link {
    fn new(shared: Arc<Shared>) -> Self {
        Link { shared, conn: None }
    }

    /// After a failed attempt: replaces the connection if it may be broken. `None` to retry
    /// (once, and only if nothing can have taken effect), else the cause to report.
    fn failed(&mut self, failed: Failed, retried: &mut bool) -> Option<String> {
        let broken = failed.broken || self.conn.as_ref().is_none_or(|c| c.client.is_closed());
        if broken {
            self.conn = None;
            if !failed.in_doubt && !*retried {
                *retried = true;
                return None;
            }
        }
        Some(failed.cause)
    }

    /// The connection, made (and the schema brought up to date) if there is none or it
    /// closed.
    async fn connected(&mut self) -> Result<&mut Conn, String> {
        let conn = match self.conn.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => connect(&self.shared).await.map_err(|failed| failed.cause)?,
        };
        Ok(self.conn.insert(conn))
    }
}

/// Opens a connection (named after the replica, so operators can tell them apart in
/// `pg_stat_activity`) and migrates the schema if this instance has not yet.
async fn connect(shared: &Shared) -> Result<Conn, Failed> {
    let settings = &shared.settings;
    let mut config = settings.config.clone();
    if config.get_application_name().is_none() {
        config.application_name(format!("toolgate-audit@{}", settings.replica));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.timeout);
    }
    let (client, connection) = config.connect(NoTls).await?;
    // Drives the socket; ends when the client is dropped or the connection breaks (the
    // client then reports itself closed).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    if !settings.synchronous_commit {
        client.batch_execute("SET synchronous_commit = off").await?;
    }
    let mut conn = Conn {
        client,
        statements: HashMap::new(),
    };
    if !shared.migrated.load(Ordering::Acquire) {
        migrate(&mut conn.client, &settings.tables).await?;
        shared.migrated.store(true, Ordering::Release);
    }
    Ok(conn)
}

/// Brings the tables up to date: under a transaction-level advisory lock, so replicas starting
/// together wait for each other and the later ones find nothing left to do.
async fn migrate(client: &mut Client, tables: &Tables) -> Result<(), Failed> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({});
         CREATE TABLE IF NOT EXISTS {} (version BIGINT NOT NULL)",
        tables.migrate_lock, tables.version
    ))
    .await?;
    let current: i64 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {}", tables.version),
            &[],
        )
        .await?
        .try_get(0)?;
    let known = MIGRATIONS.len();
    let current = usize::try_from(current).unwrap_or(0);
    if current > known {
        return Err(Failed::logic(format!(
            "the audit tables have schema version {current}, newer than this toolgate \
             ({known}); upgrade toolgate"
        )));
    }
    if current == known {
        return Ok(());
    }
    for sql in &MIGRATIONS[current..] {
        tx.batch_execute(&tables.fill(sql)).await?;
    }
    tx.batch_execute(&format!(
        "DELETE FROM {v}; INSERT INTO {v} (version) VALUES ({known})",
        v = tables.version
    ))
    .await?;
    tx.commit().await.map_err(Failed::in_doubt)?;
    Ok(())
}

/// Whether an error may have left the connection unusable: it closed, the socket failed, or
/// the server ended the session (connection exceptions, class 08; operator intervention such
/// as `pg_terminate_backend` or a shutdown, class 57).
fn breaks_connection(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08") || code.code().starts_with("57");
    }
    std::error::Error::source(e).is_some_and(|source| source.is::<std::io::Error>())
}

/// An error as one line: the server's message and code, or the client's error and its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// The database of `config` as a URL without the password, for messages.
fn target(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}:{}", path.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{addr}:{}", port(i)))
            .collect();
    }
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let database = config
        .get_dbname()
        .map(|db| format!("/{db}"))
        .unwrap_or_default();
    format!("postgres://{user}{}{database}", hosts.join(","))
}

/// `url` for a message about it being invalid: without its `user:password@` part, and not at
/// all in the `key=value` form (where a password could be anywhere).
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => "(connection string not shown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_passwords() {
        assert_eq!(
            redacted("postgres://u:s3cret@db:5432/x"),
            "postgres://db:5432/x"
        );
        assert_eq!(
            redacted("host=db password=s3cret"),
            "(connection string not shown)"
        );
        let log = PostgresAuditLog::connect("postgres://u:s3cret@db:6432/audit").unwrap();
        assert_eq!(log.shared.settings.target, "postgres://u@db:6432/audit");
        let err = PostgresAuditLog::connect("postgres://u:s3cret@db:notaport/x").unwrap_err();
        assert!(err.message.contains("invalid postgres url"), "{err}");
        assert!(!err.message.contains("s3cret"), "{err}");
    }

    #[test]
    fn tls_and_bad_prefixes_are_refused() {
        let err = PostgresAuditLog::connect("postgres://db/x?sslmode=require").unwrap_err();
        assert!(err.message.contains("TLS"), "{err}");
        let log = PostgresAuditLog::connect("postgres://db/x").unwrap();
        assert!(log.with_table_prefix("Robert'); DROP TABLE x;--").is_err());
        let log = PostgresAuditLog::connect("postgres://db/x").unwrap();
        assert_eq!(
            log.with_table_prefix("t_1_").unwrap().table(),
            "t_1_audit_log"
        );
    }

    #[test]
    fn lock_keys_differ_per_table_and_purpose() {
        let (a, b) = (Tables::new("a_"), Tables::new("b_"));
        assert_ne!(a.write_lock, b.write_lock);
        assert_ne!(a.write_lock, a.migrate_lock);
        assert_eq!(a.write_lock, Tables::new("a_").write_lock);
    }
}
