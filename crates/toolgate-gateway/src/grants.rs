//! Grants: who may call, on which servers, under which policy — and authenticating them.

use crate::error::GatewayError;
use crate::time::now_unix;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use toolgate_policy::Policy;

/// A loaded, compiled policy and where it came from.
#[derive(Debug, Clone)]
pub struct PolicyRef {
    /// Where it was loaded from (file path), for logs and the audit record.
    pub id: String,
    /// A short hash of the document's bytes: changes whenever the document does.
    pub version: String,
    /// The compiled policy.
    pub policy: Arc<Policy>,
}

/// One grant as configured.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    /// Label (`alice-laptop`).
    pub name: String,
    /// SHA-256 of the bearer token; the token itself is never kept.
    pub token_sha256: [u8; 32],
    /// The policy that applies on each server.
    pub policies: BTreeMap<String, PolicyRef>,
    /// Every server the grant may use (policy keys plus `servers`).
    pub servers: BTreeSet<String>,
    /// Unix time after which the grant is refused.
    pub expires_unix: Option<i64>,
    /// Operator's note.
    pub note: Option<String>,
}

impl GrantSpec {
    /// Whether the grant may address `server` at all (403 otherwise).
    pub fn allows_server(&self, server: &str) -> bool {
        self.servers.contains(server)
    }
}

/// The set of grants, indexed by token hash.
#[derive(Debug, Default)]
pub struct Grants {
    /// Grants by SHA-256 of their token.
    by_token: HashMap<[u8; 32], Arc<GrantSpec>>,
}

impl Grants {
    /// Indexes `grants`.
    pub fn new(grants: Vec<GrantSpec>) -> Self {
        Grants {
            by_token: grants
                .into_iter()
                .map(|g| (g.token_sha256, Arc::new(g)))
                .collect(),
        }
    }

    /// Authenticates an `Authorization` header value.
    ///
    /// The token is hashed before lookup, so the map lookup's timing depends only on the
    /// hash; the final comparison is constant-time all the same.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<GrantSpec>, GatewayError> {
        let header = authorization
            .ok_or_else(|| GatewayError::unauthorized("missing Authorization: Bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GatewayError::unauthorized("Authorization header must be \"Bearer <token>\"")
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let grant = self
            .by_token
            .get(&digest)
            .filter(|g| bool::from(g.token_sha256.ct_eq(&digest)))
            .ok_or_else(|| GatewayError::unauthorized("unknown or revoked token"))?;
        if let Some(expires) = grant.expires_unix {
            if now_unix() >= expires {
                return Err(GatewayError::unauthorized(format!(
                    "grant \"{}\" has expired",
                    grant.name
                )));
            }
        }
        Ok(Arc::clone(grant))
    }
}

/// A new grant token: 32 random bytes, `tg_` + base64url (SPEC §7). Printed once; only its
/// SHA-256 is kept.
pub fn mint_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!(
        "tg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// A grant for quick mode: every server, one policy.
pub fn quick_grant(name: &str, token: &str, server: &str, policy: PolicyRef) -> GrantSpec {
    GrantSpec {
        name: name.to_owned(),
        token_sha256: Sha256::digest(token.as_bytes()).into(),
        policies: BTreeMap::from([(server.to_owned(), policy)]),
        servers: BTreeSet::from([server.to_owned()]),
        expires_unix: None,
        note: Some("minted by quick mode".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, token: &str, expires: Option<i64>) -> GrantSpec {
        GrantSpec {
            name: name.into(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            policies: BTreeMap::new(),
            servers: ["a".to_owned()].into(),
            expires_unix: expires,
            note: None,
        }
    }

    #[test]
    fn authenticates_bearer_tokens() {
        let grants = Grants::new(vec![
            grant("g", "tg_one", None),
            grant("old", "tg_old", Some(1)),
        ]);
        assert_eq!(
            grants.authenticate(Some("Bearer tg_one")).unwrap().name,
            "g"
        );
        for bad in [
            None,
            Some("tg_one"),
            Some("Bearer "),
            Some("Bearer tg_two"),
            Some("Basic x"),
        ] {
            assert!(grants.authenticate(bad).is_err(), "{bad:?}");
        }
        let e = grants.authenticate(Some("Bearer tg_old")).unwrap_err();
        assert!(e.message.contains("expired"));
    }
}
