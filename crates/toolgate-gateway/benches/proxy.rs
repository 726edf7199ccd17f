//! End-to-end benchmark of the `tools/call` line through the real proxy: HTTP client →
//! toolgate (hyper, policy, counters, audit log) → an in-process HTTP upstream that answers
//! every call at once, so the figures are the gateway's own.
//!
//! `cargo bench -p toolgate-gateway --bench proxy` prints, in one run and against baselines
//! measured in that same run:
//! - calls per second (= audit records per second: one record per call) with 1 and with
//!   64 concurrent clients, and the median and p99 latency of one call;
//! - the latency the audit log adds per call: the same calls with audit entries dropped
//!   (a no-op audit log) as the baseline;
//! - the latency a rate-limited call adds over an unlimited one (embedded counter store).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use toolgate_gateway::config::{self, ServerSpec, Settings, UpstreamSpec};
use toolgate_gateway::{grants, StoreOverrides};
use toolgate_store::{AuditEntry, AuditLog, StoreFuture};

const TOKEN: &str = "tg_bench_token_not_a_secret";
const SINGLE_CALLS: usize = 4_000;
const CONCURRENT_CLIENTS: usize = 64;
const CALLS_PER_CLIENT: usize = 100;
/// Configurations take turns, a round each, so that drift in the machine's speed (this is
/// a shared VM) spreads evenly over them instead of favouring whichever ran first.
const ROUNDS: usize = 20;

/// The baseline audit log: accepts everything, keeps nothing.
struct NullAudit;

impl AuditLog for NullAudit {
    fn append<'a>(&'a self, _entries: &'a [AuditEntry]) -> StoreFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn append_later(&self, _entries: Vec<AuditEntry>) {}

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// An MCP server that answers at once: `initialize`, `tools/list` (tools `work` and
/// `limited`), and any `tools/call`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = message.get("id").cloned().unwrap_or(Value::Null);
                    let result = match message.get("method").and_then(Value::as_str) {
                        Some("initialize") => json!({
                            "protocolVersion": "2025-11-25",
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "bench-upstream", "version": "1"}
                        }),
                        Some("tools/list") => json!({"tools": [
                            {"name": "work", "inputSchema": {"type": "object"}},
                            {"name": "limited", "inputSchema": {"type": "object"}}
                        ]}),
                        Some("tools/call") => {
                            json!({"content": [{"type": "text", "text": "done"}]})
                        }
                        _ => {
                            let mut accepted = Response::new(Full::new(Bytes::new()));
                            *accepted.status_mut() = hyper::StatusCode::ACCEPTED;
                            return Ok::<_, hyper::Error>(accepted);
                        }
                    };
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
                    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
                    let headers = response.headers_mut();
                    headers.insert("content-type", "application/json".parse().expect("header"));
                    headers.insert(
                        "mcp-session-id",
                        "bench-upstream-session".parse().expect("header"),
                    );
                    Ok(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gateway in front of `upstream`, with `audit` replacing the embedded audit log if given,
/// or its audit log in PostgreSQL at `postgres`.
async fn gateway(
    upstream: SocketAddr,
    dir: &std::path::Path,
    audit: Option<Arc<dyn AuditLog>>,
    postgres: Option<String>,
) -> toolgate_gateway::Running {
    let policy_path = dir.join("policy.json");
    std::fs::write(
        &policy_path,
        json!({"version": "1", "default": "deny", "tools": {
            "work": {},
            "limited": {"limits": [{"counter": "bench", "window": "minute", "max": 1e12}]}
        }})
        .to_string(),
    )
    .expect("write policy");
    let mut settings = Settings::new("127.0.0.1:0".parse().expect("addr"));
    settings.data_dir = dir.join("data");
    settings.postgres_url = postgres;
    settings.servers.push(ServerSpec {
        name: "bench".into(),
        upstream: UpstreamSpec::Http {
            url: format!("http://{upstream}/mcp"),
            headers: Vec::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
        },
        timeout: Duration::from_secs(30),
        shadow: false,
        fail_open: false,
        max_message_bytes: toolgate_gateway::config::DEFAULT_MAX_MESSAGE_BYTES,
    });
    let policy = config::load_policy(&policy_path).expect("policy");
    settings
        .grants
        .push(grants::quick_grant("bench", TOKEN, "bench", policy));
    toolgate_gateway::start_with(settings, StoreOverrides { audit })
        .await
        .expect("gateway starts")
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One MCP client session on the gateway.
struct Session {
    client: HttpClient,
    url: String,
    session: String,
}

impl Session {
    async fn open(gateway: SocketAddr) -> Session {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let url = format!("http://{gateway}/mcp/bench");
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}});
        let response = client
            .request(post(&url, None, &init))
            .await
            .expect("initialize");
        let session = response
            .headers()
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .expect("ascii")
            .to_owned();
        let _ = response.into_body().collect().await;
        Session {
            client,
            url,
            session,
        }
    }

    /// One `tools/call` of `tool`; its latency.
    async fn call(&self, tool: &str, id: usize) -> Duration {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {"n": id}}});
        let started = Instant::now();
        let response = self
            .client
            .request(post(&self.url, Some(&self.session), &message))
            .await
            .expect("tools/call");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let elapsed = started.elapsed();
        assert!(
            body.windows(4).any(|w| w == b"done"),
            "the call must reach the upstream: {}",
            String::from_utf8_lossy(&body)
        );
        elapsed
    }
}

