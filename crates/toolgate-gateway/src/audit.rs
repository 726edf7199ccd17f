//! The request line's audit trail (SPEC §9): a record for every authenticated JSON-RPC
//! request, written before the request is forwarded, and its outcome once the upstream
//! answered.
//!
//! Writing the record first is what makes the log complete: the gateway forwards nothing it
//! has not recorded, so a call the upstream executed has its record even if the gateway is
//! killed the next instant. A record that cannot be written stops the request (fail
//! closed): an unaudited call is exactly what an operator of this gateway must never get.

use crate::config::AuditSettings;
use crate::error::GatewayError;
use crate::grants::GrantSpec;
use crate::time::{format_rfc3339_ms, now_unix_ms};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use toolgate_mcp::answer::AnswerHead;
use toolgate_mcp::Message;
use toolgate_policy::{Decision, Outcome};
use toolgate_store::audit::{hex, AdminEvent, CallOutcome, CallRecord};
use toolgate_store::{AuditEntry, AuditLog};

/// What an argument value is replaced with when the operator redacts its path.
const REDACTED: &str = "[REDACTED]";

/// Writes the audit trail.
pub(crate) struct Auditor {
    /// Where entries go.
    log: Arc<dyn AuditLog>,
    /// What is captured.
    settings: AuditSettings,
    /// The last flush failed: the next failure is not logged again (flushes run every
    /// 20 ms), the next success is.
    flush_failing: AtomicBool,
    /// The log is the embedded store, whose flush is a synchronous SQLite commit: run on a
    /// blocking thread, not on a worker of the runtime (where, every 20 ms, it would hold
    /// up the requests queued behind it for as long as the commit takes).
    embedded: Option<Arc<toolgate_store::EmbeddedStore>>,
    /// Where write failures are counted.
    metrics: Arc<crate::metrics::Metrics>,
    /// Where the span of each `tools/call` goes (`[telemetry]`).
    tracer: Option<Arc<crate::telemetry::Tracer>>,
}

/// A forwarded request whose outcome is still to be written.
#[derive(Debug, Clone)]
pub(crate) struct Awaiting {
    /// The client's JSON-RPC id (how the upstream's answer is recognised).
    pub(crate) id: Value,
    /// The record it completes.
    pub(crate) request_id: String,
    /// When it was decided (latency is measured from here).
    pub(crate) started: Instant,
    /// Its server's metrics, where its outcome and duration are counted.
    pub(crate) server: Arc<crate::metrics::ServerMetrics>,
    /// Its span, when traces are exported and it is a `tools/call`.
    pub(crate) span: Option<Box<crate::telemetry::Started>>,
}

impl Auditor {
    pub(crate) fn new(log: Arc<dyn AuditLog>, settings: AuditSettings) -> Self {
        Auditor {
            log,
            settings,
            flush_failing: AtomicBool::new(false),
            embedded: None,
            metrics: Arc::default(),
            tracer: None,
        }
    }

    /// The same auditor, sending a span per `tools/call` to `tracer`.
    pub(crate) fn with_tracer(self, tracer: Option<Arc<crate::telemetry::Tracer>>) -> Self {
        Auditor { tracer, ..self }
    }

    /// The span of the call `record` describes, begun now: when traces are exported and it
    /// is a `tools/call`.
    pub(crate) fn span_start(&self, record: &CallRecord) -> Option<Box<crate::telemetry::Started>> {
        (self.tracer.is_some() && record.method == "tools/call")
            .then(|| Box::new(crate::telemetry::Started::of(record)))
    }

