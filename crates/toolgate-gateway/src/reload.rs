//! Live reload (SPEC §3.6, §4): the configuration's grants and every policy file they name
//! are read again when one of those files changes, or at once on SIGHUP
//! ([`crate::Running::reload`]), and apply from the next request on. Sessions, counters and
//! in-flight calls are untouched: counters are keyed by counter name, not by policy
//! version, so a reloaded policy goes on counting where the old one was.
//!
//! A file that does not load never replaces what is in force: a broken policy file keeps
//! its old version (other files' changes still apply); a broken configuration keeps the old
//! grants and policies whole. Either way the errors go to the log and, as
//! `config_rejected`, to the audit log's admin stream. Every policy that did change is
//! recorded there as `policy_reloaded`, with the old and new version, and every session
//! whose visible tool set it changed is sent `notifications/tools/list_changed`.
//!
//! Servers ([`crate::servers`] says how each kind of change is carried out), grants,
//! policies and admin tokens reload, in that order, so that a grant can name a server the
//! same edit adds. What is bound when the gateway starts — the listener and its limits, the
//! stores, the audit, OAuth, catalogue, approvals and telemetry settings — is not: a change
//! to it is reported in the log and, as `restart_required`, in the admin stream, naming
//! each setting that waits for a restart.
//!
//! Files are watched by polling their size and modification time once a second: one
//! `stat` per file, no platform notification API, and it sees edits made by editors that
//! replace the file as well as by those that write it in place.

use crate::audit;
use crate::config::{self, Settings};
use crate::grants::{GrantSpec, PolicyRef};
use crate::Gateway;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};
use toolgate_store::audit::AdminEvent;
use toolgate_store::AuditEntry;

/// How often watched files are looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What a watched file looked like: enough to notice an edit without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Watches the files and applies what changed in them.
pub(crate) struct Reloader {
    gateway: Arc<Gateway>,
    /// The configuration file, when the gateway was started from one (none in quick mode,
    /// where the policy file alone is watched).
    config: Option<PathBuf>,
    /// Each watched file as it was when last read (`None`: it could not be read).
    seen: HashMap<PathBuf, Option<Stamp>>,
}

/// One grant's policy on one server, before and after a reload.
struct Change {
    grant: String,
    server: String,
    before: Option<PolicyRef>,
    after: Option<PolicyRef>,
}

impl Reloader {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Reloader {
        let config = gateway.settings.config_path.clone();
        let mut reloader = Reloader {
            gateway,
            config,
            seen: HashMap::new(),
        };
        reloader.seen = reloader.look();
        reloader
    }

    /// Every watched file as it is now.
    fn look(&self) -> HashMap<PathBuf, Option<Stamp>> {
        self.watched()
            .into_iter()
            .map(|path| {
                let now = stamp(&path);
                (path, now)
            })
            .collect()
    }

