//! Grants: who may call, on which servers, under which policy — and authenticating them.

use crate::error::GatewayError;
use crate::time::now_unix;
use crate::SharedStore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use toolgate_policy::Policy;
use toolgate_store::postgres_audit::GrantsWatch;
use toolgate_store::{EmbeddedStore, GrantsStamp, PostgresAuditLog, StoredGrant};

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

/// One grant as configured — or, for a request with an OAuth token, the grant a claim rule
/// chose, carrying that token's subject and claims.
#[derive(Debug, Clone, Default)]
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
    /// OAuth: the token's `sub` (policies read it as `identity.sub`).
    pub subject: Option<String>,
    /// OAuth: the token's claims (`identity.claims.*`); empty for grant tokens.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl GrantSpec {
    /// Who owns the sessions this caller opens: the grant, or with OAuth the grant and
    /// the token's subject (two people mapped to one grant do not share sessions).
    pub fn principal(&self) -> std::borrow::Cow<'_, str> {
        match &self.subject {
            None => std::borrow::Cow::Borrowed(&self.name),
            Some(sub) => std::borrow::Cow::Owned(format!("{}#{sub}", self.name)),
        }
    }

    /// Who the audit log names: the token's subject, else the grant.
    pub fn identity(&self) -> &str {
        self.subject.as_deref().unwrap_or(&self.name)
    }

    /// Whether its expiry time has come.
    pub fn expired(&self) -> bool {
        self.expires_unix.is_some_and(|t| t <= now_unix())
    }

    /// Whether the grant may address `server` at all (403 otherwise).
    pub fn allows_server(&self, server: &str) -> bool {
        self.servers.contains(server)
    }
}

/// Every grant a request may present: those of the configuration and those minted at
/// runtime (`toolgate grant create`, the admin API) into the embedded store or, in cluster
/// mode, PostgreSQL — read again as soon as they change.
#[derive(Debug)]
pub struct Grants {
    /// The configuration's grants by token hash (swapped whole by a live reload).
    configured: RwLock<Arc<Configured>>,
    /// Where minted grants are read from, if anywhere.
    minted: Option<Minted>,
    /// Configured and minted grants (swapped whole on a reload).
    index: RwLock<Arc<Index>>,
}

/// The configuration's grants by SHA-256 of their token.
type Configured = HashMap<[u8; 32], Arc<GrantSpec>>;

/// The source of minted grants.
#[derive(Debug)]
struct Minted {
    store: SharedStore,
    /// How changes are noticed.
    changes: Changes,
    /// The marker the index was built at, and when (held while reloading, so one request
    /// reloads and the others wait for it).
    loaded_at: tokio::sync::Mutex<(Marker, Instant)>,
    /// Compiled policies by document hash: a reload recompiles only what is new.
    compiled: Mutex<HashMap<String, Arc<Policy>>>,
}

/// How a gateway notices that minted grants changed.
#[derive(Debug)]
enum Changes {
    /// The embedded store's stamp file (one `stat` per look).
    Stamp(Arc<EmbeddedStore>),
    /// PostgreSQL notifications; while they are not received, every look is a change.
    Notified(GrantsWatch),
}

/// What a look at [`Changes`] saw.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Stamp(GrantsStamp),
    Generation(u64),
    /// Not listening: nothing can be trusted, read again.
    Unknown,
}

impl Changes {
    fn look(&self) -> Marker {
        match self {
            Changes::Stamp(store) => Marker::Stamp(store.grants_stamp()),
            Changes::Notified(watch) if watch.listening.load(Ordering::Acquire) => {
                Marker::Generation(watch.generation.load(Ordering::Acquire))
            }
            Changes::Notified(_) => Marker::Unknown,
        }
    }
}

/// Grants by SHA-256 of their token.
#[derive(Debug, Default)]
struct Index {
    by_token: HashMap<[u8; 32], Arc<GrantSpec>>,
    /// Minted grants could not be read: why (their tokens are refused meanwhile — a
    /// revocation must not be missed because the store was unreadable).
    minted_unreadable: Option<String>,
}

/// A reload happens at least this often even without a changed marker (a change whose
/// stamp could not be written, a lost notification).
const RELOAD_EVERY: Duration = Duration::from_secs(5);

impl Grants {
    /// The configuration's `grants` only.
    pub fn new(grants: Vec<GrantSpec>) -> Self {
        let configured = by_token(grants);
        let index = Index {
            by_token: configured.clone(),
            minted_unreadable: None,
        };
        Grants {
            configured: RwLock::new(Arc::new(configured)),
            minted: None,
            index: RwLock::new(Arc::new(index)),
        }
    }