    /// The same auditor, counting write failures in `metrics`.
    pub(crate) fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Auditor { metrics, ..self }
    }

    /// An auditor writing to the embedded store `store` (flushed on a blocking thread).
    pub(crate) fn embedded(
        store: Arc<toolgate_store::EmbeddedStore>,
        settings: AuditSettings,
    ) -> Self {
        Auditor {
            embedded: Some(Arc::clone(&store)),
            ..Auditor::new(store, settings)
        }
    }

    /// The record of request `message` from `grant` to `server`, before any decision: an
    /// allowed, forwarded request, as most are; the caller records what differs.
    pub(crate) fn record(
        &self,
        grant: &GrantSpec,
        server: &str,
        session: Option<&str>,
        message: &Message,
    ) -> CallRecord {
        let method = message.method().unwrap_or_default().to_owned();
        let params = message.params();
        let (tool, arguments) = if method == "tools/call" {
            (
                params
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                params.and_then(|p| p.get("arguments")),
            )
        } else {
            (None, None)
        };
        let mut arg_keys: Vec<String> = arguments
            .and_then(Value::as_object)
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        arg_keys.sort();
        let policy = grant.policies.get(server);
        CallRecord {
            ts: format_rfc3339_ms(now_unix_ms()),
            request_id: request_id(),
            jsonrpc_id: message.id().cloned().unwrap_or(Value::Null),
            session_id: session.map(str::to_owned),
            grant_id: grant_id(grant),
            grant: grant.name.clone(),
            identity: grant.identity().to_owned(),
            server: server.to_owned(),
            method,
            tool,
            policy_id: policy.map(|p| p.id.clone()),
            policy_version: policy.map(|p| p.version.clone()),
            decision: Outcome::Allow.as_str().to_owned(),
            rule: None,
            message: None,
            shadow: false,
            arg_keys,
            args_sha256: arguments
                .map(|a| hex(&Sha256::digest(toolgate_mcp::json::canonical(a).as_bytes()))),
            args: arguments
                .filter(|_| self.settings.capture_full)
                .map(|a| self.redacted(a)),
            approval_id: None,
            forwarded: true,
        }
    }

    /// `arguments` with every redacted path masked.
    fn redacted(&self, arguments: &Value) -> Value {
        let mut copy = arguments.clone();
        let mask = Value::String(REDACTED.to_owned());
        for path in &self.settings.redact {
            path.mask(&mut copy, &mask);
        }
        copy
    }

    /// Writes `entries`, returning once they are durable; a failure is the gateway's, and
    /// says that the audit log could not be written.
    pub(crate) async fn write(&self, entries: &[AuditEntry]) -> Result<(), GatewayError> {
        if let Some(tracer) = &self.tracer {
            // The calls the gateway answered itself end here; forwarded ones at `finish`.
            for entry in entries {
                if let AuditEntry::Call(record) = entry {
                    if record.method == "tools/call" && !record.forwarded {
                        tracer.record(crate::telemetry::Started::of(record).end(None));
                    }
                }
            }
        }
        let written = self.log.append(entries).await;
        self.metrics.audit_written(written.is_ok());
        written.map_err(|e| {
            tracing::error!(target: "toolgate::audit", "audit log unavailable: {e}");
            GatewayError::internal(format!(
                "audit log unavailable, so the request was not forwarded: {e}"
            ))
        })
    }

    /// Records the outcome of a forwarded request. It is queued, not waited for: the record
    /// that completeness rests on (the call's, written before forwarding) is durable
    /// already, and the outcome rides along with the next commit — another call's record,
    /// or the periodic [`Auditor::flush`] — instead of costing a commit of its own.
    pub(crate) fn finish(&self, awaiting: &Awaiting, upstream_status: &str) {
        self.finish_all(std::slice::from_ref(awaiting), upstream_status);
    }

    /// [`Auditor::finish`] for several requests with the same outcome.
    pub(crate) fn finish_all(&self, awaiting: &[Awaiting], upstream_status: &str) {
        if awaiting.is_empty() {
            return;
        }
        for one in awaiting {
            one.server.finished(upstream_status, one.started.elapsed());
            if let (Some(tracer), Some(span)) = (&self.tracer, &one.span) {
                tracer.record(span.as_ref().clone().end(Some(upstream_status)));
            }
        }
        self.log.append_later(
            awaiting
                .iter()
                .map(|one| outcome(one, upstream_status.to_owned()))
                .collect(),
        );
    }

    /// Queues admin events (a reload's): they go with the next commit, like outcomes.
    pub(crate) fn record_admin(&self, events: Vec<AuditEntry>) {
        if !events.is_empty() {
            self.log.append_later(events);
        }
    }

    /// Writes queued entries; a failure is logged (nobody is waiting for them) once, and
    /// so is the recovery. Queued entries are kept for the next flush meanwhile.
    pub(crate) async fn flush(&self) {
        let outcome = match &self.embedded {
            Some(store) => {
                let store = Arc::clone(store);
                crate::blocking(move || store.flush_audit()).await
            }
            None => self.log.flush().await,
        };
        match outcome {
            Err(e) => {
                if !self.flush_failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(target: "toolgate::audit", "audit log unavailable, queued entries wait for it (calls are refused meanwhile): {e}");
                }
            }
            Ok(()) => {
                if self.flush_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(target: "toolgate::audit", "audit log writable again; queued entries recorded");
                }
            }
        }
    }
}

