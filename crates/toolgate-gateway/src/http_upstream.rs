//! Streamable HTTP upstreams: forwarding requests, and the gateway's own small MCP client
//! used to learn an upstream's tool catalogue.

use crate::config::{ServerSpec, UpstreamSpec};
use crate::error::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use toolgate_mcp::{headers as mcp_headers, sse::SseDecoder, version};

/// The HTTP client type shared by all HTTP upstreams.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest upstream body the gateway will buffer when it must read one whole (initialize,
/// tools/list filtering, its own catalogue requests).
pub const MAX_BUFFERED_RESPONSE: usize = 16 << 20;

/// Client request headers that are part of the MCP transport and pass upstream. Everything
/// else — `Authorization`, `Cookie`, `Origin`, `Host`, proxy headers — is dropped: an
/// allow-list cannot leak a credential that nobody thought of.
const FORWARDED: &[&str] = &[
    "accept",
    "content-type",
    mcp_headers::MCP_PROTOCOL_VERSION,
    mcp_headers::LAST_EVENT_ID,
    mcp_headers::MCP_METHOD,
    mcp_headers::MCP_NAME,
    "user-agent",
    // W3C trace context: passed on, so an upstream's spans can join the caller's trace
    // (replaced by the gateway's own span when it exports traces: see telemetry.rs).
    "traceparent",
    "tracestate",
];

/// The innermost cause of a client error (hyper's outer one says little: "client error
/// (Connect)"), or the error itself when it has none.
pub(crate) fn innermost_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// One HTTP upstream.
#[derive(Debug)]
pub struct HttpUpstream {
    /// Server name, for errors.
    name: String,
    /// Endpoint.
    uri: Uri,
    /// Injected headers (configured credentials).
    inject: HeaderMap,
    /// Per-request timeout.
    timeout: Duration,
    /// Largest answer read whole, or SSE event (`[servers.X] max_message_bytes`).
    max_message_bytes: usize,
    /// Connection pool.
    client: HttpClient,
}

/// POSTs a JSON `body` to `url` on the gateway's own behalf (the approvals webhook, the
/// trace exporter), with `headers` besides the content type and user agent; `Ok` only for a
/// 2xx answer within `timeout`.
pub(crate) async fn post_json(
    client: &HttpClient,
    url: &str,
    headers: &[(&'static str, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<(), String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("toolgate/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value.clone());
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer from {url} within {} s", timeout.as_secs()))?
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered HTTP {}", response.status()))
    }
}

pub(crate) fn build_client(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
) -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match ca_file {
        None => builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?,
        Some(path) => {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(config)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https))
}

/// How long an idle upstream connection is kept for reuse. Below the shortest keep-alive
/// common servers use (5 s: uvicorn, Node's http): a connection the server is about to close
/// is not picked for a call, where the race would reset it under the call and lose its
/// answer (the soak test met this: "Connection reset by peer" on a reused connection). A
/// `tools/call` is not idempotent, so such a call cannot simply be sent again.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The error for a request to `server` not answered within `timeout`.
pub fn timed_out(server: &str, timeout: Duration) -> GatewayError {
    GatewayError::upstream(
        server,
        format_args!("did not answer within {} s", timeout.as_secs_f64()),
    )
}

/// The error for a message from `server` larger than `limit` bytes (its answer is lost).
pub fn too_large(server: &str, limit: usize) -> GatewayError {
    GatewayError::upstream(
        server,
        format_args!(
            "sent a message larger than {limit} bytes, the most accepted ([servers.{server}] max_message_bytes)"
        ),
    )
}

/// Whether a response is an SSE stream.
pub fn is_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

