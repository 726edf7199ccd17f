//! Human approval of held calls (SPEC §6), out of band: a call the policy holds gets an
//! approval request at once (`[APPROVAL REQUIRED] … (approval <id> …)`); a person decides
//! with `toolgate approvals approve|deny` or the admin API; the agent retries the identical
//! call, which then runs — once, or for a while (`approval.reuse`). Every request, decision,
//! use, expiry and restoration is in the audit log's admin stream.

use crate::time::{format_rfc3339_ms, now_unix_ms};
use crate::webhook::Webhook;
use crate::{blocking, SharedStore};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use toolgate_policy::{Decision, Reuse};
use toolgate_store::audit::{hex, AdminEvent};
use toolgate_store::{
    ApprovalKey, ApprovalRequest, ApprovalStatus, AuditEntry, DecisionRefused, Matched, StoreError,
};

/// Where approval requests live, and who hears of new ones.
#[derive(Clone)]
pub struct Approvals {
    /// The requests.
    store: SharedStore,
    /// Announces each new request, if configured.
    webhook: Option<Webhook>,
    /// The gateway's own URL, for the links in announcements.
    public_url: Option<String>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

/// A call held for approval, as the gateway asks about it.
#[derive(Debug, Clone)]
pub struct HeldCall<'a> {
    /// What binds the approval.
    pub key: ApprovalKey,
    /// The call's arguments (shown to the approver).
    pub arguments: &'a Value,
    /// The policy's decision (rule, message, approval settings).
    pub decision: &'a Decision,
}

/// The SHA-256 of a call's canonical arguments, as approvals and audit records bind them.
pub fn args_sha256(arguments: &Value) -> String {
    hex(&Sha256::digest(
        toolgate_mcp::json::canonical(arguments).as_bytes(),
    ))
}

impl Approvals {
    /// Approvals in `store` (in cluster mode PostgreSQL: any replica honours an approval
    /// given through another).
    pub fn new(store: SharedStore) -> Self {
        Approvals {
            store,
            webhook: None,
            public_url: None,
        }
    }

    /// The same, announcing each new request through `webhook` (links built on
    /// `public_url`).
    pub fn announced(mut self, webhook: Webhook, public_url: Option<String>) -> Self {
        self.webhook = Some(webhook);
        self.public_url = public_url;
        self
    }

    /// May `call` run now? An approval waiting for it is used (see [`Matched`]).
    pub async fn check(&self, call: HeldCall<'_>) -> Result<Matched, StoreError> {
        let now = now_unix_ms();
        let settings = call.decision.approval.unwrap_or_default();
        let opened = ApprovalRequest {
            id: new_id(),
            key: call.key.clone(),
            arguments: call.arguments.to_string(),
            rule: call.decision.rule.clone(),
            message: call.decision.message.clone(),
            status: ApprovalStatus::Pending,
            created_ms: now,
            expires_ms: now.saturating_add(settings.timeout_ms as i64),
            timeout_ms: settings.timeout_ms,
            reuse_ms: match settings.reuse {
                Reuse::Once => None,
                Reuse::For { ms } => Some(ms),
            },
            decided_by: None,
            decided_ms: None,
            reason: None,
            uses: 0,
            reported: false,
        };
        let key = call.key;
        let matched = match &self.store {
            SharedStore::Embedded(store) => {
                let store = Arc::clone(store);
                let opened = opened.clone();
                blocking(move || store.match_approval(&key, now, &|| opened.clone(), &event))
                    .await?
            }
            SharedStore::Postgres(log) => {
                log.match_approval(&key, now, &|| opened.clone(), &event)
                    .await?
            }
        };
        if let (Matched::Opened(request), Some(webhook)) = (&matched, &self.webhook) {
            let mut announcement = describe(request, now);
            announcement["event"] = json!("approval_requested");
            if let Some(base) = &self.public_url {
                let api = format!("{base}/admin/api/approvals/{}", request.id);
                announcement["approve_url"] = json!(format!("{api}/approve"));
                announcement["deny_url"] = json!(format!("{api}/deny"));
            }
            webhook.announce(announcement);
        }
        Ok(matched)
    }

