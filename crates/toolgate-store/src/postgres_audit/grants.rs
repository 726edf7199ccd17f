//! Minted grants in PostgreSQL (cluster mode): one `grants` table shared by every replica
//! and by `toolgate grant`.
//!
//! A change and its admin event commit in one transaction, like in the embedded store. The
//! event goes to one chain for all grant changes, [`GRANTS_CHAIN`], whoever makes them: the
//! transaction holds the audit table's write lock and reads that chain's head under it, so
//! concurrent changes from several processes line up instead of forking the chain (no
//! process caches that head, unlike the writer's own chains).
//!
//! The transaction ends with `NOTIFY <grants table>`; replicas `LISTEN` on a connection of
//! their own ([`PostgresAuditLog::watch_grants`]) and read the grants again on their next
//! request after a notification — within milliseconds of the commit. While that
//! connection is down, a replica reads the grants for every request that needs them (and
//! refuses minted tokens if it cannot), so no revocation is missed.

use super::{Conn, Failed, Link, PostgresAuditLog, Tables, NO_RUNTIME};
use crate::audit::{chain_hash, GENESIS};
use crate::grants::{GrantChange, GrantRefused, StoredGrant};
use crate::{AuditEntry, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// The chain every grant change's admin event is appended to.
pub const GRANTS_CHAIN: &str = "admin@grants";

/// What a replica knows about changes to the grants table.
#[derive(Debug, Clone, Default)]
pub struct GrantsWatch {
    /// Moves on with every notification, and whenever listening starts or stops.
    pub generation: Arc<AtomicU64>,
    /// Whether notifications are being received now.
    pub listening: Arc<AtomicBool>,
}

impl PostgresAuditLog {
    /// Applies `change` and appends `event` (its admin event, on [`GRANTS_CHAIN`]) in one
    /// transaction, and announces it. Returns the grant as it now is, or why the change was
    /// refused (nothing written).
    pub async fn change_grant(
        &self,
        change: &GrantChange,
        event: &AuditEntry,
    ) -> Result<Result<StoredGrant, GrantRefused>, StoreError> {
        let tables = &self.shared.settings.tables;
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| change_in(
            conn, tables, change, event
        ))
        .map_err(|cause| self.shared.error("change the grants", &cause))
    }

    /// Every stored grant, revoked ones included, by name.
    pub async fn grants(&self) -> Result<Vec<StoredGrant>, StoreError> {
        let sql = format!(
            "SELECT body FROM {} ORDER BY name",
            self.shared.settings.tables.grants
        );
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let rows = conn.client.query(&sql, &[]).await?;
            rows.iter()
                .map(|row| {
                    let body: String = row.try_get(0)?;
                    serde_json::from_str(&body)
                        .map_err(|e| Failed::logic(format!("a stored grant is unreadable: {e}")))
                })
                .collect::<Result<Vec<StoredGrant>, Failed>>()
        })
        .map_err(|cause| self.shared.error("read the grants", &cause))
    }

    /// Starts listening for grant changes on a connection of its own (reconnecting after a
    /// second when it breaks). Needs a tokio runtime.
    pub fn watch_grants(&self) -> GrantsWatch {
        let watch = GrantsWatch::default();
        let (settings, returned) = (self.shared.settings.clone(), watch.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = listen(&settings.config, &settings.tables.grants, &watch).await {
                    tracing_free_log(&settings.target, &e);
                }
                watch.listening.store(false, Ordering::Release);
                watch.generation.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        returned
    }
}

/// The store crate has no logger; a listener that cannot connect says so on stderr once
/// per attempt (a replica meanwhile reads grants per request, so nothing is missed).
fn tracing_free_log(target: &str, cause: &str) {
    eprintln!("toolgate: grant change notifications from {target} unavailable: {cause}");
}

/// Listens until the connection ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    watch: &GrantsWatch,
) -> Result<(), String> {
    let mut config = config.clone();
    config.application_name("toolgate-grants-listener");
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (tx, mut notified) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(|e| e.to_string())?;
    watch.listening.store(true, Ordering::Release);
    // Anything may have changed while nobody listened.
    watch.generation.fetch_add(1, Ordering::AcqRel);
    while notified.recv().await.is_some() {
        watch.generation.fetch_add(1, Ordering::AcqRel);
    }
    driver.abort();
    drop(client);
    Err("the connection ended".to_owned())
}

/// Appends admin `events` to `chain` in the open transaction on `client`, which holds the
/// audit table's write lock: the chain's head is read under it, so processes appending to
/// one chain line up instead of forking it.
pub(super) async fn append_admin_locked(
    client: &tokio_postgres::Client,
    tables: &Tables,
    chain: &str,
    events: &[AuditEntry],
) -> Result<(), Failed> {
    if events.is_empty() {
        return Ok(());
    }
    let head = client.query_opt(&tables.head_sql(), &[&chain]).await?;
    let (mut seq, mut prev_hash): (i64, String) = match head {
        Some(row) => (row.try_get(0)?, row.try_get(1)?),
        None => (0, GENESIS.to_owned()),
    };
    let insert = format!(
        "INSERT INTO {} (chain, seq, body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5)",
        tables.log
    );
    for event in events {
        let entry = event.body();
        let hash = chain_hash(&prev_hash, &entry);
        seq += 1;
        client
            .execute(&insert, &[&chain, &seq, &entry, &prev_hash, &hash])
            .await?;
        prev_hash = hash;
    }
    Ok(())
}

/// The change's transaction on `conn`.
async fn change_in(
    conn: &mut Conn,
    tables: &Tables,
    change: &GrantChange,
    event: &AuditEntry,
) -> Result<Result<StoredGrant, GrantRefused>, Failed> {
    let client = &conn.client;
    let outcome = async {
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                tables.write_lock
            ))
            .await?;
        let existing: Option<StoredGrant> = client
            .query_opt(
                &format!(
                    "SELECT body FROM {} WHERE name = $1 FOR UPDATE",
                    tables.grants
                ),
                &[&change.name()],
            )
            .await?
            .map(|row| row.try_get::<_, String>(0))
            .transpose()?
            .and_then(|body| serde_json::from_str(&body).ok());
        let grant = match change.applied_to(existing) {
            Ok(grant) => grant,
            Err(refused) => return Ok(Err(refused)),
        };
        let body = serde_json::to_string(&grant)
            .map_err(|e| Failed::logic(format!("a grant does not serialize: {e}")))?;
        client
            .execute(
                &format!(
                    "INSERT INTO {} (name, token_sha256, body) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE
                     SET token_sha256 = excluded.token_sha256, body = excluded.body",
                    tables.grants
                ),
                &[&grant.name, &grant.token_sha256, &body],
            )
            .await?;
        append_admin_locked(client, tables, GRANTS_CHAIN, std::slice::from_ref(event)).await?;
        client
            .batch_execute(&format!("NOTIFY {}", tables.grants))
            .await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(Failed::in_doubt)?;
        Ok(Ok(grant))
    }
    .await;
    if !matches!(outcome, Ok(Ok(_))) {
        // Leave no transaction open on a connection that is kept.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    outcome
}
