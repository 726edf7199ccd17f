//! The running toolgate service.
//!
//! A request travels one straight line: [`front`] (transport limits, Host/Origin, routing)
//! → [`grants`] (who is calling) → [`proxy`] (session, policy decision, forwarding) →
//! [`http_upstream`] or [`stdio_upstream`] → the answer ([`answer`] when the gateway
//! answers itself). Errors are [`error::GatewayError`] values, classified once where the
//! request is answered.
#![forbid(unsafe_code)]

mod admin;
pub mod answer;
mod approval_state;
pub mod approvals;
mod audit;
pub mod body;
pub mod bridge;
pub mod catalogue;
mod concurrency;
pub mod config;
mod dashboard;
pub mod error;
pub mod front;
pub mod grant_admin;
pub mod grants;
pub mod http_upstream;
mod inband;
mod metrics;
mod modern;
pub mod oauth;
pub mod pins;
mod proxy;
pub mod quota;
mod reload;
pub mod scan;
mod servers;
pub mod session;
mod signed;
pub mod stdio_upstream;
mod telemetry;
mod throttle;
pub mod time;
pub mod webhook;

use crate::catalogue::Catalogue;
use crate::config::{ServerSpec, Settings};
use crate::grants::Grants;
use crate::http_upstream::HttpUpstream;
use crate::session::Sessions;
use crate::stdio_upstream::StdioUpstream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use toolgate_store::EmbeddedStore;

/// Where the state that gateways and the CLI share lives — minted grants, tool pins,
/// approval requests: the embedded store, or in cluster mode PostgreSQL, shared by every
/// replica.
#[derive(Debug, Clone)]
pub enum SharedStore {
    /// `data_dir`'s SQLite.
    Embedded(Arc<EmbeddedStore>),
    /// The cluster's PostgreSQL.
    Postgres(Arc<toolgate_store::PostgresAuditLog>),
}

/// Runs a synchronous (embedded) store operation off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, toolgate_store::StoreError> + Send + 'static,
) -> Result<T, toolgate_store::StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(toolgate_store::StoreError {
            message: format!("a store task failed: {e}"),
        })
    })
}

/// How a server is reached.
#[derive(Debug)]
pub enum Upstream {
    /// Streamable HTTP.
    Http(Arc<HttpUpstream>),
    /// A supervised child process.
    Stdio(Arc<StdioUpstream>),
}

impl Upstream {
    /// Whether it can take calls now: a stdio child is running (an HTTP upstream is reached
    /// per call, so it always can, as far as the gateway knows beforehand).
    pub fn is_ready(&self) -> bool {
        match self {
            Upstream::Stdio(up) => up.is_ready(),
            Upstream::Http(_) => true,
        }
    }

    /// The upstream's complete tool list (every page), asked on the gateway's own behalf.
    pub async fn fetch_tools(&self) -> Result<Vec<serde_json::Value>, error::GatewayError> {
        match self {
            Upstream::Http(up) => up.fetch_tools().await,
            Upstream::Stdio(up) => up.fetch_tools().await,
        }
    }
}

/// One registered server at run time.
#[derive(Debug)]
pub struct Server {
    /// Its configuration.
    pub spec: ServerSpec,
    /// Its connection.
    pub upstream: Upstream,
    /// Its tools, reviewed against their pins (kept by a reload that keeps the upstream).
    pub catalogue: Arc<Catalogue>,
    /// What `/metrics` says of it (kept by every reload that keeps the server).
    pub(crate) metrics: Arc<metrics::ServerMetrics>,
    /// Stops its stdio child (none for HTTP): shared by the servers a reload builds around
    /// the same running child.
    stop: Option<Arc<watch::Sender<bool>>>,
}