    /// Runs until `shutdown`: a look at the files every second, a reload whenever `now` is
    /// notified (SIGHUP).
    pub(crate) async fn run(mut self, now: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => false,
                _ = now.notified() => true,
                _ = crate::stopped(&mut shutdown) => return,
            };
            self.check(forced).await;
        }
    }

    /// The files a change of which reloads: the configuration and every policy file the
    /// configuration's grants name.
    fn watched(&self) -> BTreeSet<PathBuf> {
        let mut paths: BTreeSet<PathBuf> = self
            .gateway
            .grants
            .configured()
            .iter()
            .flat_map(|g| {
                g.policies
                    .values()
                    .map(|p| PathBuf::from(&p.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        paths.extend(self.config.iter().cloned());
        paths
    }

    /// Reloads if a watched file changed since it was last read, or if `forced`.
    async fn check(&mut self, forced: bool) {
        let now = self.look();
        let changed: BTreeSet<PathBuf> = now
            .iter()
            .filter(|(path, stamp)| forced || self.seen.get(*path) != Some(stamp))
            .map(|(path, _)| path.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        // Noted before reading: an edit landing while we read is seen at the next look.
        self.seen.extend(now);
        let current = self.gateway.grants.configured();
        let grants = match &self.config {
            Some(config) if changed.contains(config) => match self.read_config(config) {
                Some(settings) => {
                    if let Err(errors) = self.apply_servers(&settings) {
                        self.reject(config, &errors);
                        return;
                    }
                    self.apply_admins(settings.admins);
                    settings.grants
                }
                None => return,
            },
            _ => self.read_policies(&current, &changed),
        };
        self.apply(&current, grants).await;
        // Policy files a new configuration names are watched from now on.
        for path in self.watched() {
            self.seen
                .entry(path.clone())
                .or_insert_with(|| stamp(&path));
        }
    }

    /// The configuration read again, or `None` (logged and audited) if it does not load.
    fn read_config(&self, path: &Path) -> Option<Settings> {
        match config::load(path) {
            Ok(mut settings) => {
                settings.override_with(self.gateway.settings.overrides.clone());
                self.warn_about_restart_only_changes(path, &settings);
                Some(settings)
            }
            Err(errors) => {
                self.reject(path, &errors.0);
                None
            }
        }
    }

    /// The current grants with every policy read from a `changed` file replaced by its new
    /// version; a file that does not load keeps its old one.
    fn read_policies(
        &self,
        current: &[Arc<GrantSpec>],
        changed: &BTreeSet<PathBuf>,
    ) -> Vec<GrantSpec> {
        let mut loaded: HashMap<String, Option<PolicyRef>> = HashMap::new();
        current
            .iter()
            .map(|grant| {
                let mut grant = GrantSpec::clone(grant);
                for policy in grant.policies.values_mut() {
                    if !changed.contains(Path::new(&policy.id)) {
                        continue;
                    }
                    let fresh =
                        loaded.entry(policy.id.clone()).or_insert_with(
                            || match config::load_policy(Path::new(&policy.id)) {
                                Ok(fresh) => Some(fresh),
                                Err(errors) => {
                                    self.reject(Path::new(&policy.id), &errors);
                                    None
                                }
                            },
                        );
                    if let Some(fresh) = fresh {
                        *policy = PolicyRef {
                            id: policy.id.clone(),
                            ..fresh.clone()
                        };
                    }
                }
                grant
            })
            .collect()
    }

    /// Logs and audits why `path` was not taken.
    fn reject(&self, path: &Path, errors: &[String]) {
        tracing::error!(
            file = %path.display(),
            "reload rejected, what was in force stays in force:\n  {}",
            errors.join("\n  ")
        );
        self.gateway
            .auditor
            .record_admin(vec![audit::config_rejected(path, errors)]);
    }

    /// Puts `grants` in force if anything changed, and says what did.
    async fn apply(&self, current: &[Arc<GrantSpec>], grants: Vec<GrantSpec>) {
        let changes = changes(current, &grants);
        if changes.is_empty() {
            tracing::debug!("reload: no grant or policy changed");
            return;
        }
        self.gateway.grants.replace_configured(grants).await;
        let events = changes.iter().map(policy_reloaded).collect();
        self.gateway.auditor.record_admin(events);
        for change in &changes {
            tracing::info!(
                grant = %change.grant,
                server = %change.server,
                before = change.before.as_ref().map_or("none", |p| p.version.as_str()),
                after = change.after.as_ref().map_or("none", |p| p.version.as_str()),
                file = change.after.as_ref().or(change.before.as_ref()).map_or("", |p| p.id.as_str()),
                "policy reloaded"
            );
            self.announce(change);
        }
    }

    /// Sends `notifications/tools/list_changed` to the sessions of the change's grant on its
    /// server, if the tools they can see changed. What a policy shows is decided per tool
    /// name, over the tools the server listed last; before any listing, every session of
    /// the grant is told.
    fn announce(&self, change: &Change) {
        let Some(server) = self.gateway.servers.get(&change.server) else {
            return;
        };
        let visible = |policy: &Option<PolicyRef>, tool: &str| {
            policy.as_ref().is_some_and(|p| !p.policy.is_hidden(tool))
        };
        let tools = server.catalogue.known_tools();
        let differs = tools.is_empty()
            || tools
                .iter()
                .any(|tool| visible(&change.before, tool) != visible(&change.after, tool));
        if !differs {
            return;
        }
        let notice =
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let owner = format!("{}#", change.grant);
        for session in self.gateway.sessions.on_server(&change.server) {
            if session.grant == change.grant || session.grant.starts_with(&owner) {
                session.notify(&notice);
            }
        }
    }

    /// Puts the configuration's admin tokens in force, if they changed: recorded in the
    /// admin stream by holder and role (never a token or its hash).
    fn apply_admins(&self, admins: Vec<crate::config::AdminSpec>) {
        let holders: Vec<serde_json::Value> = admins
            .iter()
            .map(|a| serde_json::json!({"name": a.name, "role": a.role.as_str()}))
            .collect();
        if !self.gateway.replace_admins(admins) {
            return;
        }
        tracing::info!(holders = holders.len(), "admin tokens reloaded");
        self.record(
            "admin_tokens_reloaded",
            serde_json::json!({ "holders": holders }),
        );
    }

    /// Puts the configuration's servers in force: what changed is logged and recorded as
    /// `servers_reloaded`. Every reason a new server cannot be used, if any (then nothing
    /// changed).
    fn apply_servers(&self, fresh: &Settings) -> Result<(), Vec<String>> {
        let changes = self.gateway.servers.replace(&fresh.servers)?;
        if changes.is_empty() {
            return Ok(());
        }
        for change in &changes {
            tracing::info!(server = %change.name(), change = change.what(), "server reloaded");
        }
        let detail: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| serde_json::json!({"server": c.name(), "change": c.what()}))
            .collect();
        self.record("servers_reloaded", serde_json::json!({ "servers": detail }));
        Ok(())
    }

    /// Records `action` on the configuration file in the admin stream.
    fn record(&self, action: &str, detail: serde_json::Value) {
        let subject = self
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.gateway
            .auditor
            .record_admin(vec![AuditEntry::Admin(AdminEvent {
                ts: crate::time::format_rfc3339_ms(crate::time::now_unix_ms()),
                action: action.to_owned(),
                actor: "gateway".to_owned(),
                subject,
                detail,
            })]);
    }

    /// Settings a reload does not apply: logged and recorded as `restart_required` at each
    /// reload that finds them changed since the start.
    fn warn_about_restart_only_changes(&self, path: &Path, fresh: &Settings) {
        let waiting = restart_only_changes(&self.gateway.settings, fresh);
        if waiting.is_empty() {
            return;
        }
        tracing::warn!(
            file = %path.display(),
            "changed, applied at the next start: {} (a reload applies servers, grants, policies and admin tokens)",
            waiting.join(", ")
        );
        self.record(
            "restart_required",
            serde_json::json!({ "settings": waiting }),
        );
    }
}

/// The settings bound at start that differ between `running` and `fresh`, by their
/// configuration names. Compared by their debug form: some hold types without equality,
/// and only whether they differ matters (the values, which may be secrets, are not shown).
fn restart_only_changes(running: &Settings, fresh: &Settings) -> Vec<&'static str> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (r, f) = (running, fresh);
    [
        ("gateway.listen", differs(&r.listen, &f.listen)),
        ("gateway.data_dir", differs(&r.data_dir, &f.data_dir)),
        (
            "gateway.allowed_hosts",
            differs(&r.allowed_hosts, &f.allowed_hosts),
        ),
        ("gateway.public_url", differs(&r.public_url, &f.public_url)),
        (
            "gateway limits",
            differs(
                &(
                    r.header_read_timeout,
                    r.max_body_bytes,
                    r.max_header_bytes,
                    r.session_idle_timeout,
                    r.max_concurrent_calls,
                    r.max_connections,
                ),
                &(
                    f.header_read_timeout,
                    f.max_body_bytes,
                    f.max_header_bytes,
                    f.session_idle_timeout,
                    f.max_concurrent_calls,
                    f.max_connections,
                ),
            ),
        ),
        (
            "[store]",
            differs(
                &(&r.redis_url, &r.postgres_url),
                &(&f.redis_url, &f.postgres_url),
            ),
        ),
        ("[audit]", differs(&r.audit, &f.audit)),
        ("[oauth]", differs(&r.oauth, &f.oauth)),
        (
            "[catalogue]",
            differs(
                &(r.withhold_flagged, r.withhold_new_tools),
                &(f.withhold_flagged, f.withhold_new_tools),
            ),
        ),
        (
            "[approvals]",
            differs(&r.approvals_webhook, &f.approvals_webhook),
        ),
        ("[telemetry]", differs(&r.telemetry, &f.telemetry)),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Every (grant, server) whose policy differs between `before` and `after`.
fn changes(before: &[Arc<GrantSpec>], after: &[GrantSpec]) -> Vec<Change> {
    let old = by_grant_and_server(before.iter().map(|g| &**g));
    let new = by_grant_and_server(after.iter());
    old.keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|key| {
            let (was, now) = (old.get(key), new.get(key));
            let same = match (was, now) {
                (Some(a), Some(b)) => a.version == b.version && a.id == b.id,
                _ => false,
            };
            (!same).then(|| Change {
                grant: key.0.to_owned(),
                server: key.1.to_owned(),
                before: was.map(|p| (*p).clone()),
                after: now.map(|p| (*p).clone()),
            })
        })
        .collect()
}

/// Every policy of `grants` by (grant, server).
fn by_grant_and_server<'a>(
    grants: impl Iterator<Item = &'a GrantSpec>,
) -> BTreeMap<(&'a str, &'a str), &'a PolicyRef> {
    grants
        .flat_map(|g| {
            g.policies
                .iter()
                .map(|(s, p)| ((g.name.as_str(), s.as_str()), p))
        })
        .collect()
}

/// The admin event of one change.
fn policy_reloaded(change: &Change) -> AuditEntry {
    let file = change
        .after
        .as_ref()
        .or(change.before.as_ref())
        .map(|p| p.id.clone());
    AuditEntry::Admin(AdminEvent {
        ts: crate::time::format_rfc3339_ms(crate::time::now_unix_ms()),
        action: "policy_reloaded".to_owned(),
        actor: "gateway".to_owned(),
        subject: file.unwrap_or_default(),
        detail: serde_json::json!({
            "grant": change.grant,
            "server": change.server,
            "version": change.after.as_ref().map(|p| &p.version),
            "previous_version": change.before.as_ref().map(|p| &p.version),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_policy::Policy;

    fn grant(name: &str, policies: &[(&str, &str, &str)]) -> GrantSpec {
        let allow =
            Arc::new(Policy::from_json_bytes(br#"{"version":"1","default":"allow"}"#).unwrap());
        GrantSpec {
            name: name.to_owned(),
            policies: policies
                .iter()
                .map(|(server, file, version)| {
                    let policy = PolicyRef {
                        id: (*file).to_owned(),
                        version: (*version).to_owned(),
                        policy: Arc::clone(&allow),
                    };
                    ((*server).to_owned(), policy)
                })
                .collect(),
            ..GrantSpec::default()
        }
    }

    #[test]
    fn changes_are_the_policies_added_removed_or_of_another_version() {
        let before = [
            Arc::new(grant(
                "a",
                &[("s1", "p.json", "v1"), ("s2", "q.json", "v1")],
            )),
            Arc::new(grant("gone", &[("s1", "p.json", "v1")])),
        ];
        let after = [
            grant("a", &[("s1", "p.json", "v2"), ("s2", "q.json", "v1")]),
            grant("new", &[("s1", "p.json", "v2")]),
        ];
        let found: Vec<(String, String, Option<String>, Option<String>)> = changes(&before, &after)
            .into_iter()
            .map(|c| {
                (
                    c.grant,
                    c.server,
                    c.before.map(|p| p.version),
                    c.after.map(|p| p.version),
                )
            })
            .collect();
        let version = |v: &str| Some(v.to_owned());
        assert_eq!(
            found,
            vec![
                ("a".into(), "s1".into(), version("v1"), version("v2")),
                ("gone".into(), "s1".into(), version("v1"), None),
                ("new".into(), "s1".into(), None, version("v2")),
            ]
        );
        assert!(changes(
            &before,
            &[
                grant("a", &[("s1", "p.json", "v1"), ("s2", "q.json", "v1")]),
                grant("gone", &[("s1", "p.json", "v1")])
            ]
        )
        .is_empty());
    }
}
