//! Changing minted grants, for `toolgate grant` and the admin API alike: one place that
//! validates a grant, mints and rotates tokens, and writes the admin audit events, so the
//! two front ends cannot drift apart.

use crate::config::{self, Settings};
use crate::grants::mint_token;
use crate::time::{format_rfc3339_ms, now_unix, now_unix_ms, parse_rfc3339};
use crate::SharedStore;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use toolgate_policy::Policy;
use toolgate_store::audit::AdminEvent;
use toolgate_store::{
    AuditEntry, GrantChange, GrantRefused, StoreError, StoredGrant, StoredPolicy,
};

/// Minted grants, in the embedded store or in cluster mode PostgreSQL.
impl SharedStore {
    /// Applies `change` with its admin `event` in one commit.
    pub async fn change(
        &self,
        change: GrantChange,
        event: AuditEntry,
    ) -> Result<Result<StoredGrant, GrantRefused>, StoreError> {
        match self {
            SharedStore::Embedded(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.change_grant(&change, &event))
                    .await
                    .map_err(|e| StoreError {
                        message: format!("the grant change task failed: {e}"),
                    })?
            }
            SharedStore::Postgres(log) => log.change_grant(&change, &event).await,
        }
    }

    /// Every stored grant, revoked ones included, by name.
    pub async fn grants(&self) -> Result<Vec<StoredGrant>, StoreError> {
        match self {
            SharedStore::Embedded(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.grants())
                    .await
                    .map_err(|e| StoreError {
                        message: format!("the grant read task failed: {e}"),
                    })?
            }
            SharedStore::Postgres(log) => log.grants().await,
        }
    }
}

/// Why a grant change did not happen.
#[derive(Debug)]
pub enum GrantError {
    /// The request was wrong (a bad name, policy, server or expiry): says what.
    Invalid(String),
    /// The store refused it (name taken, no such active grant).
    Refused(GrantRefused),
    /// The store failed.
    Store(StoreError),
}

impl std::fmt::Display for GrantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantError::Invalid(why) => f.write_str(why),
            GrantError::Refused(why) => why.fmt(f),
            GrantError::Store(e) => e.fmt(f),
        }
    }
}

/// A grant to mint, as asked for.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Its name.
    pub name: String,
    /// Its policies by server.
    pub policies: BTreeMap<String, StoredPolicy>,
    /// Servers it may use without a policy.
    pub servers: Vec<String>,
    /// Unix time after which it is refused.
    pub expires_unix: Option<i64>,
    /// The operator's note.
    pub note: Option<String>,
}

/// The servers and configured grants a new grant is checked against: the configuration's
/// for the CLI, those in force (after live reloads) for a running gateway.
#[derive(Debug, Clone, Default)]
pub struct InForce {
    /// Server names.
    pub servers: Vec<String>,
    /// Names of the configuration's grants, which a minted grant may not take.
    pub configured_grants: Vec<String>,
}

impl InForce {
    /// What `settings` configure.
    pub fn of(settings: &Settings) -> InForce {
        InForce {
            servers: settings.servers.iter().map(|s| s.name.clone()).collect(),
            configured_grants: settings.grants.iter().map(|g| g.name.clone()).collect(),
        }
    }
}

/// Mints `grant` for `actor` (who asked, for the admin stream), checked against `in_force`
/// when the caller has it. Returns it and its token — the only time the token exists
/// outside the caller's hands.
pub async fn mint(
    store: &SharedStore,
    in_force: Option<&InForce>,
    grant: NewGrant,
    actor: &str,
) -> Result<(StoredGrant, String), GrantError> {
    check_name(&grant.name)?;
    for (server, policy) in &grant.policies {
        check_policy(server, policy)?;
    }
    let mut servers: Vec<String> = grant
        .servers
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !grant.policies.contains_key(s))
        .collect();
    servers.sort();
    servers.dedup();
    if let Some(in_force) = in_force {
        for server in grant.policies.keys().chain(&servers) {
            check_server(in_force, server)?;
        }
        if in_force.configured_grants.contains(&grant.name) {
            return Err(GrantError::Invalid(format!(
                "the configuration declares a grant named {:?}; choose another name",
                grant.name
            )));
        }
    }
    if let Some(expires) = grant.expires_unix {
        if expires <= now_unix() {
            return Err(GrantError::Invalid(
                "the expiry is not in the future".to_owned(),
            ));
        }
    }
    let token = mint_token();
    let now = format_rfc3339_ms(now_unix_ms());
    let stored = StoredGrant {
        name: grant.name,
        token_sha256: config::token_sha256_hex(&token),
        policies: grant.policies,
        servers,
        expires_unix: grant.expires_unix,
        note: grant.note,
        created_ts: now.clone(),
        token_ts: now,
        revoked_ts: None,
    };
    let event = admin_event("grant_minted", &stored.name, actor, describe(&stored));
    let stored = apply(store, GrantChange::Create(stored), event).await?;
    Ok((stored, token))
}

/// Gives grant `name` a new token; returns it with the token.
pub async fn rotate(
    store: &SharedStore,
    name: &str,
    actor: &str,
) -> Result<(StoredGrant, String), GrantError> {
    let token = mint_token();
    let change = GrantChange::Rotate {
        name: name.to_owned(),
        token_sha256: config::token_sha256_hex(&token),
        ts: format_rfc3339_ms(now_unix_ms()),
    };
    let event = admin_event("grant_rotated", name, actor, json!({}));
    Ok((apply(store, change, event).await?, token))
}

