//! The policy engine alone: time per decision for a realistic 150-tool policy (plain tools,
//! predicates of every kind, glob keys, `hide`, limits, schemas), for allowed and refused
//! calls.
//!
//! `cargo bench -p toolgate-policy --bench decide` prints, per kind of call, the median and
//! p99 time of one decision and decisions per second. Each sample times a batch of calls
//! (the clock costs tens of ns, as much as a decision), and kinds take turns so that drift in
//! a shared machine's speed spreads over all of them.
//!
//! Schemas are compiled once, when the policy is (`Policy::from_json_bytes`); the bench
//! checks it by timing a call with a schema against one without.

use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;
use toolgate_policy::{Identity, Outcome, Policy, ToolCall};

/// Decisions per sample.
const BATCH: usize = 200;
/// Samples per kind and round.
const SAMPLES: usize = 100;
/// Rounds (kinds take turns within each).
const ROUNDS: usize = 10;

/// A 150-tool policy like a real server's: 60 tools allowed as they are, 30 with
/// predicates, 20 with a schema, 20 with limits, 10 refused by glob keys, and hidden tools.
fn policy() -> Value {
    let mut tools = serde_json::Map::new();
    for i in 0..60 {
        tools.insert(format!("get_item_{i:03}"), json!({}));
    }
    for i in 0..30 {
        tools.insert(
            format!("update_record_{i:03}"),
            json!({
                "require": [
                    {"path": "args.reason", "op": "exists", "value": true},
                    {"path": "args.path", "op": "glob", "value": "/srv/data/**"}
                ],
                "deny_if": [
                    {"path": "args.amount", "op": "gt", "value": 10000, "on_deny": "Over the limit."},
                    {"path": "args.path", "op": "regex", "value": "\\.\\./|/etc/"},
                    {"path": "args.region", "op": "not_in", "value": ["eu", "us", "ap"]},
                    {"conditions": [
                        {"path": "args.priority", "op": "eq", "value": "urgent"},
                        {"path": "identity.grant", "op": "neq", "value": "ops"}
                    ], "on_deny": "Only ops may mark urgent."}
                ]
            }),
        );
    }
    for i in 0..20 {
        tools.insert(
            format!("create_ticket_{i:03}"),
            json!({"schema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "body": {"type": "string"},
                    "priority": {"enum": ["low", "normal", "high"]},
                    "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
                    "assignee": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$"}
                },
                "required": ["title", "priority"],
                "additionalProperties": false
            }}),
        );
    }
    for i in 0..20 {
        tools.insert(
            format!("send_message_{i:03}"),
            json!({"limits": [
                {"counter": format!("messages_{i:03}"), "window": "minute", "max": 30, "scope": "grant"},
                {"counter": "spend", "window": "day", "max": 5000, "scope": "grant", "increment_from": "args.cost"}
            ]}),
        );
    }
    tools.insert("delete_*".into(), json!({"action": "deny"}));
    tools.insert("admin_*".into(), json!({"action": "deny"}));
    for i in 0..8 {
        tools.insert(format!("delete_thing_{i}"), json!({"action": "deny"}));
    }
    json!({
        "version": "1",
        "default": "deny",
        "hide": ["secret_*", "internal_debug"],
        "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 600, "scope": "grant"}]},
        "tools": tools
    })
}

/// One kind of call to time.
struct Kind {
    /// What the figures are labelled.
    label: &'static str,
    tool: &'static str,
    arguments: Value,
    /// The outcome it must get (checked once, so a bench of the wrong path cannot pass).
    expect: Outcome,
    /// Per-decision times of every sample (ns).
    samples: Vec<f64>,
}

