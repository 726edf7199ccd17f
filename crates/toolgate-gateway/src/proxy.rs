//! The straight line of one MCP request: authenticate → session → decide → forward → answer.

use crate::answer;
use crate::approvals::{self, Approvals, HeldCall};
use crate::audit::{self, Auditor, Awaiting};
use crate::body::{self, Body};
use crate::catalogue::Lookup;
use crate::error::GatewayError;
use crate::grants::GrantSpec;
use crate::http_upstream::{self, HttpUpstream};
use crate::inband::Held;
use crate::oauth::TokenRefusal;
use crate::quota::{self, CallScope, Hold, Quota};
use crate::session::Session;
use crate::stdio_upstream::{Reply, StdioUpstream};
use crate::{Gateway, Server, Upstream};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use toolgate_mcp::answer::AnswerHead;
use toolgate_mcp::jsonrpc::{self, parse_payload};
use toolgate_mcp::sse::{self, SseDecoder};
use toolgate_mcp::{codes, headers as mcp_headers, version, Kind, Message, Payload};
use toolgate_policy::{Decision, Identity, Outcome, ToolCall};
use toolgate_store::audit::CallRecord;
use toolgate_store::{ApprovalKey, AuditEntry, CounterStore, Matched};

/// Upstream response headers passed to the client (the session id is replaced by ours).
const RELAYED: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    mcp_headers::MCP_PROTOCOL_VERSION,
];

/// A header's value, when it is text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    header_str(headers, header::ACCEPT.as_str()).is_some_and(|a| a.contains("text/event-stream"))
}

fn client_error(status: StatusCode, code: i64, message: impl Into<String>) -> GatewayError {
    GatewayError::client(status, code, message)
}

/// A client message, checked.
struct Checked {
    /// What to do with it.
    verdict: Verdict,
    /// Its audit record, if it is a request.
    record: Option<CallRecord>,
    /// The record is written already (with the call's counter reservation).
    recorded: bool,
    /// The call is held for approval: what the human may be asked in-band.
    held: Option<Held>,
}

/// What to do with one client message after the policy looked at it.
enum Verdict {
    /// Send it upstream, holding its reservation and approval (if any) until the outcome
    /// is known.
    Forward(Hold),
    /// Answer it with this JSON-RPC response instead.
    Respond(Value),
}

impl Gateway {
    /// Entry point for `/mcp/<server>`.
    pub(crate) async fn handle_mcp(
        self: &Arc<Self>,
        server_name: &str,
        request: Request<Incoming>,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let authorization = header_str(request.headers(), header::AUTHORIZATION.as_str());
        let grant = match self.authenticate(authorization, server_name).await {
            Ok(g) => g,
            Err(response) => {
                if response.status() == StatusCode::UNAUTHORIZED {
                    self.auth_throttle.failed_now(peer).await;
                }
                return response;
            }
        };
        let Some(server) = self.servers.get(server_name) else {
            return client_error(
                StatusCode::NOT_FOUND,
                codes::INVALID_REQUEST,
                format!("no server named \"{server_name}\""),
            )
            .into_response(Value::Null);
        };
        if !grant.allows_server(server_name) {
            return client_error(
                StatusCode::FORBIDDEN,
                codes::INVALID_REQUEST,
                format!(
                    "grant \"{}\" may not use server \"{server_name}\"",
                    grant.name
                ),
            )
            .into_response(Value::Null);
        }
        if let Some(v) = header_str(request.headers(), mcp_headers::MCP_PROTOCOL_VERSION) {
            if !version::is_supported(v) && !crate::modern::is_stateless_version(v) {
                return unsupported_version(format!("MCP-Protocol-Version {v:?} is not supported"));
            }
        }
        let result = match *request.method() {
            Method::POST => {
                let context = header_str(request.headers(), "traceparent")
                    .and_then(crate::telemetry::TraceContext::parse);
                crate::telemetry::continuing(context, self.post(&server, &grant, request)).await
            }
            Method::GET => self.get(&server, &grant, request).await,
            Method::DELETE => self.delete(&server, &grant, request).await,
            _ => {
                let mut r = body::text(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                Ok(r)
            }
        };
        result.unwrap_or_else(|(e, id)| {
            tracing::info!(server = %server_name, grant = %grant.name, fault = ?e.fault, "{}", e.message);
            e.into_response(id)
        })
    }

    /// The grant a request's bearer token stands for: a grant token, or (in OAuth
    /// resource-server mode) a JWT mapped to a grant by the claim rules. A refusal is the
    /// whole answer: 401 (with the Protected Resource Metadata URL when OAuth is on) or 403.
    async fn authenticate(
        &self,
        authorization: Option<&str>,
        server: &str,
    ) -> Result<Arc<GrantSpec>, Response<Body>> {
        let refused = match self.grants.authenticate(authorization).await {
            Ok(grant) => return Ok(grant),
            Err(e) => e,
        };
        let Some(validator) = &self.oauth else {
            return Err(refused.into_response(Value::Null));
        };
        let challenge = |extra: &str| {
            let value = format!(
                "Bearer {extra}resource_metadata=\"{}\"",
                validator.metadata_url(Some(server))
            );
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        let token = authorization
            .and_then(crate::grants::bearer_token)
            .filter(|t| t.split('.').count() == 3);
        let outcome = match token {
            Some(token) => {
                validator
                    .validate(token, server, crate::time::now_unix())
                    .await
            }
            None => Err(TokenRefusal::Unauthorized(refused.message.clone())),
        };
        let (error, header) = match outcome {
            Ok(validated) => {
                let Some(base) = self
                    .settings
                    .grants
                    .iter()
                    .find(|g| g.name == validated.grant)
                else {
                    // Configuration resolution checks every rule's grant exists.
                    return Err(GatewayError::internal(format!(
                        "claim rule grant {:?} is not configured",
                        validated.grant
                    ))
                    .into_response(Value::Null));
                };
                let mut grant = base.clone();
                grant.subject = validated.subject;
                grant.claims = validated.claims;
                return Ok(Arc::new(grant));
            }
            Err(TokenRefusal::Unauthorized(why)) => {
                (GatewayError::unauthorized(why), challenge(""))
            }
            Err(TokenRefusal::InsufficientScope(missing)) => (
                client_error(
                    StatusCode::FORBIDDEN,
                    codes::INVALID_REQUEST,
                    format!(
                        "insufficient_scope: the token lacks the scope(s) {}",
                        missing.join(" ")
                    ),
                ),
                challenge(&format!(
                    "error=\"insufficient_scope\", scope=\"{}\", ",
                    validator.required_scopes().join(" ")
                )),
            ),
            Err(TokenRefusal::NoGrant) => (
                client_error(
                    StatusCode::FORBIDDEN,
                    codes::INVALID_REQUEST,
                    "no claim rule maps this token to a grant",
                ),
                challenge(""),
            ),
        };
        let mut response = error.into_response(Value::Null);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header);
        Err(response)
    }

    fn session_for(
        &self,
        server: &Server,
        grant: &GrantSpec,
        headers: &HeaderMap,
    ) -> Result<Arc<Session>, GatewayError> {
        let id = header_str(headers, mcp_headers::MCP_SESSION_ID).ok_or_else(|| {
            client_error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            )
        })?;
        self.sessions
            .get(id, &grant.principal(), &server.spec.name)
            .ok_or_else(|| {
                client_error(
                    StatusCode::NOT_FOUND,
                    codes::INVALID_REQUEST,
                    "Session not found",
                )
            })
    }