/// Revokes grant `name`.
pub async fn revoke(
    store: &SharedStore,
    name: &str,
    actor: &str,
) -> Result<StoredGrant, GrantError> {
    let change = GrantChange::Revoke {
        name: name.to_owned(),
        ts: format_rfc3339_ms(now_unix_ms()),
    };
    let event = admin_event("grant_revoked", name, actor, json!({}));
    apply(store, change, event).await
}

/// Attaches `policy` to grant `name` on `server` (replacing the one it had there).
pub async fn set_policy(
    store: &SharedStore,
    in_force: Option<&InForce>,
    name: &str,
    server: &str,
    policy: StoredPolicy,
    actor: &str,
) -> Result<StoredGrant, GrantError> {
    check_policy(server, &policy)?;
    if let Some(in_force) = in_force {
        check_server(in_force, server)?;
    }
    let detail = json!({
        "server": server,
        "source": policy.source,
        "version": config::policy_version(policy.document.as_bytes()),
    });
    let event = admin_event("grant_policy_set", name, actor, detail);
    let change = GrantChange::SetPolicy {
        name: name.to_owned(),
        server: server.to_owned(),
        policy,
    };
    apply(store, change, event).await
}

async fn apply(
    store: &SharedStore,
    change: GrantChange,
    event: AuditEntry,
) -> Result<StoredGrant, GrantError> {
    store
        .change(change, event)
        .await
        .map_err(GrantError::Store)?
        .map_err(GrantError::Refused)
}

/// What a grant allows, for the admin stream, `grant list --json` and the admin API:
/// never its token or the token's hash.
pub fn describe(grant: &StoredGrant) -> Value {
    let policies: serde_json::Map<String, Value> = grant
        .policies
        .iter()
        .map(|(server, policy)| {
            let version = config::policy_version(policy.document.as_bytes());
            (
                server.clone(),
                json!({"source": policy.source, "version": version}),
            )
        })
        .collect();
    json!({
        "policies": policies,
        "servers": grant.servers,
        "expires": grant.expires_unix.map(|t| format_rfc3339_ms(t * 1000)),
        "note": grant.note,
    })
}

/// A grant as listed (`grant list --json`, the admin API): what it allows, its name,
/// status and times — never its token or the token's hash.
pub fn listing(grant: &StoredGrant) -> Value {
    let mut line = describe(grant);
    line["name"] = json!(grant.name);
    line["status"] = json!(status(grant));
    line["created"] = json!(grant.created_ts);
    line["token_minted"] = json!(grant.token_ts);
    line["revoked"] = json!(grant.revoked_ts);
    line
}

/// A grant with its new token: the answer to minting or rotating it, the one time the
/// token is shown.
pub fn with_token(grant: &StoredGrant, token: &str) -> Value {
    let mut answer = describe(grant);
    answer["name"] = json!(grant.name);
    answer["token"] = json!(token);
    answer
}

/// `active`, `expired` or `revoked`.
pub fn status(grant: &StoredGrant) -> &'static str {
    if grant.revoked_ts.is_some() {
        "revoked"
    } else if grant.expires_unix.is_some_and(|t| t <= now_unix()) {
        "expired"
    } else {
        "active"
    }
}

/// An expiry: an RFC 3339 time, or a duration from now (`30d`).
pub fn parse_expiry(text: &str) -> Result<i64, String> {
    if let Some(unix) = parse_rfc3339(text) {
        return Ok(unix);
    }
    let duration = toolgate_policy::duration::parse(text).map_err(|e| {
        format!(
            "{text:?} is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a duration (30d): {e}"
        )
    })?;
    Ok(now_unix() + duration.as_secs() as i64)
}

/// Names appear in logs, audit records and URLs: they stay plain.
fn check_name(name: &str) -> Result<(), GrantError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(())
    } else {
        Err(GrantError::Invalid(format!(
            "grant name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// A policy must compile: a grant never gets one the gateway would refuse.
fn check_policy(server: &str, policy: &StoredPolicy) -> Result<(), GrantError> {
    if server.trim().is_empty() {
        return Err(GrantError::Invalid(
            "a policy's server name is empty".to_owned(),
        ));
    }
    Policy::from_json_bytes(policy.document.as_bytes())
        .map(drop)
        .map_err(|errors| {
            let lines: Vec<String> = errors
                .0
                .iter()
                .map(|e| format!("{}: {e}", policy.source))
                .collect();
            GrantError::Invalid(format!(
                "the policy for {server} is invalid:\n{}",
                lines.join("\n")
            ))
        })
}

fn check_server(in_force: &InForce, server: &str) -> Result<(), GrantError> {
    if in_force.servers.iter().any(|s| s == server) {
        return Ok(());
    }
    Err(GrantError::Invalid(format!(
        "no server named {server:?} is configured (servers: {})",
        in_force.servers.join(", ")
    )))
}

/// The admin event of a change made by `actor`.
fn admin_event(action: &str, name: &str, actor: &str, detail: Value) -> AuditEntry {
    AuditEntry::Admin(AdminEvent {
        ts: format_rfc3339_ms(now_unix_ms()),
        action: action.to_owned(),
        actor: actor.to_owned(),
        subject: name.to_owned(),
        detail,
    })
}
