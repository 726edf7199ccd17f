//! The admin API (SPEC §7): JSON under `/admin/api/`, for the dashboard and for scripts.
//!
//! Every request carries `Authorization: Bearer <admin token>`; the token names a holder
//! and a role (`[admin]` in the configuration). Each endpoint names the least role it needs
//! and checks it before doing anything; a change is written to the admin audit stream with
//! the holder's name (`admin-api:<name>`). Admin tokens are not grant tokens: they cannot
//! call tools, and grant tokens cannot use this API.
//!
//! Errors are `{"error": "…"}` with a fitting status: 401 (no or unknown token, with
//! `WWW-Authenticate`), 403 (role too low, naming the role needed), 404, 405, 409, 400.

use crate::config::{AdminRole, AdminSpec, UpstreamSpec};
use crate::grant_admin::{self, GrantError, NewGrant};
use crate::{body, AuditStore, Gateway};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;
use subtle::ConstantTimeEq;
use toolgate_store::audit::AuditFilter;
use toolgate_store::StoredPolicy;

/// Every endpoint: method, path (`{…}` a segment), least role, what it does.
const ENDPOINTS: &[(&str, &str, AdminRole, &str)] = &[
    ("GET", "/admin/api", AdminRole::Viewer, "this list, and who you are"),
    ("GET", "/admin/api/grants", AdminRole::Viewer, "grants (labels, servers, policies, expiry; never tokens)"),
    ("POST", "/admin/api/grants", AdminRole::Admin, "mint a grant: {name, policies: {SERVER: policy document}, servers?, expires?, note?}; answers its token, once"),
    ("POST", "/admin/api/grants/{name}/rotate", AdminRole::Admin, "a new token for a grant (answered once); the old one stops working"),
    ("POST", "/admin/api/grants/{name}/revoke", AdminRole::Admin, "revoke a grant"),
    ("PUT", "/admin/api/grants/{name}/policies/{server}", AdminRole::PolicyManager, "attach or replace a minted grant's policy on a server (body: the policy document)"),
    ("GET", "/admin/api/policies", AdminRole::Viewer, "every grant's policy per server, with its version and whether the file on disk still loads to it"),
    ("POST", "/admin/api/policies/evaluate", AdminRole::Viewer, "decide a call without running it: {grant, server, tool, arguments?, sub?} under that grant's policy, or {policy: document, tool, arguments?, grant?, sub?}; answers the decision, rule and message"),
    ("GET", "/admin/api/servers", AdminRole::Viewer, "the upstream servers (never their credentials)"),
    ("GET", "/admin/api/servers/{name}/tools", AdminRole::Viewer, "a server's tools, each classified (category, risk, evidence)"),
    ("GET", "/admin/api/approvals", AdminRole::Viewer, "approval requests, newest first, with the held call's arguments; query: status (pending, approved, denied, expired, consumed)"),
    ("POST", "/admin/api/approvals/{id}/approve", AdminRole::PolicyManager, "approve a pending request (body, optional: {reason}); the agent's retry of that exact call runs"),
    ("POST", "/admin/api/approvals/{id}/deny", AdminRole::PolicyManager, "deny a pending request (body, optional: {reason}); the agent's retry is refused"),
    ("GET", "/admin/api/audit", AdminRole::Viewer, "call records; query: grant, server, tool, decision, rule, since, until, limit (default 100)"),
    ("GET", "/admin/api/audit/admin", AdminRole::Admin, "the admin audit stream; query: since, until, limit"),
];

/// An answer other than success: status and message.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal(status, message.into())
    }

    fn into_response(self) -> Response<Body> {
        let mut response = body::json(self.0, &json!({ "error": self.1 }));
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"toolgate-admin\""),
            );
        }
        response
    }
}

type Body = body::Body;
type Answer = Result<Response<Body>, Refusal>;

