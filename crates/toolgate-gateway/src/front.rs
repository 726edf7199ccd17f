//! The front door: accepting connections, transport limits, routing, Host/Origin checks.

use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::Gateway;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use toolgate_mcp::codes;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true, then drains.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = gateway.settings.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    let mut full_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Said once per ten seconds of being full, not once per connection.
                    if full_since.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!("{limit} client connections are open, the most allowed ([gateway] max_connections): refusing more with 503");
                        full_since = Some(std::time::Instant::now());
                    }
                    tokio::spawn(refuse_connection(stream, limit));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let gw = Arc::clone(&gateway);
                let service = service_fn(move |request| {
                    let gw = Arc::clone(&gw);
                    async move { Ok::<_, Infallible>(gw.route(request, peer.ip()).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(gateway.settings.header_read_timeout)
                    .max_buf_size(gateway.settings.max_header_bytes)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            _ = crate::stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still open after {} s; closing them",
            DRAIN.as_secs()
        );
    }
}

/// Answers a connection over `[gateway] max_connections` with a 503 that says so, and
/// closes it. What the client sent is read (briefly, a bounded amount) before closing, so
/// that the close does not reset the connection under the answer.
async fn refuse_connection(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let message = format!(
        "{limit} client connections are open, the most this gateway allows at once \
         ([gateway] max_connections); retry shortly\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{message}",
        message.len()
    );
    let refuse = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), refuse).await;
}

/// Whether a `Host` (or an Origin's authority) names this machine or an allowed host.
pub fn host_allowed(authority: &str, allowed: &[String]) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_loopback() {
            return true;
        }
    }
    allowed.iter().any(|a| a.eq_ignore_ascii_case(&host))
}

/// Whether an `Origin` header value is acceptable (same rules as Host; `null` never is).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.contains('/') && host_allowed(rest, allowed)
}

impl Gateway {
    /// Routes one request; never fails (every problem becomes a response).
    async fn route(self: Arc<Self>, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        // A refusal may leave the request body unread, and hyper then closes the connection
        // after the answer; without saying so, a client that reuses the connection for its
        // next request finds it closed under it. Every refusal of a request with a body
        // says so (cheap: such refusals are rare, and the client just reconnects).
        let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
            || request
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        let mut response = self.answer(request, peer).await;
        if has_body && !response.status().is_success() {
            response
                .headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        response
    }

    /// [`Gateway::route`]'s answer.
    async fn answer(self: &Arc<Self>, request: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let forbidden = |what: String| {
            GatewayError::client(StatusCode::FORBIDDEN, codes::INVALID_REQUEST, what)
                .into_response(serde_json::Value::Null)
        };
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        match host {
            Some(h) if host_allowed(h, &self.settings.allowed_hosts) => {}
            Some(h) => return forbidden(format!("Host {h:?} is not allowed (DNS rebinding protection); add it to gateway.allowed_hosts")),
            None => return forbidden("a Host header is required".into()),
        }
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_allowed(origin, &self.settings.allowed_hosts) {
                return forbidden(format!("Origin {origin:?} is not allowed"));
            }
        }
        let path = request.uri().path().to_owned();
        match path.as_str() {
            "/healthz" => body::text(StatusCode::OK, "ok\n"),
            "/metrics" => self.metrics_page(request.headers(), peer).await,
            "/readyz" => {
                let (ready, report) = self.readiness().await;
                if ready {
                    body::text(StatusCode::OK, &format!("ready\n{report}"))
                } else {
                    body::text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("not ready\n{report}"),
                    )
                }
            }
            p if p == "/.well-known/oauth-protected-resource"
                || p.starts_with("/.well-known/oauth-protected-resource/") =>
            {
                self.protected_resource_metadata(p)
            }
            p if p == "/admin/api" || p.starts_with("/admin/api/") => {
                self.handle_admin(request, peer).await
            }
            p if p == "/admin" || p.starts_with("/admin/") => {
                let no_admins = self.admins().is_empty();
                match crate::dashboard::asset(p).filter(|_| !no_admins) {
                    Some(page) => page,
                    None if no_admins => body::text(
                        StatusCode::NOT_FOUND,
                        "the dashboard is off: set [admin] token_sha256 in the configuration\n",
                    ),
                    None => body::text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            _ => match path
                .strip_prefix("/mcp/")
                .map(|s| s.strip_suffix('/').unwrap_or(s))
            {
                Some(server) if !server.is_empty() && !server.contains('/') => {
                    self.handle_mcp(server, request, peer).await
                }
                _ => body::text(
                    StatusCode::NOT_FOUND,
                    "not found; MCP servers are at /mcp/<server>\n",
                ),
            },
        }
    }
}

impl Gateway {
    /// `/metrics` (Prometheus text format). With admin tokens configured it takes one, of
    /// any role (it shows server names and rule ids, no grants or arguments); without, it is
    /// open like `/healthz`: the gateway listens on loopback unless told otherwise.
    async fn metrics_page(&self, headers: &http::HeaderMap, peer: IpAddr) -> Response<Body> {
        if !self.admins().is_empty() && self.admin_of(headers.get(header::AUTHORIZATION)).is_none()
        {
            // A wrong token here counts like one at the admin API.
            self.auth_throttle.failed_now(peer).await;
            return GatewayError::client(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_REQUEST,
                "/metrics needs an admin token (any role): Authorization: Bearer <token>",
            )
            .into_response(serde_json::Value::Null);
        }
        let in_force = self.servers.all();
        let servers = in_force
            .values()
            .map(|s| (&*s.metrics, s.upstream.is_ready()))
            .collect();
        let text = self.metrics.render(&crate::metrics::Gauges {
            sessions: self.sessions.len(),
            servers,
        });
        let mut response = body::text(StatusCode::OK, &text);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// Protected Resource Metadata (RFC 9728) in OAuth mode: for the gateway, and per
    /// server at `/.well-known/oauth-protected-resource/mcp/<server>`.
    fn protected_resource_metadata(&self, path: &str) -> Response<Body> {
        let not_found = || body::text(StatusCode::NOT_FOUND, "not found\n");
        let Some(validator) = &self.oauth else {
            return not_found();
        };
        let rest = path
            .trim_start_matches("/.well-known/oauth-protected-resource")
            .trim_end_matches('/');
        match rest.strip_prefix("/mcp/") {
            None if rest.is_empty() => body::json(StatusCode::OK, &validator.metadata(None)),
            Some(server) if self.servers.contains(server) => {
                body::json(StatusCode::OK, &validator.metadata(Some(server)))
            }
            _ => not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let allowed = vec!["gw.example".to_owned()];
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "127.3.4.5",
            "gw.example:443",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "10.0.0.1:80",
            "gw.example.evil:80",
            "[::2]:80",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        assert!(origin_allowed("http://localhost:3000", &allowed));
        assert!(origin_allowed("https://gw.example", &allowed));
        for bad in [
            "null",
            "http://evil.example",
            "file://x",
            "http://localhost/x",
        ] {
            assert!(!origin_allowed(bad, &allowed), "{bad}");
        }
    }
}
