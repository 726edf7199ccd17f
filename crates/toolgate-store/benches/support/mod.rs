//! What the store benchmarks share.

use toolgate_store::audit::CallRecord;
use toolgate_store::AuditEntry;

/// A call record as the gateway writes one before forwarding a call.
pub fn record(n: usize) -> AuditEntry {
    AuditEntry::Call(CallRecord {
        ts: "2026-11-25T23:00:00.000Z".into(),
        request_id: format!("tgr-{n:024x}"),
        grant: "bench".into(),
        grant_id: "0123456789abcdef".into(),
        identity: "bench".into(),
        server: "bench".into(),
        method: "tools/call".into(),
        tool: Some("work".into()),
        policy_id: Some("/etc/toolgate/policies/bench.json".into()),
        policy_version: Some("0123456789ab".into()),
        decision: "allow".into(),
        rule: Some("/tools/work".into()),
        arg_keys: vec!["n".into()],
        args_sha256: Some("0".repeat(64)),
        forwarded: true,
        ..CallRecord::default()
    })
}