    async fn post(
        self: &Arc<Self>,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let (parts, incoming) = request.into_parts();
        let headers = parts.headers;
        let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
        if !content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err((
                client_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    codes::INVALID_REQUEST,
                    "Content-Type must be application/json",
                ),
                Value::Null,
            ));
        }
        let bytes = read_body(incoming, self.settings.max_body_bytes)
            .await
            .map_err(|e| (e, Value::Null))?;
        let payload = parse_payload(&bytes).map_err(|e| {
            let id = e.id.clone().unwrap_or(Value::Null);
            (client_error(StatusCode::BAD_REQUEST, e.code, e.message), id)
        })?;
        let payload = match payload {
            Payload::Single(message) if crate::modern::is_stateless(&headers, &message) => {
                return self
                    .post_stateless(server, grant, &headers, message, bytes)
                    .await;
            }
            Payload::Batch(items)
                if items
                    .iter()
                    .any(|m| crate::modern::is_stateless(&headers, m)) =>
            {
                return Err((
                    client_error(
                        StatusCode::BAD_REQUEST,
                        codes::INVALID_REQUEST,
                        "Invalid Request: protocol 2026-07-28 has no JSON-RPC batches",
                    ),
                    Value::Null,
                ));
            }
            payload => payload,
        };
        if let Payload::Single(message) = &payload {
            if message.method() == Some("initialize") && message.kind() == Kind::Request {
                return self
                    .initialize(server, grant, &headers, message, bytes)
                    .await;
            }
        }
        let session = self
            .session_for(server, grant, &headers)
            .map_err(|e| (e, Value::Null))?;
        let (messages, batch) = match payload {
            Payload::Single(m) => (vec![m], false),
            Payload::Batch(items) => {
                if !version::allows_batch(&session.protocol_version) {
                    return Err((
                        client_error(
                            StatusCode::BAD_REQUEST,
                            codes::INVALID_REQUEST,
                            format!(
                                "Invalid Request: JSON-RPC batches are not allowed in protocol {}",
                                session.protocol_version
                            ),
                        ),
                        Value::Null,
                    ));
                }
                if items.iter().any(|m| m.method() == Some("initialize")) {
                    return Err((
                        client_error(
                            StatusCode::BAD_REQUEST,
                            codes::INVALID_REQUEST,
                            "Invalid Request: initialize cannot be part of a batch",
                        ),
                        Value::Null,
                    ));
                }
                (items, true)
            }
        };
        // Answers to the gateway's own questions (in-band approval) stay here.
        let before = messages.len();
        let messages: Vec<Message> = messages
            .into_iter()
            .filter(|m| {
                m.kind() != Kind::Response || !session.answered(&Value::Object(m.as_map().clone()))
            })
            .collect();
        if messages.is_empty() {
            return Ok(body::status(StatusCode::ACCEPTED));
        }
        let raw = if messages.len() == before {
            bytes
        } else {
            Bytes::from(
                serde_json::to_vec(&messages.iter().map(Message::as_map).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        };
        self.dispatch(
            server, grant, &session, &headers, messages, batch, raw, true,
        )
        .await
    }

    /// A stateless (2026-07-28) request: checked against its headers, then decided and
    /// forwarded like any other, in a session that exists for this request alone. Such a
    /// request has no client-to-server notifications or responses on this wire: they are
    /// acknowledged and dropped, as the MCP reference servers do.
    ///
    /// A stdio server is initialized by the gateway in the session-based protocol, so its
    /// stateless requests are refused with `-32022` naming the revisions it is reached
    /// with: a dual-era client falls back to `initialize`. (Translating would mean answering
    /// `server/discover` for it and carrying `input_required` rounds over a protocol that
    /// has none; a refusal that says where to go is the honest answer.) An HTTP upstream
    /// gets the request as it came and answers in its own era: one that speaks only the
    /// session-based protocol refuses it itself, and the client falls back the same way.
    async fn post_stateless(
        self: &Arc<Self>,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        headers: &HeaderMap,
        message: Message,
        bytes: Bytes,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let id = message.id().cloned().unwrap_or(Value::Null);
        if message.kind() != Kind::Request {
            return Ok(body::status(StatusCode::ACCEPTED));
        }
        let envelope = crate::modern::check(headers, &message).map_err(|e| (e, id.clone()))?;
        if !matches!(server.upstream, Upstream::Http(_)) {
            let mut refusal = crate::modern::unsupported(&envelope.version, version::SUPPORTED);
            refusal.message = format!(
                "server \"{}\" is a local process the gateway reaches in the session-based protocol: initialize (protocol {})",
                server.spec.name,
                version::LATEST
            );
            return Err((refusal, id));
        }
        let session = Arc::new(Session::stateless(
            &grant.principal(),
            &server.spec.name,
            &envelope.version,
            envelope.capabilities,
        ));
        let (message, bytes) = match self
            .answered_in_band(server, grant, &message)
            .await
            .map_err(|e| (e, id.clone()))?
        {
            Some(answered) => {
                let bytes = Bytes::from(answered.to_bytes());
                (answered, bytes)
            }
            None => (message, bytes),
        };
        self.dispatch(
            server,
            grant,
            &session,
            headers,
            vec![message],
            false,
            bytes,
            false,
        )
        .await
    }

    /// A held call of a stateless client that can be asked (it declared `elicitation`),
    /// answered with `input_required`: the question, and the signed state the client hands
    /// back with the human's answer (see [`crate::approval_state`]).
    fn ask_with_input_required(&self, server: &Server, grant: &GrantSpec, held: &Held) -> Value {
        let expires_ms = crate::time::now_unix_ms()
            .saturating_add(i64::try_from(held.timeout.as_millis()).unwrap_or(i64::MAX));
        // A held message is a tools/call, so it has a binding.
        let state = crate::approval_state::Bound::of_call(
            &held.approval_id,
            &grant.principal(),
            &server.spec.name,
            &held.message,
            expires_ms,
        )
        .map(|bound| self.approval_state.seal(&bound))
        .unwrap_or_default();
        let mut question = crate::inband::question(&server.spec.name, held);
        question["mode"] = json!("form");
        json!({
            "jsonrpc": "2.0",
            "id": held.message.id().cloned().unwrap_or(Value::Null),
            "result": {
                "resultType": "input_required",
                "inputRequests": {
                    crate::approval_state::QUESTION: {"method": "elicitation/create", "params": question}
                },
                "requestState": state,
            }
        })
    }

    /// A stateless retry that carries the state of an approval asked in-band: the state is
    /// checked (signature, expiry, the caller, server, tool and arguments it was issued
    /// for), the human's answer recorded as the approval's decision, and the call returned
    /// without the gateway's fields, to be decided — admitted by its approval, or refused —
    /// like any other. A state whose approval was decided already (the call ran, or was
    /// declined) is refused as used. `None`: the request carries no state of the gateway's.
    async fn answered_in_band(
        &self,
        server: &Server,
        grant: &GrantSpec,
        message: &Message,
    ) -> Result<Option<Message>, GatewayError> {
        let refused =
            |why: String| client_error(StatusCode::BAD_REQUEST, codes::INVALID_PARAMS, why);
        let Some(params) = message.params() else {
            return Ok(None);
        };
        let Some(state) = params.get("requestState").and_then(Value::as_str) else {
            return Ok(None);
        };
        if !state.starts_with(crate::approval_state::PREFIX) {
            return Ok(None); // the upstream's own state
        }
        let bound = self
            .approval_state
            .open(state, crate::time::now_unix_ms())
            .map_err(|e| refused(e.to_string()))?;
        let this_call = crate::approval_state::Bound::of_call(
            &bound.approval_id,
            &grant.principal(),
            &server.spec.name,
            message,
            bound.expires_ms,
        )
        .ok_or_else(|| refused("requestState of an approval belongs to a tools/call".into()))?;
        if bound != this_call {
            return Err(refused(format!(
                "requestState of approval {} was issued for another call (caller, server, tool or arguments differ)",
                bound.approval_id
            )));
        }
        let answer = params
            .get("inputResponses")
            .and_then(|r| r.get(crate::approval_state::QUESTION))
            .cloned()
            .ok_or_else(|| {
                refused(format!(
                    "inputResponses lacks {:?}, the approver's answer",
                    crate::approval_state::QUESTION
                ))
            })?;
        let (approve, reason) = match crate::inband::verdict(Some(json!({ "result": answer }))) {
            Ok(()) => (true, None),
            Err(why) => (false, Some(why)),
        };
        let actor = format!("elicitation:{}", grant.principal());
        match self
            .approvals
            .decide(&bound.approval_id, approve, &actor, reason.as_deref())
            .await
        {
            Ok(Ok(_)) => {}
            // Approved elsewhere meanwhile (the CLI, the dashboard): the call meets that.
            Ok(Err(toolgate_store::DecisionRefused::AlreadyDecided {
                status: toolgate_store::ApprovalStatus::Approved,
                ..
            })) => {}
            Ok(Err(why)) => {
                return Err(refused(format!(
                    "requestState was used already or lapsed: {why}"
                )))
            }
            Err(e) => {
                return Err(GatewayError::internal(format!(
                    "approvals cannot be recorded right now: {e}"
                )))
            }
        }
        // The upstream never sees the gateway's question or state.
        let mut body = Value::Object(message.as_map().clone());
        if let Some(params) = body.get_mut("params").and_then(Value::as_object_mut) {
            params.remove("requestState");
            params.remove("inputResponses");
        }
        match parse_payload(body.to_string().as_bytes()) {
            Ok(Payload::Single(message)) => Ok(Some(message)),
            _ => Err(GatewayError::internal(
                "the answered call could not be rebuilt",
            )),
        }
    }

    /// Whether a held call is put to the human in-band: the client can be asked (it declared
    /// `elicitation`) on the call's own answer (it reads SSE).
    fn asks_in_band(&self, session: &Session, headers: &HeaderMap) -> bool {
        session.has_capability("elicitation") && accepts_sse(headers)
    }

    /// Sends checked messages on to `server`'s upstream; `ask`: a call held for approval may
    /// be put to the human in-band (not when this is the call that follows such a question).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        messages: Vec<Message>,
        batch: bool,
        raw: Bytes,
        ask: bool,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        match &server.upstream {
            Upstream::Http(up) => {
                self.http_post(
                    server, up, grant, session, headers, messages, batch, raw, ask,
                )
                .await
            }
            Upstream::Stdio(up) => {
                self.stdio_post(server, up, grant, session, headers, messages, batch, ask)
                    .await
            }
        }
    }

    /// Decides a `tools/call` (any other message is forwarded), and starts the audit record
    /// of a request (notifications and responses have none).
    async fn check(
        &self,
        server: &Server,
        grant: &GrantSpec,
        session: &Session,
        message: &Message,
    ) -> Checked {
        let session_id = (!session.is_stateless()).then_some(session.id.as_str());
        let mut record = (message.kind() == Kind::Request).then(|| {
            self.auditor
                .record(grant, &server.spec.name, session_id, message)
        });
        let mut recorded = false;
        let mut held = None;
        let verdict = self
            .decide(
                server,
                grant,
                session,
                message,
                &mut record,
                &mut recorded,
                &mut held,
            )
            .await;
        if let (Verdict::Respond(_), Some(record)) = (&verdict, &mut record) {
            record.forwarded = false;
        }
        let verdict =
            match verdict {
                Verdict::Respond(answer) if session.is_stateless() => Verdict::Respond(match held
                    .as_ref()
                    .filter(|_| session.has_capability("elicitation"))
                {
                    Some(held) => self.ask_with_input_required(server, grant, held),
                    None => crate::modern::completed(answer),
                }),
                verdict => verdict,
            };
        Checked {
            verdict,
            record,
            recorded,
            held,
        }
    }

    /// The decision itself; what it decided goes into `record`, and a call held for
    /// approval into `held`.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        server: &Server,
        grant: &GrantSpec,
        session: &Session,
        message: &Message,
        record: &mut Option<CallRecord>,
        recorded: &mut bool,
        held: &mut Option<Held>,
    ) -> Verdict {
        let Some(call) = message.tool_call() else {
            return Verdict::Forward(Hold::default());
        };
        let id = message.id().cloned().unwrap_or(Value::Null);
        let call = match call {
            Ok(call) => call,
            Err(e) => {
                if let Some(record) = record {
                    record.decision = Outcome::Deny.as_str().to_owned();
                    record.message = Some(format!("invalid tools/call: {e}"));
                }
                return Verdict::Respond(jsonrpc::error_response(
                    id,
                    codes::INVALID_PARAMS,
                    &e,
                    None,
                ));
            }
        };
        // A place among the caller's running calls first: a call over the limit is refused
        // before anything is reserved, asked or forwarded.
        let Some(running) = self.running.try_start(&grant.principal()) else {
            let refused = Decision::deny(
                "/gateway/max_concurrent_calls".to_owned(),
                format!(
                    "{} calls are already running for this caller, the most allowed at once \
                     ([gateway] max_concurrent_calls); retry once one has finished",
                    self.running.limit()
                ),
            );
            tracing::info!(
                target: "toolgate::decision",
                server = %server.spec.name, grant = %grant.name, session = %session.id, tool = %call.name,
                decision = refused.outcome.as_str(), rule = %refused.rule,
                "{}", refused.message
            );
            server.metrics.decided(&refused, false);
            if let Some(record) = record {
                audit::decided(record, &refused, false);
            }
            return Verdict::Respond(answer::refusal(id, &refused));
        };
        let policy = grant.policies.get(&server.spec.name);
        let identity = Identity {
            grant: grant.name.clone(),
            sub: grant.subject.clone(),
            claims: grant.claims.clone(),
        };
        let decision = match policy {
            None => Decision::no_policy(call.name),
            Some(p) => p.policy.evaluate(&ToolCall {
                tool: call.name,
                arguments: call.arguments,
                identity: &identity,
            }),
        };
        let shadow = server.spec.shadow || policy.is_some_and(|p| p.policy.shadow());
        // In shadow mode a hidden tool is not hidden: whether it exists is asked, as for
        // any other call that may be forwarded.
        let lookup = if decision.outcome == Outcome::Hide && !shadow {
            Lookup::Absent
        } else {
            server
                .catalogue
                .lookup(call.name, || server.upstream.fetch_tools())
                .await
        };
        // A withheld tool is refused whatever the policy says (also in shadow mode: pinning
        // defends the agent against the server, not a policy on trial).
        let decision = match &lookup {
            Lookup::Withheld(w) => Decision {
                outcome: Outcome::Deny,
                rule: w.rule.to_owned(),
                message: w.message.clone(),
                limits: Vec::new(),
                retry_after_ms: None,
                approval: None,
            },
            _ => decision,
        };
        let shadow = shadow && !matches!(lookup, Lookup::Withheld(_));
        let exists = match lookup {
            Lookup::Absent => Some(false),
            Lookup::Unknown => None,
            Lookup::Callable | Lookup::Withheld(_) => Some(true),
        };
        // Step 8: a held call runs only with a human's approval of exactly this call. The
        // approval is asked for first; its limits are reserved below once it is admitted.
        let mut approval = None;
        let mut held_as = None;
        let decision =
            if decision.outcome == Outcome::ApprovalRequired && !shadow && exists != Some(false) {
                let key = ApprovalKey {
                    grant: grant.name.clone(),
                    identity: grant.subject.clone(),
                    server: server.spec.name.clone(),
                    tool: call.name.to_owned(),
                    args_sha256: approvals::args_sha256(call.arguments),
                    policy_version: policy.map(|p| p.version.clone()).unwrap_or_default(),
                };
                let held = HeldCall {
                    key,
                    arguments: call.arguments,
                    decision: &decision,
                };
                match self.approvals.check(held).await {
                    Ok(Matched::Admitted(request)) => {
                        approval = Some(request.id);
                        Decision::allow(decision.limits.clone())
                    }
                    Ok(Matched::Pending(request) | Matched::Opened(request)) => {
                        held_as = Some(request.id);
                        decision
                    }
                    Ok(Matched::Refused(request)) => Decision::deny(
                        decision.rule.clone(),
                        format!(
                            "Approval {} was denied by {}{}",
                            request.id,
                            request.decided_by.as_deref().unwrap_or("an approver"),
                            request
                                .reason
                                .as_deref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                    ),
                    Err(e) => Decision::deny(
                        decision.rule.clone(),
                        format!(
                        "{} (approvals cannot be checked right now, so the call was not run: {e})",
                        decision.message
                    ),
                    ),
                }
            } else {
                decision
            };
        if let Some(record) = record.as_mut() {
            record.approval_id = approval.clone().or_else(|| held_as.clone());
        }
        // Step 7: limits are reserved only for a call that will really be forwarded, so
        // that only admitted calls consume quota. Shadow mode reserves on shadow counters
        // (quota.rs), to find what its limits would refuse without touching real budgets.
        let mut reservation = None;
        let mut store_note = None;
        let decision = if decision.is_allowed() && exists != Some(false) {
            let scope = CallScope {
                server: &server.spec.name,
                grant: &grant.name,
                identity: &identity.grant,
                session: &session.id,
                shadow,
            };
            let quota = match (&self.ledger, record.as_ref()) {
                (Some(store), Some(record)) if !decision.limits.is_empty() => {
                    // The record as it reads if the reservation is granted, written with it.
                    let mut intent = record.clone();
                    audit::decided(&mut intent, &decision, shadow);
                    let intent = [AuditEntry::Call(intent)];
                    let quota = quota::reserve_with(&decision.limits, &scope, |charges| {
                        std::future::ready(store.reserve_and_append(&charges, &intent))
                    })
                    .await;
                    *recorded = matches!(quota, Quota::Reserved(_));
                    quota
                }
                _ => quota::reserve(&*self.counters, &decision.limits, &scope).await,
            };
            if !matches!(quota, Quota::Unlimited) {
                self.metrics
                    .counters_answered(!matches!(quota, Quota::Unavailable(..)));
            }
            match quota {
                Quota::Unlimited => decision,
                Quota::Reserved(r) => {
                    reservation = Some(r);
                    decision
                }
                Quota::Exceeded(limited) => limited,
                Quota::Unavailable(denied, cause) => {
                    let fail_open = server.spec.fail_open;
                    store_note = Some(if fail_open {
                        format!("{cause}; fail_open: call admitted without counting")
                    } else {
                        format!("{cause}; failing closed")
                    });
                    if fail_open {
                        decision
                    } else {
                        denied
                    }
                }
            }
        } else {
            decision
        };
        if let (Some(id), false) = (&approval, decision.is_allowed()) {
            // Admitted by its approval, then refused by a limit or the counter store: the
            // approval is not spent.
            self.approvals.restore(id).await;
        }
        // Every decision is in the audit log; the operator's log shows at `info` the ones that
        // deserve a look (refusals, holds, shadow-mode findings, a failing counter store) and
        // plain admissions only at `debug`: one line per admitted call cost about a tenth of
        // the gateway's CPU under load.
        macro_rules! decision_line {
            ($level:expr) => {
                tracing::event!(
                    target: "toolgate::decision", $level,
                    server = %server.spec.name, grant = %grant.name, session = %session.id, tool = %call.name,
                    decision = decision.outcome.as_str(), rule = %decision.rule, shadow, exists = ?exists,
                    counter_store = store_note.as_deref().unwrap_or("ok"),
                    "{}", decision.message
                )
            };
        }
        if decision.is_allowed() && !shadow && store_note.is_none() && exists != Some(false) {
            decision_line!(tracing::Level::DEBUG);
        } else {
            decision_line!(tracing::Level::INFO);
        }
        server
            .metrics
            .decided(&decision, shadow && exists != Some(false));
        if let Some(record) = record {
            audit::decided(record, &decision, shadow);
            if let Some(note) = &store_note {
                record.message = Some(match record.message.take() {
                    Some(message) => format!("{message}; {note}"),
                    None => note.clone(),
                });
            }
        }
        // Shadow mode: decided, audited, not enforced. The shadow reservation is held like
        // a real one, so that a call that never ran gives it back.
        if shadow && exists != Some(false) {
            return Verdict::Forward(Hold {
                reservation,
                running: Some(running),
                ..Hold::default()
            });
        }
        if exists == Some(false) {
            if let (Some(record), true) = (record, decision.outcome != Outcome::Hide) {
                record.message = Some(format!(
                    "not forwarded: server \"{}\" has no tool named \"{}\"",
                    server.spec.name, call.name
                ));
            }
            return Verdict::Respond(answer::unknown_tool(id, call.name));
        }
        match (decision.is_allowed(), held_as) {
            (true, _) => Verdict::Forward(Hold {
                reservation,
                approval,
                running: Some(running),
            }),
            (false, Some(held_as)) => {
                let settings = decision.approval.unwrap_or_default();
                *held = Some(Held {
                    approval_id: held_as.clone(),
                    rule: decision.rule.clone(),
                    why: decision.message.clone(),
                    timeout: std::time::Duration::from_millis(settings.timeout_ms),
                    message: message.clone(),
                });
                Verdict::Respond(answer::approval_required(id, &decision, &held_as))
            }
            (false, None) => Verdict::Respond(answer::refusal(id, &decision)),
        }
    }

    /// How `tools/list` results are filtered for `grant` on `server`: a policy in shadow
    /// mode hides nothing (withheld tools stay hidden: pins guard against the server).
    fn list_filter(&self, server: &Arc<Server>, grant: &GrantSpec) -> ListFilter {
        ListFilter {
            server: Arc::clone(server),
            policy: grant
                .policies
                .get(&server.spec.name)
                .filter(|p| !server.spec.shadow && !p.policy.shadow())
                .map(|p| Arc::clone(&p.policy)),
        }
    }

    async fn initialize(
        &self,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        headers: &HeaderMap,
        message: &Message,
        bytes: Bytes,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let id = message.id().cloned().unwrap_or(Value::Null);
        let params = message.params().cloned().unwrap_or(Value::Null);
        let capabilities = params.get("capabilities").cloned().unwrap_or(json!({}));
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let mut record = self.auditor.record(grant, &server.spec.name, None, message);
        match &server.upstream {
            Upstream::Stdio(up) => {
                // The shared child was initialized by the gateway; its answer is reused.
                record.forwarded = false;
                self.auditor
                    .write(&[AuditEntry::Call(record)])
                    .await
                    .map_err(|e| (e, id.clone()))?;
                let init = up.initialize_result().await.map_err(|e| (e, id.clone()))?;
                let negotiated = version::negotiate(requested);
                let mut result = (*init).clone();
                result["protocolVersion"] = json!(negotiated);
                let session = self.sessions.insert(Session::new(
                    &grant.principal(),
                    &server.spec.name,
                    negotiated,
                    None,
                    capabilities,
                ));
                tracing::info!(server = %server.spec.name, grant = %grant.name, session = %session.id, version = negotiated, "session opened");
                let mut response =
                    body::json(StatusCode::OK, &jsonrpc::result_response(id, result));
                set_session_header(&mut response, &session.id);
                Ok(response)
            }
            Upstream::Http(up) => {
                let awaiting = Awaiting {
                    id: id.clone(),
                    request_id: record.request_id.clone(),
                    started: std::time::Instant::now(),
                    server: Arc::clone(&server.metrics),
                    span: self.auditor.span_start(&record),
                };
                self.auditor
                    .write(&[AuditEntry::Call(record)])
                    .await
                    .map_err(|e| (e, id.clone()))?;
                let upstream = match up.send(Method::POST, headers, None, bytes).await {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        self.auditor.finish(&awaiting, "unreachable");
                        return Err((e, id.clone()));
                    }
                };
                if !upstream.status().is_success() {
                    let status = format!("http {}", upstream.status().as_u16());
                    self.auditor.finish(&awaiting, &status);
                    return Ok(relay_raw(upstream, None));
                }
                let upstream_session =
                    header_str(upstream.headers(), mcp_headers::MCP_SESSION_ID).map(str::to_owned);
                let (parts, incoming) = upstream.into_parts();
                let sse = http_upstream::is_sse(&parts.headers);
                let collected = Limited::new(incoming, http_upstream::MAX_BUFFERED_RESPONSE)
                    .collect()
                    .await
                    .map_err(|e| {
                        GatewayError::upstream(
                            &server.spec.name,
                            format_args!("sent an unreadable initialize response: {e}"),
                        )
                    })
                    .map(|c| c.to_bytes());
                let messages = collected.and_then(|collected| {
                    http_upstream::parse_messages(&server.spec.name, sse, &collected)
                        .map(|messages| (collected, messages))
                });
                let (collected, messages) = match messages {
                    Ok(read) => read,
                    Err(e) => {
                        self.auditor.finish(&awaiting, "unreadable");
                        return Err((e, id.clone()));
                    }
                };
                let answer = messages.iter().find(|m| m.get("id") == Some(&id));
                let status = answer.map_or_else(|| "no_answer".to_owned(), audit::upstream_status);
                self.auditor.finish(&awaiting, &status);
                let negotiated = messages
                    .iter()
                    .find(|m| m.get("id") == Some(&id))
                    .and_then(|m| m.get("result")?.get("protocolVersion")?.as_str())
                    .map(str::to_owned);
                let mut response = Response::new(body::full(collected));
                *response.status_mut() = parts.status;
                copy_relayed(&parts.headers, response.headers_mut());
                if let Some(negotiated) = negotiated {
                    let session = self.sessions.insert(Session::new(
                        &grant.principal(),
                        &server.spec.name,
                        &negotiated,
                        upstream_session,
                        capabilities,
                    ));
                    tracing::info!(server = %server.spec.name, grant = %grant.name, session = %session.id, version = %negotiated, "session opened");
                    set_session_header(&mut response, &session.id);
                }
                Ok(response)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn http_post(
        self: &Arc<Self>,
        server: &Arc<Server>,
        up: &HttpUpstream,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        messages: Vec<Message>,
        batch: bool,
        raw: Bytes,
        ask: bool,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let mut answers = Vec::new();
        let mut forward = Vec::new();
        let mut list_ids = Vec::new();
        let mut watch = Vec::new();
        let mut records = Vec::new();
        let mut awaiting = Vec::new();
        let mut in_band = None;
        for message in messages {
            let Checked {
                verdict,
                record,
                recorded,
                held,
            } = self.check(server, grant, session, &message).await;
            in_band = held.filter(|_| ask && !batch && self.asks_in_band(session, headers));
            if let Some(record) = record {
                if record.forwarded {
                    awaiting.push(Awaiting {
                        id: message.id().cloned().unwrap_or(Value::Null),
                        request_id: record.request_id.clone(),
                        started: std::time::Instant::now(),
                        server: Arc::clone(&server.metrics),
                        span: self.auditor.span_start(&record),
                    });
                }
                if !recorded {
                    records.push(AuditEntry::Call(record));
                }
            }
            match verdict {
                Verdict::Respond(v) => answers.push(v),
                Verdict::Forward(hold) => {
                    if !hold.is_empty() {
                        watch.push((message.id().cloned().unwrap_or(Value::Null), hold));
                    }
                    if message.kind() == Kind::Request && message.method() == Some("tools/list") {
                        list_ids.push(message.id().cloned().unwrap_or(Value::Null));
                    }
                    forward.push(message);
                }
            }
        }
        if let Err(e) = self.auditor.write(&records).await {
            // Fail closed: nothing unrecorded goes upstream.
            for (_, hold) in &watch {
                self.release(hold).await;
            }
            answers.extend(awaiting.iter().map(|a| e.to_jsonrpc(a.id.clone())));
            self.auditor.finish_all(&awaiting, "not_sent");
            forward.clear();
            if answers.is_empty() {
                return Err((e, Value::Null));
            }
        } else if let Some(held) = in_band {
            return Ok(self.ask_in_band(server, grant, session, headers, held));
        }
        if forward.is_empty() {
            let value = if batch {
                Value::Array(answers)
            } else {
                answers.pop().unwrap_or(Value::Null)
            };
            return Ok(body::json(StatusCode::OK, &value));
        }
        let mut request_ids = Vec::new();
        // A `subscriptions/listen` (2026-07-28) is answered by a stream that lasts as long
        // as the client listens: the timeout covers its start (the upstream's response
        // head), not its life.
        let mut timed = Vec::new();
        for message in forward.iter().filter(|m| m.kind() == Kind::Request) {
            if let Some(id) = message.id() {
                if message.method() != Some("subscriptions/listen") {
                    timed.push(id.clone());
                }
                request_ids.push(id.clone());
            }
        }
        let outgoing = if answers.is_empty() {
            raw // nothing removed: forward the exact bytes the decision was made on
        } else if batch {
            Bytes::from(
                serde_json::to_vec(&forward.iter().map(Message::as_map).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        } else {
            Bytes::from(forward[0].to_bytes())
        };
        // The timeout covers the whole answer, also a stream that starts at once and ends late.
        let deadline = tokio::time::Instant::now() + up.timeout();
        let headers = next_hop_trace(headers, &awaiting);
        let upstream = match up
            .send(
                Method::POST,
                &headers,
                session.upstream_session.as_deref(),
                outgoing,
            )
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                // Refused at the HTTP level (lost session, overload…): the calls never ran.
                for (_, hold) in &watch {
                    self.release(hold).await;
                }
                watch.clear();
                let status = format!("http {}", r.status().as_u16());
                self.auditor
                    .finish_all(&std::mem::take(&mut awaiting), &status);
                r
            }
            Err(e) => {
                for (_, hold) in &watch {
                    self.release(hold).await;
                }
                self.auditor.finish_all(&awaiting, "unreachable");
                if request_ids.is_empty() {
                    return Ok(bad_gateway(e));
                }
                let mut errors: Vec<Value> = answers;
                errors.extend(request_ids.into_iter().map(|id| e.to_jsonrpc(id)));
                let value = if batch {
                    Value::Array(errors)
                } else {
                    errors.pop().unwrap_or(Value::Null)
                };
                return Ok(body::json(StatusCode::OK, &value));
            }
        };
        if upstream.status() == StatusCode::NOT_FOUND && session.upstream_session.is_some() {
            // The upstream forgot its session: ours is useless too, and a 404 tells the
            // client to initialize again.
            self.sessions.remove(&session.id);
        }
        let rewrite = Rewrite {
            list_ids,
            prepend: answers,
            batch,
            lists: self.list_filter(server, grant),
            watch,
            release: self.releaser(),
            pending: timed,
            deadline,
            timeout: up.timeout(),
            max_message_bytes: up.max_message_bytes(),
            auditor: Arc::clone(&self.auditor),
            awaiting,
        };
        if rewrite.is_noop()
            || http_upstream::is_sse(upstream.headers())
            || !upstream.status().is_success()
        {
            return Ok(relay(upstream, Some(&session.id), Some(rewrite)));
        }
        // A JSON answer is read whole here, on the request's own task: no task and channel
        // of its own, and the client gets it with a length, head and body in one write.
        let (parts, incoming) = upstream.into_parts();
        let mut response = Response::new(body::full(rewrite_json(incoming, rewrite).await));
        *response.status_mut() = parts.status;
        copy_relayed(&parts.headers, response.headers_mut());
        set_session_header(&mut response, &session.id);
        Ok(response)
    }

    #[allow(clippy::too_many_arguments)]
    async fn stdio_post(
        self: &Arc<Self>,
        server: &Arc<Server>,
        up: &Arc<StdioUpstream>,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        messages: Vec<Message>,
        batch: bool,
        ask: bool,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let mut answers = Vec::new();
        let mut requests = Vec::new();
        let mut records = Vec::new();
        let mut in_band = None;
        for message in messages {
            match message.kind() {
                Kind::Request => {
                    let Checked {
                        verdict,
                        record,
                        recorded,
                        held,
                    } = self.check(server, grant, session, &message).await;
                    in_band = held.filter(|_| ask && !batch && self.asks_in_band(session, headers));
                    let awaiting = record.as_ref().filter(|r| r.forwarded).map(|r| Awaiting {
                        id: message.id().cloned().unwrap_or(Value::Null),
                        request_id: r.request_id.clone(),
                        started: std::time::Instant::now(),
                        server: Arc::clone(&server.metrics),
                        span: self.auditor.span_start(r),
                    });
                    records.extend(record.filter(|_| !recorded).map(AuditEntry::Call));
                    match verdict {
                        Verdict::Respond(v) => answers.push(v),
                        Verdict::Forward(hold) => requests.push((message, hold, awaiting)),
                    }
                }
                Kind::Notification => {
                    // The gateway initialized the shared child itself; a client's
                    // `initialized` must not reach it again.
                    if message.method() != Some("notifications/initialized") {
                        up.notify(session, message);
                    }
                }
                Kind::Response => {
                    if !up.answer(session, message) {
                        tracing::debug!(session = %session.id, "dropped a response to no pending server request");
                    }
                }
            }
        }
        if let Err(e) = self.auditor.write(&records).await {
            // Fail closed: nothing unrecorded goes upstream.
            for (message, hold, awaiting) in requests.drain(..) {
                self.release(&hold).await;
                if let Some(awaiting) = &awaiting {
                    self.auditor.finish(awaiting, "not_sent");
                }
                answers.push(e.to_jsonrpc(message.id().cloned().unwrap_or(Value::Null)));
            }
        } else if let Some(held) = in_band {
            return Ok(self.ask_in_band(server, grant, session, headers, held));
        }
        if requests.is_empty() && answers.is_empty() {
            return Ok(body::status(StatusCode::ACCEPTED));
        }
        let lists = self.list_filter(server, grant);
        if !batch
            && requests.len() == 1
            && accepts_sse(headers)
            && requests[0].0.method() == Some("tools/call")
        {
            let (message, hold, awaiting) = requests.pop().expect("one request");
            let id = message.id().cloned().unwrap_or(Value::Null);
            let (stream, rx) = session.open_stream();
            let up = Arc::clone(up);
            let session = Arc::clone(session);
            let release = self.releaser();
            let auditor = Arc::clone(&self.auditor);
            if session.protocol_version.as_str() >= "2025-11-25" {
                // Lets the client resume even if it loses the stream before the first event.
                session.prime(stream);
            }
            tokio::spawn(async move {
                let outcome = up.request(Some(&session), message, Some(stream)).await;
                settle(&release, hold, &outcome).await;
                if let Some(awaiting) = &awaiting {
                    auditor.finish(awaiting, &reply_status(&outcome));
                }
                match outcome {
                    Ok(Reply::Answer(response)) => session.push(Some(stream), &response),
                    // A cancelled request gets no response: its stream just ends.
                    Ok(Reply::Cancelled) => {}
                    Err(e) => session.push(Some(stream), &e.to_jsonrpc(id)),
                }
                session.close_stream(stream);
            });
            return Ok(body::sse(rx));
        }
        for (message, hold, awaiting) in requests {
            let is_list = message.method() == Some("tools/list");
            let id = message.id().cloned().unwrap_or(Value::Null);
            let outcome = up.request(Some(session), message, None).await;
            settle(&self.releaser(), hold, &outcome).await;
            if let Some(awaiting) = &awaiting {
                self.auditor.finish(awaiting, &reply_status(&outcome));
            }
            let response = match outcome {
                Ok(Reply::Answer(response)) => response,
                // A JSON response needs a body; say plainly that the call was cancelled.
                Ok(Reply::Cancelled) => {
                    jsonrpc::error_response(id, codes::REQUEST_CANCELLED, "Request cancelled", None)
                }
                Err(e) => e.to_jsonrpc(id),
            };
            let mut response = response;
            if let (true, Some(result)) = (is_list, response.get_mut("result")) {
                lists.apply(result).await;
            }
            answers.push(response);
        }
        let value = if batch {
            Value::Array(answers)
        } else {
            answers.pop().unwrap_or(Value::Null)
        };
        Ok(body::json(StatusCode::OK, &value))
    }

    async fn get(
        &self,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let session = self
            .session_for(server, grant, request.headers())
            .map_err(|e| (e, Value::Null))?;
        match &server.upstream {
            Upstream::Stdio(_) => {
                if !accepts_sse(request.headers()) {
                    return Ok(body::text(
                        StatusCode::NOT_ACCEPTABLE,
                        "GET needs Accept: text/event-stream",
                    ));
                }
                let rx = session.attach(header_str(request.headers(), mcp_headers::LAST_EVENT_ID));
                Ok(body::sse(rx))
            }
            Upstream::Http(up) => {
                let upstream = up
                    .send(
                        Method::GET,
                        request.headers(),
                        session.upstream_session.as_deref(),
                        Bytes::new(),
                    )
                    .await;
                Ok(match upstream {
                    Ok(r) => relay_get(r, &session, server.spec.max_message_bytes),
                    Err(e) => bad_gateway(e),
                })
            }
        }
    }

    async fn delete(
        &self,
        server: &Arc<Server>,
        grant: &Arc<GrantSpec>,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let session = self
            .session_for(server, grant, request.headers())
            .map_err(|e| (e, Value::Null))?;
        match &server.upstream {
            Upstream::Stdio(_) => {
                self.sessions.remove(&session.id);
                tracing::info!(session = %session.id, "session closed by the client");
                Ok(body::status(StatusCode::OK))
            }
            Upstream::Http(up) => {
                let upstream = up
                    .send(
                        Method::DELETE,
                        request.headers(),
                        session.upstream_session.as_deref(),
                        Bytes::new(),
                    )
                    .await;
                match upstream {
                    Ok(r) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                        Ok(relay_raw(r, Some(&session.id)))
                    }
                    Ok(r) => {
                        self.sessions.remove(&session.id);
                        Ok(relay_raw(r, None))
                    }
                    Err(_) => {
                        // The upstream is gone; the client's session ends all the same.
                        self.sessions.remove(&session.id);
                        Ok(body::status(StatusCode::OK))
                    }
                }
            }
        }
    }
}

/// The client's headers as an HTTP upstream gets them: when the gateway exports one span
/// for the request, its `traceparent` names that span, so the upstream's spans are its
/// children (a batch with several calls passes the client's own on).
fn next_hop_trace<'a>(
    headers: &'a HeaderMap,
    awaiting: &[Awaiting],
) -> std::borrow::Cow<'a, HeaderMap> {
    let [Awaiting {
        span: Some(span), ..
    }] = awaiting
    else {
        return std::borrow::Cow::Borrowed(headers);
    };
    let mut headers = headers.clone();
    if let Ok(value) = HeaderValue::from_str(&span.traceparent()) {
        headers.insert("traceparent", value);
    }
    std::borrow::Cow::Owned(headers)
}

