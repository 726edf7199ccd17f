//! `toolgate-load`: MCP `tools/call` load, (a) straight to a fast upstream, (b) through
//! toolgate with an allow-all policy, (c) through toolgate with a realistic policy (150
//! tools, limits on the embedded store, the audit log on). All in one run on one machine, so
//! the ratios hold even where the absolute figures drift.
//!
//! For each path: throughput at saturation (closed loop, `--concurrency` callers), latency
//! percentiles at fixed offered rates (open loop: calls are sent on schedule whether or not
//! earlier ones were answered, so a slow answer cannot hide the calls behind it), and for
//! the gateway process
//! CPU seconds per 1000 calls and memory (idle, peak, with `--sessions` open sessions). Also
//! the time to the first byte of a streamed (SSE) answer, direct and through the gateway.
//!
//! `toolgate-load --write BENCHMARKS.md` replaces the figures between the markers there.
#![forbid(unsafe_code)]

mod relay;
mod upstream;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The grant token of the gateways under test.
const TOKEN: &str = "tg_load_token_not_a_secret_0123456789";
/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const TICKS_PER_SECOND: f64 = 100.0;
/// Where the generated figures go in BENCHMARKS.md.
const BEGIN: &str = "<!-- toolgate-load:begin -->";
const END: &str = "<!-- toolgate-load:end -->";

