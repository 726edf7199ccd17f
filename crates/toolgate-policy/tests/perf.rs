//! A rough per-decision timing, for `cargo test --release -p toolgate-policy --test perf --
//! --ignored --nocapture`. Ignored by default: timings in debug builds or on a busy CI machine
//! mean nothing, and a flaky threshold would only teach people to ignore failures.

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use toolgate_policy::{Identity, Policy, ToolCall};

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn decision_cost() {
    let policy = Policy::from_json_bytes(include_bytes!("fixtures/support-desk.json")).unwrap();
    let identity = Identity {
        grant: "support-assistant".into(),
        ..Identity::default()
    };
    let calls = [
        ("list_customers", json!({})),
        (
            "send_email",
            json!({"from": "support@example.com", "to": ["a@x.com"], "subject": "Hi", "body": "Thanks"}),
        ),
        (
            "update_customer",
            json!({"customer_id": "cus_1", "fields": {"plan": "pro"}}),
        ),
        ("read_file", json!({"path": "/srv/exports/2025/q1.csv"})),
        ("merge_customers", json!({})),
        ("admin_reset", json!({})),
    ];
    for (tool, args) in &calls {
        let call = ToolCall {
            tool,
            arguments: args,
            identity: &identity,
        };
        let n = 200_000;
        let start = Instant::now();
        for _ in 0..n {
            black_box(policy.evaluate(black_box(&call)));
        }
        let per = start.elapsed() / n;
        println!("{tool:>16}: {per:?} per decision");
    }
}

#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn component_costs() {
    let identity = Identity::default();
    let args = json!({});
    let variants = [
        (
            "bare allow",
            json!({"version": "1", "default": "allow"}),
            "x",
        ),
        (
            "exact hit",
            json!({"version": "1", "default": "deny", "tools": {"x": {}}}),
            "x",
        ),
        (
            "hide glob miss",
            json!({"version": "1", "default": "allow", "hide": ["admin_*"]}),
            "x",
        ),
        (
            "hide glob hit",
            json!({"version": "1", "default": "allow", "hide": ["admin_*"]}),
            "admin_x",
        ),
        (
            "hide exact hit",
            json!({"version": "1", "default": "allow", "hide": ["admin_x"]}),
            "admin_x",
        ),
        (
            "2 glob keys miss, default deny",
            json!({"version": "1", "default": "deny", "tools": {"debug_*": {}, "get_*": {}}}),
            "x",
        ),
        (
            "1 limit",
            json!({"version": "1", "default": "allow", "all_tools": {"limits": [{"counter": "c", "window": "minute", "max": 1}]}}),
            "x",
        ),
    ];
    for (name, doc, tool) in variants {
        let policy = Policy::from_value(&doc).unwrap();
        let call = ToolCall {
            tool,
            arguments: &args,
            identity: &identity,
        };
        let n = 500_000;
        let start = Instant::now();
        for _ in 0..n {
            black_box(policy.evaluate(black_box(&call)));
        }
        println!("{name:>32}: {:?}", start.elapsed() / n);
    }
}
