//! The straight line of one MCP request: authenticate → session → decide → forward → answer.

use crate::answer;
use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::grants::GrantSpec;
use crate::http_upstream::{self, HttpUpstream};
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
use toolgate_mcp::jsonrpc::{self, parse_payload};
use toolgate_mcp::sse::{self, SseDecoder};
use toolgate_mcp::{codes, headers as mcp_headers, version, Kind, Message, Payload};
use toolgate_policy::{Decision, Identity, Outcome, ToolCall};

/// Upstream response headers passed to the client (the session id is replaced by ours).
const RELAYED: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    mcp_headers::MCP_PROTOCOL_VERSION,
];

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    header_str(headers, header::ACCEPT.as_str()).is_some_and(|a| a.contains("text/event-stream"))
}

fn client_error(status: StatusCode, code: i64, message: impl Into<String>) -> GatewayError {
    GatewayError::client(status, code, message)
}

/// What to do with one client message after the policy looked at it.
enum Verdict {
    /// Send it upstream.
    Forward,
    /// Answer it with this JSON-RPC response instead.
    Respond(Value),
}

impl Gateway {
    /// Entry point for `/mcp/<server>`.
    pub(crate) async fn handle_mcp(
        &self,
        server_name: &str,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let grant = match self.grants.authenticate(header_str(
            request.headers(),
            header::AUTHORIZATION.as_str(),
        )) {
            Ok(g) => g,
            Err(e) => return e.into_response(Value::Null),
        };
        let Some(server) = self.servers.get(server_name).cloned() else {
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
            if !version::is_supported(v) {
                return unsupported_version(format!("MCP-Protocol-Version {v:?} is not supported"));
            }
        }
        let result = match *request.method() {
            Method::POST => self.post(&server, &grant, request).await,
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
            .get(id, &grant.name, &server.spec.name)
            .ok_or_else(|| {
                client_error(
                    StatusCode::NOT_FOUND,
                    codes::INVALID_REQUEST,
                    "Session not found",
                )
            })
    }

    async fn post(
        &self,
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
        if let Payload::Single(message) = &payload {
            match message.method() {
                Some("initialize") if message.kind() == Kind::Request => {
                    return self
                        .initialize(server, grant, &headers, message, bytes)
                        .await;
                }
                Some("server/discover") => {
                    return Err((unsupported_version_error("server/discover belongs to protocol 2026-07-28, which this gateway does not serve yet".into()), message.id().cloned().unwrap_or(Value::Null)));
                }
                _ => {}
            }
        }
        let session = self
            .session_for(server, grant, &headers)
            .map_err(|e| (e, Value::Null))?;
        let messages = match payload {
            Payload::Single(m) => vec![m],
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
                return match &server.upstream {
                    Upstream::Http(up) => {
                        self.http_post(server, up, grant, &session, &headers, items, true, bytes)
                            .await
                    }
                    Upstream::Stdio(up) => {
                        self.stdio_post(server, up, grant, &session, &headers, items, true)
                            .await
                    }
                };
            }
        };
        match &server.upstream {
            Upstream::Http(up) => {
                self.http_post(
                    server, up, grant, &session, &headers, messages, false, bytes,
                )
                .await
            }
            Upstream::Stdio(up) => {
                self.stdio_post(server, up, grant, &session, &headers, messages, false)
                    .await
            }
        }
    }