impl Gateway {
    /// Entry point for `/admin/api` and below.
    pub(crate) async fn handle_admin(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> Response<Body> {
        if self.admins().is_empty() {
            return Refusal::new(
                StatusCode::NOT_FOUND,
                "the admin API is off: set [admin] token_sha256 (and [[admin.members]]) in the configuration",
            )
            .into_response();
        }
        let who = match self.admin_of(request.headers().get(header::AUTHORIZATION)) {
            Some(who) => who,
            None => {
                self.auth_throttle.failed_now(peer).await;
                return Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "missing, unknown or revoked admin token",
                )
                .into_response();
            }
        };
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').skip(3).collect(); // "", "admin", "api"
        let method = request.method().clone();
        let Some(endpoint) = ENDPOINTS
            .iter()
            .find(|(m, p, _, _)| *m == method.as_str() && matches(p, &path))
        else {
            let known = ENDPOINTS.iter().any(|(_, p, _, _)| matches(p, &path));
            return if known {
                Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path}"),
                )
            } else {
                Refusal::new(
                    StatusCode::NOT_FOUND,
                    format!("no admin endpoint {path}; GET /admin/api lists them"),
                )
            }
            .into_response();
        };
        if who.role < endpoint.2 {
            return Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} needs the {} role; {:?} has {}",
                    endpoint.0,
                    endpoint.1,
                    endpoint.2.as_str(),
                    who.name,
                    who.role.as_str()
                ),
            )
            .into_response();
        }
        let actor = format!("admin-api:{}", who.name);
        let query = request.uri().query().unwrap_or("").to_owned();
        // Read only once the caller may use the endpoint (bounded all the same), and for
        // every endpoint: a body left unread would keep the connection from serving the
        // client's next request.
        let body = match body::read_request(request.into_body(), self.settings.max_body_bytes).await
        {
            Ok(body) => body,
            Err((status, message)) => return Refusal(status, message).into_response(),
        };
        let answer = match (endpoint.0, segments.as_slice()) {
            ("GET", []) => Ok(self.endpoints(&who)),
            ("GET", ["grants"]) => self.list_grants().await,
            ("POST", ["grants"]) => match serde_json::from_slice(&body) {
                Ok(request) => self.mint_grant(request, &actor).await,
                Err(e) => Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON: {e}"),
                )),
            },
            ("POST", ["grants", name, "rotate"]) => self.rotate_grant(name, &actor).await,
            ("POST", ["grants", name, "revoke"]) => self.revoke_grant(name, &actor).await,
            ("PUT", ["grants", name, "policies", server]) => {
                self.set_policy(name, server, body, &actor).await
            }
            ("GET", ["policies"]) => Ok(self.list_policies().await),
            ("POST", ["policies", "evaluate"]) => self.evaluate(&body).await,
            ("GET", ["servers"]) => Ok(self.list_servers()),
            ("GET", ["servers", name, "tools"]) => self.server_tools(name).await,
            ("GET", ["approvals"]) => self.list_approvals(&query).await,
            ("POST", ["approvals", id, verdict @ ("approve" | "deny")]) => {
                self.decide_approval(id, *verdict == "approve", &body, &actor)
                    .await
            }
            ("GET", ["audit"]) => self.read_audit(&query, false).await,
            ("GET", ["audit", "admin"]) => self.read_audit(&query, true).await,
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint {path}"),
            )),
        };
        answer.unwrap_or_else(Refusal::into_response)
    }

    /// The holder of the admin token in `authorization`, compared in constant time against
    /// every holder (so the time taken does not tell how many there are before a match).
    pub(crate) fn admin_of(&self, authorization: Option<&HeaderValue>) -> Option<AdminSpec> {
        let token = crate::grants::bearer_token(authorization?.to_str().ok()?)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for admin in self.admins().iter() {
            if bool::from(admin.token_sha256.ct_eq(&digest)) {
                found = Some(admin.clone());
            }
        }
        found
    }

    fn endpoints(&self, who: &AdminSpec) -> Response<Body> {
        let endpoints: Vec<Value> = ENDPOINTS
            .iter()
            .map(|(method, path, role, what)| {
                json!({"method": method, "path": path, "role": role.as_str(), "description": what})
            })
            .collect();
        body::json(
            StatusCode::OK,
            &json!({"you": {"name": who.name, "role": who.role.as_str()}, "endpoints": endpoints}),
        )
    }

    async fn list_grants(&self) -> Answer {
        // The grants in force: a live reload may have changed the configuration's.
        let mut grants: Vec<Value> = self
            .grants
            .configured()
            .iter()
            .map(|g| {
                let policies: BTreeMap<&String, Value> = g
                    .policies
                    .iter()
                    .map(|(server, p)| (server, json!({"source": p.id, "version": p.version})))
                    .collect();
                let without: Vec<&String> = g
                    .servers
                    .iter()
                    .filter(|s| !g.policies.contains_key(*s))
                    .collect();
                json!({
                    "name": g.name,
                    "origin": "config",
                    "status": if g.expired() { "expired" } else { "active" },
                    "policies": policies,
                    "servers": without,
                    "expires": g.expires_unix.map(|t| crate::time::format_rfc3339_ms(t * 1000)),
                    "note": g.note,
                })
            })
            .collect();
        let minted = self
            .grant_store
            .grants()
            .await
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        for grant in &minted {
            let mut line = grant_admin::listing(grant);
            line["origin"] = json!("minted");
            grants.push(line);
        }
        Ok(body::json(StatusCode::OK, &json!({ "grants": grants })))
    }

    async fn mint_grant(&self, request: Value, actor: &str) -> Answer {
        let invalid = |why: String| Refusal::new(StatusCode::BAD_REQUEST, why);
        let object = request
            .as_object()
            .ok_or_else(|| invalid("the body must be a JSON object".into()))?;
        for key in object.keys() {
            if !["name", "policies", "servers", "expires", "note"].contains(&key.as_str()) {
                return Err(invalid(format!(
                    "unknown field {key:?}; expected name, policies, servers, expires, note"
                )));
            }
        }
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("\"name\" (a string) is required".into()))?
            .to_owned();
        let documents = object
            .get("policies")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                invalid("\"policies\" (an object: server → policy document) is required".into())
            })?;
        let policies = documents
            .iter()
            .map(|(server, document)| {
                let policy = StoredPolicy {
                    source: format!("admin-api:{name}/{server}"),
                    document: document.to_string(),
                };
                (server.clone(), policy)
            })
            .collect();
        let servers = match object.get("servers") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("\"servers\" must be an array of strings".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("\"servers\" must be an array of strings".into())),
        };
        let expires_unix = match object.get("expires") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(
                grant_admin::parse_expiry(text)
                    .map_err(|e| invalid(format!("\"expires\": {e}")))?,
            ),
            Some(_) => return Err(invalid("\"expires\" must be a string".into())),
        };
        let note = match object.get("note") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(invalid("\"note\" must be a string".into())),
        };
        let grant = NewGrant {
            name,
            policies,
            servers,
            expires_unix,
            note,
        };
        let (grant, token) =
            grant_admin::mint(&self.grant_store, Some(&self.in_force()), grant, actor)
                .await
                .map_err(refusal)?;
        Ok(body::json(
            StatusCode::CREATED,
            &grant_admin::with_token(&grant, &token),
        ))
    }

    async fn list_approvals(&self, query: &str) -> Answer {
        let invalid = |why: String| Refusal::new(StatusCode::BAD_REQUEST, why);
        let mut wanted = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("status", v @ ("pending" | "approved" | "denied" | "expired" | "consumed")) => {
                    wanted = Some(v.to_owned())
                }
                ("status", v) => {
                    return Err(invalid(format!(
                        "status: {v:?} is not one of pending, approved, denied, expired, consumed"
                    )))
                }
                (key, _) => return Err(invalid(format!("{key}: approvals filter by status only"))),
            }
        }
        let now = crate::time::now_unix_ms();
        let requests = self.approvals.list().await.map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the approvals: {e}"),
            )
        })?;
        let listed: Vec<Value> = requests
            .iter()
            .filter(|r| {
                wanted
                    .as_deref()
                    .is_none_or(|w| r.status_at(now).as_str() == w)
            })
            .map(|r| crate::approvals::describe(r, now))
            .collect();
        Ok(body::json(StatusCode::OK, &json!({ "approvals": listed })))
    }

    async fn decide_approval(&self, id: &str, approve: bool, body: &Bytes, actor: &str) -> Answer {
        let reason = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let parsed: Value = serde_json::from_slice(body).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON: {e}"),
                )
            })?;
            match parsed.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(r)) => Some(r.clone()),
                Some(_) => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "\"reason\" must be a string",
                    ))
                }
            }
        };
        let decided = self
            .approvals
            .decide(id, approve, actor, reason.as_deref())
            .await
            .map_err(|e| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot decide: {e}"),
                )
            })?
            .map_err(|refused| {
                let status = match refused {
                    toolgate_store::DecisionRefused::Unknown(_) => StatusCode::NOT_FOUND,
                    _ => StatusCode::CONFLICT,
                };
                Refusal::new(status, refused.to_string())
            })?;
        Ok(body::json(
            StatusCode::OK,
            &crate::approvals::describe(&decided, crate::time::now_unix_ms()),
        ))
    }

    async fn rotate_grant(&self, name: &str, actor: &str) -> Answer {
        let (grant, token) = grant_admin::rotate(&self.grant_store, name, actor)
            .await
            .map_err(refusal)?;
        Ok(body::json(
            StatusCode::OK,
            &json!({"name": grant.name, "token": token}),
        ))
    }

    async fn revoke_grant(&self, name: &str, actor: &str) -> Answer {
        let grant = grant_admin::revoke(&self.grant_store, name, actor)
            .await
            .map_err(refusal)?;
        Ok(body::json(
            StatusCode::OK,
            &json!({"name": grant.name, "status": grant_admin::status(&grant), "revoked": grant.revoked_ts}),
        ))
    }

    async fn set_policy(&self, name: &str, server: &str, document: Bytes, actor: &str) -> Answer {
        let document = String::from_utf8(document.to_vec()).map_err(|_| {
            Refusal::new(StatusCode::BAD_REQUEST, "the policy document is not UTF-8")
        })?;
        let policy = StoredPolicy {
            source: format!("admin-api:{name}/{server}"),
            document,
        };
        let grant = grant_admin::set_policy(
            &self.grant_store,
            Some(&self.in_force()),
            name,
            server,
            policy,
            actor,
        )
        .await
        .map_err(refusal)?;
        let mut answer = grant_admin::describe(&grant);
        answer["name"] = json!(grant.name);
        Ok(body::json(StatusCode::OK, &answer))
    }

    async fn list_policies(&self) -> Response<Body> {
        let policies: Vec<Value> = self
            .grants
            .all()
            .await
            .iter()
            .flat_map(|grant| {
                grant.policies.iter().map(move |(server, policy)| {
                    json!({
                        "grant": grant.name,
                        "server": server,
                        "source": policy.id,
                        "version": policy.version,
                        "file": file_status(policy),
                    })
                })
            })
            .collect();
        body::json(StatusCode::OK, &json!({ "policies": policies }))
    }

    /// `POST policies/evaluate`: what a policy decides for a call, without running it.
    async fn evaluate(&self, body: &[u8]) -> Answer {
        let invalid = |why: String| Refusal::new(StatusCode::BAD_REQUEST, why);
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
        let text = |key: &str| request.get(key).and_then(Value::as_str);
        let tool = text("tool").ok_or_else(|| invalid("\"tool\" (a string) is required".into()))?;
        let arguments = request
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if !arguments.is_object() {
            return Err(invalid("\"arguments\" must be an object".into()));
        }
        let (policy, source) = match request.get("policy") {
            Some(document) => {
                let policy = toolgate_policy::Policy::from_value(document).map_err(|errors| {
                    Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("the policy does not load: {}", errors.one_line()),
                    )
                })?;
                (
                    std::sync::Arc::new(policy),
                    json!({"source": "the request"}),
                )
            }
            None => {
                let (Some(grant), Some(server)) = (text("grant"), text("server")) else {
                    return Err(invalid("give {grant, server} to use a grant's policy, or {policy} to try a document".into()));
                };
                let found = self
                    .grants
                    .all()
                    .await
                    .into_iter()
                    .find(|g| g.name == grant);
                let grant = found.ok_or_else(|| {
                    Refusal::new(StatusCode::NOT_FOUND, format!("no grant named {grant:?}"))
                })?;
                let policy = grant.policies.get(server).ok_or_else(|| {
                    Refusal::new(
                        StatusCode::NOT_FOUND,
                        format!("grant {:?} has no policy on server {server:?}", grant.name),
                    )
                })?;
                (
                    std::sync::Arc::clone(&policy.policy),
                    json!({"source": policy.id, "version": policy.version}),
                )
            }
        };
        let identity = toolgate_policy::Identity {
            grant: text("grant").unwrap_or("dashboard").to_owned(),
            sub: text("sub").map(str::to_owned),
            ..toolgate_policy::Identity::default()
        };
        let decision = policy.evaluate(&toolgate_policy::ToolCall {
            tool,
            arguments: &arguments,
            identity: &identity,
        });
        Ok(body::json(
            StatusCode::OK,
            &json!({
                "decision": decision.outcome.as_str(),
                "rule": decision.rule,
                "message": decision.message,
                "limits": decision.limits.iter().map(|l| l.counter.clone()).collect::<Vec<_>>(),
                "policy": source,
            }),
        ))
    }

    /// `GET servers/{name}/tools`: the server's tools as it lists them now, classified.
    async fn server_tools(&self, name: &str) -> Answer {
        let server = self.servers.get(name).ok_or_else(|| {
            Refusal::new(StatusCode::NOT_FOUND, format!("no server named {name:?}"))
        })?;
        let tools = server.upstream.fetch_tools().await.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot list the tools of {name:?}: {}", e.message),
            )
        })?;
        let tools: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let verdict = toolgate_risk::classify(tool);
                json!({
                    "name": tool.get("name"),
                    "description": tool.get("description"),
                    "category": verdict.category.as_str(),
                    "risk": verdict.risk.as_str(),
                    "evidence": verdict.evidence,
                })
            })
            .collect();
        Ok(body::json(
            StatusCode::OK,
            &json!({"server": name, "tools": tools}),
        ))
    }

    fn list_servers(&self) -> Response<Body> {
        let in_force = self.servers.all();
        let servers: Vec<Value> = self
            .servers
            .names()
            .iter()
            .filter_map(|name| in_force.get(name))
            .map(|server| {
                let (spec, ready) = (&server.spec, server.upstream.is_ready());
                let upstream = match &spec.upstream {
                    // Header names only: their values are the upstream's credentials.
                    UpstreamSpec::Http { url, headers, .. } => json!({
                        "transport": "http",
                        "url": without_userinfo(url),
                        "headers": headers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                    }),
                    // The program only: arguments and environment may hold secrets.
                    UpstreamSpec::Stdio { command, env, .. } => json!({
                        "transport": "stdio",
                        "command": command,
                        "env": env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                    }),
                };
                json!({
                    "name": spec.name,
                    "upstream": upstream,
                    "timeout_ms": spec.timeout.as_millis() as u64,
                    "shadow": spec.shadow,
                    "fail_open": spec.fail_open,
                    "ready": ready,
                })
            })
            .collect();
        body::json(StatusCode::OK, &json!({ "servers": servers }))
    }

    async fn read_audit(&self, query: &str, admin: bool) -> Answer {
        let filter = audit_filter(query, admin)?;
        let Some(reader) = self.audit_reader.clone() else {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "this gateway's audit log is not readable here",
            ));
        };
        let failed = |e: toolgate_store::StoreError| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the audit log cannot be read: {e}"),
            )
        };
        let records = match (reader, admin) {
            (AuditStore::Embedded(store), false) => {
                blocking(move || store.audit_query(&filter).map(|r| json!(r))).await?
            }
            (AuditStore::Embedded(store), true) => {
                blocking(move || store.audit_admin(&filter).map(|r| json!(r))).await?
            }
            (AuditStore::Postgres(log), false) => {
                json!(log.audit_query(&filter).await.map_err(failed)?)
            }
            (AuditStore::Postgres(log), true) => {
                json!(log.audit_admin(&filter).await.map_err(failed)?)
            }
        };
        Ok(body::json(StatusCode::OK, &json!({ "records": records })))
    }
}