/// Gives back what a stdio call held when it never ran: the child could not be reached,
/// timed out, or answered with a JSON-RPC error. A cancelled call may have run, so it keeps
/// what it held. Done before the client gets its answer.
async fn settle(release: &Releaser, hold: Hold, outcome: &Result<Reply, GatewayError>) {
    if hold.is_empty() {
        return;
    }
    let never_ran = match outcome {
        Err(_) => true,
        Ok(Reply::Answer(response)) => response.get("error").is_some(),
        Ok(Reply::Cancelled) => false,
    };
    if never_ran {
        release.release(&hold).await;
    }
}

/// Gives back what forwarded calls held (their reservations and approvals) when they never
/// ran.
#[derive(Clone)]
struct Releaser {
    /// Where reservations are rolled back.
    counters: Arc<dyn CounterStore>,
    /// Where approvals are restored.
    approvals: Approvals,
}

impl Releaser {
    async fn release(&self, hold: &Hold) {
        if let Some(reservation) = &hold.reservation {
            quota::rollback(&self.counters, reservation).await;
        }
        if let Some(id) = &hold.approval {
            self.approvals.restore(id).await;
        }
    }
}

impl Gateway {
    fn releaser(&self) -> Releaser {
        Releaser {
            counters: Arc::clone(&self.counters),
            approvals: self.approvals.clone(),
        }
    }