    /// Gives back the approval `id` used for a call that never ran.
    pub async fn restore(&self, id: &str) {
        let restored = match &self.store {
            SharedStore::Embedded(store) => {
                let (store, owned) = (Arc::clone(store), id.to_owned());
                blocking(move || store.restore_approval(&owned, &event)).await
            }
            SharedStore::Postgres(log) => log.restore_approval(id, &event).await,
        };
        if let Err(e) = restored {
            tracing::error!(approval = %id, "could not give back an approval whose call did not run: {e}");
        }
    }

    /// Approves or denies request `id` as `actor`.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Result<ApprovalRequest, DecisionRefused>, StoreError> {
        let now = now_unix_ms();
        match &self.store {
            SharedStore::Embedded(store) => {
                let store = Arc::clone(store);
                let (id, actor) = (id.to_owned(), actor.to_owned());
                let reason = reason.map(str::to_owned);
                blocking(move || {
                    store.decide_approval(&id, approve, &actor, reason.as_deref(), now, &event)
                })
                .await
            }
            SharedStore::Postgres(log) => {
                log.decide_approval(id, approve, actor, reason, now, &event)
                    .await
            }
        }
    }

    /// Every request, newest first.
    pub async fn list(&self) -> Result<Vec<ApprovalRequest>, StoreError> {
        match &self.store {
            SharedStore::Embedded(store) => {
                let store = Arc::clone(store);
                blocking(move || store.approvals()).await
            }
            SharedStore::Postgres(log) => log.approvals().await,
        }
    }
}

/// `apr_` and 96 random bits.
fn new_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 12];
    rand::rng().fill_bytes(&mut raw);
    format!("apr_{}", hex(&raw))
}

/// The admin event of `action` on `request`: by its approver for a decision, else by the
/// gateway. Argument values stay out of the audit log (only their digest is in it).
fn event(request: &ApprovalRequest, action: &str) -> AuditEntry {
    let actor = match action {
        "approval_approved" | "approval_denied" => request
            .decided_by
            .clone()
            .unwrap_or_else(|| "unknown".into()),
        _ => "gateway".to_owned(),
    };
    AuditEntry::Admin(AdminEvent {
        ts: format_rfc3339_ms(now_unix_ms()),
        action: action.to_owned(),
        actor,
        subject: request.id.clone(),
        detail: json!({
            "grant": request.key.grant,
            "identity": request.key.identity,
            "server": request.key.server,
            "tool": request.key.tool,
            "args_sha256": request.key.args_sha256,
            "policy_version": request.key.policy_version,
            "status": request.status.as_str(),
            "reason": request.reason,
            "uses": request.uses,
        }),
    })
}

/// One request as the CLI and the admin API show it (`now_ms`: for its current status).
pub fn describe(request: &ApprovalRequest, now_ms: i64) -> Value {
    json!({
        "id": request.id,
        "status": request.status_at(now_ms).as_str(),
        "grant": request.key.grant,
        "identity": request.key.identity,
        "server": request.key.server,
        "tool": request.key.tool,
        "arguments": serde_json::from_str::<Value>(&request.arguments).unwrap_or(Value::Null),
        "args_sha256": request.key.args_sha256,
        "policy_version": request.key.policy_version,
        "rule": request.rule,
        "message": request.message,
        "created": format_rfc3339_ms(request.created_ms),
        "expires": format_rfc3339_ms(request.expires_ms),
        "reuse": match request.reuse_ms {
            None => "once".to_owned(),
            Some(ms) => format!("{} s", ms / 1000),
        },
        "decided_by": request.decided_by,
        "decided": request.decided_ms.map(format_rfc3339_ms),
        "reason": request.reason,
        "uses": request.uses,
    })
}