    /// The configuration's grants now.
    pub fn configured(&self) -> Vec<Arc<GrantSpec>> {
        let mut all: Vec<Arc<GrantSpec>> = self.configured_ref().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Puts `grants` in place of the configuration's grants (a live reload): the next
    /// request authenticates against them. Minted grants are read again too, since which of
    /// them a configured name shadows may have changed.
    pub async fn replace_configured(&self, grants: Vec<GrantSpec>) {
        *self.configured.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_token(grants));
        // Held so that no request rebuilds the index from the old grants meanwhile.
        let _loading = match &self.minted {
            Some(minted) => {
                let mut loaded_at = minted.loaded_at.lock().await;
                *loaded_at = (minted.changes.look(), Instant::now());
                Some(loaded_at)
            }
            None => None,
        };
        let index = self.build_index().await;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    fn configured_ref(&self) -> Arc<Configured> {
        Arc::clone(&self.configured.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The configuration's `grants` and those minted into the embedded `store`, which
    /// must be readable now (a gateway does not start with grants it cannot read).
    pub async fn with_minted(
        grants: Vec<GrantSpec>,
        store: Arc<EmbeddedStore>,
    ) -> Result<Self, String> {
        let changes = Changes::Stamp(Arc::clone(&store));
        Grants::with_source(grants, SharedStore::Embedded(store), changes).await
    }

    /// The configuration's `grants` and those minted into PostgreSQL (cluster mode),
    /// noticing changes through `watch`.
    pub async fn with_minted_in_postgres(
        grants: Vec<GrantSpec>,
        log: Arc<PostgresAuditLog>,
        watch: GrantsWatch,
    ) -> Result<Self, String> {
        Grants::with_source(grants, SharedStore::Postgres(log), Changes::Notified(watch)).await
    }

    async fn with_source(
        grants: Vec<GrantSpec>,
        store: SharedStore,
        changes: Changes,
    ) -> Result<Self, String> {
        let mut this = Grants::new(grants);
        this.minted = Some(Minted {
            loaded_at: tokio::sync::Mutex::new((changes.look(), Instant::now())),
            changes,
            store,
            compiled: Mutex::default(),
        });
        let index = this.build_index().await;
        if let Some(why) = &index.minted_unreadable {
            return Err(why.clone());
        }
        *this.index.get_mut().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        Ok(this)
    }

    /// Authenticates an `Authorization` header value.
    ///
    /// The token is hashed before lookup, so the map lookup's timing depends only on the
    /// hash; the final comparison is constant-time all the same. A configured grant is
    /// found without looking at the minted ones; any other token first has the minted
    /// grants read again if they changed.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<GrantSpec>, GatewayError> {
        let header = authorization
            .ok_or_else(|| GatewayError::unauthorized("missing Authorization: Bearer token"))?;
        let token = bearer_token(header).ok_or_else(|| {
            GatewayError::unauthorized("Authorization header must be \"Bearer <token>\"")
        })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let grant = match self.configured_ref().get(&digest) {
            Some(grant) => Arc::clone(grant),
            None => {
                let index = self.current().await;
                let found = index.by_token.get(&digest).cloned();
                found.ok_or_else(|| match &index.minted_unreadable {
                    Some(_) => GatewayError::unauthorized(
                        "unknown or revoked token (grants minted with `toolgate grant` cannot be read from the store just now)",
                    ),
                    None => GatewayError::unauthorized("unknown or revoked token"),
                })?
            }
        };
        if !bool::from(grant.token_sha256.ct_eq(&digest)) {
            return Err(GatewayError::unauthorized("unknown or revoked token"));
        }
        if grant.expired() {
            return Err(GatewayError::unauthorized(format!(
                "grant \"{}\" has expired",
                grant.name
            )));
        }
        Ok(grant)
    }

    /// Every grant a token can use now (configured and minted), by name.
    pub async fn all(&self) -> Vec<Arc<GrantSpec>> {
        let mut all: Vec<Arc<GrantSpec>> =
            self.current().await.by_token.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The index, read again first if minted grants changed since it was built.
    async fn current(&self) -> Arc<Index> {
        if let Some(minted) = &self.minted {
            let marker = minted.changes.look();
            let mut loaded_at = minted.loaded_at.lock().await;
            let stale = self.index_ref().minted_unreadable.is_some()
                || marker == Marker::Unknown
                || loaded_at.0 != marker
                || loaded_at.1.elapsed() >= RELOAD_EVERY;
            if stale {
                // The marker is read before the grants: a change landing meanwhile moves
                // it again, and the next request reloads once more.
                *loaded_at = (marker, Instant::now());
                let index = Arc::new(self.build_index().await);
                *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&index);
                return index;
            }
        }
        self.index_ref()
    }

    fn index_ref(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The configured grants plus the minted ones that are active; a minted grant named
    /// like a configured one is skipped (the configuration wins), with a warning.
    async fn build_index(&self) -> Index {
        let configured = self.configured_ref();
        let mut by_token = (*configured).clone();
        let Some(minted) = &self.minted else {
            return Index {
                by_token,
                minted_unreadable: None,
            };
        };
        let stored = match minted.store.grants().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!("minted grants cannot be read, so their tokens are refused: {e}");
                return Index {
                    by_token,
                    minted_unreadable: Some(e.to_string()),
                };
            }
        };
        let mut compiled = minted.compiled.lock().unwrap_or_else(|e| e.into_inner());
        for grant in stored.iter().filter(|g| g.revoked_ts.is_none()) {
            if configured.values().any(|c| c.name == grant.name) {
                tracing::warn!(grant = %grant.name, "a minted grant has the name of a configured one; the configured one applies");
                continue;
            }
            match spec_of(grant, &mut compiled) {
                Ok(spec) => {
                    by_token.insert(spec.token_sha256, Arc::new(spec));
                }
                Err(e) => tracing::error!(grant = %grant.name, "minted grant refused: {e}"),
            }
        }
        Index {
            by_token,
            minted_unreadable: None,
        }
    }
}

fn by_token(grants: Vec<GrantSpec>) -> Configured {
    grants
        .into_iter()
        .map(|g| (g.token_sha256, Arc::new(g)))
        .collect()
}

/// The token of an `Authorization: Bearer <token>` header value (the scheme in either
/// case RFC 7235 allows here), if it has a non-empty one.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The grant a stored one describes, its policies compiled (or taken from `compiled`).
fn spec_of(
    grant: &StoredGrant,
    compiled: &mut HashMap<String, Arc<Policy>>,
) -> Result<GrantSpec, String> {
    let token_sha256: [u8; 32] = crate::config::parse_hex32(&grant.token_sha256)
        .ok_or_else(|| "its token hash is not 64 hex digits".to_owned())?;
    let mut policies = BTreeMap::new();
    for (server, stored) in &grant.policies {
        let version = crate::config::policy_version(stored.document.as_bytes());
        let policy = match compiled.get(&version) {
            Some(policy) => Arc::clone(policy),
            None => {
                let policy = Policy::from_json_bytes(stored.document.as_bytes())
                    .map(Arc::new)
                    .map_err(|errors| {
                        format!(
                            "its policy for {server} ({}) is invalid: {}",
                            stored.source,
                            errors.one_line()
                        )
                    })?;
                compiled.insert(version.clone(), Arc::clone(&policy));
                policy
            }
        };
        policies.insert(
            server.clone(),
            PolicyRef {
                id: stored.source.clone(),
                version,
                policy,
            },
        );
    }
    let servers = policies
        .keys()
        .cloned()
        .chain(grant.servers.iter().cloned())
        .collect();
    Ok(GrantSpec {
        name: grant.name.clone(),
        token_sha256,
        policies,
        servers,
        expires_unix: grant.expires_unix,
        note: grant.note.clone(),
        ..GrantSpec::default()
    })
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

/// The SHA-256 of a bearer token, as grants keep it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A grant for quick mode: every server, one policy.
pub fn quick_grant(name: &str, token: &str, server: &str, policy: PolicyRef) -> GrantSpec {
    GrantSpec {
        name: name.to_owned(),
        token_sha256: token_sha256(token),
        policies: BTreeMap::from([(server.to_owned(), policy)]),
        servers: BTreeSet::from([server.to_owned()]),
        expires_unix: None,
        note: Some("minted by quick mode".into()),
        ..GrantSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn auth(grants: &Grants, header: Option<&str>) -> Result<Arc<GrantSpec>, GatewayError> {
        block_on(grants.authenticate(header))
    }

    fn grant(name: &str, token: &str, expires: Option<i64>) -> GrantSpec {
        GrantSpec {
            name: name.into(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            policies: BTreeMap::new(),
            servers: ["a".to_owned()].into(),
            expires_unix: expires,
            note: None,
            ..GrantSpec::default()
        }
    }

    fn minted(name: &str, token: &str) -> toolgate_store::StoredGrant {
        toolgate_store::StoredGrant {
            name: name.into(),
            token_sha256: crate::config::token_sha256_hex(token),
            policies: BTreeMap::from([(
                "a".to_owned(),
                toolgate_store::StoredPolicy {
                    source: "p.json".into(),
                    document: r#"{"version":"1","default":"allow"}"#.into(),
                },
            )]),
            servers: Vec::new(),
            expires_unix: None,
            note: None,
            created_ts: "2026-11-26T00:00:00.000Z".into(),
            token_ts: "2026-11-26T00:00:00.000Z".into(),
            revoked_ts: None,
        }
    }

    fn event() -> toolgate_store::AuditEntry {
        toolgate_store::AuditEntry::Admin(toolgate_store::audit::AdminEvent {
            ts: "2026-11-26T00:00:00.000Z".into(),
            action: "test".into(),
            actor: "test".into(),
            subject: "test".into(),
            detail: serde_json::Value::Null,
        })
    }

    #[test]
    fn minted_grants_are_honoured_and_revoked_from_the_next_request_on() {
        use toolgate_store::GrantChange;
        let dir = std::env::temp_dir().join(format!(
            "toolgate-grants-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        // Another process (the CLI) changes the grants: another store on the directory.
        let cli = EmbeddedStore::open(&dir).unwrap();
        let grants = block_on(Grants::with_minted(
            vec![grant("ops", "tg_ops", None)],
            Arc::clone(&store),
        ))
        .unwrap();
        assert!(auth(&grants, Some("Bearer tg_new")).is_err());
        cli.change_grant(&GrantChange::Create(minted("new", "tg_new")), &event())
            .unwrap()
            .unwrap();
        let found = auth(&grants, Some("Bearer tg_new")).unwrap();
        assert_eq!(found.name, "new");
        assert!(found.policies.contains_key("a") && found.allows_server("a"));
        cli.change_grant(
            &GrantChange::Revoke {
                name: "new".into(),
                ts: "2026-11-26T00:00:01.000Z".into(),
            },
            &event(),
        )
        .unwrap()
        .unwrap();
        assert!(auth(&grants, Some("Bearer tg_new")).is_err());
        // A minted grant cannot take over a configured one's name.
        cli.change_grant(&GrantChange::Create(minted("ops", "tg_impostor")), &event())
            .unwrap()
            .unwrap();
        assert!(auth(&grants, Some("Bearer tg_impostor")).is_err());
        assert_eq!(auth(&grants, Some("Bearer tg_ops")).unwrap().name, "ops");
        // Grants that cannot be read are refused (a revocation must not be missed); the
        // configured ones still work.
        cli.change_grant(&GrantChange::Create(minted("later", "tg_later")), &event())
            .unwrap()
            .unwrap();
        drop(cli);
        let db = rusqlite::Connection::open(dir.join("toolgate.db")).unwrap();
        db.execute_batch("ALTER TABLE grants RENAME TO grants_away")
            .unwrap();
        std::fs::write(dir.join("grants.changed"), "moved").unwrap();
        let refused = auth(&grants, Some("Bearer tg_later")).unwrap_err();
        assert!(
            refused.message.contains("cannot be read"),
            "{}",
            refused.message
        );
        assert_eq!(auth(&grants, Some("Bearer tg_ops")).unwrap().name, "ops");
        db.execute_batch("ALTER TABLE grants_away RENAME TO grants")
            .unwrap();
        assert_eq!(
            auth(&grants, Some("Bearer tg_later")).unwrap().name,
            "later"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn authenticates_bearer_tokens() {
        let grants = Grants::new(vec![
            grant("g", "tg_one", None),
            grant("old", "tg_old", Some(1)),
        ]);
        assert_eq!(auth(&grants, Some("Bearer tg_one")).unwrap().name, "g");
        for bad in [
            None,
            Some("tg_one"),
            Some("Bearer "),
            Some("Bearer tg_two"),
            Some("Basic x"),
        ] {
            assert!(auth(&grants, bad).is_err(), "{bad:?}");
        }
        let e = auth(&grants, Some("Bearer tg_old")).unwrap_err();
        assert!(e.message.contains("expired"));
    }
}