    async fn release(&self, hold: &Hold) {
        self.releaser().release(hold).await;
    }
}

/// A stdio upstream's answer as the audit outcome records it.
fn reply_status(outcome: &Result<Reply, GatewayError>) -> String {
    match outcome {
        Ok(Reply::Answer(response)) => audit::upstream_status(response),
        Ok(Reply::Cancelled) => "cancelled".to_owned(),
        Err(e) if e.fault == crate::error::Fault::Upstream => "failed".to_owned(),
        Err(_) => "not_sent".to_owned(),
    }
}

/// An upstream failure on a message with no id to answer (a notification, a GET stream):
/// HTTP 502 with the JSON-RPC error naming the server.
fn bad_gateway(error: GatewayError) -> Response<Body> {
    let mut response = error.into_response(Value::Null);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn unsupported_version_error(message: String) -> GatewayError {
    client_error(
        StatusCode::BAD_REQUEST,
        codes::UNSUPPORTED_PROTOCOL_VERSION,
        message,
    )
    .with_data(json!({"supported": version::SUPPORTED}))
}

fn unsupported_version(message: String) -> Response<Body> {
    unsupported_version_error(message).into_response(Value::Null)
}

async fn read_body(incoming: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    body::read_request(incoming, limit)
        .await
        .map_err(|(status, message)| {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                codes::INVALID_REQUEST
            } else {
                codes::PARSE_ERROR
            };
            client_error(status, code, message)
        })
}