impl Server {
    /// Ends, in the background, the upstream's own session behind a client `session` that
    /// the gateway closed (HTTP upstreams; a stdio child has no sessions of its own).
    pub(crate) fn end_upstream_session(&self, session: &session::Session) {
        if let (Upstream::Http(up), Some(upstream_session)) =
            (&self.upstream, &session.upstream_session)
        {
            let (up, upstream_session) = (Arc::clone(up), upstream_session.clone());
            tokio::spawn(async move { up.end_session(&upstream_session).await });
        }
    }
}

/// The gateway's shared state.
pub struct Gateway {
    /// The settings the gateway started with. What a live reload changes — servers, grants,
    /// admin tokens — is in force in `servers`, `grants` and `admins`, not here.
    pub settings: Arc<Settings>,
    /// Where minted grants live (the embedded store, or PostgreSQL in cluster mode).
    grant_store: SharedStore,
    /// Where the admin API reads the audit log (none for a log a benchmark supplied).
    audit_reader: Option<AuditStore>,
    /// Grants by token.
    grants: Grants,
    /// Slows down addresses that keep failing to authenticate.
    auth_throttle: throttle::AuthThrottle,
    /// OAuth resource-server mode, when configured.
    oauth: Option<oauth::Validator>,
    /// The servers in force.
    servers: Arc<servers::ServerTable>,
    /// Client sessions.
    sessions: Arc<Sessions>,
    /// Where limits are counted.
    counters: Arc<dyn toolgate_store::CounterStore>,
    /// Where every request is recorded.
    auditor: Arc<audit::Auditor>,
    /// The embedded store, when it holds both the counters and the audit log: then a
    /// rate-limited call's reservation and record share one commit.
    ledger: Option<Arc<EmbeddedStore>>,
    /// Requests for human approval of held calls.
    approvals: approvals::Approvals,
    /// Signs the state of approvals asked in-band in protocol 2026-07-28.
    approval_state: approval_state::StateKey,
    /// Each caller's running calls (`[gateway] max_concurrent_calls`).
    running: concurrency::Concurrency,
    /// Gateway-wide metrics (`/metrics`); per-server ones are in each [`Server`].
    metrics: Arc<metrics::Metrics>,
    /// Cluster mode's counter store, asked by `/readyz`.
    redis: Option<Arc<toolgate_store::RedisCounterStore>>,
    /// The admin tokens in force (`[admin]`; swapped whole by a live reload).
    admins: std::sync::RwLock<Arc<Vec<config::AdminSpec>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.settings.listen)
            .field("servers", &self.servers.names())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The servers and configured grants in force, which a grant minted or changed through
    /// the admin API is checked against.
    pub(crate) fn in_force(&self) -> grant_admin::InForce {
        grant_admin::InForce {
            servers: self.servers.names(),
            configured_grants: self
                .grants
                .configured()
                .iter()
                .map(|g| g.name.clone())
                .collect(),
        }
    }

    /// The admin tokens in force.
    pub(crate) fn admins(&self) -> Arc<Vec<config::AdminSpec>> {
        Arc::clone(&self.admins.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `admins` in force (a live reload); whether they differ from those before.
    pub(crate) fn replace_admins(&self, admins: Vec<config::AdminSpec>) -> bool {
        let mut current = self.admins.write().unwrap_or_else(|e| e.into_inner());
        if **current == admins {
            return false;
        }
        *current = Arc::new(admins);
        true
    }

    /// What `/readyz` says: whether the gateway can serve calls now — every stdio upstream
    /// running, the audit log writable, the counter store answering — with one line per
    /// check. The cluster stores are asked (a PING, a `SELECT 1`), so readiness comes back
    /// by itself when they do, with or without traffic; the embedded store's state is its
    /// last write's.
    pub(crate) async fn readiness(&self) -> (bool, String) {
        const ASK_WITHIN: Duration = Duration::from_secs(2);
        let mut ready = true;
        let mut report = String::new();
        let mut line = |ok: bool, what: String| {
            ready &= ok;
            report.push_str(&what);
            report.push('\n');
        };
        let servers = self.servers.all();
        for name in self.servers.names() {
            if let Some(Upstream::Stdio(up)) = servers.get(&name).map(|s| &s.upstream) {
                let ok = up.is_ready();
                line(
                    ok,
                    format!(
                        "upstream {name}: {}",
                        if ok {
                            "running"
                        } else {
                            "not running (starting or restarting)"
                        }
                    ),
                );
            }
        }
        let audit = match &self.audit_reader {
            Some(AuditStore::Postgres(log)) => ask(ASK_WITHIN, log.ping()).await,
            _ if self.metrics.audit_failing() => Err("the last write failed".to_owned()),
            _ => Ok(()),
        };
        line(
            audit.is_ok(),
            format!("audit log: {}", audit.err().unwrap_or_else(|| "ok".into())),
        );
        let counters = match &self.redis {
            Some(redis) => ask(ASK_WITHIN, redis.ping()).await,
            None => Ok(()),
        };
        line(
            counters.is_ok(),
            format!(
                "counter store: {}",
                counters.err().unwrap_or_else(|| "ok".into())
            ),
        );
        (ready, report)
    }
}

/// `check`'s answer within `limit`, its error as text.
async fn ask(
    limit: Duration,
    check: impl std::future::Future<Output = Result<(), toolgate_store::StoreError>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
    }
}

