//! Asking for approval in-band (SPEC §6, preferred way): when the client declared the
//! `elicitation` capability and reads the call's answer as an SSE stream, the gateway puts
//! the held call to the human through `elicitation/create` on that stream — server, tool and
//! arguments in plain view — and then answers the call itself: on accept it runs (exactly as
//! a retry after an out-of-band approval would), on decline, cancel or silence it is
//! refused. The request, the decision ("elicitation:<grant>") and the run are audited like
//! any other approval.

use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::grants::GrantSpec;
use crate::session::Session;
use crate::{Gateway, Server};
use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use toolgate_mcp::sse;
use toolgate_mcp::Message;
use toolgate_policy::Decision;

/// A call held for approval, as the gateway may put it to the human.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The approval request.
    pub(crate) approval_id: String,
    /// The rule that held it.
    pub(crate) rule: String,
    /// The policy's message about it.
    pub(crate) why: String,
    /// How long the human has.
    pub(crate) timeout: Duration,
    /// The call itself, to run once approved.
    pub(crate) message: Message,
}

/// The JSON-RPC id of the question about approval request `approval_id`.
pub(crate) fn question_id(approval_id: &str) -> String {
    format!("toolgate-approval-{approval_id}")
}

/// The schema of the answer asked for: one yes/no.
fn requested_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "approve": {
                "type": "boolean",
                "title": "Approve",
                "description": "Run this call now",
                "default": true
            }
        },
        "required": ["approve"]
    })
}

/// The question, showing what would run.
pub(crate) fn question(server: &str, held: &Held) -> Value {
    let params = held.message.params();
    let tool = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let arguments = params
        .and_then(|p| p.get("arguments"))
        .map(|a| serde_json::to_string_pretty(a).unwrap_or_default())
        .unwrap_or_else(|| "(none)".to_owned());
    json!({
        "message": format!(
            "Approve this tool call?\nServer: {server}\nTool: {tool}\nArguments: {arguments}\nPolicy: {}\n(toolgate approval {})",
            held.why, held.approval_id
        ),
        "requestedSchema": requested_schema(),
    })
}

/// What the human answered (`None`: the session ended first): approve, or why not.
pub(crate) fn verdict(answer: Option<Value>) -> Result<(), String> {
    let Some(response) = answer else {
        return Err("the session ended before the approver answered".into());
    };
    if response.get("error").is_some() {
        return Err("the client could not ask the approver".into());
    }
    let result = response.get("result").cloned().unwrap_or(Value::Null);
    match result.get("action").and_then(Value::as_str) {
        Some("accept") => match result.get("content").and_then(|c| c.get("approve")) {
            Some(Value::Bool(false)) => Err("declined by the approver".into()),
            _ => Ok(()),
        },
        Some("decline") => Err("declined by the approver".into()),
        Some("cancel") => Err("cancelled by the approver".into()),
        _ => Err("the client's answer was not understood".into()),
    }
}

impl Gateway {
    /// Puts `held` to the human on a new SSE answer, then answers the call.
    pub(crate) fn ask_in_band(
        self: &Arc<Self>,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        held: Held,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::unbounded_channel();
        let gateway = Arc::clone(self);
        let (server, grant, session) = (Arc::clone(server), Arc::clone(grant), Arc::clone(session));
        let headers = headers.clone();
        tokio::spawn(async move {
            let id = question_id(&held.approval_id);
            let answer = session.ask(&id);
            let request = json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": "elicitation/create",
                "params": question(&server.spec.name, &held),
            });
            if tx
                .send(sse::encode_message(None, &request.to_string()))
                .is_err()
            {
                session.forget(&id);
                return; // the client left
            }
            let answered = match tokio::time::timeout(held.timeout, answer).await {
                Ok(received) => Some(received.ok()),
                Err(_elapsed) => None,
            };
            session.forget(&id);
            let call_id = held.message.id().cloned().unwrap_or(Value::Null);
            let Some(answered) = answered else {
                // Nobody answered: the request lapses, and this call is refused.
                let refusal = Decision::deny(
                    held.rule.clone(),
                    format!(
                        "Approval {} was not given: the approver did not answer in time",
                        held.approval_id
                    ),
                );
                let answer = crate::answer::refusal(call_id, &refusal);
                let _ = tx.send(sse::encode_message(None, &answer.to_string()));
                return;
            };
            let actor = format!("elicitation:{}", grant.principal());
            let (approve, reason) = match verdict(answered) {
                Ok(()) => (true, None),
                Err(why) => (false, Some(why)),
            };
            // Decided elsewhere meanwhile (the CLI, another client), or lapsed? Then that
            // stands, and the call below meets it.
            if let Ok(Err(refused)) = gateway
                .approvals
                .decide(&held.approval_id, approve, &actor, reason.as_deref())
                .await
            {
                tracing::info!(approval = %held.approval_id, "in-band answer not recorded: {refused}");
            }
            // The call again, through the whole line (never asking again): admitted by its
            // approval, or told the refusal — audited like any retry.
            let raw = Bytes::from(held.message.to_bytes());
            let message = vec![held.message.clone()];
            let answer = gateway
                .dispatch(
                    &server, &grant, &session, &headers, message, false, raw, false,
                )
                .await;
            relay_into(answer, call_id, &tx).await;
        });
        body::sse(rx)
    }
}

/// Copies the call's answer onto the SSE stream: SSE events as they come, a JSON answer as
/// one event, an error as a JSON-RPC error event.
async fn relay_into(
    answer: Result<Response<Body>, (GatewayError, Value)>,
    id: Value,
    tx: &mpsc::UnboundedSender<Bytes>,
) {
    let response = match answer {
        Ok(response) => response,
        Err((error, _)) => {
            let _ = tx.send(sse::encode_message(None, &error.to_jsonrpc(id).to_string()));
            return;
        }
    };
    let is_sse = crate::http_upstream::is_sse(response.headers());
    let status = response.status();
    let mut incoming = response.into_body();
    if is_sse {
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { return };
            if let Ok(data) = frame.into_data() {
                if tx.send(data).is_err() {
                    return;
                }
            }
        }
        return;
    }
    let bytes = match incoming.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return,
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(message) if status.is_success() => message,
        _ => GatewayError::internal(format!(
            "the call's answer could not be relayed (HTTP {status})"
        ))
        .to_jsonrpc(id),
    };
    let _ = tx.send(sse::encode_message(None, &message.to_string()));
}