fn set_session_header(response: &mut Response<Body>, session: &str) {
    if let Ok(v) = HeaderValue::from_str(session) {
        response
            .headers_mut()
            .insert(mcp_headers::MCP_SESSION_ID, v);
    }
}

fn copy_relayed(from: &HeaderMap, to: &mut HeaderMap) {
    for name in RELAYED {
        if let Some(v) = from.get(*name) {
            to.insert(*name, v.clone());
        }
    }
}

/// Passes an upstream response through untouched (status, body streamed as it arrives).
fn relay_raw(upstream: Response<Incoming>, session: Option<&str>) -> Response<Body> {
    relay(upstream, session, None)
}

/// An HTTP upstream's GET stream for `session`, relayed byte for byte, with the gateway's
/// own notifications to the session ([`Session::notify`]) slipped in between its events.
fn relay_get(
    upstream: Response<Incoming>,
    session: &Session,
    max_event_bytes: usize,
) -> Response<Body> {
    if !upstream.status().is_success() || !http_upstream::is_sse(upstream.headers()) {
        return relay_raw(upstream, Some(&session.id));
    }
    let (parts, incoming) = upstream.into_parts();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(merge_notices(
        incoming,
        session.relayed_notices(),
        tx,
        max_event_bytes,
    ));
    let mut response = Response::new(body::channel(rx));
    *response.status_mut() = parts.status;
    copy_relayed(&parts.headers, response.headers_mut());
    set_session_header(&mut response, &session.id);
    response
}