fn main() {
    let document = serde_json::to_vec(&policy()).expect("serializes");
    let started = Instant::now();
    let policy = Policy::from_json_bytes(&document).expect("the bench policy is valid");
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let identity = Identity {
        grant: "ci-bot".into(),
        ..Identity::default()
    };
    let mut kinds = vec![
        Kind {
            label: "allowed, no rules",
            tool: "get_item_042",
            arguments: json!({"id": "item-42", "fields": ["name", "price"]}),
            expect: Outcome::Allow,
            samples: Vec::new(),
        },
        Kind {
            label: "allowed, 6 predicates",
            tool: "update_record_017",
            arguments: json!({"reason": "fix typo", "path": "/srv/data/a/b.txt", "amount": 12, "region": "eu", "priority": "normal"}),
            expect: Outcome::Allow,
            samples: Vec::new(),
        },
        Kind {
            label: "allowed, 2 limits",
            tool: "send_message_003",
            arguments: json!({"to": "dana", "text": "hello", "cost": 3}),
            expect: Outcome::Allow,
            samples: Vec::new(),
        },
        Kind {
            label: "allowed, schema",
            tool: "create_ticket_005",
            arguments: json!({"title": "Printer on fire", "body": "again", "priority": "high", "labels": ["hw"], "assignee": "dana"}),
            expect: Outcome::Allow,
            samples: Vec::new(),
        },
        Kind {
            label: "denied by a predicate",
            tool: "update_record_017",
            arguments: json!({"reason": "cleanup", "path": "/srv/data/../etc/passwd", "amount": 1, "region": "eu"}),
            expect: Outcome::Deny,
            samples: Vec::new(),
        },
        Kind {
            label: "denied by the schema",
            tool: "create_ticket_005",
            arguments: json!({"title": "", "priority": "whenever"}),
            expect: Outcome::Deny,
            samples: Vec::new(),
        },
        Kind {
            label: "denied by a glob key",
            tool: "delete_everything",
            arguments: json!({"confirm": true}),
            expect: Outcome::Deny,
            samples: Vec::new(),
        },
        Kind {
            label: "denied by default",
            tool: "unlisted_tool",
            arguments: json!({}),
            expect: Outcome::Deny,
            samples: Vec::new(),
        },
        Kind {
            label: "hidden",
            tool: "secret_keys",
            arguments: json!({}),
            expect: Outcome::Hide,
            samples: Vec::new(),
        },
    ];
    for kind in &kinds {
        let decision = policy.evaluate(&ToolCall {
            tool: kind.tool,
            arguments: &kind.arguments,
            identity: &identity,
        });
        assert_eq!(
            decision.outcome, kind.expect,
            "{}: {} {}",
            kind.label, decision.rule, decision.message
        );
    }
    for _ in 0..ROUNDS {
        for kind in &mut kinds {
            let call = ToolCall {
                tool: kind.tool,
                arguments: &kind.arguments,
                identity: &identity,
            };
            for _ in 0..SAMPLES {
                let start = Instant::now();
                for _ in 0..BATCH {
                    black_box(policy.evaluate(black_box(&call)));
                }
                kind.samples
                    .push(start.elapsed().as_nanos() as f64 / BATCH as f64);
            }
        }
    }
    let mut table = format!(
        "Generated by `cargo bench -p toolgate-policy --bench decide`: a 150-tool policy (plus glob keys, `hide`, `all_tools` limits), compiled in {compile_ms:.1} ms; one decision, no I/O.\n\n| call | p50 (ns) | p99 (ns) | decisions/s |\n|---|---|---|---|\n"
    );
    for kind in &mut kinds {
        kind.samples.sort_by(f64::total_cmp);
        let at = |q: f64| kind.samples[((kind.samples.len() - 1) as f64 * q).round() as usize];
        let mean = kind.samples.iter().sum::<f64>() / kind.samples.len() as f64;
        table.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} |\n",
            kind.label,
            at(0.5),
            at(0.99),
            1e9 / mean
        ));
    }
    println!("{table}");
    // `TOOLGATE_BENCH_WRITE=BENCHMARKS.md` puts the table there, between its markers.
    if let Some(path) = std::env::var_os("TOOLGATE_BENCH_WRITE") {
        let (begin, end) = ("<!-- decide:begin -->", "<!-- decide:end -->");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!("{begin}\n{table}{end}");
        let updated = match (text.find(begin), text.find(end)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{section}{}", &text[..b], &text[e + end.len()..])
            }
            _ => format!("{text}\n{section}\n"),
        };
        std::fs::write(&path, updated).expect("write the figures");
    }
}
