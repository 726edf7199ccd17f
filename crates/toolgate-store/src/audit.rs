//! The audit log (SPEC §9): what it records, how records are chained, and how a chain is
//! verified. Storage lives with each store; this module is pure.
//!
//! - **Entries.** A request that is answered without reaching the upstream (denied, hidden,
//!   rate-limited) is one [`AuditEntry::Call`]. A forwarded request is a `Call` written
//!   *before* forwarding — so a call that reached the upstream always has its record, even
//!   if the gateway is killed a moment later — plus an [`AuditEntry::Outcome`] written when
//!   the upstream answered. Queries merge the two ([`MergedRecord`]). Admin actions are
//!   [`AuditEntry::Admin`], on a chain of their own.
//! - **Chains.** Every entry is stored as its JSON text (the *body*) with a sequence number
//!   and two hashes: `prev_hash`, the hash of the entry before it on its chain (64 zeros for
//!   the first), and `hash` = SHA-256 of `prev_hash`, a newline and the body. Editing a
//!   body breaks its hash; deleting or inserting an entry breaks the next entry's
//!   `prev_hash` and the sequence. [`verify`] walks a chain and names the first entry that
//!   does not hold. (Someone able to rewrite the database can recompute every hash after
//!   the point they changed; what `verify` prints as the head hash is what an operator
//!   records elsewhere to rule that out.)

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::StoreFuture;

/// Where audit entries are written: the embedded store, or PostgreSQL in cluster mode.
pub trait AuditLog: Send + Sync {
    /// Appends `entries` to their chains; resolves once they are durable (they survive the
    /// gateway being killed), or with an error naming what failed.
    fn append<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()>;

    /// Queues `entries` to be written with the next [`append`](AuditLog::append) or
    /// [`flush`](AuditLog::flush), whichever comes first: for entries nobody waits for (an
    /// outcome, after the answer), so that they cost no commit of their own.
    fn append_later(&self, entries: Vec<AuditEntry>);

    /// Writes whatever is queued.
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// The chain of call records and their outcomes.
pub const CALLS: &str = "calls";
/// The chain of admin actions.
pub const ADMIN: &str = "admin";
/// `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One authenticated JSON-RPC request as the gateway decided it (SPEC §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CallRecord {
    /// When it was decided (RFC 3339, UTC, milliseconds).
    pub ts: String,
    /// Unique, made by the gateway.
    pub request_id: String,
    /// The client's JSON-RPC id.
    pub jsonrpc_id: Value,
    /// The client's MCP session, if it has one.
    pub session_id: Option<String>,
    /// Identifies the grant's token (stable until the token is rotated).
    pub grant_id: String,
    /// The grant's label.
    pub grant: String,
    /// Who is calling: the authenticated subject, or the grant for token grants.
    pub identity: String,
    /// The server addressed.
    pub server: String,
    /// The JSON-RPC method.
    pub method: String,
    /// The tool, for `tools/call`.
    pub tool: Option<String>,
    /// The policy that decided (its file), if one applies.
    pub policy_id: Option<String>,
    /// A hash of that policy document.
    pub policy_version: Option<String>,
    /// `allow`, `deny`, `hide`, `rate_limited` or `approval_required`.
    pub decision: String,
    /// The rule id that decided.
    pub rule: Option<String>,
    /// The decision's message (also why a counter store or the audit itself failed).
    pub message: Option<String>,
    /// Decided but not enforced (shadow mode).
    pub shadow: bool,
    /// The top-level argument names, sorted.
    pub arg_keys: Vec<String>,
    /// SHA-256 (hex) of the canonical arguments.
    pub args_sha256: Option<String>,
    /// The arguments themselves, only with `audit.capture = "full"` (redacted paths
    /// masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// The approval this call was held for, if any.
    pub approval_id: Option<String>,
    /// Whether the request was sent upstream (an [`Outcome`](AuditEntry::Outcome) follows).
    pub forwarded: bool,
}

