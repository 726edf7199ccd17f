//! Approval requests in the embedded store (see `approvals.rs`). Each change commits with
//! the admin audit events that report it.

use super::audit::{write_entries, Queued};
use super::{begin, EmbeddedStore};
use crate::approvals::{
    decision, key_digest, restored, settle, ApprovalKey, ApprovalRequest, Change, DecisionRefused,
    Matched,
};
use crate::{AuditEntry, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// Makes the admin audit event of `action` on a request.
pub type ApprovalEvent<'a> = &'a dyn Fn(&ApprovalRequest, &str) -> AuditEntry;

fn decode(body: String) -> rusqlite::Result<ApprovalRequest> {
    serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn save(conn: &Connection, request: &ApprovalRequest) -> rusqlite::Result<()> {
    let body = serde_json::to_string(request).expect("a request serializes");
    conn.prepare_cached(
        "INSERT INTO approvals (id, key_digest, created_ms, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
    )?
    .execute(params![
        request.id,
        key_digest(&request.key),
        request.created_ms,
        body
    ])?;
    Ok(())
}

fn by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<ApprovalRequest>> {
    conn.prepare_cached("SELECT body FROM approvals WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, String>(0))
        .optional()?
        .map(decode)
        .transpose()
}

impl EmbeddedStore {
    /// Matches a held call (`key`) at `now_ms` (see [`Matched`]); `open` makes the new
    /// request when one is needed. Every change is written with its event.
    pub fn match_approval(
        &self,
        key: &ApprovalKey,
        now_ms: i64,
        open: &dyn Fn() -> ApprovalRequest,
        event: ApprovalEvent<'_>,
    ) -> Result<Matched, StoreError> {
        self.write("match an approval", |conn, memory| {
            let tx = begin(conn, memory)?;
            let requests = tx
                .prepare_cached(
                    "SELECT body FROM approvals WHERE key_digest = ?1 ORDER BY created_ms DESC, id",
                )?
                .query_map([key_digest(key)], |r| r.get::<_, String>(0))?
                .map(|body| body.and_then(decode))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let (matched, changed) = settle(requests, now_ms).or_open(open);
            let mut events = Vec::with_capacity(changed.len());
            for (request, action) in &changed {
                save(&tx, request)?;
                events.push(event(request, action));
            }
            let queued = Queued::of(&events, true);
            write_entries(&tx, memory, std::slice::from_ref(&queued))?;
            tx.commit()?;
            Ok(matched)
        })
    }

    /// Gives back what request `id` admitted, the call having never run.
    pub fn restore_approval(&self, id: &str, event: ApprovalEvent<'_>) -> Result<(), StoreError> {
        self.change_approval("restore an approval", id, restored, event)
            .map(|_| ())
    }

    /// Approves (or denies) request `id` as `actor` at `now_ms`, or says why not.
    pub fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        actor: &str,
        reason: Option<&str>,
        now_ms: i64,
        event: ApprovalEvent<'_>,
    ) -> Result<Result<ApprovalRequest, DecisionRefused>, StoreError> {
        let change = |request: ApprovalRequest| decision(&request, approve, actor, reason, now_ms);
        self.change_approval("decide an approval", id, change, event)
    }

    /// Applies `change` to request `id` and records it, in one commit.
    fn change_approval(
        &self,
        what: &str,
        id: &str,
        change: impl FnOnce(ApprovalRequest) -> Change,
        event: ApprovalEvent<'_>,
    ) -> Result<Result<ApprovalRequest, DecisionRefused>, StoreError> {
        self.write(what, |conn, memory| {
            let tx = begin(conn, memory)?;
            let Some(request) = by_id(&tx, id)? else {
                return Ok(Err(DecisionRefused::Unknown(id.to_owned())));
            };
            let (changed, action) = match change(request) {
                Ok(changed) => changed,
                Err(refused) => return Ok(Err(refused)),
            };
            save(&tx, &changed)?;
            let queued = Queued::of(&[event(&changed, action)], true);
            write_entries(&tx, memory, std::slice::from_ref(&queued))?;
            tx.commit()?;
            Ok(Ok(changed))
        })
    }

    /// Every request, newest first.
    pub fn approvals(&self) -> Result<Vec<ApprovalRequest>, StoreError> {
        self.with("read the approvals", |c| {
            c.prepare_cached("SELECT body FROM approvals ORDER BY created_ms DESC, id")?
                .query_map([], |r| r.get::<_, String>(0))?
                .map(|body| body.and_then(decode))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::ApprovalStatus;
    use crate::audit::{AdminEvent, AuditFilter};
    use crate::embedded::scratch;

    fn key(args: &str) -> ApprovalKey {
        ApprovalKey {
            grant: "ci".into(),
            identity: None,
            server: "pay".into(),
            tool: "charge".into(),
            args_sha256: args.into(),
            policy_version: "v1".into(),
        }
    }

    fn request(id: &str, args: &str, now: i64, reuse_ms: Option<u64>) -> ApprovalRequest {
        ApprovalRequest {
            id: id.into(),
            key: key(args),
            arguments: "{}".into(),
            rule: "/tools/charge/action".into(),
            message: "needs a human".into(),
            status: ApprovalStatus::Pending,
            created_ms: now,
            expires_ms: now + 1_000,
            timeout_ms: 1_000,
            reuse_ms,
            decided_by: None,
            decided_ms: None,
            reason: None,
            uses: 0,
            reported: false,
        }
    }

    fn event(request: &ApprovalRequest, action: &str) -> AuditEntry {
        AuditEntry::Admin(AdminEvent {
            ts: "2026-11-26T00:00:00.000Z".into(),
            action: action.into(),
            actor: "test".into(),
            subject: request.id.clone(),
            detail: serde_json::Value::Null,
        })
    }

    fn id_of(m: &Matched) -> (&'static str, &str) {
        match m {
            Matched::Admitted(r) => ("admitted", &r.id),
            Matched::Pending(r) => ("pending", &r.id),
            Matched::Opened(r) => ("opened", &r.id),
            Matched::Refused(r) => ("refused", &r.id),
        }
    }

    #[test]
    fn a_request_is_reused_decided_consumed_once_and_restored() {
        let store = EmbeddedStore::open(&scratch("approvals")).expect("open");
        let m = |args: &str, id: &str, now: i64| {
            let opened = request(id, args, now, None);
            store
                .match_approval(&key(args), now, &|| opened.clone(), &event)
                .expect("match")
        };
        assert_eq!(id_of(&m("a", "apr_1", 0)), ("opened", "apr_1"));
        assert_eq!(id_of(&m("a", "apr_2", 10)), ("pending", "apr_1"));
        // Other arguments: another request.
        assert_eq!(id_of(&m("b", "apr_3", 20)), ("opened", "apr_3"));
        let approved = store
            .decide_approval("apr_1", true, "dana", Some("ok"), 100, &event)
            .expect("store")
            .expect("approved");
        assert_eq!(
            approved.expires_ms, 1_100,
            "usable for the timeout after the decision"
        );
        let again = store
            .decide_approval("apr_1", false, "eve", None, 101, &event)
            .expect("store");
        assert!(
            matches!(again, Err(DecisionRefused::AlreadyDecided { .. })),
            "{again:?}"
        );
        assert_eq!(id_of(&m("a", "apr_4", 200)), ("admitted", "apr_1"));
        // Once: the next identical call needs a new approval…
        assert_eq!(id_of(&m("a", "apr_5", 300)), ("opened", "apr_5"));
        // …unless the call it admitted never ran.
        store.restore_approval("apr_1", &event).expect("restore");
        assert_eq!(id_of(&m("a", "apr_6", 400)), ("admitted", "apr_1"));
        // A request nobody decides expires; deciding it then is refused.
        assert_eq!(id_of(&m("b", "apr_7", 2_000)), ("opened", "apr_7"));
        let late = store
            .decide_approval("apr_3", true, "dana", None, 2_001, &event)
            .expect("store");
        assert_eq!(late, Err(DecisionRefused::Expired("apr_3".into())));
        let unknown = store
            .decide_approval("apr_x", true, "dana", None, 0, &event)
            .expect("store");
        assert_eq!(unknown, Err(DecisionRefused::Unknown("apr_x".into())));
        let actions: Vec<String> = store
            .audit_admin(&AuditFilter::default())
            .expect("admin")
            .into_iter()
            .map(|a| a.event.action)
            .collect();
        assert_eq!(
            actions,
            [
                "approval_requested",
                "approval_requested",
                "approval_approved",
                "approval_used",
                "approval_requested",
                "approval_restored",
                "approval_used",
                "approval_expired",
                "approval_requested",
            ]
        );
    }

    #[test]
    fn a_refusal_is_told_once_and_reuse_for_admits_identical_calls_for_a_while() {
        let store = EmbeddedStore::open(&scratch("approvals-for")).expect("open");
        let m = |args: &str, id: &str, now: i64, reuse: Option<u64>| {
            let opened = request(id, args, now, reuse);
            store
                .match_approval(&key(args), now, &|| opened.clone(), &event)
                .expect("match")
        };
        m("a", "apr_1", 0, None);
        store
            .decide_approval("apr_1", false, "dana", Some("no"), 5, &event)
            .expect("store")
            .expect("denied");
        assert_eq!(id_of(&m("a", "apr_2", 10, None)), ("refused", "apr_1"));
        assert_eq!(id_of(&m("a", "apr_3", 20, None)), ("opened", "apr_3"));

        m("f", "apr_f", 0, Some(500));
        store
            .decide_approval("apr_f", true, "dana", None, 100, &event)
            .expect("store")
            .expect("approved");
        for now in [200, 300, 599] {
            assert_eq!(
                id_of(&m("f", "apr_n", now, Some(500))),
                ("admitted", "apr_f")
            );
        }
        assert_eq!(id_of(&m("f", "apr_g", 600, Some(500))), ("opened", "apr_g"));
        let all = store.approvals().expect("list");
        let f = all.iter().find(|r| r.id == "apr_f").expect("apr_f");
        assert_eq!((f.uses, f.status), (3, ApprovalStatus::Approved));
        assert_eq!(f.status_at(600), ApprovalStatus::Expired);
    }
}
