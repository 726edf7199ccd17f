//! The PostgreSQL audit log against a real PostgreSQL.
//!
//! The tests use the database at `TOOLGATE_TEST_POSTGRES_URL` (by default
//! `postgres://toolgate@127.0.0.1:5432/toolgate`), each under its own table prefix (its tables
//! are dropped when it passes), so they run in parallel, repeatedly, beside earlier runs'
//! tables. Without that PostgreSQL they fail, saying so: they never skip.

use std::collections::HashSet;
mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolgate_store::audit::{
    AdminEvent, AuditFilter, Broken, CallOutcome, CallRecord, Verified, ADMIN, CALLS,
};
use toolgate_store::{AuditEntry, AuditLog, PostgresAuditLog};

fn postgres_url() -> String {
    std::env::var("TOOLGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://toolgate@127.0.0.1:5432/toolgate".into())
}

/// A table prefix no other test (or earlier run) uses.
fn unique_prefix() -> String {
    format!("tgt_{}_", support::unique_name('_'))
}

/// A plain connection, for tampering and looking at what the store wrote.
async fn raw() -> tokio_postgres::Client {
    let url = postgres_url();
    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => panic!(
            "these tests need a PostgreSQL server at {url} (set TOOLGATE_TEST_POSTGRES_URL to \
             use another): {e:?}"
        ),
    }
}

/// A log on the test database, on the tables of `prefix`; fails the test if PostgreSQL is
/// absent.
async fn log_on(prefix: &str) -> PostgresAuditLog {
    let url = postgres_url();
    let log = PostgresAuditLog::connect(&url)
        .unwrap()
        .with_table_prefix(prefix)
        .unwrap();
    if let Err(e) = log.ping().await {
        panic!(
            "these tests need a PostgreSQL server at {url} (set TOOLGATE_TEST_POSTGRES_URL to \
             use another): {e}"
        );
    }
    log
}

async fn drop_tables(prefix: &str) {
    raw()
        .await
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {prefix}audit_log, {prefix}audit_pruned, {prefix}grants, \
             {prefix}tool_pins, {prefix}approvals, {prefix}secrets, {prefix}audit_schema_version"
        ))
        .await
        .unwrap();
}

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

fn admin(action: &str, ts: &str) -> AuditEntry {
    AuditEntry::Admin(AdminEvent {
        ts: ts.into(),
        action: action.into(),
        actor: "gateway".into(),
        subject: "policy.toml".into(),
        detail: serde_json::Value::Null,
    })
}

const TS: &str = "2026-01-01T00:00:00.000Z";

/// The verification result of `chain`.
async fn verified(log: &PostgresAuditLog, chain: &str) -> Result<Verified, Broken> {
    log.audit_verify()
        .await
        .unwrap()
        .into_iter()
        .find(|result| match result {
            Ok(v) => v.chain == chain,
            Err(b) => b.chain == chain,
        })
        .unwrap_or_else(|| panic!("chain {chain} was not verified"))
}

