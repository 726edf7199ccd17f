//! OpenTelemetry traces: one span per `tools/call`, exported over OTLP/HTTP with the JSON
//! encoding (`POST <otlp_endpoint>/v1/traces`, `[telemetry]`).
//!
//! Written by hand rather than with the opentelemetry crates: a span here is a name, two
//! times and a handful of attributes, and the OTLP JSON encoding is a documented shape; the
//! SDK and its exporter would bring a large dependency tree (and gRPC) for that.
//!
//! A span starts when the call is decided and ends when its answer is in (at once for a call
//! the gateway answers itself). Its attributes are those of the audit record: server, tool,
//! grant, decision, rule, outcome. Spans are sent in batches (every second, or 512 at a
//! time) by a task of their own; the queue is bounded, and when the collector cannot keep
//! up spans are dropped and counted (never a call delayed).
//!
//! A caller's W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>)
//! is continued: the call's span joins the caller's trace as a child of the caller's span,
//! and an HTTP upstream is sent a `traceparent` naming the gateway's span, so its own spans
//! hang below it. The context rides in a task-local for the request's duration, as tracing
//! contexts do, rather than through every function between the front door and the span.
//! A batch of several calls forwards the caller's context unchanged; stdio upstreams,
//! which have no headers, start their own traces.

use crate::config::TelemetrySettings;
use crate::http_upstream::{build_client, post_json, HttpClient};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use toolgate_store::audit::{hex, CallRecord};

/// Spans waiting to be sent, at most.
const QUEUE: usize = 8192;
/// Spans per request to the collector, at most.
const BATCH: usize = 512;
/// How long a span waits for its batch, at most.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export request's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A finished span.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    name: String,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The caller's span, when the caller sent a trace context.
    parent_span_id: Option<[u8; 8]>,
    /// The trace flags passed on (sampled, unless the caller said otherwise).
    flags: u8,
    start_unix_nano: u128,
    end_unix_nano: u128,
    attributes: Vec<(&'static str, String)>,
    /// The upstream failed the call (a JSON-RPC error, a timeout, no answer).
    error: Option<String>,
}

/// A span begun at a decision, to be ended when the call's answer is in.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    span: Span,
}

impl Started {
    /// The span of the call `record` describes, begun now.
    pub(crate) fn of(record: &CallRecord) -> Started {
        use rand::RngCore;
        let incoming = incoming();
        let mut span_id = [0u8; 8];
        rand::rng().fill_bytes(&mut span_id);
        let trace_id = incoming.map_or_else(
            || {
                let mut fresh = [0u8; 16];
                rand::rng().fill_bytes(&mut fresh);
                fresh
            },
            |c| c.trace_id,
        );
        let tool = record.tool.clone().unwrap_or_default();
        let mut attributes = vec![
            ("mcp.method.name", record.method.clone()),
            ("mcp.server", record.server.clone()),
            ("gen_ai.tool.name", tool.clone()),
            ("toolgate.grant", record.grant.clone()),
            ("toolgate.identity", record.identity.clone()),
            ("toolgate.decision", record.decision.clone()),
            ("toolgate.request_id", record.request_id.clone()),
        ];
        if let Some(rule) = record.rule.as_ref().filter(|r| !r.is_empty()) {
            attributes.push(("toolgate.rule", rule.clone()));
        }
        let now = unix_nanos();
        Started {
            span: Span {
                name: format!("{} {tool}", record.method),
                trace_id,
                span_id,
                parent_span_id: incoming.map(|c| c.parent_span_id),
                flags: incoming.map_or(SAMPLED, |c| c.flags),
                start_unix_nano: now,
                end_unix_nano: now,
                attributes,
                error: None,
            },
        }
    }

    /// The `traceparent` that makes the next hop's spans children of this one.
    pub(crate) fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.span.trace_id),
            hex(&self.span.span_id),
            self.span.flags
        )
    }

    /// The span, ended now with the upstream's outcome (as the audit log words it); `None`
    /// for a call the gateway answered itself.
    pub(crate) fn end(self, upstream_status: Option<&str>) -> Span {
        let mut span = self.span;
        span.end_unix_nano = unix_nanos();
        if let Some(status) = upstream_status {
            span.attributes
                .push(("toolgate.upstream_status", status.to_owned()));
            if !matches!(status, "ok" | "tool_error" | "cancelled") {
                span.error = Some(status.to_owned());
            }
        }
        span
    }
}

/// The `sampled` trace flag.
const SAMPLED: u8 = 1;

/// A caller's trace context: the trace its call belongs to and the caller's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    /// The caller's trace.
    trace_id: [u8; 16],
    /// The caller's span, the parent of the gateway's.
    parent_span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    flags: u8,
}

impl TraceContext {
    /// A `traceparent` header's context, or `None` if it is not a valid one (then the
    /// span starts a trace of its own, as the W3C recommendation says). Versions after 00
    /// are read as 00 is, ignoring what they append.
    pub(crate) fn parse(value: &str) -> Option<TraceContext> {
        let value = value.trim();
        let mut parts = value.splitn(5, '-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let extra = parts.next();
        let version = u8::from_str_radix(lower_hex(version, 2)?, 16).ok()?;
        if version == 0xff || (version == 0 && extra.is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(lower_hex(trace, 32)?)?.try_into().ok()?;
        let parent_span_id: [u8; 8] = decode_hex(lower_hex(parent, 16)?)?.try_into().ok()?;
        let flags = u8::from_str_radix(lower_hex(flags, 2)?, 16).ok()?;
        if trace_id == [0; 16] || parent_span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_span_id,
            flags,
        })
    }
}

