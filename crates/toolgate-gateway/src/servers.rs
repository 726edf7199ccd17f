//! The servers in force (`[servers]`), swapped whole when a live reload changes them.
//!
//! A reload compares each server's new configuration with the running one and disturbs
//! as little as it can:
//! - **unchanged**: kept as it is;
//! - **`shadow` or `fail_open` changed** (or, for an HTTP server, anything but its URL):
//!   the connection is kept — the same child process, the same upstream sessions — and the
//!   new settings apply from the next request;
//! - **a stdio server's command, arguments, environment, timeout or message limit
//!   changed**: a new child is started beside the old one, which finishes the calls it has
//!   in flight (up to the server's timeout) and is then stopped. Client sessions stay, as
//!   after a crash of the child, and are sent `notifications/tools/list_changed`, since the
//!   new program may serve other tools;
//! - **an HTTP server's URL changed**: it is another upstream, which knows none of the
//!   sessions opened at the old one. They are ended (the old upstream is sent their
//!   DELETE), so each client gets `404` on its next request and initializes again, as MCP
//!   prescribes for a lost session;
//! - **removed**: its sessions end the same way and its child is stopped; requests to it
//!   are answered `404` like any unknown server;
//! - **added**: started, and usable from the next request.
//!
//! Counters are keyed by counter name, and metrics and pins by server name, so all three
//! carry over. Nothing is swapped unless every new server could be built: a reload that
//! names an unusable server changes none.

use crate::catalogue::Catalogue;
use crate::config::{ServerSpec, UpstreamSpec};
use crate::http_upstream::HttpUpstream;
use crate::metrics::ServerMetrics;
use crate::pins::Pins;
use crate::session::Sessions;
use crate::stdio_upstream::StdioUpstream;
use crate::{Server, Upstream};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The servers by name, as a snapshot: a request keeps the server it started with even if
/// a reload replaces it meanwhile.
pub(crate) type ServerMap = HashMap<String, Arc<Server>>;

/// What a reload did to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerChange {
    /// Newly configured.
    Added(String),
    /// No longer configured: its sessions ended, its child stopped.
    Removed(String),
    /// Settings changed, connection and sessions kept.
    Adjusted(String),
    /// A new connection (a new child, or a new HTTP upstream at the same URL); sessions kept.
    Reconnected(String),
    /// Its URL changed: a new upstream, and the sessions at the old one ended.
    Moved(String),
}

impl ServerChange {
    /// The server's name.
    pub(crate) fn name(&self) -> &str {
        match self {
            ServerChange::Added(n)
            | ServerChange::Removed(n)
            | ServerChange::Adjusted(n)
            | ServerChange::Reconnected(n)
            | ServerChange::Moved(n) => n,
        }
    }

    /// One word for logs and the admin stream.
    pub(crate) fn what(&self) -> &'static str {
        match self {
            ServerChange::Added(_) => "added",
            ServerChange::Removed(_) => "removed",
            ServerChange::Adjusted(_) => "adjusted",
            ServerChange::Reconnected(_) => "reconnected",
            ServerChange::Moved(_) => "moved",
        }
    }
}

/// The servers in force, and what starting and stopping them needs.
pub(crate) struct ServerTable {
    /// The servers in force.
    live: RwLock<Arc<ServerMap>>,
    /// Tool pins, shared by every catalogue.
    pins: Arc<Pins>,
    /// Client sessions: stdio upstreams route notifications to them; a moved or removed
    /// server's are ended.
    sessions: Arc<Sessions>,
    /// The gateway's shutdown, which stops every child.
    shutdown: watch::Receiver<bool>,
    /// The stdio supervisors started so far, awaited at shutdown so children stop cleanly.
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ServerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.all().keys().cloned().collect();
        names.sort();
        f.debug_struct("ServerTable")
            .field("servers", &names)
            .finish_non_exhaustive()
    }
}

/// How a server's new configuration relates to its running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    /// Identical.
    Same,
    /// The running connection serves the new settings.
    SameConnection,
    /// A new connection is needed; the upstream's sessions remain valid.
    NewConnection,
    /// Another upstream altogether (an HTTP URL changed).
    Elsewhere,
}

fn relation(running: &ServerSpec, fresh: &ServerSpec) -> Relation {
    if running == fresh {
        return Relation::Same;
    }
    let limits_same =
        running.timeout == fresh.timeout && running.max_message_bytes == fresh.max_message_bytes;
    match (&running.upstream, &fresh.upstream) {
        (UpstreamSpec::Http { url: a, .. }, UpstreamSpec::Http { url: b, .. }) if a != b => {
            Relation::Elsewhere
        }
        (a, b) if a == b && limits_same => Relation::SameConnection,
        (UpstreamSpec::Http { .. }, UpstreamSpec::Http { .. }) => Relation::NewConnection,
        (UpstreamSpec::Stdio { .. }, UpstreamSpec::Stdio { .. }) => Relation::NewConnection,
        // A transport change is another upstream too.
        _ => Relation::Elsewhere,
    }
}