/// What became of a forwarded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CallOutcome {
    /// When the answer (or the failure) came.
    pub ts: String,
    /// The [`CallRecord::request_id`] it completes.
    pub request_id: String,
    /// `ok`, `tool_error` (an `isError` result), `error <code>` (a JSON-RPC error),
    /// `cancelled`, `timeout`, `unreachable`, `http <status>`, `unreadable` (an answer that
    /// was not MCP), `no_answer` (the stream ended first), `failed` (a stdio child failed),
    /// or `not_sent` (refused after all: the audit log could not be written).
    pub upstream_status: String,
    /// From the decision to the answer.
    pub latency_ms: f64,
}

/// An operator-side event: policy loaded, grant minted or revoked, approval decided,
/// configuration error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AdminEvent {
    /// When.
    pub ts: String,
    /// What happened (`policy_loaded`, `grant_minted`, …).
    pub action: String,
    /// Who did it (`gateway` for the gateway itself, else an admin member).
    pub actor: String,
    /// What it was done to (a grant, a policy file, an approval id).
    pub subject: String,
    /// Anything else worth keeping (a policy version, an error).
    pub detail: Value,
}

/// One entry of the audit log, as stored (its JSON is the body that is hashed).
// Most entries are calls, and entries live only from the request to the commit: boxing the
// big variant would cost an allocation on the common path to save memory on the rare one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEntry {
    /// A request and its decision.
    Call(CallRecord),
    /// What the upstream did with a forwarded request.
    Outcome(CallOutcome),
    /// An admin action.
    Admin(AdminEvent),
}

impl AuditEntry {
    /// The chain it belongs to.
    pub fn chain(&self) -> &'static str {
        match self {
            AuditEntry::Admin(_) => ADMIN,
            AuditEntry::Call(_) | AuditEntry::Outcome(_) => CALLS,
        }
    }

    /// Its body: the exact text stored and hashed.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("audit entries always serialize")
    }

    /// When it happened.
    pub fn ts(&self) -> &str {
        match self {
            AuditEntry::Call(c) => &c.ts,
            AuditEntry::Outcome(o) => &o.ts,
            AuditEntry::Admin(a) => &a.ts,
        }
    }
}

/// One stored entry, with its place in its chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// The chain.
    pub chain: String,
    /// Its position on the chain, from 1, without gaps.
    pub seq: u64,
    /// The stored text.
    pub body: String,
    /// The hash of the entry before it.
    pub prev_hash: String,
    /// Its own hash.
    pub hash: String,
}

impl StoredEntry {
    /// The entry the body holds, if it is one.
    pub fn entry(&self) -> Result<AuditEntry, String> {
        serde_json::from_str(&self.body).map_err(|e| e.to_string())
    }
}

/// The hash of an entry with `body` following one whose hash is `prev_hash`.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    hex(&hasher.finalize())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    // By table, not `write!("{:02x}")`: every call record hashes its arguments and its
    // chain link, and the formatting machinery per byte showed up in the gateway's profile.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// A call record with its outcome merged in, as queries show it (SPEC §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedRecord {
    /// The decision.
    #[serde(flatten)]
    pub call: CallRecord,
    /// From the outcome: what the upstream did (absent if not forwarded, or the answer
    /// never came).
    pub upstream_status: Option<String>,
    /// From the outcome.
    pub latency_ms: Option<f64>,
    /// The call entry's hash.
    pub hash: String,
    /// The hash of the entry before it.
    pub prev_hash: String,
}

/// An admin event as queries show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// The event.
    #[serde(flatten)]
    pub event: AdminEvent,
    /// Its entry's hash.
    pub hash: String,
    /// The hash of the entry before it.
    pub prev_hash: String,
}

/// The admin events among `entries`, oldest first, those in `[since, until)` when given.
pub fn admin_events(entries: &[StoredEntry], filter: &AuditFilter) -> Vec<AdminRecord> {
    let mut events: Vec<AdminRecord> = entries
        .iter()
        .filter_map(|stored| match stored.entry() {
            Ok(AuditEntry::Admin(event)) => Some(AdminRecord {
                event,
                hash: stored.hash.clone(),
                prev_hash: stored.prev_hash.clone(),
            }),
            _ => None,
        })
        .filter(|r| {
            filter
                .since
                .as_deref()
                .is_none_or(|s| r.event.ts.as_str() >= s)
        })
        .filter(|r| {
            filter
                .until
                .as_deref()
                .is_none_or(|u| r.event.ts.as_str() < u)
        })
        .collect();
    if let Some(limit) = filter.limit {
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
    }
    events
}