/// Feeds `tx` with the upstream's stream as it comes and, where it is between events, with
/// the notices (as events without an id, which leave the client's `Last-Event-ID` — the
/// upstream's — alone). An upstream event past `max_event_bytes` ends the tracking of
/// boundaries: the stream is still relayed, notices are dropped.
async fn merge_notices(
    mut incoming: Incoming,
    mut notices: mpsc::UnboundedReceiver<Value>,
    tx: mpsc::UnboundedSender<Bytes>,
    max_event_bytes: usize,
) {
    let mut decoder = Some(SseDecoder::new(max_event_bytes));
    let mut waiting: Vec<Value> = Vec::new();
    let mut listening = true;
    loop {
        tokio::select! {
            frame = incoming.frame() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(data) = frame.into_data() else { continue };
                if let Some(d) = &mut decoder {
                    if d.push(&data).is_err() {
                        decoder = None;
                        waiting.clear();
                    }
                }
                if tx.send(data).is_err() {
                    return;
                }
                if decoder.as_ref().is_some_and(SseDecoder::at_boundary) {
                    for notice in waiting.drain(..) {
                        let _ = tx.send(sse::encode_message(None, &notice.to_string()));
                    }
                }
            }
            // The client left: dropping the upstream stream ends it.
            _ = tx.closed() => return,
            notice = notices.recv(), if listening => match notice {
                Some(notice) => match decoder.as_ref().map(SseDecoder::at_boundary) {
                    Some(true) => {
                        let event = sse::encode_message(None, &notice.to_string());
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    Some(false) => waiting.push(notice),
                    None => {}
                },
                None => listening = false,
            },
        }
    }
}