/// A started gateway.
pub struct Running {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// Turns true to stop.
    shutdown: watch::Sender<bool>,
    /// The server and upstream supervisor tasks.
    tasks: Vec<JoinHandle<()>>,
    /// Flushed last.
    auditor: Arc<audit::Auditor>,
    /// Wakes the reloader (SIGHUP).
    reload_now: Arc<tokio::sync::Notify>,
    /// Whose stdio children are awaited at shutdown.
    servers: Arc<servers::ServerTable>,
}

impl Running {
    /// Reads the configuration and policy files again now (SIGHUP), as the reloader does by
    /// itself when one of them changes; see [`reload`](crate::reload).
    pub fn reload(&self) {
        self.reload_now.notify_one();
    }

    /// Has every stdio child sent `signal` when it is stopped (then its input is closed):
    /// `toolgate stdio` passes on the signal that stops it.
    pub fn stop_children_with(&self, signal: stdio_upstream::StopSignal) {
        for server in self.servers.all().values() {
            if let Upstream::Stdio(up) = &server.upstream {
                up.stop_with(signal);
            }
        }
    }

    /// [`shutdown`](Self::shutdown), then how the stdio child of `server` exited (none for
    /// an HTTP server, or a child that never started).
    pub async fn shutdown_reporting_exit(self, server: &str) -> Option<std::process::ExitStatus> {
        let server = self.servers.get(server);
        self.shutdown().await;
        match &server?.upstream {
            Upstream::Stdio(up) => up.last_exit(),
            Upstream::Http(_) => None,
        }
    }

    /// Stops accepting, drains in-flight requests, stops stdio children, and returns.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.servers.stopped().await;
        self.auditor.flush().await;
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone). The `watch::Ref` that
/// `wait_for` returns is dropped here so callers' futures stay `Send`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Closes idle sessions now and then; for HTTP upstreams the upstream session is ended too,
/// so abandoned clients do not pin resources on either side.
async fn expire_sessions(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let limit = gateway.settings.session_idle_timeout;
    let period = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped(&mut shutdown) => return,
        }
        for session in gateway.sessions.expire_idle(limit) {
            tracing::info!(session = %session.id, server = %session.server, "session closed after {} s idle", limit.as_secs());
            if let Some(server) = gateway.servers.get(&session.server) {
                server.end_upstream_session(&session);
            }
        }
    }
}