/// Which call records a query wants; every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Grant label.
    pub grant: Option<String>,
    /// Server name.
    pub server: Option<String>,
    /// Tool name.
    pub tool: Option<String>,
    /// Decision (`allow`, `deny`, …).
    pub decision: Option<String>,
    /// Rule id.
    pub rule: Option<String>,
    /// At or after this RFC 3339 time.
    pub since: Option<String>,
    /// Before this RFC 3339 time.
    pub until: Option<String>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// Whether `call` matches (the time bounds compare RFC 3339 UTC texts, which sort as
    /// times do).
    pub fn matches(&self, call: &CallRecord) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        same(&self.grant, Some(&call.grant))
            && same(&self.server, Some(&call.server))
            && same(&self.tool, call.tool.as_deref())
            && same(&self.decision, Some(&call.decision))
            && same(&self.rule, call.rule.as_deref())
            && self.since.as_deref().is_none_or(|s| call.ts.as_str() >= s)
            && self.until.as_deref().is_none_or(|u| call.ts.as_str() < u)
    }
}

/// Merges the call entries of `entries` (in chain order) with their outcomes, keeping
/// those `filter` wants, oldest first.
pub fn merge(entries: &[StoredEntry], filter: &AuditFilter) -> Vec<MergedRecord> {
    let mut merged: Vec<MergedRecord> = Vec::new();
    let mut by_request = std::collections::HashMap::new();
    for stored in entries {
        match stored.entry() {
            Ok(AuditEntry::Call(call)) if filter.matches(&call) => {
                by_request.insert(call.request_id.clone(), merged.len());
                merged.push(MergedRecord {
                    call,
                    upstream_status: None,
                    latency_ms: None,
                    hash: stored.hash.clone(),
                    prev_hash: stored.prev_hash.clone(),
                });
            }
            Ok(AuditEntry::Outcome(outcome)) => {
                if let Some(&index) = by_request.get(&outcome.request_id) {
                    merged[index].upstream_status = Some(outcome.upstream_status);
                    merged[index].latency_ms = Some(outcome.latency_ms);
                }
            }
            _ => {}
        }
    }
    if let Some(limit) = filter.limit {
        let skip = merged.len().saturating_sub(limit);
        merged.drain(..skip);
    }
    merged
}

/// Where a chain stops holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The chain.
    pub chain: String,
    /// The first entry that does not hold (its sequence number as stored).
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain {:?}, record {}: {}",
            self.chain, self.seq, self.reason
        )
    }
}

/// How much of a chain was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The chain.
    pub chain: String,
    /// Entries checked.
    pub entries: u64,
    /// The hash of its last entry (record it elsewhere to detect a rewritten chain later).
    pub head: String,
}