/// Whether `path` fits `pattern` (`{…}` matches one non-empty segment).
fn matches(pattern: &str, path: &str) -> bool {
    let (mut want, mut have) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w.starts_with('{') => {
                if h.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

/// The audit filter of a query string.
fn audit_filter(query: &str, admin: bool) -> Result<AuditFilter, Refusal> {
    let invalid = |why: String| Refusal::new(StatusCode::BAD_REQUEST, why);
    let mut filter = AuditFilter {
        limit: Some(100),
        ..AuditFilter::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| invalid(format!("{key}: not valid percent-encoding")))?;
        let text = Some(value.clone());
        match key {
            "grant" | "server" | "tool" | "decision" | "rule" if admin => {
                return Err(invalid(format!(
                    "{key}: the admin stream filters by since, until and limit only"
                )))
            }
            "grant" => filter.grant = text,
            "server" => filter.server = text,
            "tool" => filter.tool = text,
            "decision" => filter.decision = text,
            "rule" => filter.rule = text,
            "since" => {
                filter.since = Some(
                    crate::time::parse_time_bound(&value)
                        .map_err(|e| invalid(format!("since: {e}")))?,
                )
            }
            "until" => {
                filter.until = Some(
                    crate::time::parse_time_bound(&value)
                        .map_err(|e| invalid(format!("until: {e}")))?,
                )
            }
            "limit" => {
                filter.limit = Some(
                    value
                        .parse()
                        .map_err(|_| invalid(format!("limit: {value:?} is not a number")))?,
                )
            }
            other => return Err(invalid(format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(filter)
}

/// `%XX` and `+` decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A URL without `user:password@`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A grant change's refusal as an HTTP answer.
fn refusal(error: GrantError) -> Refusal {
    match error {
        GrantError::Invalid(why) => Refusal::new(StatusCode::BAD_REQUEST, why),
        GrantError::Refused(why @ toolgate_store::GrantRefused::NameTaken(_)) => {
            Refusal::new(StatusCode::CONFLICT, why.to_string())
        }
        GrantError::Refused(why) => Refusal::new(StatusCode::NOT_FOUND, why.to_string()),
        GrantError::Store(e) => Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Runs store work on a blocking thread; a store failure is a 503.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, toolgate_store::StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the store task failed: {e}"),
            )
        })?
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Whether the policy file `policy` came from still loads to the version in force: `ok`,
/// `changed` (a newer version waits for the next reload), `invalid` with the errors (it
/// cannot be read or does not load; a reload refused it and the version in force stays), or
/// `not a file` for a policy minted into the store.
fn file_status(policy: &crate::grants::PolicyRef) -> Value {
    let path = std::path::Path::new(&policy.id);
    if !path.is_file() {
        return json!({"status": "not a file"});
    }
    match crate::config::load_policy(path) {
        Ok(on_disk) if on_disk.version == policy.version => json!({"status": "ok"}),
        Ok(on_disk) => json!({"status": "changed", "version": on_disk.version}),
        Err(errors) => json!({"status": "invalid", "errors": errors}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_patterns_segment_by_segment() {
        assert!(matches(
            "/admin/api/grants/{name}/rotate",
            "/admin/api/grants/ci/rotate"
        ));
        assert!(!matches(
            "/admin/api/grants/{name}/rotate",
            "/admin/api/grants//rotate"
        ));
        assert!(!matches("/admin/api/grants", "/admin/api/grants/ci"));
        assert!(matches("/admin/api", "/admin/api"));
    }

    #[test]
    fn query_strings_become_filters_and_bad_ones_are_named() {
        let filter = audit_filter("grant=ci%2Dbot&tool=send+mail&limit=5", false)
            .ok()
            .unwrap();
        assert_eq!(filter.grant.as_deref(), Some("ci-bot"));
        assert_eq!(filter.tool.as_deref(), Some("send mail"));
        assert_eq!(filter.limit, Some(5));
        for (bad, named) in [
            ("limit=x", "limit"),
            ("colour=red", "colour"),
            ("since=soon", "since"),
            ("tool=%zz", "tool"),
        ] {
            let Err(Refusal(status, message)) = audit_filter(bad, false) else {
                panic!("{bad} accepted");
            };
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(message.contains(named), "{message}");
        }
        assert!(audit_filter("grant=x", true).is_err());
    }

    #[test]
    fn credentials_are_cut_out_of_urls() {
        assert_eq!(
            without_userinfo("https://u:p@host:8443/mcp"),
            "https://host:8443/mcp"
        );
        assert_eq!(without_userinfo("http://host/mcp"), "http://host/mcp");
    }
}