/// Changes the gateway must make to an upstream answer.
struct Rewrite {
    /// Ids of `tools/list` requests whose results are filtered.
    list_ids: Vec<Value>,
    /// The gateway's own answers to messages it did not forward.
    prepend: Vec<Value>,
    /// The request was a batch (answers form an array).
    batch: bool,
    /// How `tools/list` results are filtered.
    lists: ListFilter,
    /// Forwarded calls holding a reservation or an approval, by request id: given back if
    /// the upstream answers with a JSON-RPC error (the call never ran).
    watch: Vec<(Value, Hold)>,
    /// Gives them back.
    release: Releaser,
    /// Ids of forwarded requests not answered yet.
    pending: Vec<Value>,
    /// When the requests still pending are answered by the gateway with `timed_out`.
    deadline: tokio::time::Instant,
    /// The upstream's timeout, for the error answering a request it did not answer in
    /// time (made only then: formatting it for every call costs).
    timeout: std::time::Duration,
    /// The largest JSON answer or SSE event read (`[servers.X] max_message_bytes`).
    max_message_bytes: usize,
    /// Where outcomes are written.
    auditor: Arc<Auditor>,
    /// Forwarded requests whose outcome is not written yet.
    awaiting: Vec<Awaiting>,
}

impl Drop for Rewrite {
    /// A stream that ends before every answer came (the upstream broke off, the client
    /// left) still gets its outcomes written.
    fn drop(&mut self) {
        self.auditor.finish_all(&self.awaiting, "no_answer");
    }
}

impl Rewrite {
    fn is_noop(&self) -> bool {
        self.prepend.is_empty()
            && self.watch.is_empty()
            && self.pending.is_empty()
            && self.awaiting.is_empty()
            && self.list_ids.is_empty()
    }

    /// Rolls back the reservation of a watched call answered with a JSON-RPC error, before
    /// that answer is passed on; notes the request as answered.
    async fn settle(&mut self, message: &Value) {
        self.settle_head(&AnswerHead::of(message)).await;
    }

    /// [`Rewrite::settle`] for an answer of which only the head was read; an announced
    /// change of the tool list makes the catalogue fetch again before the next call.
    async fn settle_envelope(&mut self, head: &AnswerHead) {
        if head.method.as_deref() == Some("notifications/tools/list_changed") {
            self.lists.server.catalogue.invalidate();
        }
        self.settle_head(head).await;
    }

    async fn settle_head(&mut self, head: &AnswerHead) {
        let Some(id) = &head.id else { return };
        let failed = head.error.is_some();
        self.settle_answer(id, head.answered(), failed, || audit::answer_status(head))
            .await;
    }

    /// The answer to request `id`: written to the audit log if it is one (`answered`), and
    /// what the call held given back if it `failed` at the JSON-RPC level (it never ran).
    async fn settle_answer(
        &mut self,
        id: &Value,
        answered: bool,
        failed: bool,
        upstream_status: impl FnOnce() -> String,
    ) {
        if answered {
            self.pending.retain(|p| p != id);
            if let Some(index) = self.awaiting.iter().position(|a| &a.id == id) {
                let one = self.awaiting.swap_remove(index);
                self.auditor.finish(&one, &upstream_status());
            }
        }
        let Some(index) = self.watch.iter().position(|(watched, _)| watched == id) else {
            return;
        };
        let (_, hold) = self.watch.swap_remove(index);
        if failed {
            self.release.release(&hold).await;
        }
    }