    /// Decides a `tools/call` (any other message is forwarded).
    async fn check(
        &self,
        server: &Server,
        grant: &GrantSpec,
        session: &Session,
        message: &Message,
    ) -> Verdict {
        let Some(call) = message.tool_call() else {
            return Verdict::Forward;
        };
        let id = message.id().cloned().unwrap_or(Value::Null);
        let call = match call {
            Ok(call) => call,
            Err(e) => {
                return Verdict::Respond(jsonrpc::error_response(
                    id,
                    codes::INVALID_PARAMS,
                    &e,
                    None,
                ))
            }
        };
        let policy = grant.policies.get(&server.spec.name);
        let identity = Identity {
            grant: grant.name.clone(),
            sub: None,
            claims: Default::default(),
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
        let exists = if decision.outcome == Outcome::Hide {
            Some(false)
        } else {
            match &server.upstream {
                Upstream::Http(up) => {
                    server
                        .catalogue
                        .has(call.name, || up.fetch_tool_names())
                        .await
                }
                Upstream::Stdio(up) => {
                    server
                        .catalogue
                        .has(call.name, || up.fetch_tool_names())
                        .await
                }
            }
        };
        tracing::info!(
            target: "toolgate::decision",
            server = %server.spec.name, grant = %grant.name, session = %session.id, tool = %call.name,
            decision = decision.outcome.as_str(), rule = %decision.rule, shadow, exists = ?exists,
            "{}", decision.message
        );
        if shadow && decision.outcome != Outcome::Hide {
            return Verdict::Forward;
        }
        if exists == Some(false) {
            return Verdict::Respond(answer::unknown_tool(id, call.name));
        }
        if decision.is_allowed() {
            Verdict::Forward
        } else {
            Verdict::Respond(answer::refusal(id, &decision))
        }
    }

    fn hidden_filter(
        &self,
        server: &Server,
        grant: &GrantSpec,
    ) -> Option<Arc<toolgate_policy::Policy>> {
        grant
            .policies
            .get(&server.spec.name)
            .map(|p| Arc::clone(&p.policy))
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
        match &server.upstream {
            Upstream::Stdio(up) => {
                let init = up.initialize_result().await.map_err(|e| (e, id.clone()))?;
                let negotiated = version::negotiate(requested);
                let mut result = (*init).clone();
                result["protocolVersion"] = json!(negotiated);
                let session = self.sessions.insert(Session::new(
                    &grant.name,
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
                let upstream = up
                    .send(Method::POST, headers, None, bytes)
                    .await
                    .map_err(|e| (e, id.clone()))?;
                if !upstream.status().is_success() {
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
                        (
                            GatewayError::upstream(
                                &server.spec.name,
                                format_args!("sent an unreadable initialize response: {e}"),
                            ),
                            id.clone(),
                        )
                    })?
                    .to_bytes();
                let messages = http_upstream::parse_messages(&server.spec.name, sse, &collected)
                    .map_err(|e| (e, id.clone()))?;
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
                        &grant.name,
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
        &self,
        server: &Arc<Server>,
        up: &HttpUpstream,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        messages: Vec<Message>,
        batch: bool,
        raw: Bytes,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let mut answers = Vec::new();
        let mut forward = Vec::new();
        let mut list_ids = Vec::new();
        for message in messages {
            match self.check(server, grant, session, &message).await {
                Verdict::Respond(v) => answers.push(v),
                Verdict::Forward => {
                    if message.kind() == Kind::Request && message.method() == Some("tools/list") {
                        list_ids.push(message.id().cloned().unwrap_or(Value::Null));
                    }
                    forward.push(message);
                }
            }
        }
        if forward.is_empty() {
            let value = if batch {
                Value::Array(answers)
            } else {
                answers.pop().unwrap_or(Value::Null)
            };
            return Ok(body::json(StatusCode::OK, &value));
        }
        let request_ids: Vec<Value> = forward
            .iter()
            .filter(|m| m.kind() == Kind::Request)
            .filter_map(|m| m.id().cloned())
            .collect();
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
        let upstream = match up
            .send(
                Method::POST,
                headers,
                session.upstream_session.as_deref(),
                outgoing,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
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
            policy: self.hidden_filter(server, grant),
        };
        Ok(relay(upstream, Some(&session.id), rewrite))
    }

    #[allow(clippy::too_many_arguments)]
    async fn stdio_post(
        &self,
        server: &Arc<Server>,
        up: &Arc<StdioUpstream>,
        grant: &Arc<GrantSpec>,
        session: &Arc<Session>,
        headers: &HeaderMap,
        messages: Vec<Message>,
        batch: bool,
    ) -> Result<Response<Body>, (GatewayError, Value)> {
        let mut answers = Vec::new();
        let mut requests = Vec::new();
        for message in messages {
            match message.kind() {
                Kind::Request => match self.check(server, grant, session, &message).await {
                    Verdict::Respond(v) => answers.push(v),
                    Verdict::Forward => requests.push(message),
                },
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
        if requests.is_empty() && answers.is_empty() {
            return Ok(body::status(StatusCode::ACCEPTED));
        }
        let policy = self.hidden_filter(server, grant);
        let filter = |mut response: Value, is_list: bool| {
            if is_list {
                if let (Some(policy), Some(result)) = (&policy, response.get_mut("result")) {
                    answer::filter_tool_list(result, &|name| policy.is_hidden(name));
                }
            }
            response
        };
        if !batch
            && requests.len() == 1
            && accepts_sse(headers)
            && requests[0].method() == Some("tools/call")
        {
            let message = requests.pop().expect("one request");
            let id = message.id().cloned().unwrap_or(Value::Null);
            let (stream, rx) = session.open_stream();
            let up = Arc::clone(up);
            let session = Arc::clone(session);
            if session.protocol_version.as_str() >= "2025-11-25" {
                // Lets the client resume even if it loses the stream before the first event.
                session.prime(stream);
            }
            tokio::spawn(async move {
                match up.request(Some(&session), message, Some(stream)).await {
                    Ok(Reply::Answer(response)) => session.push(Some(stream), &response),
                    // A cancelled request gets no response: its stream just ends.
                    Ok(Reply::Cancelled) => {}
                    Err(e) => session.push(Some(stream), &e.to_jsonrpc(id)),
                }
                session.close_stream(stream);
            });
            return Ok(body::sse(rx));
        }
        for message in requests {
            let is_list = message.method() == Some("tools/list");
            let id = message.id().cloned().unwrap_or(Value::Null);
            let response = match up.request(Some(session), message, None).await {
                Ok(Reply::Answer(response)) => response,
                // A JSON response needs a body; say plainly that the call was cancelled.
                Ok(Reply::Cancelled) => {
                    jsonrpc::error_response(id, codes::REQUEST_CANCELLED, "Request cancelled", None)
                }
                Err(e) => e.to_jsonrpc(id),
            };
            answers.push(filter(response, is_list));
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
                    Ok(r) => relay_raw(r, Some(&session.id)),
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
    match Limited::new(incoming, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(client_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::INVALID_REQUEST,
                format!("request body larger than {limit} bytes"),
            ))
        }
        Err(e) => Err(client_error(
            StatusCode::BAD_REQUEST,
            codes::PARSE_ERROR,
            format!("could not read the request body: {e}"),
        )),
    }
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
    relay(upstream, session, Rewrite::default())
}

/// Changes the gateway must make to an upstream answer.
#[derive(Default)]
struct Rewrite {
    /// Ids of `tools/list` requests whose results are filtered.
    list_ids: Vec<Value>,
    /// The gateway's own answers to messages it did not forward.
    prepend: Vec<Value>,
    /// The request was a batch (answers form an array).
    batch: bool,
    /// The grant's policy on this server (for hiding tools).
    policy: Option<Arc<toolgate_policy::Policy>>,
}

impl Rewrite {
    fn is_noop(&self) -> bool {
        self.prepend.is_empty() && (self.list_ids.is_empty() || self.policy.is_none())
    }

    fn apply(&self, message: &mut Value) {
        let Some(policy) = &self.policy else { return };
        let is_list = message
            .get("id")
            .is_some_and(|id| self.list_ids.contains(id));
        if is_list {
            if let Some(result) = message.get_mut("result") {
                answer::filter_tool_list(result, &|name| policy.is_hidden(name));
            }
        }
    }
}

/// Streams an upstream response to the client, applying `rewrite`: JSON is rewritten whole,
/// SSE event by event as events arrive (never buffering the stream).
fn relay(upstream: Response<Incoming>, session: Option<&str>, rewrite: Rewrite) -> Response<Body> {
    let (parts, incoming) = upstream.into_parts();
    let sse = http_upstream::is_sse(&parts.headers);
    let body = if rewrite.is_noop() || !parts.status.is_success() {
        incoming.map_err(|e| Box::new(e) as body::BodyError).boxed()
    } else if sse {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(rewrite_sse(incoming, rewrite, tx));
        body::channel(rx)
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let Ok(collected) = Limited::new(incoming, http_upstream::MAX_BUFFERED_RESPONSE)
                .collect()
                .await
            else {
                return;
            };
            let bytes = collected.to_bytes();
            let out = match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Array(items)) => {
                    let mut all = rewrite.prepend.clone();
                    for mut item in items {
                        rewrite.apply(&mut item);
                        all.push(item);
                    }
                    Bytes::from(Value::Array(all).to_string())
                }
                Ok(mut single) => {
                    rewrite.apply(&mut single);
                    if rewrite.batch || !rewrite.prepend.is_empty() {
                        let mut all = rewrite.prepend.clone();
                        all.push(single);
                        Bytes::from(Value::Array(all).to_string())
                    } else {
                        Bytes::from(single.to_string())
                    }
                }
                Err(_) => bytes, // not JSON: the client sees exactly what the upstream sent
            };
            let _ = tx.send(out);
        });
        body::channel(rx)
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

async fn rewrite_sse(mut incoming: Incoming, rewrite: Rewrite, tx: mpsc::UnboundedSender<Bytes>) {
    for answer in &rewrite.prepend {
        if tx
            .send(sse::encode_message(None, &answer.to_string()))
            .is_err()
        {
            return;
        }
    }
    let mut decoder = SseDecoder::new(http_upstream::MAX_BUFFERED_RESPONSE);
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else { return };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let Ok(events) = decoder.push(&chunk) else {
            return;
        };
        for mut event in events {
            if let Ok(mut message) = serde_json::from_str::<Value>(&event.data) {
                rewrite.apply(&mut message);
                event.data = message.to_string();
            }
            if tx.send(sse::encode(&event)).is_err() {
                return;
            }
        }
    }
}