fn post(url: &str, session: Option<&str>, message: &Value) -> Request<Full<Bytes>> {
    let mut builder = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    builder
        .body(Full::new(Bytes::from(message.to_string())))
        .expect("request")
}

/// Figures for one configuration.
#[derive(Default)]
struct Figures {
    /// Every single-client call's latency.
    latencies: Vec<Duration>,
    /// Time spent on single-client calls.
    single_time: Duration,
    /// Calls made by concurrent clients, and the time they took.
    concurrent_calls: usize,
    concurrent_time: Duration,
}

impl Figures {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * p) as usize]
    }
}

/// What is measured: a gateway and the tool called on it.
struct Target {
    name: &'static str,
    gateway: SocketAddr,
    tool: &'static str,
    figures: Figures,
}

/// One round for `target`: `SINGLE_CALLS / ROUNDS` calls from one client, then
/// `CONCURRENT_CLIENTS` clients making `CALLS_PER_CLIENT / ROUNDS` calls each at once.
async fn round(target: &mut Target, single: &Session, many: &[Arc<Session>]) {
    let started = Instant::now();
    for i in 0..SINGLE_CALLS / ROUNDS {
        let latency = single.call(target.tool, i).await;
        target.figures.latencies.push(latency);
    }
    target.figures.single_time += started.elapsed();
    let started = Instant::now();
    let tasks: Vec<_> = many
        .iter()
        .map(|session| {
            let (session, tool) = (Arc::clone(session), target.tool);
            tokio::spawn(async move {
                for i in 0..CALLS_PER_CLIENT / ROUNDS {
                    session.call(tool, i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    target.figures.concurrent_time += started.elapsed();
    target.figures.concurrent_calls += many.len() * (CALLS_PER_CLIENT / ROUNDS);
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print(target: &Target) {
    let f = &target.figures;
    println!(
        "{:<34} p50 {:>7.1} µs  p99 {:>7.1} µs  | 1 client {:>6.0} calls/s | {CONCURRENT_CLIENTS} clients {:>6.0} calls/s",
        target.name,
        micros(f.percentile(0.5)),
        micros(f.percentile(0.99)),
        f.latencies.len() as f64 / f.single_time.as_secs_f64(),
        f.concurrent_calls as f64 / f.concurrent_time.as_secs_f64(),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let root = std::env::temp_dir().join(format!("toolgate-bench-proxy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let upstream = upstream().await;
        let (null_dir, embedded_dir) = (root.join("null"), root.join("embedded"));
        for dir in [&null_dir, &embedded_dir] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        let baseline = gateway(upstream, &null_dir, Some(Arc::new(NullAudit)), None).await;
        let embedded = gateway(upstream, &embedded_dir, None, None).await;
        let postgres_url = std::env::var("TOOLGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://toolgate@127.0.0.1:5432/toolgate".to_owned());
        let reachable = match toolgate_store::PostgresAuditLog::connect(&postgres_url) {
            Ok(log) => log.ping().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let postgres = match reachable {
            Ok(()) => {
                let dir = root.join("postgres");
                std::fs::create_dir_all(&dir).expect("dir");
                Some(gateway(upstream, &dir, None, Some(postgres_url)).await)
            }
            Err(e) => {
                println!("postgres: not measured ({e})");
                None
            }
        };
        let mut targets = vec![
            Target { name: "no audit (baseline), unlimited", gateway: baseline.local_addr, tool: "work", figures: Figures::default() },
            Target { name: "embedded audit, unlimited", gateway: embedded.local_addr, tool: "work", figures: Figures::default() },
            Target { name: "embedded audit, rate-limited", gateway: embedded.local_addr, tool: "limited", figures: Figures::default() },
        ];
        if let Some(postgres) = &postgres {
            targets.push(Target { name: "postgres audit, unlimited", gateway: postgres.local_addr, tool: "work", figures: Figures::default() });
        }
        let mut sessions = Vec::new();
        for target in &targets {
            let single = Session::open(target.gateway).await;
            for i in 0..200 {
                single.call(target.tool, i).await; // warm up
            }
            let mut many = Vec::new();
            for _ in 0..CONCURRENT_CLIENTS {
                many.push(Arc::new(Session::open(target.gateway).await));
            }
            sessions.push((single, many));
        }
        for _ in 0..ROUNDS {
            for (target, (single, many)) in targets.iter_mut().zip(&sessions) {
                round(target, single, many).await;
            }
        }
        baseline.shutdown().await;
        embedded.shutdown().await;
        if let Some(postgres) = postgres {
            postgres.shutdown().await;
        }

        println!("tools/call through the proxy (one audit record per call; {ROUNDS} interleaved rounds):");
        for target in &targets {
            print(target);
        }
        let p50 = |t: &Target| micros(t.figures.percentile(0.5));
        println!(
            "audit adds {:.1} µs per call at the median; a limit adds {:.1} µs (embedded counters)",
            p50(&targets[1]) - p50(&targets[0]),
            p50(&targets[2]) - p50(&targets[1])
        );
        if let Some(postgres) = targets.get(3) {
            println!(
                "postgres audit adds {:.1} µs per call at the median",
                p50(postgres) - p50(&targets[0])
            );
        }
        let _ = std::fs::remove_dir_all(&root);
    });
}