    /// The answers to the requests still pending were lost (the upstream broke off, or went
    /// past the size limit): each is answered with `error`. Whether the calls ran is
    /// unknown, so nothing they held is given back (their outcome is written as
    /// `no_answer` when the rewrite ends).
    fn lost(&mut self, error: &GatewayError) -> Vec<Value> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|id| error.to_jsonrpc(id))
            .collect()
    }

    /// A JSON answer made by the gateway alone (the upstream's is lost or late): its own
    /// answers to messages it did not forward, then `answers`.
    fn answered_by_gateway(&mut self, answers: Vec<Value>) -> Bytes {
        let mut all = std::mem::take(&mut self.prepend);
        all.extend(answers);
        Bytes::from(array_or_single(all, self.batch).to_string())
    }

    /// The upstream ran out of time: the gateway answers every request still pending with
    /// the timeout error, its reservation rolled back first (SPEC §2.1).
    async fn expire(&mut self) -> Vec<Value> {
        let mut answers = Vec::new();
        for id in std::mem::take(&mut self.pending) {
            if let Some(index) = self.awaiting.iter().position(|a| a.id == id) {
                let one = self.awaiting.swap_remove(index);
                self.auditor.finish(&one, "timeout");
            }
            let error =
                http_upstream::timed_out(&self.lists.server.spec.name, self.timeout).to_jsonrpc(id);
            self.settle(&error).await;
            answers.push(error);
        }
        answers
    }

    /// Filters a `tools/list` answer; returns whether the message was changed. An announced
    /// change of the tool list makes the catalogue fetch again before the next call.
    async fn apply(&self, message: &mut Value) -> bool {
        if message.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed")
        {
            self.lists.server.catalogue.invalidate();
            return false;
        }
        let is_list = message
            .get("id")
            .is_some_and(|id| self.list_ids.contains(id));
        match message.get_mut("result").filter(|_| is_list) {
            Some(result) => {
                self.lists.apply(result).await;
                true
            }
            None => false,
        }
    }
}

/// Filters the `tools/list` results one grant sees of one server.
struct ListFilter {
    /// The server, whose catalogue reviews every listed definition against its pin.
    server: Arc<Server>,
    /// The grant's policy there (for the tools it hides).
    policy: Option<Arc<toolgate_policy::Policy>>,
}

impl ListFilter {
    /// Removes the tools the policy hides and those withheld.
    async fn apply(&self, result: &mut Value) {
        let withheld = self.server.catalogue.review_page(result).await;
        let policy = self.policy.as_deref();
        answer::filter_tool_list(result, &|name| {
            withheld.contains(name) || policy.is_some_and(|p| p.is_hidden(name))
        });
    }
}

/// Streams an upstream response to the client, applying `rewrite` to SSE event by event as
/// events arrive (never buffering the stream).
fn relay(
    upstream: Response<Incoming>,
    session: Option<&str>,
    rewrite: Option<Rewrite>,
) -> Response<Body> {
    let (parts, incoming) = upstream.into_parts();
    // A JSON answer that needs rewriting never comes here: `http_post` reads it whole.
    let rewrite = rewrite.filter(|r| {
        !r.is_noop() && parts.status.is_success() && http_upstream::is_sse(&parts.headers)
    });
    let body = match rewrite {
        None => incoming.map_err(|e| Box::new(e) as body::BodyError).boxed(),
        Some(rewrite) => {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(rewrite_sse(incoming, rewrite, tx));
            body::channel(rx)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = parts.status;
    copy_relayed(&parts.headers, response.headers_mut());
    if let Some(session) = session {
        if parts.headers.contains_key(mcp_headers::MCP_SESSION_ID) || parts.status.is_success() {
            set_session_header(&mut response, session);
        }
    }
    response
}

/// Reads a whole JSON answer (one message or a batch), applies `rewrite` and prepends the
/// gateway's own answers. An answer that needed no change is passed on byte for byte, and
/// when nothing in it can change (no `tools/list` to filter), only its envelopes are parsed:
/// whose answer each is and how it went, not the results themselves.
async fn rewrite_json(incoming: Incoming, mut rewrite: Rewrite) -> Bytes {
    let read = Limited::new(incoming, rewrite.max_message_bytes).collect();
    let bytes = match tokio::time::timeout_at(rewrite.deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            // The upstream broke off, or went past the size limit: the answer is lost.
            let server = &rewrite.lists.server.spec.name;
            let lost = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                http_upstream::too_large(server, rewrite.max_message_bytes)
            } else {
                GatewayError::upstream(server, format_args!("broke off its answer: {e}"))
            };
            let lost = rewrite.lost(&lost);
            return rewrite.answered_by_gateway(lost);
        }
        Err(_) => {
            let expired = rewrite.expire().await;
            return rewrite.answered_by_gateway(expired);
        }
    };
    if rewrite.list_ids.is_empty() && rewrite.prepend.is_empty() {
        if let Some(heads) = AnswerHead::read_all(&bytes) {
            for head in &heads {
                rewrite.settle_envelope(head).await;
            }
            return bytes;
        }
    }
    let parsed = match serde_json::from_slice::<Value>(&bytes) {
        Ok(parsed) => parsed,
        // Not JSON with nothing waiting for it: passed on as it came.
        Err(_) if rewrite.pending.is_empty() && rewrite.prepend.is_empty() => return bytes,
        Err(e) => {
            // Not JSON (an error page of a proxy in between…): the requests waiting are
            // told, with the parser's words; whether the calls ran is unknown.
            let garbage = GatewayError::upstream(
                &rewrite.lists.server.spec.name,
                format_args!("sent an answer that is not JSON-RPC: {e}"),
            );
            let lost = rewrite.lost(&garbage);
            return rewrite.answered_by_gateway(lost);
        }
    };
    let was_batch = parsed.is_array();
    let mut items = match parsed {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut changed = false;
    for item in &mut items {
        rewrite.settle(item).await;
        changed |= rewrite.apply(item).await;
    }
    if !changed && rewrite.prepend.is_empty() {
        return bytes;
    }
    let mut all = std::mem::take(&mut rewrite.prepend);
    all.extend(items);
    Bytes::from(array_or_single(all, was_batch || rewrite.batch).to_string())
}

/// A batch answer is an array; a single answer stays an object unless the gateway added
/// answers of its own.
fn array_or_single(mut answers: Vec<Value>, batch: bool) -> Value {
    if batch || answers.len() != 1 {
        Value::Array(answers)
    } else {
        answers.pop().unwrap_or(Value::Null)
    }
}

/// Rewrites an SSE answer event by event, as the events arrive.
async fn rewrite_sse(
    mut incoming: Incoming,
    mut rewrite: Rewrite,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    for answer in &rewrite.prepend {
        if tx
            .send(sse::encode_message(None, &answer.to_string()))
            .is_err()
        {
            return;
        }
    }
    let mut decoder = SseDecoder::new(rewrite.max_message_bytes);
    loop {
        let frame = if rewrite.pending.is_empty() {
            incoming.frame().await
        } else {
            match tokio::time::timeout_at(rewrite.deadline, incoming.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    for answer in rewrite.expire().await {
                        let _ = tx.send(sse::encode_message(None, &answer.to_string()));
                    }
                    return; // dropping the upstream stream tells it we stopped listening
                }
            }
        };
        let Some(frame) = frame else { return };
        let Ok(frame) = frame else { return };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let Ok(events) = decoder.push(&chunk) else {
            // An event past the size limit: the requests still waiting are told so.
            let lost = http_upstream::too_large(
                &rewrite.lists.server.spec.name,
                rewrite.max_message_bytes,
            );
            for answer in rewrite.lost(&lost) {
                let _ = tx.send(sse::encode_message(None, &answer.to_string()));
            }
            return;
        };
        for mut event in events {
            if let Ok(mut message) = serde_json::from_str::<Value>(&event.data) {
                rewrite.settle(&message).await;
                if rewrite.apply(&mut message).await {
                    event.data = message.to_string();
                }
            }
            if tx.send(sse::encode(&event)).is_err() {
                return;
            }
        }
    }
}
