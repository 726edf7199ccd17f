//! The fast upstream: a minimal MCP server (Streamable HTTP, session-based) that answers
//! every request at once, so that what is measured is the path to it. `/json` answers with
//! `application/json`, `/sse` with a one-event `text/event-stream`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The tools it lists: the ones the realistic policy names (see `main.rs`).
pub fn tools() -> Vec<Value> {
    let mut tools = Vec::new();
    for i in 0..150 {
        tools.push(json!({
            "name": format!("tool_{i:03}"),
            "description": format!("Get record {i}."),
            "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}
        }));
    }
    tools
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let sse = request.uri().path().starts_with("/sse");
    let method = request.method().clone();
    if method == hyper::Method::DELETE {
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    if method != hyper::Method::POST {
        let mut refused = Response::new(Full::new(Bytes::new()));
        *refused.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(refused);
    }
    let body = request.into_body().collect().await?.to_bytes();
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let result = match message.get("method").and_then(Value::as_str) {
        Some("initialize") => json!({
            "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "toolgate-load-upstream", "version": "1"}
        }),
        Some("tools/list") => json!({ "tools": tools() }),
        Some("tools/call") => json!({"content": [{"type": "text", "text": "ok"}]}),
        Some("ping") => json!({}),
        _ => {
            let mut accepted = Response::new(Full::new(Bytes::new()));
            *accepted.status_mut() = StatusCode::ACCEPTED;
            return Ok(accepted);
        }
    };
    let text = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let (content_type, bytes) = if sse {
        (
            "text/event-stream",
            format!("event: message\ndata: {text}\n\n"),
        )
    } else {
        ("application/json", text)
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        content_type.parse().expect("a valid header"),
    );
    headers.insert(
        "mcp-session-id",
        "load-upstream-session".parse().expect("a valid header"),
    );
    Ok(response)
}

/// Serves on a free loopback port; returns its address.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    });
    Ok(addr)
}