/// The admin events of a start: one `policy_loaded` per grant and server with a policy,
/// naming the file and its version (a hash of the document).
pub(crate) fn policies_loaded(grants: &[GrantSpec]) -> Vec<AuditEntry> {
    let ts = format_rfc3339_ms(now_unix_ms());
    grants
        .iter()
        .flat_map(|grant| {
            let ts = ts.clone();
            grant.policies.iter().map(move |(server, policy)| {
                AuditEntry::Admin(AdminEvent {
                    ts: ts.clone(),
                    action: "policy_loaded".to_owned(),
                    actor: "gateway".to_owned(),
                    subject: policy.id.clone(),
                    detail: serde_json::json!({
                        "version": policy.version,
                        "grant": grant.name,
                        "server": server,
                    }),
                })
            })
        })
        .collect()
}

/// The admin event of a configuration the gateway refused to start with.
pub(crate) fn config_rejected(config: &std::path::Path, errors: &[String]) -> AuditEntry {
    AuditEntry::Admin(AdminEvent {
        ts: format_rfc3339_ms(now_unix_ms()),
        action: "config_rejected".to_owned(),
        actor: "gateway".to_owned(),
        subject: config.display().to_string(),
        detail: serde_json::json!({ "errors": errors }),
    })
}

/// The outcome entry of `awaiting`.
fn outcome(awaiting: &Awaiting, upstream_status: String) -> AuditEntry {
    AuditEntry::Outcome(CallOutcome {
        ts: format_rfc3339_ms(now_unix_ms()),
        request_id: awaiting.request_id.clone(),
        upstream_status,
        latency_ms: (awaiting.started.elapsed().as_secs_f64() * 1e3 * 1e3).round() / 1e3,
    })
}

/// Records `decision` (and whether it was only shadowed) in `record`.
pub(crate) fn decided(record: &mut CallRecord, decision: &Decision, shadow: bool) {
    record.decision = decision.outcome.as_str().to_owned();
    record.rule = Some(decision.rule.clone()).filter(|r| !r.is_empty());
    record.message = Some(decision.message.clone()).filter(|m| !m.is_empty());
    record.shadow = shadow;
}

/// How the upstream answered, as the outcome records it: `ok`, `tool_error` (a result with
/// `isError`: the tool ran and failed) or `error <code>` (a JSON-RPC error: it never ran).
pub(crate) fn upstream_status(response: &Value) -> String {
    answer_status(&AnswerHead::of(response))
}

/// [`upstream_status`] of an answer's head: a JSON-RPC error (with its code if it had an
/// integer one), else a result the tool marked `isError`, else `ok`.
pub(crate) fn answer_status(head: &AnswerHead) -> String {
    match head.error {
        Some(Some(code)) => format!("error {code}"),
        Some(None) => "error".to_owned(),
        None if head.tool_error => "tool_error".to_owned(),
        None => "ok".to_owned(),
    }
}

/// A fresh request id: `tgr-` and 96 random bits.
fn request_id() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 12];
    rand::rng().fill_bytes(&mut raw);
    format!("tgr-{}", hex(&raw))
}

/// Names a grant's token without revealing anything usable: the first 8 bytes of the
/// SHA-256 of its token's SHA-256. Stable for the token's life; a rotated token is a new id.
fn grant_id(grant: &GrantSpec) -> String {
    hex(&Sha256::digest(grant.token_sha256)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_status_tells_results_tool_errors_and_jsonrpc_errors_apart() {
        assert_eq!(upstream_status(&json!({"result": {"content": []}})), "ok");
        assert_eq!(
            upstream_status(&json!({"result": {"isError": true}})),
            "tool_error"
        );
        assert_eq!(
            upstream_status(&json!({"error": {"code": -32602, "message": "x"}})),
            "error -32602"
        );
    }
}