/// `s` if it is `len` lowercase hex digits.
fn lower_hex(s: &str, len: usize) -> Option<&str> {
    (s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

tokio::task_local! {
    /// The trace context of the request being handled.
    static INCOMING: Option<TraceContext>;
}

/// Runs `handling` with `context` as the caller's trace context of the spans it starts.
pub(crate) async fn continuing<F: std::future::Future>(
    context: Option<TraceContext>,
    handling: F,
) -> F::Output {
    INCOMING.scope(context, handling).await
}

/// The trace context of the request being handled, if its caller sent one.
fn incoming() -> Option<TraceContext> {
    INCOMING.try_with(|c| *c).ok().flatten()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Sends spans to the collector.
#[derive(Debug)]
pub(crate) struct Tracer {
    queue: mpsc::Sender<Span>,
    /// Spans dropped because the queue was full.
    dropped: AtomicU64,
}

impl Tracer {
    /// Starts the export task; it sends what is queued and stops when `shutdown` turns.
    pub(crate) fn start(
        settings: &TelemetrySettings,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Tracer, tokio::task::JoinHandle<()>), String> {
        let client = build_client(None, EXPORT_TIMEOUT)?;
        let (queue, spans) = mpsc::channel(QUEUE);
        let task = tokio::spawn(export(client, settings.clone(), spans, shutdown));
        tracing::info!(url = %settings.traces_url, "traces exported over OTLP/HTTP");
        Ok((
            Tracer {
                queue,
                dropped: AtomicU64::new(0),
            },
            task,
        ))
    }

    /// Queues `span`; a full queue drops it (counted, logged now and then).
    pub(crate) fn record(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    "{dropped} spans dropped so far: the OTLP collector does not keep up"
                );
            }
        }
    }
}

/// Sends batches until `shutdown`, then what is left.
async fn export(
    client: HttpClient,
    settings: TelemetrySettings,
    mut spans: mpsc::Receiver<Span>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let room = BATCH - batch.len();
        let stopping = tokio::select! {
            n = spans.recv_many(&mut batch, room) => n == 0,
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
            _ = crate::stopped(&mut shutdown) => true,
        };
        if stopping {
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
            }
        }
        if !batch.is_empty() && (stopping || batch.len() >= BATCH || spans.is_empty()) {
            let body = Bytes::from(encode(&settings.service_name, &batch).to_string());
            let sent = post_json(&client, &settings.traces_url, &[], body, EXPORT_TIMEOUT).await;
            if let Err(e) = sent {
                tracing::warn!("{} spans not exported: {e}", batch.len());
            }
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding: ids in hex, times as decimal
/// strings, one resource and one scope.
fn encode(service_name: &str, spans: &[Span]) -> Value {
    let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let status = match &span.error {
                Some(message) => json!({"code": 2, "message": message}),
                None => json!({"code": 0}),
            };
            let mut encoded = json!({
                "traceId": hex(&span.trace_id),
                "spanId": hex(&span.span_id),
                "name": span.name,
                "kind": 2,
                "startTimeUnixNano": span.start_unix_nano.to_string(),
                "endTimeUnixNano": span.end_unix_nano.to_string(),
                "attributes": span.attributes.iter().map(|(k, v)| string(k, v)).collect::<Vec<_>>(),
                "status": status,
            });
            if let Some(parent) = &span.parent_span_id {
                encoded["parentSpanId"] = Value::String(hex(parent));
            }
            encoded
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", service_name)]},
        "scopeSpans": [{
            "scope": {"name": "toolgate", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_encode_as_otlp_json() {
        let record = CallRecord {
            method: "tools/call".into(),
            server: "files".into(),
            tool: Some("read".into()),
            grant: "ci".into(),
            identity: "ci".into(),
            decision: "allow".into(),
            request_id: "tgr-1".into(),
            ..CallRecord::default()
        };
        let span = Started::of(&record).end(Some("error -32603"));
        let body = encode("toolgate", &[span]);
        let encoded = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(encoded["name"], "tools/call read");
        assert_eq!(encoded["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(encoded["spanId"].as_str().unwrap().len(), 16);
        assert_eq!(
            encoded["status"],
            json!({"code": 2, "message": "error -32603"})
        );
        let start: u128 = encoded["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let end: u128 = encoded["endTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(start <= end && start > 1_600_000_000_000_000_000);
        assert!(encoded["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "mcp.server", "value": {"stringValue": "files"}})));
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "toolgate"
        );
        assert!(encoded.get("parentSpanId").is_none());
    }

    #[test]
    fn trace_contexts_follow_the_w3c_format() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(valid).unwrap();
        assert_eq!(hex(&context.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&context.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(context.flags, 1);
        // A later version may append fields; 00 may not.
        assert!(TraceContext::parse(&format!("01-{}-what-ever", &valid[3..])).is_some());
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
        ] {
            assert_eq!(TraceContext::parse(invalid), None, "{invalid:?}");
        }
    }

    #[tokio::test]
    async fn a_span_continues_the_callers_trace_and_names_itself_to_the_next_hop() {
        let record = CallRecord {
            method: "tools/call".into(),
            ..CallRecord::default()
        };
        let context =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let started = continuing(context, async { Started::of(&record) }).await;
        let next = started.traceparent();
        let span = started.end(None);
        assert_eq!(
            next,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00",
                hex(&span.span_id)
            )
        );
        let encoded = &encode("t", &[span])["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(encoded["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(encoded["parentSpanId"], "00f067aa0ba902b7");
        // Outside a request, a trace of its own, sampled.
        let alone = Started::of(&record);
        assert!(alone.traceparent().ends_with("-01"));
        assert!(!alone
            .traceparent()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}
