//! Prometheus metrics at `/metrics` (text exposition format 0.0.4): what was decided, by
//! which rule, how upstreams answered and how long calls took, and whether the stores are
//! healthy.
//!
//! Written by hand rather than with a metrics crate: a handful of counters and one
//! histogram, updated under one short lock per call, and rendered on a scrape.
//!
//! Label values are bounded by configuration and policy, never by traffic: servers, decisions
//! and rule ids come from the configuration and policy documents, outcomes from a fixed set.
//! Grants and tools are deliberately not labels (tools are named by clients, grants can be
//! minted without bound); the audit log has them per call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use toolgate_policy::Decision;

/// Upper bounds of the call-duration histogram's buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The gateway-wide metrics; per-server ones live in each server's [`ServerMetrics`].
#[derive(Debug, Default)]
pub struct Metrics {
    /// The audit log could not be written at the last attempt.
    audit_failing: AtomicBool,
    /// Audit writes that failed (each refused the calls it carried).
    audit_failures: AtomicU64,
    /// The counter store failed at the last call that needed it.
    counters_failing: AtomicBool,
    /// Calls the counter store could not count.
    counter_failures: AtomicU64,
}

/// One server's metrics: held by the server, and by each request awaiting its answer, so
/// recording costs no lookup by name and servers do not share a lock.
#[derive(Debug)]
pub struct ServerMetrics {
    /// The server's name (the `server` label).
    name: String,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    /// Tool calls by decision.
    decisions: BTreeMap<&'static str, u64>,
    /// Tool calls not simply allowed, by (decision, rule).
    rules: BTreeMap<(&'static str, String), u64>,
    /// Shadow-mode tool calls (forwarded whatever was decided) by what was decided.
    shadow: BTreeMap<&'static str, u64>,
    /// Forwarded requests by (outcome, JSON-RPC error code or "").
    outcomes: BTreeMap<(String, String), u64>,
    /// Forwarded requests' durations.
    durations: Histogram,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket of [`BUCKETS`], the count of durations at most its bound (not cumulative).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the gateway knows at scrape time, beside the counts.
pub(crate) struct Gauges<'a> {
    /// Open client sessions.
    pub(crate) sessions: usize,
    /// Per server, its metrics and whether its upstream can take calls (a stdio child is
    /// running).
    pub(crate) servers: Vec<(&'a ServerMetrics, bool)>,
}

impl ServerMetrics {
    /// The metrics of server `name`, all zero.
    pub(crate) fn new(name: &str) -> Self {
        ServerMetrics {
            name: name.to_owned(),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A tool call was decided.
    /// In shadow mode it went through, whatever was decided: counted as allowed, and the
    /// decision apart.
    pub(crate) fn decided(&self, decision: &Decision, shadow: bool) {
        let mut counts = self.counts();
        if shadow {
            *counts.decisions.entry("allow").or_default() += 1;
            *counts.shadow.entry(decision.outcome.as_str()).or_default() += 1;
            return;
        }
        let outcome = decision.outcome.as_str();
        *counts.decisions.entry(outcome).or_default() += 1;
        if !decision.rule.is_empty() {
            *counts
                .rules
                .entry((outcome, decision.rule.clone()))
                .or_default() += 1;
        }
    }

    /// A forwarded request ended with `status` (as the audit log words it) after `took`.
    pub(crate) fn finished(&self, status: &str, took: Duration) {
        let (outcome, code) = status.split_once(' ').unwrap_or((status, ""));
        let seconds = took.as_secs_f64();
        let mut counts = self.counts();
        *counts
            .outcomes
            .entry((outcome.to_owned(), code.to_owned()))
            .or_default() += 1;
        let histogram = &mut counts.durations;
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            histogram.buckets[i] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }
}

impl Metrics {
    /// An audit write succeeded (`true`) or failed.
    pub(crate) fn audit_written(&self, ok: bool) {
        self.audit_failing.store(!ok, Ordering::Relaxed);
        if !ok {
            self.audit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the last audit write failed.
    pub(crate) fn audit_failing(&self) -> bool {
        self.audit_failing.load(Ordering::Relaxed)
    }

    /// The counter store answered (`true`) or failed a call that needed it.
    pub(crate) fn counters_answered(&self, ok: bool) {
        self.counters_failing.store(!ok, Ordering::Relaxed);
        if !ok {
            self.counter_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub(crate) fn render(&self, gauges: &Gauges<'_>) -> String {
        // Copied first, so no lock is held while formatting.
        let servers: Vec<(&str, Counts, bool)> = gauges
            .servers
            .iter()
            .map(|(m, up)| (m.name.as_str(), m.counts().clone(), *up))
            .collect();
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        family(
            o,
            "toolgate_build_info",
            "gauge",
            "The running toolgate's version.",
        );
        sample(
            o,
            "toolgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );

        let name = "toolgate_calls_total";
        family(
            o,
            name,
            "counter",
            "Tool calls decided, by server and decision.",
        );
        for (server, counts, _) in &servers {
            for (decision, n) in &counts.decisions {
                sample(o, name, &[("server", server), ("decision", decision)], *n);
            }
        }
        let name = "toolgate_shadow_decisions_total";
        family(
            o,
            name,
            "counter",
            "Tool calls under a policy or server in shadow mode (all forwarded), by what was decided.",
        );
        for (server, counts, _) in &servers {
            for (decision, n) in &counts.shadow {
                sample(o, name, &[("server", server), ("decision", decision)], *n);
            }
        }
        let name = "toolgate_decisions_by_rule_total";
        family(
            o,
            name,
            "counter",
            "Tool calls not simply allowed, by server, decision and the rule that decided.",
        );
        for (server, counts, _) in &servers {
            for ((decision, rule), n) in &counts.rules {
                sample(
                    o,
                    name,
                    &[("server", server), ("decision", decision), ("rule", rule)],
                    *n,
                );
            }
        }
        let name = "toolgate_upstream_outcomes_total";
        family(o, name, "counter", "Forwarded requests by how the upstream answered: ok, tool_error, error (with its JSON-RPC code), timeout, failed, no_answer, cancelled, not_sent.");
        for (server, counts, _) in &servers {
            for ((outcome, code), n) in &counts.outcomes {
                sample(
                    o,
                    name,
                    &[("server", server), ("outcome", outcome), ("code", code)],
                    *n,
                );
            }
        }
        let name = "toolgate_request_duration_seconds";
        family(
            o,
            name,
            "histogram",
            "Forwarded requests, from the decision to the upstream's answer.",
        );
        for (server, counts, _) in &servers {
            let h = &counts.durations;
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let le = bound.to_string();
                sample(
                    o,
                    "toolgate_request_duration_seconds_bucket",
                    &[("server", server), ("le", &le)],
                    cumulative,
                );
            }
            sample(
                o,
                "toolgate_request_duration_seconds_bucket",
                &[("server", server), ("le", "+Inf")],
                h.count,
            );
            let _ = writeln!(
                o,
                "toolgate_request_duration_seconds_sum{} {}",
                labels(&[("server", server)]),
                h.sum
            );
            sample(
                o,
                "toolgate_request_duration_seconds_count",
                &[("server", server)],
                h.count,
            );
        }
        let single = [
            (
                "toolgate_audit_store_up",
                "gauge",
                "1 if the last audit write succeeded; calls are refused while it fails.",
                u64::from(!self.audit_failing.load(Ordering::Relaxed)),
            ),
            (
                "toolgate_audit_write_failures_total",
                "counter",
                "Audit writes that failed.",
                self.audit_failures.load(Ordering::Relaxed),
            ),
            (
                "toolgate_counter_store_up",
                "gauge",
                "1 if the counter store answered the last call that needed it.",
                u64::from(!self.counters_failing.load(Ordering::Relaxed)),
            ),
            (
                "toolgate_counter_store_failures_total",
                "counter",
                "Calls the counter store could not count.",
                self.counter_failures.load(Ordering::Relaxed),
            ),
            (
                "toolgate_sessions",
                "gauge",
                "Open client sessions.",
                gauges.sessions as u64,
            ),
        ];
        for (name, kind, help, value) in single {
            family(o, name, kind, help);
            sample(o, name, &[], value);
        }
        let name = "toolgate_upstream_up";
        family(o, name, "gauge", "1 if the server's upstream can take calls (a stdio child is running; HTTP upstreams are reached per call).");
        for (server, _, up) in &servers {
            sample(o, name, &[("server", server)], u64::from(*up));
        }
        out
    }
}

/// A family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line.
fn sample(out: &mut String, name: &str, pairs: &[(&str, &str)], value: u64) {
    if pairs.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{} {value}", labels(pairs));
    }
}

/// `{k="v",…}` with the values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_policy::Outcome;

    #[test]
    fn renders_families_with_their_samples_and_escaped_labels() {
        let metrics = Metrics::default();
        let s1 = ServerMetrics::new("s1");
        let deny = Decision::deny("/tools/a\"b/action".into(), "no".into());
        s1.decided(&deny, false);
        s1.decided(&deny, false);
        s1.decided(
            &Decision {
                outcome: Outcome::Allow,
                rule: String::new(),
                ..deny.clone()
            },
            false,
        );
        s1.decided(&deny, true);
        s1.finished("ok", Duration::from_millis(3));
        s1.finished("error -32603", Duration::from_millis(30));
        metrics.counters_answered(false);
        let text = metrics.render(&Gauges {
            sessions: 2,
            servers: vec![(&s1, true)],
        });
        for line in [
            "# TYPE toolgate_calls_total counter",
            r#"toolgate_calls_total{server="s1",decision="allow"} 2"#,
            r#"toolgate_shadow_decisions_total{server="s1",decision="deny"} 1"#,
            r#"toolgate_calls_total{server="s1",decision="deny"} 2"#,
            r#"toolgate_decisions_by_rule_total{server="s1",decision="deny",rule="/tools/a\"b/action"} 2"#,
            r#"toolgate_upstream_outcomes_total{server="s1",outcome="error",code="-32603"} 1"#,
            r#"toolgate_request_duration_seconds_bucket{server="s1",le="0.005"} 1"#,
            r#"toolgate_request_duration_seconds_bucket{server="s1",le="0.05"} 2"#,
            r#"toolgate_request_duration_seconds_bucket{server="s1",le="+Inf"} 2"#,
            r#"toolgate_request_duration_seconds_count{server="s1"} 2"#,
            "toolgate_counter_store_up 0",
            "toolgate_counter_store_failures_total 1",
            "toolgate_audit_store_up 1",
            "toolgate_sessions 2",
            r#"toolgate_upstream_up{server="s1"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample follows its own family's TYPE line.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }
}
