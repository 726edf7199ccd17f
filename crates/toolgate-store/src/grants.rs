//! Grants minted at runtime (`toolgate grant create`, later the admin API), as the store
//! keeps them. Grants declared in the configuration file never come here.
//!
//! A grant's token is never stored: only its SHA-256. Revoking keeps the grant (its name
//! and history stay readable, and `grant list` shows it as revoked); rotating swaps the
//! hash and keeps everything else, so counters (keyed by the grant's name) and the audit
//! history carry on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGrant {
    /// Its label, unique among grants that are not revoked.
    pub name: String,
    /// Hex SHA-256 of its current token.
    pub token_sha256: String,
    /// The policy that applies on each server.
    pub policies: BTreeMap<String, StoredPolicy>,
    /// More servers it may use without a policy (calls there are refused with the rule
    /// `(no policy)`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Unix time after which it is refused.
    #[serde(default)]
    pub expires_unix: Option<i64>,
    /// The operator's note.
    #[serde(default)]
    pub note: Option<String>,
    /// When it was minted (RFC 3339).
    pub created_ts: String,
    /// When its current token was minted (RFC 3339): at creation or the last rotation.
    pub token_ts: String,
    /// When it was revoked (RFC 3339), if it was.
    #[serde(default)]
    pub revoked_ts: Option<String>,
}

/// A policy attached to a stored grant: the document itself, so that the grant does not
/// depend on a file that may move or change after it was minted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    /// Where it came from (the file given to `grant create`), for operators and the
    /// audit record's `policy_id`.
    pub source: String,
    /// The policy document (JSON text).
    pub document: String,
}

/// A change to the stored grants.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantChange {
    /// A new grant (refused if a grant that is not revoked has its name).
    Create(StoredGrant),
    /// The grant with this name stops working (`ts`: when).
    Revoke {
        /// The grant's name.
        name: String,
        /// When (RFC 3339).
        ts: String,
    },
    /// The grant with this name gets `policy` on `server` (attached, or replacing the one
    /// it had there).
    SetPolicy {
        /// The grant's name.
        name: String,
        /// The server.
        server: String,
        /// The policy.
        policy: StoredPolicy,
    },
    /// The grant with this name gets a new token; the old one stops working.
    Rotate {
        /// The grant's name.
        name: String,
        /// Hex SHA-256 of the new token.
        token_sha256: String,
        /// When (RFC 3339).
        ts: String,
    },
}

impl GrantChange {
    /// The name of the grant it changes.
    pub fn name(&self) -> &str {
        match self {
            GrantChange::Create(grant) => &grant.name,
            GrantChange::Revoke { name, .. }
            | GrantChange::Rotate { name, .. }
            | GrantChange::SetPolicy { name, .. } => name,
        }
    }

    /// The grant after this change, given the stored one with its name (if any); every
    /// store applies changes through this, so they all refuse the same things.
    pub(crate) fn applied_to(
        &self,
        existing: Option<StoredGrant>,
    ) -> Result<StoredGrant, GrantRefused> {
        let active = existing.filter(|g| g.revoked_ts.is_none());
        match (self, active) {
            (GrantChange::Create(_), Some(_)) => {
                Err(GrantRefused::NameTaken(self.name().to_owned()))
            }
            (GrantChange::Create(grant), None) => Ok(grant.clone()),
            (_, None) => Err(GrantRefused::NotActive(self.name().to_owned())),
            (GrantChange::SetPolicy { server, policy, .. }, Some(mut grant)) => {
                grant.policies.insert(server.clone(), policy.clone());
                grant.servers.retain(|s| s != server);
                Ok(grant)
            }
            (GrantChange::Revoke { ts, .. }, Some(mut grant)) => {
                grant.revoked_ts = Some(ts.clone());
                Ok(grant)
            }
            (
                GrantChange::Rotate {
                    token_sha256, ts, ..
                },
                Some(mut grant),
            ) => {
                grant.token_sha256 = token_sha256.clone();
                grant.token_ts = ts.clone();
                Ok(grant)
            }
        }
    }
}

/// Why a change was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRefused {
    /// `Create`: a grant that is not revoked has this name.
    NameTaken(String),
    /// Any other change: no grant with this name, or only a revoked one.
    NotActive(String),
}

impl std::fmt::Display for GrantRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrantRefused::NameTaken(name) => write!(
                f,
                "a grant named {name:?} exists already; revoke it first or choose another name"
            ),
            GrantRefused::NotActive(name) => write!(f, "there is no active grant named {name:?}"),
        }
    }
}

impl std::error::Error for GrantRefused {}