#[tokio::test]
async fn a_secret_is_made_by_the_first_replica_and_shared_by_every_other() {
    let prefix = unique_prefix();
    let (one, two) = (log_on(&prefix).await, log_on(&prefix).await);
    let (a, b) = tokio::join!(one.secret("approval-state"), two.secret("approval-state"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_ne!(a, [0u8; 32]);
    assert_ne!(one.secret("another").await.unwrap(), a);
    drop_tables(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_appending_concurrently_merge_in_queries_and_every_chain_verifies() {
    const TASKS: usize = 8;
    const APPENDS: usize = 100;
    let prefix = unique_prefix();
    let logs = [
        Arc::new(log_on(&prefix).await),
        Arc::new(log_on(&prefix).await),
    ];
    assert_ne!(logs[0].replica(), logs[1].replica());
    // A lone appender: one commit per append.
    let started = Instant::now();
    for i in 0..20 {
        logs[0]
            .append(&[call(&format!("warm-{i}"), TS)])
            .await
            .unwrap();
    }
    println!(
        "postgres audit: a lone append takes {:?} on average",
        started.elapsed() / 20
    );
    let warm = logs[0].commits();
    assert_eq!(warm, 20);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (r, log) in logs.iter().enumerate() {
        for t in 0..TASKS {
            let log = Arc::clone(log);
            tasks.push(tokio::spawn(async move {
                for i in 0..APPENDS {
                    let id = format!("{r}-{t}-{i}");
                    log.append(&[call(&id, TS)]).await.unwrap();
                    // The outcome rides along with a later commit.
                    log.append_later(vec![outcome(&id, TS)]);
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    for log in &logs {
        log.flush().await.unwrap();
    }
    let appends = 2 * TASKS * APPENDS;
    let commits = logs[0].commits() + logs[1].commits() - warm;
    println!(
        "postgres audit: {appends} appends (+{appends} queued outcomes) by {} tasks on 2 replicas \
         in {elapsed:?}: {:.0} appends/s, {commits} commits ({:.1} appends per commit)",
        2 * TASKS,
        appends as f64 / elapsed.as_secs_f64(),
        appends as f64 / commits as f64
    );
    assert!(
        commits < appends as u64,
        "concurrent appends must share commits ({commits} commits for {appends} appends)"
    );

    // Either replica reads everything, every call merged with its outcome.
    let records = logs[1].audit_query(&AuditFilter::default()).await.unwrap();
    assert_eq!(records.len(), 20 + appends);
    let ids: HashSet<&str> = records.iter().map(|r| r.call.request_id.as_str()).collect();
    assert_eq!(ids.len(), 20 + appends);
    assert!(records[20..]
        .iter()
        .all(|r| r.upstream_status.as_deref() == Some("ok")));
    let limited = AuditFilter {
        limit: Some(10),
        ..AuditFilter::default()
    };
    assert_eq!(
        logs[0].audit_query(&limited).await.unwrap(),
        records[20 + appends - 10..]
    );

    // One chain per replica, each whole.
    let results = logs[0].audit_verify().await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    for (log, warm) in logs.iter().zip([20, 0]) {
        let v = verified(log, &log.chain(CALLS)).await.unwrap();
        assert_eq!(v.entries, warm + 2 * (TASKS * APPENDS) as u64);
    }

    // Following the calls stream page by page sees every entry once, in id order.
    let (mut after, mut seen) = (0, 0);
    loop {
        let page = logs[0].audit_entries(CALLS, after, 500).await.unwrap();
        let Some(&(last, _)) = page.last() else {
            break;
        };
        assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(page.iter().all(|(_, e)| e.chain.starts_with("calls@")));
        seen += page.len();
        after = last;
    }
    assert_eq!(seen, 20 + 2 * appends);
    assert!(logs[0]
        .audit_entries(ADMIN, 0, 10)
        .await
        .unwrap()
        .is_empty());
    drop_tables(&prefix).await;
}

#[tokio::test]
async fn verify_names_an_edited_a_deleted_and_an_inserted_row() {
    let prefix = unique_prefix();
    let table = format!("{prefix}audit_log");
    let db = raw().await;
    // Three replicas' chains of five calls each; each is tampered with differently, and
    // verification must name the right chain and entry.
    let (edited, deleted, inserted) = (
        log_on(&prefix).await,
        log_on(&prefix).await,
        log_on(&prefix).await,
    );
    for log in [&edited, &deleted, &inserted] {
        for i in 1..=5 {
            log.append(&[call(&format!("r{i}"), TS)]).await.unwrap();
        }
        assert_eq!(verified(log, &log.chain(CALLS)).await.unwrap().entries, 5);
    }

    // An edited body.
    let chain = edited.chain(CALLS);
    db.execute(
        &format!(
            "UPDATE {table} SET body = replace(body, '\"allow\"', '\"deny\"')
             WHERE chain = $1 AND seq = 2"
        ),
        &[&chain],
    )
    .await
    .unwrap();
    let broken = verified(&edited, &chain).await.unwrap_err();
    assert_eq!(
        (broken.chain.as_str(), broken.seq),
        (chain.as_str(), 2),
        "{broken}"
    );
    assert!(broken.reason.contains("altered"), "{broken}");

    // A deleted row.
    let chain = deleted.chain(CALLS);
    db.execute(
        &format!("DELETE FROM {table} WHERE chain = $1 AND seq = 3"),
        &[&chain],
    )
    .await
    .unwrap();
    let broken = verified(&deleted, &chain).await.unwrap_err();
    assert_eq!(
        (broken.chain.as_str(), broken.seq),
        (chain.as_str(), 4),
        "{broken}"
    );
    assert!(
        broken.reason.contains("records 3..3 are missing"),
        "{broken}"
    );

    // An inserted row, hashed correctly after entry 1, the later entries renumbered to make
    // room (the constraints hold): entry 2, now 3, no longer follows its predecessor.
    let chain = inserted.chain(CALLS);
    let forged = r#"{"kind":"call","ts":"2026-01-01T00:00:00.000Z","request_id":"forged"}"#;
    let forged_hash = {
        let row = db
            .query_one(
                &format!("SELECT id, hash FROM {table} WHERE chain = $1 AND seq = 1"),
                &[&chain],
            )
            .await
            .unwrap();
        let (id, prev): (i64, String) = (row.get(0), row.get(1));
        let hash = toolgate_store::audit::chain_hash(&prev, forged);
        db.batch_execute(&format!(
            "UPDATE {table} SET id = id + 1000000, seq = seq + 1000
             WHERE chain = '{chain}' AND seq >= 2;
             UPDATE {table} SET seq = seq - 999 WHERE chain = '{chain}' AND seq > 1000;
             INSERT INTO {table} (id, chain, seq, body, prev_hash, hash)
             VALUES ({}, '{chain}', 2, '{forged}', '{prev}', '{hash}')",
            id + 1
        ))
        .await
        .unwrap();
        hash
    };
    let broken = verified(&inserted, &chain).await.unwrap_err();
    assert_eq!(
        (broken.chain.as_str(), broken.seq),
        (chain.as_str(), 3),
        "{broken}"
    );
    assert!(broken.reason.contains("does not follow"), "{broken}");
    // The same forgery repeating position 2 (possible once the constraint is dropped): the
    // original entry 2 is named as repeating it.
    let constraint: String = db
        .query_one(
            &format!(
                "SELECT conname::text FROM pg_constraint
                 WHERE conrelid = '{table}'::regclass AND contype = 'u'"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "ALTER TABLE {table} DROP CONSTRAINT {constraint};
         UPDATE {table} SET seq = seq - 1 WHERE chain = '{chain}' AND seq >= 3"
    ))
    .await
    .unwrap();
    let broken = verified(&inserted, &chain).await.unwrap_err();
    assert_eq!(
        (broken.chain.as_str(), broken.seq),
        (chain.as_str(), 2),
        "{broken}"
    );
    assert!(broken.reason.contains("inserted"), "{broken}");
    assert!(!forged_hash.is_empty());

    // The other chains stay intact whatever happens to one.
    let results = edited.audit_verify().await.unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 3);
    drop_tables(&prefix).await;
}

#[tokio::test]
async fn pruning_keeps_the_rest_verifiable_and_appends_continue_the_chain() {
    let prefix = unique_prefix();
    let replica = format!("pruned-{}", std::process::id());
    // Pruning deletes two entries per statement here, to go through its parts.
    let log = log_on(&prefix)
        .await
        .with_replica(&*replica)
        .with_queue_limits(1_000, 2);
    for (i, day) in ["01", "02", "03"].iter().enumerate() {
        log.append(&[call(
            &format!("r{i}"),
            &format!("2026-01-{day}T00:00:00.000Z"),
        )])
        .await
        .unwrap();
    }
    log.append(&[admin("policy_loaded", "2026-01-01T00:00:00.000Z")])
        .await
        .unwrap();
    // Another replica's chain, all of it recent: untouched.
    let other = log_on(&prefix).await;
    other
        .append(&[call("o1", "2026-02-01T00:00:00.000Z")])
        .await
        .unwrap();

    assert_eq!(
        log.audit_prune("2026-01-02T12:00:00.000Z").await.unwrap(),
        3
    );
    let results = log.audit_verify().await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results.len(), 3, "the emptied admin chain is still listed");
    assert_eq!(verified(&log, &log.chain(CALLS)).await.unwrap().entries, 1);
    assert_eq!(verified(&log, &log.chain(ADMIN)).await.unwrap().entries, 0);
    assert_eq!(
        verified(&other, &other.chain(CALLS)).await.unwrap().entries,
        1
    );

    // The same instance appends on (its heads are in memory) …
    log.append(&[call("r3", "2026-01-04T00:00:00.000Z")])
        .await
        .unwrap();
    // … and so does a restarted one with the same replica id (heads read back).
    let restarted = log_on(&prefix).await.with_replica(&*replica);
    restarted
        .append(&[call("r4", "2026-01-05T00:00:00.000Z")])
        .await
        .unwrap();
    assert_eq!(verified(&log, &log.chain(CALLS)).await.unwrap().entries, 3);

    // Pruning a whole chain leaves its head recorded; appends continue from it.
    assert_eq!(
        log.audit_prune("2026-01-31T00:00:00.000Z").await.unwrap(),
        3
    );
    let restarted = log_on(&prefix).await.with_replica(&*replica);
    restarted
        .append(&[
            call("r5", "2026-03-01T00:00:00.000Z"),
            admin("grant_minted", "2026-03-01T00:00:00.000Z"),
        ])
        .await
        .unwrap();
    let results = log.audit_verify().await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mine: Vec<u64> = log
        .audit_entries(CALLS, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.chain == log.chain(CALLS))
        .map(|(_, e)| e.seq)
        .collect();
    assert_eq!(mine, [6]);
    let admin_seqs: Vec<u64> = log
        .audit_entries(ADMIN, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.seq)
        .collect();
    assert_eq!(admin_seqs, [2]);
    assert_eq!(
        log.audit_prune("2026-01-01T00:00:00.000Z").await.unwrap(),
        0
    );
    drop_tables(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_while_replicas_append_leaves_every_chain_whole() {
    let prefix = unique_prefix();
    let writer = Arc::new(log_on(&prefix).await);
    let pruner = log_on(&prefix).await.with_queue_limits(1_000, 3);
    // Entries dated long ago (a replica with a wrong clock), so that pruning takes everything
    // committed so far while more arrive.
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move {
                for i in 0..30 {
                    writer
                        .append(&[call(&format!("{t}-{i}"), "2020-01-01T00:00:00.000Z")])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut deleted = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        deleted += pruner
            .audit_prune("2026-01-01T00:00:00.000Z")
            .await
            .unwrap();
        let results = pruner.audit_verify().await.unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    for task in tasks {
        task.await.unwrap();
    }
    let left = verified(&writer, &writer.chain(CALLS))
        .await
        .unwrap()
        .entries;
    assert_eq!(deleted + left, 120, "{deleted} deleted, {left} left");
    assert!(deleted > 0);
    writer.append(&[call("last", TS)]).await.unwrap();
    assert!(writer
        .audit_verify()
        .await
        .unwrap()
        .iter()
        .all(Result::is_ok));
    drop_tables(&prefix).await;
}

#[tokio::test]
async fn append_later_rides_with_the_next_append_or_is_flushed() {
    let prefix = unique_prefix();
    let log = log_on(&prefix).await;
    log.append_later(vec![outcome("r0", TS)]);
    assert!(log.audit_entries(CALLS, 0, 10).await.unwrap().is_empty());
    log.append(&[call("r1", TS)]).await.unwrap();
    let kinds = |entries: Vec<(i64, toolgate_store::audit::StoredEntry)>| -> Vec<String> {
        entries
            .into_iter()
            .map(|(_, e)| match e.entry().unwrap() {
                AuditEntry::Call(c) => format!("call {}", c.request_id),
                AuditEntry::Outcome(o) => format!("outcome {}", o.request_id),
                AuditEntry::Admin(a) => format!("admin {}", a.action),
            })
            .collect()
    };
    assert_eq!(
        kinds(log.audit_entries(CALLS, 0, 10).await.unwrap()),
        ["outcome r0", "call r1"]
    );
    log.append_later(vec![outcome("r1", TS), admin("approval_decided", TS)]);
    log.flush().await.unwrap();
    assert_eq!(
        kinds(log.audit_entries(CALLS, 0, 10).await.unwrap()),
        ["outcome r0", "call r1", "outcome r1"]
    );
    assert_eq!(
        kinds(log.audit_entries(ADMIN, 0, 10).await.unwrap()),
        ["admin approval_decided"]
    );
    // Nothing queued: nothing to commit.
    log.flush().await.unwrap();
    assert_eq!(log.commits(), 2);
    let records = log.audit_query(&AuditFilter::default()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].upstream_status.as_deref(), Some("ok"));
    let events = log.audit_admin(&AuditFilter::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(log.audit_verify().await.unwrap().iter().all(Result::is_ok));
    drop_tables(&prefix).await;
}

#[tokio::test]
async fn a_backlog_beyond_the_bound_is_flushed_in_parts_and_the_loss_reported() {
    const MAX: usize = 2_500;
    let prefix = unique_prefix();
    let log = log_on(&prefix).await.with_queue_limits(MAX, 1_000);
    // As after an outage: more queued outcomes than the bound.
    let entries: Vec<AuditEntry> = (0..MAX + 2)
        .map(|i| outcome(&format!("r{i}"), TS))
        .collect();
    log.append_later(entries);
    let err = log.flush().await.unwrap_err();
    assert!(
        err.message.contains("2 queued entries were dropped"),
        "{err}"
    );
    // The rest went in parts, one transaction each; the oldest two are the ones dropped.
    assert_eq!(log.commits(), 3);
    let first = log.audit_entries(CALLS, 0, 1).await.unwrap();
    assert!(first[0].1.body.contains("\"r2\""), "{}", first[0].1.body);
    let v = verified(&log, &log.chain(CALLS)).await.unwrap();
    assert_eq!(v.entries, MAX as u64);
    log.flush().await.unwrap();
    drop_tables(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_server_fails_within_the_deadline_naming_the_store() {
    // A closed port: refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = PostgresAuditLog::connect(&format!("postgres://toolgate:pw@127.0.0.1:{port}/db"))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = log.append(&[call("r1", TS)]).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    for part in [
        "postgres audit log",
        &format!("127.0.0.1:{port}"),
        "append to the audit log",
        "error connecting to server",
    ] {
        assert!(err.message.contains(part), "{part:?} missing from: {err}");
    }
    assert!(!err.message.contains("pw"), "{err}");
    log.append_later(vec![outcome("r1", TS)]);
    let err = log.flush().await.unwrap_err();
    assert!(err.message.contains("flush the audit log"), "{err}");
    let err = log.audit_verify().await.unwrap_err();
    assert!(err.message.contains("verify the audit log"), "{err}");

    // A server that accepts connections and never answers: the deadline ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let log = PostgresAuditLog::connect(&format!("postgres://toolgate@127.0.0.1:{port}/db"))
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .with_read_timeout(Duration::from_millis(300));
    for attempt in 0..2 {
        let started = Instant::now();
        let err = log.append(&[call("r1", TS)]).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(800),
            "attempt {attempt}: {waited:?}"
        );
        assert!(err.message.contains("no answer within 300ms"), "{err}");
        assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
    let started = Instant::now();
    let err = log.audit_query(&AuditFilter::default()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(800));
    assert!(err.message.contains("read the audit log"), "{err}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connection_is_replaced_on_the_next_call() {
    let prefix = unique_prefix();
    let replica = format!("terminated-{}", support::unique_name('-'));
    let log = log_on(&prefix).await.with_replica(&*replica);
    log.append(&[call("r1", TS)]).await.unwrap();
    assert_eq!(
        log.audit_query(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let db = raw().await;
    let name = format!("toolgate-audit@{replica}");
    // Both connections (writer and reader) go; the very next calls succeed on new ones.
    assert_eq!(terminate(&db, &name).await, 2);
    let started = Instant::now();
    log.append(&[call("r2", TS)]).await.unwrap();
    assert_eq!(
        log.audit_query(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        2
    );
    println!(
        "recovered from a terminated connection in {:?}",
        started.elapsed()
    );
    // Again, this time after the client has noticed.
    assert_eq!(terminate(&db, &name).await, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.append(&[call("r3", TS)]).await.unwrap();
    let v = verified(&log, &log.chain(CALLS)).await.unwrap();
    assert_eq!(v.entries, 3);
    drop_tables(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let prefix = unique_prefix();
    let url = postgres_url();
    let logs: Vec<Arc<PostgresAuditLog>> = (0..6)
        .map(|_| {
            Arc::new(
                PostgresAuditLog::connect(&url)
                    .unwrap()
                    .with_table_prefix(&prefix)
                    .unwrap(),
            )
        })
        .collect();
    let starts: Vec<_> = logs
        .iter()
        .map(|log| {
            let log = Arc::clone(log);
            tokio::spawn(async move { log.append(&[call("r", TS)]).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} (TOOLGATE_TEST_POSTGRES_URL) is needed: {e}")
        });
    }
    let db = raw().await;
    let version: i64 = db
        .query_one(
            &format!("SELECT version FROM {prefix}audit_schema_version"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        version,
        toolgate_store::postgres_audit::MIGRATIONS.len() as i64
    );
    assert_eq!(logs[0].audit_verify().await.unwrap().len(), 6);

    db.batch_execute(&format!(
        "UPDATE {prefix}audit_schema_version SET version = 99"
    ))
    .await
    .unwrap();
    let newer = PostgresAuditLog::connect(&url)
        .unwrap()
        .with_table_prefix(&prefix)
        .unwrap();
    let err = newer.append(&[call("r", TS)]).await.unwrap_err();
    assert!(err.message.contains("newer than this toolgate"), "{err}");
    drop_tables(&prefix).await;
}

/// Terminates the server processes of the connections named `application_name`; answers how
/// many there were.
async fn terminate(db: &tokio_postgres::Client, application_name: &str) -> i64 {
    db.query_one(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1",
        &[&application_name],
    )
    .await
    .unwrap()
    .get(0)
}

fn stored_grant(name: &str, token_sha256: &str) -> toolgate_store::StoredGrant {
    toolgate_store::StoredGrant {
        name: name.into(),
        token_sha256: token_sha256.into(),
        policies: Default::default(),
        servers: vec!["mail".into()],
        expires_unix: None,
        note: None,
        created_ts: "2026-11-26T00:00:00.000Z".into(),
        token_ts: "2026-11-26T00:00:00.000Z".into(),
        revoked_ts: None,
    }
}

fn grant_event(action: &str, name: &str) -> AuditEntry {
    AuditEntry::Admin(AdminEvent {
        ts: "2026-11-26T00:00:00.000Z".into(),
        action: action.into(),
        actor: "test".into(),
        subject: name.into(),
        detail: serde_json::Value::Null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_shared_announced_and_their_events_chain_across_processes() {
    use toolgate_store::{GrantChange, GrantRefused};
    let prefix = unique_prefix();
    let (cli, replica) = (log_on(&prefix).await, log_on(&prefix).await);
    let watch = replica.watch_grants();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.listening.load(std::sync::atomic::Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "the replica never started listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = watch.generation.load(std::sync::atomic::Ordering::Acquire);
    let created = cli
        .change_grant(
            &GrantChange::Create(stored_grant("ci", "aa")),
            &grant_event("grant_minted", "ci"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replica.grants().await.unwrap(), vec![created]);
    while watch.generation.load(std::sync::atomic::Ordering::Acquire) == seen {
        assert!(
            Instant::now() < deadline,
            "the replica was never told of the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Concurrent changes from both processes: one chain of events, no fork.
    let rotate = GrantChange::Rotate {
        name: "ci".into(),
        token_sha256: "bb".into(),
        ts: "t1".into(),
    };
    let create_ops = GrantChange::Create(stored_grant("ops", "cc"));
    let (rotated, minted) = (
        grant_event("grant_rotated", "ci"),
        grant_event("grant_minted", "ops"),
    );
    let (a, b) = tokio::join!(
        cli.change_grant(&rotate, &rotated),
        replica.change_grant(&create_ops, &minted),
    );
    a.unwrap().unwrap();
    b.unwrap().unwrap();
    let refused = replica
        .change_grant(
            &GrantChange::Create(stored_grant("ci", "dd")),
            &grant_event("grant_minted", "ci"),
        )
        .await
        .unwrap();
    assert_eq!(refused, Err(GrantRefused::NameTaken("ci".into())));
    let revoked = cli
        .change_grant(
            &GrantChange::Revoke {
                name: "ci".into(),
                ts: "t2".into(),
            },
            &grant_event("grant_revoked", "ci"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.token_sha256, "bb");
    assert_eq!(revoked.revoked_ts.as_deref(), Some("t2"));
    let events = replica.audit_admin(&AuditFilter::default()).await.unwrap();
    let mut actions: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.event.action.clone(), e.event.subject.clone()))
        .collect();
    actions.sort();
    assert_eq!(
        actions.len(),
        4,
        "refused changes leave no event: {actions:?}"
    );
    for verified in replica.audit_verify().await.unwrap() {
        let verified = verified.unwrap_or_else(|broken| panic!("a chain is broken: {broken:?}"));
        assert!(
            verified.chain == toolgate_store::postgres_audit::GRANTS_CHAIN || verified.entries == 0,
            "{verified:?}"
        );
    }
    drop_tables(&prefix).await;
}