/// How long a queued audit outcome waits, at most, for a commit to carry it.
const AUDIT_FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Commits queued audit outcomes that no call's record carried along (what is left at
/// shutdown is committed by [`Running::shutdown`], once in-flight requests are drained).
async fn flush_audit(auditor: Arc<audit::Auditor>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(AUDIT_FLUSH_EVERY) => auditor.flush().await,
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// The store that holds the audit log: where retention pruning runs, and whether a call's
/// reservation can share its record's commit.
#[derive(Clone)]
enum AuditStore {
    /// The embedded store (pruned on a blocking thread: it is synchronous).
    Embedded(Arc<EmbeddedStore>),
    /// PostgreSQL (cluster mode).
    Postgres(Arc<toolgate_store::PostgresAuditLog>),
}

/// Prunes audit records older than `days`, at start and then hourly.
async fn prune_audit(target: AuditStore, days: u32, mut shutdown: watch::Receiver<bool>) {
    loop {
        let cutoff = time::format_rfc3339_ms(time::now_unix_ms() - i64::from(days) * 86_400_000);
        let pruned = match &target {
            AuditStore::Embedded(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.audit_prune(&cutoff))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            AuditStore::Postgres(log) => log.audit_prune(&cutoff).await.map_err(|e| e.to_string()),
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target: "toolgate::audit", "pruned {n} audit entries older than {days} days")
            }
            Err(e) => tracing::error!(target: "toolgate::audit", "audit pruning failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Records in the audit log's admin stream that the configuration at `config` was
/// rejected with `errors` — if `data_dir` already holds a store (a typo in a path must not
/// leave a new, empty store behind). Returns whether it was recorded.
pub fn record_rejected_config(
    data_dir: &std::path::Path,
    config: &std::path::Path,
    errors: &[String],
) -> Result<bool, String> {
    if !data_dir.join("toolgate.db").is_file() {
        return Ok(false);
    }
    let store = EmbeddedStore::open(data_dir).map_err(|e| e.to_string())?;
    store
        .append_audit(&[audit::config_rejected(config, errors)])
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Stores to use instead of those the settings name: for benchmarks and tests that measure
/// or break one store on purpose.
#[derive(Default)]
pub struct StoreOverrides {
    /// Where audit entries go instead of the embedded store.
    pub audit: Option<Arc<dyn toolgate_store::AuditLog>>,
}

/// Binds the listener, starts stdio children and serves.
pub async fn start(settings: Settings) -> Result<Running, String> {
    start_with(settings, StoreOverrides::default()).await
}

/// [`start`], with some stores replaced.
pub async fn start_with(settings: Settings, overrides: StoreOverrides) -> Result<Running, String> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let store = Arc::new(EmbeddedStore::open(&settings.data_dir).map_err(|e| e.to_string())?);
    if settings.audit.fsync {
        store.fsync_every_commit().map_err(|e| e.to_string())?;
    }
    store
        .checkpoint_in_background(Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    tracing::info!(path = %store.path().display(), "embedded store open");
    // Cluster mode writes the audit log to PostgreSQL, one hash chain per replica.
    // The store that holds the log (and is pruned); none for a log the caller supplied.
    let (audit_log, log_store): (Arc<dyn toolgate_store::AuditLog>, Option<AuditStore>) =
        match (overrides.audit, &settings.postgres_url) {
            (Some(log), _) => (log, None),
            (None, Some(url)) => {
                // "process" durability asks no more of PostgreSQL than of SQLite: the entry
                // is in the database server's hands, not yet necessarily on its disk.
                let postgres = Arc::new(
                    toolgate_store::PostgresAuditLog::connect(url)
                        .map_err(|e| e.to_string())?
                        .with_synchronous_commit(settings.audit.fsync),
                );
                tracing::info!(store = ?postgres, "audit log in PostgreSQL (cluster mode)");
                (postgres.clone(), Some(AuditStore::Postgres(postgres)))
            }
            (None, None) => (
                store.clone(),
                Some(AuditStore::Embedded(Arc::clone(&store))),
            ),
        };
    let embedded_audit = matches!(log_store, Some(AuditStore::Embedded(_)));
    // What a killed predecessor left in the journal goes in first, ahead of this start's
    // entries; then this gateway journals its own (unless every record must reach the
    // disk, which the journal does not do: see toolgate-store's embedded/journal.rs).
    let recovered = store.recover_audit_journals().map_err(|e| e.to_string())?;
    if recovered > 0 {
        tracing::warn!(target: "toolgate::audit", "recovered {recovered} audit entries from the journal of a gateway that did not stop cleanly");
    }
    if !settings.exclusive_data_dir && settings.redis_url.is_none() {
        // Several `toolgate stdio` share the directory's counters through SQLite; none may
        // start beside a gateway that keeps them in memory, nor such a gateway beside them.
        store.share_counters().map_err(|e| e.to_string())?;
    }
    if embedded_audit && !settings.audit.fsync {
        store.journal_audit().map_err(|e| e.to_string())?;
        if settings.redis_url.is_none() && settings.exclusive_data_dir {
            // Counter reservations are journaled like the records they come with, so a
            // limited call commits nothing on its way; this gateway is then the only writer
            // of the directory's counters, and a second one on it does not start.
            store.own_counters().map_err(|e| e.to_string())?;
        }
    }
    let mut tasks = Vec::new();
    let metrics = Arc::new(metrics::Metrics::default());
    let tracer = match &settings.telemetry {
        Some(telemetry) => {
            let (tracer, exporting) = telemetry::Tracer::start(telemetry, shutdown_rx.clone())?;
            tasks.push(exporting);
            Some(Arc::new(tracer))
        }
        None => None,
    };
    let auditor = Arc::new(
        match &log_store {
            Some(AuditStore::Embedded(store)) => {
                audit::Auditor::embedded(Arc::clone(store), settings.audit.clone())
            }
            _ => audit::Auditor::new(audit_log, settings.audit.clone()),
        }
        .with_metrics(Arc::clone(&metrics))
        .with_tracer(tracer),
    );
    // A gateway that cannot audit does not start.
    auditor
        .write(&audit::policies_loaded(&settings.grants))
        .await
        .map_err(|e| e.message)?;
    tasks.push(tokio::spawn(flush_audit(
        Arc::clone(&auditor),
        shutdown_rx.clone(),
    )));
    if let (Some(days), Some(log_store)) = (settings.audit.retain_days, log_store.clone()) {
        tokio::spawn(prune_audit(log_store, days, shutdown_rx.clone()));
    }
    // Cluster mode keeps counters in Redis so that every replica enforces one budget;
    // otherwise they live beside the sessions in the embedded store.
    let ledger = (embedded_audit && settings.redis_url.is_none()).then(|| Arc::clone(&store));
    let redis = match &settings.redis_url {
        Some(url) => {
            let redis =
                toolgate_store::RedisCounterStore::connect(url).map_err(|e| e.to_string())?;
            tracing::info!(store = ?redis, "counters in Redis (cluster mode)");
            Some(Arc::new(redis))
        }
        None => None,
    };
    let counters: Arc<dyn toolgate_store::CounterStore> = match &redis {
        Some(redis) => Arc::clone(redis) as Arc<dyn toolgate_store::CounterStore>,
        None => store.clone(),
    };
    let grant_store = match (&settings.postgres_url, &log_store) {
        (Some(_), Some(AuditStore::Postgres(log))) => SharedStore::Postgres(Arc::clone(log)),
        (Some(url), _) => SharedStore::Postgres(Arc::new(
            toolgate_store::PostgresAuditLog::connect(url).map_err(|e| e.to_string())?,
        )),
        (None, _) => SharedStore::Embedded(Arc::clone(&store)),
    };
    // One key for every replica (and every process on a data directory), so that any of
    // them can check a state another issued.
    let state_secret = match &grant_store {
        SharedStore::Embedded(store) => {
            let store = Arc::clone(store);
            blocking(move || store.secret("approval-state")).await
        }
        SharedStore::Postgres(log) => log.secret("approval-state").await,
    }
    .map_err(|e| format!("cannot read the approval-state key: {e}"))?;
    let approval_state = approval_state::StateKey::new(&state_secret);
    let configured: std::collections::HashSet<String> =
        settings.servers.iter().map(|s| s.name.clone()).collect();
    let sessions = Sessions::restore(store.clone(), |record| configured.contains(&record.server));
    // Replicas serve each other's sessions: the id carries the session, signed with a key
    // they share (session.rs).
    let sessions = Arc::new(match &grant_store {
        SharedStore::Postgres(log) => {
            let secret = log
                .secret("session-ids")
                .await
                .map_err(|e| format!("cannot read the session-id key: {e}"))?;
            sessions.sealed(session::SessionSeal::new(&secret))
        }
        SharedStore::Embedded(_) => sessions,
    });
    // Grants minted with `toolgate grant` or the admin API live beside the audit log: in
    // the embedded store, or in cluster mode in PostgreSQL, shared by every replica.
    // Tool pins live with the grants: shared by every replica in cluster mode.
    let pins = Arc::new(
        pins::Pins::load(
            grant_store.clone(),
            settings.withhold_flagged,
            settings.withhold_new_tools,
        )
        .await?,
    );
    let servers = Arc::new(servers::ServerTable::start(
        &settings.servers,
        pins,
        Arc::clone(&sessions),
        shutdown_rx.clone(),
    )?);
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let grants = match &grant_store {
        SharedStore::Embedded(store) => {
            Grants::with_minted(settings.grants.clone(), Arc::clone(store)).await
        }
        SharedStore::Postgres(log) => {
            let watch = log.watch_grants();
            Grants::with_minted_in_postgres(settings.grants.clone(), Arc::clone(log), watch).await
        }
    }
    .map_err(|e| format!("cannot read the minted grants: {e}"))?;
    let oauth = match (&settings.oauth, &settings.public_url) {
        (Some(oauth), Some(public_url)) => {
            Some(oauth::Validator::new(oauth.clone(), public_url.clone())?)
        }
        _ => None,
    };
    // Approvals too: in cluster mode any replica honours an approval given through another.
    let mut approvals = approvals::Approvals::new(grant_store.clone());
    if let Some(hook) = &settings.approvals_webhook {
        approvals =
            approvals.announced(webhook::Webhook::start(hook)?, settings.public_url.clone());
    }
    let running = concurrency::Concurrency::new(settings.max_concurrent_calls);
    let admins = settings.admins.clone();
    let gateway = Arc::new(Gateway {
        oauth,
        settings: Arc::new(settings),
        grant_store,
        audit_reader: log_store,
        grants,
        auth_throttle: throttle::AuthThrottle::default(),
        servers,
        sessions,
        counters,
        auditor,
        ledger,
        approvals,
        approval_state,
        running,
        metrics,
        redis,
        admins: std::sync::RwLock::new(Arc::new(admins)),
    });
    tasks.push(tokio::spawn(expire_sessions(
        Arc::clone(&gateway),
        shutdown_rx.clone(),
    )));
    let reload_now = Arc::new(tokio::sync::Notify::new());
    tasks.push(tokio::spawn(
        reload::Reloader::new(Arc::clone(&gateway))
            .run(Arc::clone(&reload_now), shutdown_rx.clone()),
    ));
    let auditor = Arc::clone(&gateway.auditor);
    let servers = Arc::clone(&gateway.servers);
    tasks.push(tokio::spawn(front::serve(gateway, listener, shutdown_rx)));
    Ok(Running {
        local_addr,
        shutdown,
        tasks,
        auditor,
        reload_now,
        servers,
    })
}