impl ServerTable {
    /// Builds and starts `specs`.
    pub(crate) fn start(
        specs: &[ServerSpec],
        pins: Arc<Pins>,
        sessions: Arc<Sessions>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ServerTable, String> {
        let table = ServerTable {
            live: RwLock::new(Arc::new(HashMap::new())),
            pins,
            sessions,
            shutdown,
            supervisors: Mutex::new(Vec::new()),
        };
        let mut map = HashMap::new();
        for spec in specs {
            let server = table.build(spec, None)?;
            table.launch(&server);
            map.insert(spec.name.clone(), server);
        }
        *table.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(table)
    }

    /// The server named `name`, if one is in force.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Server>> {
        self.all().get(name).cloned()
    }

    /// Whether a server named `name` is in force.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.all().contains_key(name)
    }

    /// Every server in force.
    pub(crate) fn all(&self) -> Arc<ServerMap> {
        Arc::clone(&self.live.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The names of the servers in force, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.all().keys().cloned().collect();
        names.sort();
        names
    }

    /// A server for `spec`, built anew or from what `running` has that still serves it.
    /// Nothing is started here (see [`launch`](Self::launch)).
    fn build(
        &self,
        spec: &ServerSpec,
        running: Option<(&Arc<Server>, Relation)>,
    ) -> Result<Arc<Server>, String> {
        let metrics = running.map_or_else(
            || Arc::new(ServerMetrics::new(&spec.name)),
            |(old, _)| Arc::clone(&old.metrics),
        );
        if let Some((old, Relation::SameConnection)) = running {
            if let Upstream::Stdio(up) = &old.upstream {
                // The child keeps running: nothing it was started with changed.
                return Ok(Arc::new(Server {
                    spec: spec.clone(),
                    upstream: Upstream::Stdio(Arc::clone(up)),
                    catalogue: Arc::clone(&old.catalogue),
                    metrics,
                    stop: old.stop.clone(),
                }));
            }
        }
        let (upstream, stop) = match &spec.upstream {
            // An HTTP upstream is a client and a pool: a new one with the new settings
            // costs nothing, and the upstream's sessions do not notice.
            UpstreamSpec::Http { .. } => (Upstream::Http(Arc::new(HttpUpstream::new(spec)?)), None),
            UpstreamSpec::Stdio { .. } => (
                Upstream::Stdio(StdioUpstream::new(spec, Arc::clone(&self.sessions))?),
                Some(Arc::new(watch::channel(false).0)),
            ),
        };
        // The same HTTP endpoint serves the same tools; a new program may serve others.
        let catalogue = match running {
            Some((old, relation))
                if relation != Relation::Elsewhere && matches!(upstream, Upstream::Http(_)) =>
            {
                Arc::clone(&old.catalogue)
            }
            _ => Arc::new(Catalogue::new(&spec.name, Arc::clone(&self.pins))),
        };
        Ok(Arc::new(Server {
            spec: spec.clone(),
            upstream,
            catalogue,
            metrics,
            stop,
        }))
    }

    /// Starts what `server` runs, if it is new: a stdio child under supervision, stopped by
    /// the server's own switch or the gateway's shutdown.
    fn launch(&self, server: &Arc<Server>) {
        let (Upstream::Stdio(up), Some(stop)) = (&server.upstream, &server.stop) else {
            return;
        };
        // Subscribed before the link below runs: it ends when no receiver is left.
        let stopped = stop.subscribe();
        let mut gateway = self.shutdown.clone();
        let link = Arc::clone(stop);
        tokio::spawn(async move {
            tokio::select! {
                _ = crate::stopped(&mut gateway) => { link.send_replace(true); }
                _ = link.closed() => {}
            }
        });
        let supervisor = tokio::spawn(Arc::clone(up).supervise(stopped));
        self.supervisors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(supervisor);
        let mut changed = up.tools_changed.subscribe();
        let catalogue = Arc::clone(&server.catalogue);
        tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                catalogue.invalidate();
            }
        });
    }

    /// Puts `specs` in force (a live reload): what changed, or every reason the new servers
    /// could not be built (then nothing changed).
    pub(crate) fn replace(&self, specs: &[ServerSpec]) -> Result<Vec<ServerChange>, Vec<String>> {
        let running = self.all();
        let mut fresh = HashMap::new();
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for spec in specs {
            let old = running.get(&spec.name);
            let relation = old.map(|old| relation(&old.spec, spec));
            if relation == Some(Relation::Same) {
                fresh.insert(spec.name.clone(), Arc::clone(old.expect("compared")));
                continue;
            }
            match self.build(spec, old.zip(relation)) {
                Ok(server) => {
                    let name = spec.name.clone();
                    changes.push(match relation {
                        None => ServerChange::Added(name.clone()),
                        Some(Relation::SameConnection) => ServerChange::Adjusted(name.clone()),
                        Some(Relation::Elsewhere) => ServerChange::Moved(name.clone()),
                        Some(_) => ServerChange::Reconnected(name.clone()),
                    });
                    fresh.insert(name, server);
                }
                Err(e) => errors.push(format!("servers.{}: {e}", spec.name)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let gone: BTreeSet<&String> = running
            .keys()
            .filter(|name| !fresh.contains_key(*name))
            .collect();
        changes.extend(gone.iter().map(|n| ServerChange::Removed((*n).clone())));
        if changes.is_empty() {
            return Ok(changes);
        }
        for server in fresh.values() {
            let new = running
                .get(&server.spec.name)
                .is_none_or(|old| !same_stop(old, server));
            if new {
                self.launch(server);
            }
        }
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        let notice =
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        for change in &changes {
            let Some(old) = running.get(change.name()) else {
                continue;
            };
            match change {
                ServerChange::Added(_) | ServerChange::Adjusted(_) => {}
                ServerChange::Reconnected(name) => {
                    retire(old);
                    if matches!(old.upstream, Upstream::Stdio(_)) {
                        for session in self.sessions.on_server(name) {
                            session.notify(&notice);
                        }
                    }
                }
                ServerChange::Moved(_) | ServerChange::Removed(_) => {
                    self.end_sessions(old);
                    retire(old);
                }
            }
        }
        Ok(changes)
    }

    /// Ends every session on `server` (moved or removed): forgotten here, and the upstream
    /// sessions behind them deleted at the old upstream.
    fn end_sessions(&self, server: &Arc<Server>) {
        let sessions = self.sessions.on_server(&server.spec.name);
        if sessions.is_empty() {
            return;
        }
        tracing::info!(server = %server.spec.name, sessions = sessions.len(), "ending the sessions of a server moved or removed by a reload");
        for session in sessions {
            self.sessions.remove(&session.id);
            server.end_upstream_session(&session);
        }
    }

    /// Waits for every stdio supervisor to finish (after the gateway's shutdown).
    pub(crate) async fn stopped(&self) {
        let supervisors: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(|e| e.into_inner()));
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
    }
}

/// Whether two servers share one stdio child (its stop switch).
fn same_stop(a: &Server, b: &Server) -> bool {
    match (&a.stop, &b.stop) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// How often a retiring child is asked whether its calls are done.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Stops a replaced server's stdio child once the calls in flight on it are answered, or
/// its timeout has passed (calls still running then are answered with an error naming the
/// server, as when a child exits).
fn retire(old: &Arc<Server>) {
    let (Upstream::Stdio(up), Some(stop)) = (&old.upstream, &old.stop) else {
        return;
    };
    let (up, stop, limit) = (Arc::clone(up), Arc::clone(stop), old.spec.timeout);
    tokio::spawn(async move {
        let began = Instant::now();
        while up.in_flight() > 0 && began.elapsed() < limit {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        tracing::info!(server = %up.name(), "stopping the child a reload replaced");
        stop.send_replace(true);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> ServerSpec {
        ServerSpec {
            name: "s".into(),
            upstream: UpstreamSpec::Http {
                url: url.into(),
                headers: vec![],
                ca_file: None,
                connect_timeout: Duration::from_secs(5),
            },
            timeout: Duration::from_secs(60),
            shadow: false,
            fail_open: false,
            max_message_bytes: 1 << 20,
        }
    }

    fn stdio(command: &str) -> ServerSpec {
        ServerSpec {
            upstream: UpstreamSpec::Stdio {
                command: command.into(),
                args: vec![],
                env: vec![],
            },
            ..http("")
        }
    }

    #[test]
    fn relations_follow_what_the_connection_depends_on() {
        let a = http("http://a/mcp");
        assert_eq!(relation(&a, &a.clone()), Relation::Same);
        let shadowed = ServerSpec {
            shadow: true,
            fail_open: true,
            ..a.clone()
        };
        assert_eq!(relation(&a, &shadowed), Relation::SameConnection);
        let slower = ServerSpec {
            timeout: Duration::from_secs(5),
            ..a.clone()
        };
        assert_eq!(relation(&a, &slower), Relation::NewConnection);
        let mut keyed = a.clone();
        if let UpstreamSpec::Http { headers, .. } = &mut keyed.upstream {
            headers.push(("X-Api-Key".into(), "new".into()));
        }
        assert_eq!(relation(&a, &keyed), Relation::NewConnection);
        assert_eq!(relation(&a, &http("http://b/mcp")), Relation::Elsewhere);
        assert_eq!(relation(&a, &stdio("server")), Relation::Elsewhere);

        let p = stdio("server");
        assert_eq!(
            relation(
                &p,
                &ServerSpec {
                    shadow: true,
                    ..p.clone()
                }
            ),
            Relation::SameConnection
        );
        assert_eq!(relation(&p, &slower_stdio(&p)), Relation::NewConnection);
        assert_eq!(relation(&p, &stdio("other")), Relation::NewConnection);
    }

    fn slower_stdio(p: &ServerSpec) -> ServerSpec {
        ServerSpec {
            timeout: Duration::from_secs(1),
            ..p.clone()
        }
    }
}