/// Command line.
#[derive(Parser)]
#[command(
    about = "MCP tools/call load: direct, through toolgate allow-all, through toolgate with a realistic policy"
)]
struct Args {
    /// The toolgate binary (default: release, else debug, in $CARGO_TARGET_DIR or ./target).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Offered rates (calls/s) for the latency percentiles.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u32>,
    /// Concurrent callers at saturation.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rounds: each figure is the median of this many measurements, the paths taking turns
    /// (a shared machine has slow moments; one run can land on one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Sessions to open for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// A short run that only shows everything works (CI): 0.5 s per measurement, 100
    /// calls/s, 200 sessions.
    #[arg(long)]
    smoke: bool,
    /// Replace the figures in this file (between the toolgate-load markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Internal: run as the plain TCP relay of row (r), listening here…
    #[arg(long, hide = true, requires = "relay_to")]
    relay_listen: Option<String>,
    /// Internal: …and relaying every connection to this address.
    #[arg(long, hide = true)]
    relay_to: Option<String>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Where calls go.
#[derive(Clone)]
struct Target {
    /// Its MCP endpoint.
    url: String,
    /// Sent as a bearer token, if any.
    token: Option<&'static str>,
    /// The tool called.
    tool: &'static str,
}

/// One line of the report.
struct Row {
    /// What was measured.
    label: &'static str,
    /// Its figures.
    figures: Figures,
    /// The row (the direct path in the same answer mode) its ratios are against.
    baseline: usize,
}

/// One call path's figures.
#[derive(Default)]
struct Figures {
    saturation: f64,
    /// (rate, p50, p90, p99) in µs.
    latency: Vec<(u32, f64, f64, f64)>,
    cpu_per_1000: Option<f64>,
}

impl Figures {
    /// Each figure's median over `rounds` (all measured at the same rates).
    fn median(rounds: &[Figures]) -> Figures {
        let of = |pick: &dyn Fn(&Figures) -> f64| median(rounds.iter().map(pick).collect());
        Figures {
            saturation: of(&|f| f.saturation),
            latency: rounds[0]
                .latency
                .iter()
                .enumerate()
                .map(|(i, (rate, ..))| {
                    (
                        *rate,
                        of(&|f| f.latency[i].1),
                        of(&|f| f.latency[i].2),
                        of(&|f| f.latency[i].3),
                    )
                })
                .collect(),
            cpu_per_1000: rounds[0]
                .cpu_per_1000
                .map(|_| of(&|f| f.cpu_per_1000.unwrap_or(f64::NAN))),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = match (&args.relay_listen, &args.relay_to) {
        (Some(listen), Some(to)) => runtime.block_on(relay::serve(listen, to)),
        _ => runtime.block_on(run(args)),
    };
    if let Err(e) = outcome {
        eprintln!("toolgate-load: {e}");
        std::process::exit(1);
    }
}

async fn run(mut args: Args) -> Result<(), String> {
    if args.smoke {
        args.seconds = 0.5;
        args.rates = vec![100];
        args.sessions = 200;
        args.rounds = 1;
    }
    let binary = match &args.gateway {
        Some(path) => path.clone(),
        None => default_gateway()?,
    };
    let upstream = upstream::start()
        .await
        .map_err(|e| format!("cannot start the fast upstream: {e}"))?;
    let work = std::env::temp_dir().join(format!("toolgate-load-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build_http();

    let relay = Gateway::relay(upstream).await?;
    let allow_all = Gateway::start(&binary, &work.join("allow-all"), upstream, false).await?;
    let realistic = Gateway::start(&binary, &work.join("realistic"), upstream, true).await?;
    let idle_kib = realistic.memory("VmRSS")?;

    let direct = Target {
        url: format!("http://{upstream}/json"),
        token: None,
        tool: "tool_042",
    };
    let through = |gw: &Gateway, server: &str| Target {
        url: format!("http://{}/mcp/{server}", gw.addr),
        token: Some(TOKEN),
        tool: "tool_042",
    };
    let direct_sse = Target {
        url: format!("http://{upstream}/sse"),
        ..direct.clone()
    };
    // (label, target, gateway, the row it is compared with)
    let paths = [
        ("(a) direct", direct.clone(), None, 0),
        (
            "(r) plain TCP relay (no HTTP, no policy)",
            Target {
                url: format!("http://{}/json", relay.addr),
                ..direct.clone()
            },
            Some(&relay),
            0,
        ),
        (
            "(b) toolgate, allow-all",
            through(&allow_all, "fast"),
            Some(&allow_all),
            0,
        ),
        (
            "(c) toolgate, realistic policy + limits + audit",
            through(&realistic, "fast"),
            Some(&realistic),
            0,
        ),
        ("(a) direct, SSE answers", direct_sse.clone(), None, 4),
        (
            "(c) toolgate, realistic, SSE answers",
            through(&realistic, "fast_sse"),
            Some(&realistic),
            4,
        ),
    ];
    // Rounds: every path measured once per round, in turn, so that the machine's slow
    // moments fall on all of them alike; each figure is then the median of its rounds.
    let mut measured: Vec<Vec<Figures>> = paths.iter().map(|_| Vec::new()).collect();
    let (mut ttfb_direct, mut ttfb_gateway) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for ((label, target, gateway, _), figures) in paths.iter().zip(&mut measured) {
            eprintln!(
                "toolgate-load: round {round}/{}: measuring {label}",
                args.rounds
            );
            figures.push(measure(&client, target, *gateway, &args).await?);
        }
        eprintln!("toolgate-load: round {round}: time to first byte of an SSE answer");
        ttfb_direct.push(ttfb(&client, &direct_sse, &args).await?);
        ttfb_gateway.push(ttfb(&client, &through(&realistic, "fast_sse"), &args).await?);
    }
    let rows: Vec<Row> = paths
        .iter()
        .zip(&measured)
        .map(|((label, _, _, baseline), rounds)| Row {
            label,
            figures: Figures::median(rounds),
            baseline: *baseline,
        })
        .collect();
    let (ttfb_direct, ttfb_gateway) = (median(ttfb_direct), median(ttfb_gateway));
    eprintln!("toolgate-load: opening {} sessions", args.sessions);
    let before_sessions = realistic.memory("VmRSS")?;
    open_sessions(&client, &through(&realistic, "fast"), args.sessions).await?;
    let with_sessions = realistic.memory("VmRSS")?;
    let peak = realistic.memory("VmHWM")?;

    let report = report(
        &args,
        &rows,
        idle_kib,
        before_sessions,
        with_sessions,
        peak,
        ttfb_direct,
        ttfb_gateway,
    );
    println!("{report}");
    if let Some(path) = &args.write {
        write_into(path, &report)?;
        eprintln!("toolgate-load: wrote the figures into {}", path.display());
    }
    drop((relay, allow_all, realistic));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `toolgate` in `$CARGO_TARGET_DIR` (or `./target`): the release build if there is one.
fn default_gateway() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("toolgate"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no toolgate binary in {} (build it: cargo build --release -p toolgate), or pass --gateway",
                target.display()
            )
        })
}

/// A gateway process under test.
struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `binary` in `dir` in front of `upstream` (`/json` as server `fast`, `/sse` as
    /// `fast_sse`), with an allow-all policy or the realistic one.
    async fn start(
        binary: &Path,
        dir: &Path,
        upstream: std::net::SocketAddr,
        realistic: bool,
    ) -> Result<Gateway, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let policy = if realistic {
            realistic_policy()
        } else {
            json!({"version": "1", "default": "allow"})
        };
        std::fs::write(dir.join("policy.json"), policy.to_string())
            .map_err(|e| format!("cannot write the policy: {e}"))?;
        let port = free_port()?;
        let config = format!(
            "[gateway]\nsession_idle_timeout = \"1h\"\n\n[servers.fast]\nurl = \"http://{upstream}/json\"\n\n\
             [servers.fast_sse]\nurl = \"http://{upstream}/sse\"\n\n[[grants]]\nname = \"load\"\n\
             token = \"{TOKEN}\"\npolicies = {{ fast = \"policy.json\", fast_sse = \"policy.json\" }}\n"
        );
        std::fs::write(dir.join("toolgate.toml"), config)
            .map_err(|e| format!("cannot write the configuration: {e}"))?;
        let log = std::fs::File::create(dir.join("gateway.log"))
            .map_err(|e| format!("cannot create the gateway's log: {e}"))?;
        let child = Command::new(binary)
            .args([
                "serve",
                "--config",
                "toolgate.toml",
                "--data-dir",
                "data",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let gateway = Gateway {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        gateway.wait_ready(dir).await?;
        Ok(gateway)
    }

    /// Starts this program again as the plain TCP relay of row (r) in front of `upstream`:
    /// a process of its own, like a gateway, that only copies bytes both ways — the least
    /// any proxy process adds on this machine.
    async fn relay(upstream: std::net::SocketAddr) -> Result<Gateway, String> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
        let child = Command::new(me)
            .args(["--relay-listen", &addr, "--relay-to", &upstream.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let relay = Gateway { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&relay.addr).await.is_err() {
            if Instant::now() > deadline {
                return Err("the relay did not start listening within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(relay)
    }

    async fn wait_ready(&self, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(&self.addr).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let request = "GET /readyz HTTP/1.1
Host: 127.0.0.1
Connection: close

";
                if stream.write_all(request.as_bytes()).await.is_ok() {
                    let mut answer = Vec::new();
                    let _ = stream.read_to_end(&mut answer).await;
                    if answer.starts_with(b"HTTP/1.1 200") {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
                return Err(format!(
                    "the gateway did not become ready within 30 s:\n{log}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A line of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
    fn memory(&self, field: &str) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("cannot read the gateway's memory: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {field} in /proc/{}/status", self.child.id()))
    }

    /// CPU time used so far (user + system), in seconds.
    fn cpu_seconds(&self) -> Result<f64, String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_err(|e| format!("cannot read the gateway's CPU time: {e}"))?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        match (ticks(11), ticks(12)) {
            (Some(user), Some(system)) => Ok((user + system) / TICKS_PER_SECOND),
            _ => Err("unreadable /proc/<pid>/stat".into()),
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// 150 tools like a real server's policy: most allowed as they are, predicates, schemas,
/// limits (far above what the load reaches, so every call is admitted and counted) on the
/// tool called and on all tools.
fn realistic_policy() -> Value {
    let mut tools = serde_json::Map::new();
    for i in 0..150 {
        let rules = match i % 5 {
            0 => json!({"deny_if": [{"path": "args.id", "op": "regex", "value": "\\.\\./|/etc/"}]}),
            1 => {
                json!({"schema": {"type": "object", "properties": {"id": {"type": "string", "maxLength": 64}}}})
            }
            _ => json!({}),
        };
        tools.insert(format!("tool_{i:03}"), rules);
    }
    tools.insert(
        "tool_042".into(),
        json!({
            "deny_if": [{"path": "args.id", "op": "regex", "value": "\\.\\./|/etc/"}],
            "limits": [{"counter": "tool_042", "window": "minute", "max": 1e12, "scope": "grant"}]
        }),
    );
    tools.insert("delete_*".into(), json!({"action": "deny"}));
    json!({
        "version": "1",
        "default": "deny",
        "hide": ["secret_*"],
        "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 1e12, "scope": "grant"}]},
        "tools": tools
    })
}

/// An MCP session on `target`: its id (none for a stateless server).
async fn initialize(client: &HttpClient, target: &Target) -> Result<Option<String>, String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "toolgate-load", "version": "1"}}});
    let response = client
        .request(request(target, None, &init)?)
        .await
        .map_err(|e| format!("initialize {}: {e}", target.url))?;
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = response.into_body().collect().await;
    if !status.is_success() {
        return Err(format!("initialize {}: HTTP {status}", target.url));
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = client
        .request(request(target, session.as_deref(), &initialized)?)
        .await
        .map_err(|e| format!("initialized {}: {e}", target.url))?;
    let _ = response.into_body().collect().await;
    Ok(session)
}

fn request(
    target: &Target,
    session: Option<&str>,
    body: &Value,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&target.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(token) = target.token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())
}

/// One `tools/call`, its answer read whole; fails unless it was answered with a result.
async fn call(
    client: &HttpClient,
    target: &Target,
    session: Option<&str>,
    id: u64,
) -> Result<(), String> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": target.tool, "arguments": {"id": "item-42"}}});
    let response = client
        .request(request(target, session, &body)?)
        .await
        .map_err(|e| format!("tools/call {}: {e}", target.url))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    if !status.is_success() || !text.contains("\"result\"") || text.contains("\"isError\":true") {
        return Err(format!("tools/call {}: HTTP {status}: {text}", target.url));
    }
    Ok(())
}

async fn measure(
    client: &HttpClient,
    target: &Target,
    gateway: Option<&Gateway>,
    args: &Args,
) -> Result<Figures, String> {
    let session = initialize(client, target).await?;
    for i in 0..200 {
        call(client, target, session.as_deref(), i).await?;
    }
    let mut figures = Figures::default();
    // Saturation: closed loop.
    let cpu_before = gateway.map(Gateway::cpu_seconds).transpose()?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, target, session, done) = (
            client.clone(),
            target.clone(),
            session.clone(),
            Arc::clone(&done),
        );
        workers.push(tokio::spawn(async move {
            let mut id = (w as u64) << 32;
            while Instant::now() < deadline {
                id += 1;
                call(&client, &target, session.as_deref(), id).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    let calls = done.load(Ordering::Relaxed) as f64;
    figures.saturation = calls / started.elapsed().as_secs_f64();
    if let (Some(gateway), Some(before)) = (gateway, cpu_before) {
        figures.cpu_per_1000 = Some((gateway.cpu_seconds()? - before) / calls * 1000.0);
    }
    // Fixed offered rates: open loop, each call timed from when it was due.
    for &rate in &args.rates {
        let total = (rate as f64 * args.seconds).max(1.0) as u64;
        let start = tokio::time::Instant::now() + Duration::from_millis(20);
        let mut calls = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let (client, target, session) = (client.clone(), target.clone(), session.clone());
            calls.push(tokio::spawn(async move {
                tokio::time::sleep_until(due).await;
                // Timed from the send, not from `due`: tokio's timer wakes up to a
                // millisecond late, which is the load generator's lag, not the path's.
                // Calls do not wait for each other, so a slow answer still cannot hold
                // back the calls behind it.
                let sent = Instant::now();
                call(&client, &target, session.as_deref(), (1 << 40) + i).await?;
                Ok::<f64, String>(sent.elapsed().as_secs_f64() * 1e6)
            }));
        }
        let mut latencies = Vec::with_capacity(calls.len());
        for c in calls {
            latencies.push(c.await.map_err(|e| e.to_string())??);
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        figures.latency.push((rate, at(0.5), at(0.9), at(0.99)));
    }
    Ok(figures)
}

/// Median time (µs) to the first byte of a streamed answer.
async fn ttfb(client: &HttpClient, target: &Target, args: &Args) -> Result<f64, String> {
    let session = initialize(client, target).await?;
    let rounds = if args.smoke { 20 } else { 500 };
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                          "params": {"name": target.tool, "arguments": {"id": "item-42"}}});
        let sent = Instant::now();
        let response = client
            .request(request(target, session.as_deref(), &body)?)
            .await
            .map_err(|e| format!("tools/call {}: {e}", target.url))?;
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(format!("{} did not answer with an SSE stream", target.url));
        }
        let mut body = response.into_body();
        let _first = body.frame().await;
        times.push(sent.elapsed().as_secs_f64() * 1e6);
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| e.to_string())?;
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Opens `n` sessions (and leaves them open).
async fn open_sessions(client: &HttpClient, target: &Target, n: usize) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, target, next) = (client.clone(), target.clone(), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                initialize(&client, &target).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// What the machine is, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    rows: &[Row],
    idle_kib: u64,
    before_sessions_kib: u64,
    with_sessions_kib: u64,
    peak_kib: u64,
    ttfb_direct: f64,
    ttfb_gateway: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Generated by `toolgate-load{}` on {} ({} s per measurement, {} callers at saturation; each figure the median of {} rounds, the paths taking turns). Load generator, fast upstream and gateway share the machine.\n",
        if args.smoke { " --smoke" } else { "" },
        machine(),
        args.seconds,
        args.concurrency,
        args.rounds
    );
    let _ = write!(
        out,
        "| path | calls/s at saturation | vs direct (same answer mode) | CPU s per 1000 calls |"
    );
    for (rate, ..) in &rows[0].figures.latency {
        let _ = write!(out, " p50 / p90 / p99 at {rate}/s (µs) |");
    }
    let _ = write!(out, "\n|---|---|---|---|");
    for _ in &rows[0].figures.latency {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for row in rows {
        let figures = &row.figures;
        let _ = write!(
            out,
            "| {} | {:.0} | {:.2} | {} |",
            row.label,
            figures.saturation,
            figures.saturation / rows[row.baseline].figures.saturation,
            figures
                .cpu_per_1000
                .map_or("—".to_owned(), |c| format!("{c:.3}"))
        );
        for (_, p50, p90, p99) in &figures.latency {
            let _ = write!(out, " {p50:.0} / {p90:.0} / {p99:.0} |");
        }
        out.push('\n');
    }
    // Added latency: every path against the direct one; the gateway's JSON rows also against
    // the relay, the floor of any proxy process here.
    let relay = rows.iter().position(|r| r.label.starts_with("(r)"));
    for (index, row) in rows.iter().enumerate() {
        if row.baseline == index {
            continue;
        }
        let mut against = vec![(row.baseline, "the direct path")];
        if let Some(relay) = relay.filter(|&r| r != index && rows[r].baseline == row.baseline) {
            against.push((relay, "the plain relay"));
        }
        for (other, name) in against {
            let _ = write!(out, "\n{} adds to {name}:", row.label);
            for ((rate, p50, _, p99), (_, o50, _, o99)) in
                row.figures.latency.iter().zip(&rows[other].figures.latency)
            {
                let _ = write!(
                    out,
                    " {:.0} µs at p50 and {:.0} µs at p99 at {rate}/s;",
                    p50 - o50,
                    p99 - o99
                );
            }
            out.pop();
            out.push_str(".\n");
        }
    }
    let _ = writeln!(
        out,
        "\nGateway (c) memory: {:.1} MB idle, {:.1} MB peak under load, {:.1} MB with {} more sessions open (from {:.1} MB).",
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        with_sessions_kib as f64 / 1024.0,
        args.sessions,
        before_sessions_kib as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "\nTime to the first byte of an SSE answer (median): {ttfb_direct:.0} µs direct, {ttfb_gateway:.0} µs through (c): {:+.0} µs.",
        ttfb_gateway - ttfb_direct
    );
    out
}

/// Replaces what is between the markers in `path` with `report` (appends the markers if
/// the file has none).
fn write_into(path: &Path, report: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n{report}{END}");
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(path, updated).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
