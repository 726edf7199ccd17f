//! Approval requests in PostgreSQL (cluster mode): one `approvals` table shared by every
//! replica and by `toolgate approvals`, so a request opened through one replica can be
//! decided anywhere and its approval used through any other.
//!
//! Every operation runs in one transaction holding the audit table's write lock (see
//! grants.rs): two replicas seeing the same held call at once cannot both open a request,
//! and the events go to the chain [`APPROVALS_CHAIN`] without forking it.

use super::grants::append_admin_locked;
use super::{Conn, Failed, Link, PostgresAuditLog, Tables, NO_RUNTIME};
use crate::approvals::{
    decision, key_digest, restored, settle, ApprovalKey, ApprovalRequest, Change, DecisionRefused,
    Matched,
};
use crate::{AuditEntry, StoreError};
use std::time::Duration;

/// The chain every approval's admin event is appended to.
pub const APPROVALS_CHAIN: &str = "admin@approvals";

/// Makes the admin audit event of `action` on a request.
pub type ApprovalEvent<'a> = &'a (dyn Fn(&ApprovalRequest, &str) -> AuditEntry + Sync);

fn decode(body: &str) -> Result<ApprovalRequest, Failed> {
    serde_json::from_str(body)
        .map_err(|e| Failed::logic(format!("a stored approval request is unreadable: {e}")))
}

async fn save(
    client: &tokio_postgres::Client,
    tables: &Tables,
    request: &ApprovalRequest,
) -> Result<(), Failed> {
    let body = serde_json::to_string(request)
        .map_err(|e| Failed::logic(format!("a request does not serialize: {e}")))?;
    client
        .execute(
            &format!(
                "INSERT INTO {} (id, key_digest, created_ms, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                tables.approvals
            ),
            &[
                &request.id,
                &key_digest(&request.key),
                &request.created_ms,
                &body,
            ],
        )
        .await?;
    Ok(())
}

async fn by_id(
    client: &tokio_postgres::Client,
    tables: &Tables,
    id: &str,
) -> Result<Option<ApprovalRequest>, Failed> {
    let row = client
        .query_opt(
            &format!(
                "SELECT body FROM {} WHERE id = $1 FOR UPDATE",
                tables.approvals
            ),
            &[&id],
        )
        .await?;
    row.map(|r| r.try_get::<_, String>(0).map_err(Failed::from))
        .transpose()?
        .map(|body| decode(&body))
        .transpose()
}

impl PostgresAuditLog {
    /// Like [`crate::EmbeddedStore::match_approval`].
    pub async fn match_approval(
        &self,
        key: &ApprovalKey,
        now_ms: i64,
        open: &(dyn Fn() -> ApprovalRequest + Sync),
        event: ApprovalEvent<'_>,
    ) -> Result<Matched, StoreError> {
        let tables = &self.shared.settings.tables;
        let timeout = self.shared.settings.timeout;
        let digest = key_digest(key);
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| match_in(
            conn, tables, &digest, now_ms, open, event
        ))
        .map_err(|cause| self.shared.error("match an approval", &cause))
    }

    /// Like [`crate::EmbeddedStore::restore_approval`].
    pub async fn restore_approval(
        &self,
        id: &str,
        event: ApprovalEvent<'_>,
    ) -> Result<(), StoreError> {
        self.change_approval("restore an approval", id, &restored, event)
            .await
            .map(|_| ())
    }

    /// Like [`crate::EmbeddedStore::decide_approval`].
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        actor: &str,
        reason: Option<&str>,
        now_ms: i64,
        event: ApprovalEvent<'_>,
    ) -> Result<Result<ApprovalRequest, DecisionRefused>, StoreError> {
        let change = |request: ApprovalRequest| decision(&request, approve, actor, reason, now_ms);
        self.change_approval("decide an approval", id, &change, event)
            .await
    }

    /// Applies `change` to request `id` and records it, in one transaction under the lock.
    async fn change_approval(
        &self,
        what: &str,
        id: &str,
        change: &(dyn Fn(ApprovalRequest) -> Change + Sync),
        event: ApprovalEvent<'_>,
    ) -> Result<Result<ApprovalRequest, DecisionRefused>, StoreError> {
        let tables = &self.shared.settings.tables;
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let client = &conn.client;
            locked_transaction!(client, tables, async {
                let Some(request) = by_id(client, tables, id).await? else {
                    return Ok::<_, Failed>((Err(DecisionRefused::Unknown(id.to_owned())), false));
                };
                let (changed, action) = match change(request) {
                    Ok(changed) => changed,
                    Err(refused) => return Ok((Err(refused), false)),
                };
                save(client, tables, &changed).await?;
                append_admin_locked(client, tables, APPROVALS_CHAIN, &[event(&changed, action)])
                    .await?;
                Ok((Ok(changed), true))
            })
        })
        .map_err(|cause| self.shared.error(what, &cause))
    }

    /// Every request, newest first.
    pub async fn approvals(&self) -> Result<Vec<ApprovalRequest>, StoreError> {
        let sql = format!(
            "SELECT body FROM {} ORDER BY created_ms DESC, id",
            self.shared.settings.tables.approvals
        );
        let timeout = self.shared.settings.timeout;
        let mut reader = self.reader.lock().await;
        on_connection!(&mut reader, timeout, |conn| async {
            let rows = conn.client.query(&sql, &[]).await?;
            rows.iter()
                .map(|row| decode(&row.try_get::<_, String>(0)?))
                .collect::<Result<Vec<_>, Failed>>()
        })
        .map_err(|cause| self.shared.error("read the approvals", &cause))
    }
}

async fn match_in(
    conn: &mut Conn,
    tables: &Tables,
    digest: &str,
    now_ms: i64,
    open: &(dyn Fn() -> ApprovalRequest + Sync),
    event: ApprovalEvent<'_>,
) -> Result<Matched, Failed> {
    let client = &conn.client;
    locked_transaction!(client, tables, async {
        let rows = client
            .query(
                &format!(
                    "SELECT body FROM {} WHERE key_digest = $1 ORDER BY created_ms DESC, id FOR UPDATE",
                    tables.approvals
                ),
                &[&digest],
            )
            .await?;
        let requests = rows
            .iter()
            .map(|row| decode(&row.try_get::<_, String>(0)?))
            .collect::<Result<Vec<_>, Failed>>()?;
        let (matched, changed) = settle(requests, now_ms).or_open(open);
        let mut events = Vec::with_capacity(changed.len());
        for (request, action) in &changed {
            save(client, tables, request).await?;
            events.push(event(request, action));
        }
        append_admin_locked(client, tables, APPROVALS_CHAIN, &events).await?;
        Ok::<_, Failed>((matched, !changed.is_empty()))
    })
}