/// Walks one chain's entries in stored order, starting after `start` (`(seq, hash)` of the
/// last entry pruned away, or `(0, GENESIS)`), and reports the first entry that was altered,
/// inserted or deleted.
pub fn verify<'a>(
    chain: &str,
    start: (u64, &str),
    entries: impl IntoIterator<Item = &'a StoredEntry>,
) -> Result<Verified, Broken> {
    let (mut seq, mut head) = (start.0, start.1.to_owned());
    let mut count = 0;
    for stored in entries {
        let broken = |reason: String| Broken {
            chain: chain.to_owned(),
            seq: stored.seq,
            reason,
        };
        if chain_hash(&stored.prev_hash, &stored.body) != stored.hash {
            return Err(broken(
                "altered: its contents do not match its hash".to_owned(),
            ));
        }
        if stored.seq != seq + 1 {
            return Err(broken(if stored.seq <= seq {
                format!("inserted: it repeats position {} of the chain", stored.seq)
            } else {
                format!(
                    "records {}..{} are missing (deleted)",
                    seq + 1,
                    stored.seq - 1
                )
            }));
        }
        if stored.prev_hash != head {
            return Err(broken(
                "does not follow the record before it: a record before it was altered, inserted or deleted"
                    .to_owned(),
            ));
        }
        seq = stored.seq;
        head = stored.hash.clone();
        count += 1;
    }
    Ok(Verified {
        chain: chain.to_owned(),
        entries: count,
        head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff, 0x10]), "000fabff10");
        assert_eq!(hex(&[]), "");
    }

    fn chain_of(n: u64) -> Vec<StoredEntry> {
        let mut head = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let body = AuditEntry::Call(CallRecord {
                    request_id: format!("r{seq}"),
                    decision: "allow".into(),
                    ..CallRecord::default()
                })
                .body();
                let hash = chain_hash(&head, &body);
                let stored = StoredEntry {
                    chain: CALLS.into(),
                    seq,
                    body,
                    prev_hash: head.clone(),
                    hash: hash.clone(),
                };
                head = hash;
                stored
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let chain = chain_of(5);
        let verified = verify(CALLS, (0, GENESIS), &chain).unwrap();
        assert_eq!(verified.entries, 5);
        assert_eq!(verified.head, chain[4].hash);
    }

    #[test]
    fn an_edited_body_is_named() {
        let mut chain = chain_of(5);
        chain[2].body = chain[2].body.replace("allow", "deny");
        let broken = verify(CALLS, (0, GENESIS), &chain).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("altered"), "{broken}");
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let mut chain = chain_of(5);
        chain[2].body = chain[2].body.replace("allow", "deny");
        chain[2].hash = chain_hash(&chain[2].prev_hash, &chain[2].body);
        let broken = verify(CALLS, (0, GENESIS), &chain).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("does not follow"), "{broken}");
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut chain = chain_of(5);
        chain.remove(1);
        let broken = verify(CALLS, (0, GENESIS), &chain).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(
            broken.reason.contains("records 2..2 are missing"),
            "{broken}"
        );
        // The last one deleted: the chain is shorter, which only the head tells.
        let mut chain = chain_of(5);
        chain.pop();
        assert_eq!(verify(CALLS, (0, GENESIS), &chain).unwrap().entries, 4);
    }

    #[test]
    fn an_inserted_entry_is_named() {
        let mut chain = chain_of(5);
        let mut forged = chain[1].clone();
        forged.body = forged.body.replace("r2", "forged");
        forged.hash = chain_hash(&forged.prev_hash, &forged.body);
        chain.insert(2, forged);
        let broken = verify(CALLS, (0, GENESIS), &chain).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("inserted"), "{broken}");
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_recorded_head() {
        let chain = chain_of(5);
        let start = (2, chain[1].hash.as_str());
        assert_eq!(verify(CALLS, start, &chain[2..]).unwrap().entries, 3);
        assert_eq!(verify(CALLS, (0, GENESIS), &chain[2..]).unwrap_err().seq, 3);
    }

    #[test]
    fn outcomes_merge_into_their_calls_and_filters_apply() {
        let call = |id: &str, tool: &str, decision: &str| StoredEntry {
            chain: CALLS.into(),
            seq: 0,
            body: AuditEntry::Call(CallRecord {
                request_id: id.into(),
                tool: Some(tool.into()),
                decision: decision.into(),
                ts: "2026-11-25T10:00:00.000Z".into(),
                ..CallRecord::default()
            })
            .body(),
            prev_hash: GENESIS.into(),
            hash: id.into(),
        };
        let outcome = StoredEntry {
            body: AuditEntry::Outcome(CallOutcome {
                request_id: "a".into(),
                upstream_status: "ok".into(),
                latency_ms: 1.5,
                ts: String::new(),
            })
            .body(),
            ..call("x", "x", "x")
        };
        let entries = vec![
            call("a", "send", "allow"),
            call("b", "wipe", "deny"),
            outcome,
        ];
        let all = merge(&entries, &AuditFilter::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].upstream_status.as_deref(), Some("ok"));
        assert_eq!(all[1].upstream_status, None);
        let denied = merge(
            &entries,
            &AuditFilter {
                decision: Some("deny".into()),
                ..AuditFilter::default()
            },
        );
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].call.tool.as_deref(), Some("wipe"));
        let later = AuditFilter {
            since: Some("2026-11-25T10:00:00.001Z".into()),
            ..AuditFilter::default()
        };
        assert!(merge(&entries, &later).is_empty());
    }
}
