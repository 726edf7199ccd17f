//! Stored grants in the embedded store. Each change commits together with its admin audit
//! event, so the admin stream has exactly the changes that happened.
//!
//! Running gateways learn of a change through the stamp file `grants.changed` beside the
//! database, rewritten after each change: a gateway looks at it (one `stat`) before it
//! authenticates a request, so a revoked or rotated token is refused on its very next
//! request, also on a session that is already open — whichever process changed it.

use super::audit::{write_entries, Queued};
use super::{begin, EmbeddedStore, Memory};
use crate::grants::{GrantChange, GrantRefused, StoredGrant};
use crate::{AuditEntry, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::PathBuf;

/// What the stamp file looked like; a different stamp means the grants changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsStamp(Option<(u64, std::time::SystemTime, u64)>);

/// What a failed change was doing, for its error.
const WHAT: &str = "change the grants";

impl EmbeddedStore {
    /// Applies `change` and appends `event` (its admin audit entry) in one commit, then
    /// tells running gateways. Returns the grant as it now is, or why the change was
    /// refused (then nothing was written).
    pub fn change_grant(
        &self,
        change: &GrantChange,
        event: &AuditEntry,
    ) -> Result<Result<StoredGrant, GrantRefused>, StoreError> {
        let outcome = self.write(WHAT, |conn, memory| apply(conn, memory, change, event))?;
        if outcome.is_ok() {
            self.touch_grants_stamp();
        }
        Ok(outcome)
    }

    /// Every stored grant, revoked ones included, by name.
    pub fn grants(&self) -> Result<Vec<StoredGrant>, StoreError> {
        let bodies: Vec<String> = self.with("read the grants", |c| {
            c.prepare_cached("SELECT body FROM grants ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect()
        })?;
        bodies
            .iter()
            .map(|body| {
                serde_json::from_str(body).map_err(|e| {
                    self.error(
                        "read the grants",
                        format!("a stored grant is unreadable: {e}"),
                    )
                })
            })
            .collect()
    }

    /// The stamp as it is now (see the module's documentation).
    pub fn grants_stamp(&self) -> GrantsStamp {
        GrantsStamp(std::fs::metadata(self.grants_stamp_path()).ok().map(|m| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (
                m.len(),
                m.modified().unwrap_or(std::time::UNIX_EPOCH),
                inode,
            )
        }))
    }

    fn grants_stamp_path(&self) -> PathBuf {
        self.path.with_file_name("grants.changed")
    }

    /// Replaces the stamp file (a new file each time, so its inode changes even when two
    /// changes fall in one tick of the file system's clock). Failing to is not an error of
    /// the change, which is committed: gateways also reload on their own every few seconds.
    fn touch_grants_stamp(&self) {
        use rand::RngCore;
        let path = self.grants_stamp_path();
        let temporary = path.with_extension(format!("{:016x}", rand::rng().next_u64()));
        let written = std::fs::write(&temporary, format!("{:016x}\n", rand::rng().next_u64()))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }
}

/// The change's transaction: `Ok(Err(why))` when the change was refused (nothing written).
fn apply(
    conn: &mut Connection,
    memory: &mut Memory,
    change: &GrantChange,
    event: &AuditEntry,
) -> rusqlite::Result<Result<StoredGrant, GrantRefused>> {
    let tx = begin(conn, memory)?;
    let existing: Option<StoredGrant> = tx
        .prepare_cached("SELECT body FROM grants WHERE name = ?1")?
        .query_row([change.name()], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|body| serde_json::from_str(&body).ok());
    let grant = match change.applied_to(existing) {
        Ok(grant) => grant,
        Err(refused) => return Ok(Err(refused)),
    };
    let body = serde_json::to_string(&grant).expect("a grant serializes");
    tx.prepare_cached(
        "INSERT INTO grants (name, token_sha256, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET token_sha256 = excluded.token_sha256, body = excluded.body",
    )?
    .execute(params![grant.name, grant.token_sha256, body])?;
    let record = Queued::of(std::slice::from_ref(event), true);
    write_entries(&tx, memory, std::slice::from_ref(&record))?;
    tx.commit()?;
    Ok(Ok(grant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AdminEvent, AuditFilter};
    use crate::embedded::scratch;
    use crate::grants::StoredPolicy;
    use std::collections::BTreeMap;

    fn event(action: &str, name: &str) -> AuditEntry {
        AuditEntry::Admin(AdminEvent {
            ts: "2026-11-26T00:00:00.000Z".into(),
            action: action.into(),
            actor: "test".into(),
            subject: name.into(),
            detail: serde_json::Value::Null,
        })
    }

    fn grant(name: &str, token_sha256: &str) -> StoredGrant {
        StoredGrant {
            name: name.into(),
            token_sha256: token_sha256.into(),
            policies: BTreeMap::from([(
                "mail".to_owned(),
                StoredPolicy {
                    source: "mail.json".into(),
                    document: r#"{"version":"1","default":"allow"}"#.into(),
                },
            )]),
            servers: vec!["files".into()],
            expires_unix: Some(2_000_000_000),
            note: Some("nightly".into()),
            created_ts: "2026-11-26T00:00:00.000Z".into(),
            token_ts: "2026-11-26T00:00:00.000Z".into(),
            revoked_ts: None,
        }
    }

    #[test]
    fn grants_are_created_rotated_and_revoked_each_with_its_admin_event() {
        let dir = scratch("lifecycle");
        let store = EmbeddedStore::open(&dir).unwrap();
        let other = EmbeddedStore::open(&dir).unwrap();
        let change = |change: GrantChange, action: &str| {
            store.change_grant(&change, &event(action, "ci")).unwrap()
        };
        let before = store.grants_stamp();
        let created = change(GrantChange::Create(grant("ci", "aa")), "grant_minted").unwrap();
        assert_eq!(other.grants().unwrap(), vec![created.clone()]);
        let after_create = other.grants_stamp();
        assert_ne!(before, after_create, "other processes see the change");

        let refused = change(GrantChange::Create(grant("ci", "bb")), "grant_minted");
        assert_eq!(refused, Err(GrantRefused::NameTaken("ci".into())));
        assert_eq!(
            other.grants_stamp(),
            after_create,
            "a refused change is no change"
        );

        let policy = StoredPolicy {
            source: "files.json".into(),
            document: "{}".into(),
        };
        let attached = change(
            GrantChange::SetPolicy {
                name: "ci".into(),
                server: "files".into(),
                policy,
            },
            "grant_policy_set",
        )
        .unwrap();
        assert_eq!(attached.policies.len(), 2);
        assert!(attached.servers.is_empty(), "files now has a policy");

        let rotated = change(
            GrantChange::Rotate {
                name: "ci".into(),
                token_sha256: "cc".into(),
                ts: "2026-11-26T01:00:00.000Z".into(),
            },
            "grant_rotated",
        )
        .unwrap();
        assert_eq!(rotated.token_sha256, "cc");
        assert_eq!(rotated.created_ts, created.created_ts);

        let revoke = || GrantChange::Revoke {
            name: "ci".into(),
            ts: "2026-11-26T02:00:00.000Z".into(),
        };
        let revoked = change(revoke(), "grant_revoked").unwrap();
        assert_eq!(
            revoked.revoked_ts.as_deref(),
            Some("2026-11-26T02:00:00.000Z")
        );
        assert_eq!(
            change(revoke(), "grant_revoked"),
            Err(GrantRefused::NotActive("ci".into()))
        );
        // A revoked name may be minted again.
        change(GrantChange::Create(grant("ci", "dd")), "grant_minted").unwrap();

        let actions: Vec<String> = other
            .audit_admin(&AuditFilter::default())
            .unwrap()
            .into_iter()
            .map(|a| a.event.action)
            .collect();
        assert_eq!(
            actions,
            [
                "grant_minted",
                "grant_policy_set",
                "grant_rotated",
                "grant_revoked",
                "grant_minted"
            ],
            "refused changes leave no event"
        );
        assert!(other.audit_verify().unwrap().iter().all(Result::is_ok));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