impl HttpUpstream {
    /// Builds the upstream from its configuration.
    pub fn new(server: &ServerSpec) -> Result<Self, String> {
        let (name, timeout) = (server.name.as_str(), server.timeout);
        let UpstreamSpec::Http {
            url,
            headers,
            ca_file,
            connect_timeout,
        } = &server.upstream
        else {
            return Err("not an HTTP upstream".into());
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("servers.{name}.url: {url:?} is not a URL: {e}"))?;
        let mut inject = HeaderMap::new();
        for (key, value) in headers {
            let key = HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| format!("servers.{name}.headers: bad header name {key:?}: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("servers.{name}.headers.{key}: bad header value: {e}"))?;
            inject.insert(key, value);
        }
        Ok(HttpUpstream {
            name: name.to_owned(),
            uri,
            inject,
            timeout,
            max_message_bytes: server.max_message_bytes,
            client: build_client(ca_file.as_deref(), *connect_timeout)?,
        })
    }

    /// The per-request timeout: how long a request may take to be answered in full.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Largest answer read whole, or SSE event.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The error for a request that was not answered in time.
    pub fn timed_out(&self) -> GatewayError {
        timed_out(&self.name, self.timeout)
    }

    /// Sends one request upstream. Only allow-listed client headers pass; the upstream
    /// session id and the configured headers are set by the gateway. Times out waiting for
    /// the response head after the server's timeout.
    pub async fn send(
        &self,
        method: Method,
        client_headers: &HeaderMap,
        upstream_session: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, GatewayError> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| GatewayError::internal(format!("cannot build upstream request: {e}")))?;
        let headers = request.headers_mut();
        for (name, value) in client_headers {
            let n = name.as_str();
            if FORWARDED.contains(&n) || n.starts_with(mcp_headers::MCP_PARAM_PREFIX) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(session) = upstream_session {
            if let Ok(v) = HeaderValue::from_str(session) {
                headers.insert(mcp_headers::MCP_SESSION_ID, v);
            }
        }
        for (name, value) in &self.inject {
            headers.insert(name.clone(), value.clone());
        }
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(GatewayError::upstream(
                &self.name,
                format_args!("is unreachable: {}", innermost_cause(&e)),
            )),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Ends an upstream session of ours (best effort: an upstream that is gone has no
    /// session to free).
    pub async fn end_session(&self, upstream_session: &str) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let _ = self
            .send(
                Method::DELETE,
                &headers,
                Some(upstream_session),
                Bytes::new(),
            )
            .await;
    }

    /// Reads a whole response body (JSON or SSE) into the JSON-RPC messages it carries.
    pub async fn read_messages(
        &self,
        response: Response<Incoming>,
    ) -> Result<Vec<Value>, GatewayError> {
        let sse = is_sse(response.headers());
        let collected = tokio::time::timeout(
            self.timeout,
            Limited::new(response.into_body(), MAX_BUFFERED_RESPONSE).collect(),
        )
        .await
        .map_err(|_| {
            GatewayError::upstream(
                &self.name,
                format_args!(
                    "did not finish its response within {} s",
                    self.timeout.as_secs_f64()
                ),
            )
        })?
        .map_err(|e| {
            GatewayError::upstream(&self.name, format_args!("sent an unreadable response: {e}"))
        })?;
        let bytes = collected.to_bytes();
        parse_messages(&self.name, sse, &bytes)
    }

    /// The upstream's complete tool list (each tool's definition), fetched on a short-lived
    /// session of the gateway's own (initialize, initialized, every page of tools/list,
    /// DELETE).
    pub async fn fetch_tools(&self) -> Result<Vec<Value>, GatewayError> {
        self.read_tools().await?.complete()
    }

    /// [`HttpUpstream::fetch_tools`], keeping what was read when a page fails.
    pub async fn read_tools(&self) -> Result<crate::catalogue::ToolList, GatewayError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": version::LATEST,
            // Servers may offer tools only to clients that declare these; the catalogue must
            // see every tool any client could call.
            "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
            "clientInfo": {"name": "toolgate-catalogue", "version": env!("CARGO_PKG_VERSION")}}});
        let response = self
            .send(Method::POST, &headers, None, Bytes::from(init.to_string()))
            .await?;
        if !response.status().is_success() {
            return Err(GatewayError::upstream(
                &self.name,
                format_args!("refused initialize with HTTP {}", response.status()),
            ));
        }
        let session = response
            .headers()
            .get(mcp_headers::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let messages = self.read_messages(response).await?;
        let negotiated = messages
            .iter()
            .find_map(|m| m.get("result")?.get("protocolVersion")?.as_str())
            .unwrap_or(version::LATEST)
            .to_owned();
        if let Ok(v) = HeaderValue::from_str(&negotiated) {
            headers.insert(mcp_headers::MCP_PROTOCOL_VERSION, v);
        }
        let initialized = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let _ = self
            .send(
                Method::POST,
                &headers,
                session.as_deref(),
                Bytes::from(initialized.to_string()),
            )
            .await?;
        let mut next_id = 0u64;
        let tools = crate::catalogue::read_tool_list(|params| {
            next_id += 1;
            let id = next_id;
            let list =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
            let (headers, session) = (&headers, session.as_deref());
            async move {
                let response = self
                    .send(
                        Method::POST,
                        headers,
                        session,
                        Bytes::from(list.to_string()),
                    )
                    .await?;
                let messages = self.read_messages(response).await?;
                messages
                    .into_iter()
                    .find(|m| m.get("id") == Some(&json!(id)))
                    .and_then(|mut m| m.get_mut("result").map(Value::take))
                    .ok_or_else(|| {
                        GatewayError::upstream(&self.name, "answered tools/list without a result")
                    })
            }
        })
        .await;
        if let Some(session) = &session {
            self.end_session(session).await;
        }
        Ok(tools)
    }
}

/// Parses a buffered JSON or SSE body into JSON-RPC messages.
pub fn parse_messages(server: &str, sse: bool, bytes: &[u8]) -> Result<Vec<Value>, GatewayError> {
    let garbage = |e: &dyn std::fmt::Display| {
        GatewayError::upstream(
            server,
            format_args!("sent a response that is not JSON-RPC: {e}"),
        )
    };
    if sse {
        let mut decoder = SseDecoder::new(MAX_BUFFERED_RESPONSE);
        let events = decoder.push(bytes).map_err(|e| garbage(&e))?;
        let mut out = Vec::new();
        for event in events.into_iter().filter(|e| !e.data.trim().is_empty()) {
            out.push(serde_json::from_str(&event.data).map_err(|e| garbage(&e))?);
        }
        Ok(out)
    } else {
        match serde_json::from_slice::<Value>(bytes).map_err(|e| garbage(&e))? {
            Value::Array(items) => Ok(items),
            other => Ok(vec![other]),
        }
    }
}
