//! Evaluation order, rule ids and messages (SPEC §3.4, §4).

use super::*;
use crate::{ApprovalSettings, LimitCharge, Outcome, Reuse, Scope, Window, DEFAULT_TIMEOUT_MS};

#[track_caller]
fn check(d: &Decision, outcome: Outcome, rule: &str, message: &str) {
    assert_eq!(
        (d.outcome, d.rule.as_str(), d.message.as_str()),
        (outcome, rule, message),
        "{d:?}"
    );
    if outcome != Outcome::Allow && outcome != Outcome::ApprovalRequired {
        assert!(d.limits.is_empty(), "{d:?}");
    }
    if outcome != Outcome::ApprovalRequired {
        assert_eq!(d.approval, None);
    }
    assert_eq!(d.retry_after_ms, None);
}

#[track_caller]
fn allowed(d: &Decision) {
    check(d, Outcome::Allow, "", "");
}

#[track_caller]
fn denied(d: &Decision, rule: &str, message: &str) {
    check(d, Outcome::Deny, rule, message);
}

#[test]
fn hidden_tools() {
    let p = policy(json!({
        "version": "1", "default": "allow",
        "hide": ["drop_table", "delete_*"],
        "tools": {"drop_table": {}, "delete_user": {"action": "require_approval"}}
    }));
    for tool in ["drop_table", "delete_user", "delete_everything"] {
        assert!(p.is_hidden(tool));
        check(
            &eval(&p, tool, json!({})),
            Outcome::Hide,
            "(hidden)",
            &format!("Unknown tool: {tool}"),
        );
    }
    assert!(!p.is_hidden("list_users"));
    allowed(&eval(&p, "list_users", json!({})));

    let all =
        policy(json!({"version": "1", "default": "allow", "hide": ["*"], "tools": {"t": {}}}));
    for tool in ["t", "anything", "ns/tool", ""] {
        assert!(all.is_hidden(tool), "{tool}");
        assert_eq!(eval(&all, tool, Value::Null).outcome, Outcome::Hide);
    }
}

#[test]
fn default_allow_and_deny() {
    let deny = policy(json!({"version": "1", "default": "deny", "tools": {"list_customers": {}}}));
    allowed(&eval(&deny, "list_customers", json!({})));
    allowed(&eval(&deny, "list_customers", Value::Null));
    denied(
        &eval(&deny, "refund", json!({})),
        "(default deny)",
        "Tool \"refund\" is not permitted by policy",
    );
    assert!(!deny.default_allows());

    let allow = policy(
        json!({"version": "1", "default": "allow", "tools": {"refund": {"action": "deny"}}}),
    );
    allowed(&eval(&allow, "anything", json!({"x": 1})));
    denied(
        &eval(&allow, "refund", json!({})),
        "/tools/refund/action",
        "Tool \"refund\" is denied by policy",
    );
    assert!(allow.default_allows());
}

#[test]
fn no_policy_decision() {
    denied(
        &Decision::no_policy("search"),
        "(no policy)",
        "Tool \"search\" is not permitted by policy",
    );
}

#[test]
fn action_deny_comes_before_schema_and_predicates() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "rm": {
            "action": "deny",
            "schema": {"type": "object", "required": ["x"]},
            "require": [{"path": "args.x", "op": "exists", "value": true}],
            "limits": [{"counter": "c", "window": "minute", "max": 1}]
        },
        "wipe": {"action": "deny", "on_deny": "Use the admin console."}
    }}));
    denied(
        &eval(&p, "rm", json!({})),
        "/tools/rm/action",
        "Tool \"rm\" is denied by policy",
    );
    denied(
        &eval(&p, "wipe", json!({})),
        "/tools/wipe/action",
        "Use the admin console.",
    );
}

#[test]
fn schema_violations() {
    let p = policy(
        json!({"version": "1", "default": "deny", "tools": {"charge": {
            "schema": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "maximum": 100},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}}
                },
                "required": ["amount"],
                "additionalProperties": false
            },
            "require": [{"path": "args.amount", "op": "gt", "value": 1000}],
            "on_deny": "not used for schemas"
        }}}),
    );
    let rule = "/tools/charge/schema";
    denied(
        &eval(&p, "charge", json!({})),
        rule,
        "\"amount\" is a required property at /",
    );
    denied(
        &eval(&p, "charge", Value::Null),
        rule,
        "\"amount\" is a required property at /",
    );
    denied(
        &eval(&p, "charge", json!({"amount": "5"})),
        rule,
        "\"5\" is not of type \"number\" at /amount",
    );
    denied(
        &eval(&p, "charge", json!({"amount": 500})),
        rule,
        "500 is greater than the maximum of 100 at /amount",
    );
    denied(
        &eval(&p, "charge", json!({"amount": 5, "items": [{"sku": 1}]})),
        rule,
        "1 is not of type \"string\" at /items/0/sku",
    );
    // Schema passes; the require (amount > 1000) then refuses, with the tool's on_deny.
    denied(
        &eval(&p, "charge", json!({"amount": 5})),
        "/tools/charge/require/args.amount-gt",
        "not used for schemas",
    );
}

#[test]
fn schema_messages_are_bounded() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {"t": {
        "schema": {"properties": {"s": {"type": "number"}}}
    }}}));
    let huge = "x".repeat(10_000);
    let d = eval(&p, "t", json!({ "s": huge }));
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(d.message.chars().count() < 400, "{}", d.message.len());
    assert!(d.message.ends_with("… at /s"), "{}", d.message);
}

#[test]
fn predicate_order_and_rule_ids() {
    let p = policy(json!({
        "version": "1", "default": "deny",
        "all_tools": {
            "require": [{"path": "identity.grant", "op": "starts_with", "value": "alice"}],
            "deny_if": [
                {"path": "args.dry_run", "op": "eq", "value": false},
                {"conditions": [{"path": "args.region", "op": "eq", "value": "eu"}], "on_deny": "EU is frozen"}
            ]
        },
        "tools": {"deploy": {
            "require": [
                {"path": "args.service", "op": "exists", "value": true},
                {"path": "args.ticket", "op": "regex", "value": "^OPS-[0-9]+$", "on_deny": "Need an OPS ticket."}
            ],
            "deny_if": [
                {"path": "args.service", "op": "in", "value": ["billing", "auth"]},
                {"conditions": [
                    {"path": "args.env", "op": "eq", "value": "prod"},
                    {"path": "identity.claims.groups", "op": "contains", "value": "support"}
                ]}
            ]
        }}
    }));
    let ok = json!({"service": "web", "ticket": "OPS-1", "env": "dev", "dry_run": true});
    allowed(&eval(&p, "deploy", ok.clone()));

    let with = |patch: Value| {
        let mut args = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                args.as_object_mut().unwrap().remove(k);
            } else {
                args[k] = v.clone();
            }
        }
        eval(&p, "deploy", args)
    };
    denied(
        &with(json!({"service": null})),
        "/tools/deploy/require/args.service-exists",
        "Denied by rule \"/tools/deploy/require/args.service-exists\"",
    );
    // The first failing require wins even when later ones fail too.
    denied(
        &with(json!({"service": null, "ticket": "x"})),
        "/tools/deploy/require/args.service-exists",
        "Denied by rule \"/tools/deploy/require/args.service-exists\"",
    );
    denied(
        &with(json!({"ticket": "JIRA-1"})),
        "/tools/deploy/require/args.ticket-regex",
        "Need an OPS ticket.",
    );
    // require is checked before deny_if.
    denied(
        &with(json!({"ticket": "x", "service": "billing"})),
        "/tools/deploy/require/args.ticket-regex",
        "Need an OPS ticket.",
    );
    denied(
        &with(json!({"service": "auth"})),
        "/tools/deploy/deny_if/args.service-in",
        "Denied by rule \"/tools/deploy/deny_if/args.service-in\"",
    );
    denied(
        &with(json!({"env": "prod"})),
        "/tools/deploy/deny_if/1",
        "Denied by rule \"/tools/deploy/deny_if/1\"",
    );
    // Tool predicates before all_tools predicates.
    denied(
        &with(json!({"env": "prod", "dry_run": false})),
        "/tools/deploy/deny_if/1",
        "Denied by rule \"/tools/deploy/deny_if/1\"",
    );
    denied(
        &with(json!({"dry_run": false})),
        "/all_tools/deny_if/args.dry_run-eq",
        "Denied by rule \"/all_tools/deny_if/args.dry_run-eq\"",
    );
    denied(
        &with(json!({"region": "eu"})),
        "/all_tools/deny_if/1",
        "EU is frozen",
    );
    let bob = Identity {
        grant: "bob".into(),
        ..Identity::default()
    };
    denied(
        &eval_as(&p, "deploy", ok.clone(), &bob),
        "/all_tools/require/identity.grant-starts_with",
        "Denied by rule \"/all_tools/require/identity.grant-starts_with\"",
    );
    // Someone outside support may deploy to prod.
    let mut args = ok.clone();
    args["env"] = json!("prod");
    let carol = Identity {
        grant: "alice-ci".into(),
        ..Identity::default()
    };
    allowed(&eval_as(&p, "deploy", args, &carol));
}

#[test]
fn message_fallbacks() {
    let p = policy(json!({
        "version": "1", "default": "allow",
        "all_tools": {"on_deny": "global rules say no", "deny_if": [{"path": "args.g", "op": "exists", "value": true}]},
        "tools": {
            "with_default": {
                "on_deny": "tool says no",
                "require": [
                    {"path": "args.a", "op": "exists", "value": true},
                    {"path": "args.b", "op": "exists", "value": true, "on_deny": "b please"}
                ]
            },
            "plain": {"deny_if": [{"path": "args.x", "op": "exists", "value": true}]}
        }
    }));
    denied(
        &eval(&p, "with_default", json!({})),
        "/tools/with_default/require/args.a-exists",
        "tool says no",
    );
    denied(
        &eval(&p, "with_default", json!({"a": 1})),
        "/tools/with_default/require/args.b-exists",
        "b please",
    );
    // all_tools predicates never borrow a tool's on_deny.
    denied(
        &eval(&p, "with_default", json!({"a": 1, "b": 1, "g": 1})),
        "/all_tools/deny_if/args.g-exists",
        "global rules say no",
    );
    denied(
        &eval(&p, "plain", json!({"x": 1})),
        "/tools/plain/deny_if/args.x-exists",
        "Denied by rule \"/tools/plain/deny_if/args.x-exists\"",
    );
    let p = policy(json!({"version": "1", "default": "allow",
        "all_tools": {"deny_if": [{"path": "args.g", "op": "exists", "value": true}]}}));
    denied(
        &eval(&p, "x", json!({"g": 0})),
        "/all_tools/deny_if/args.g-exists",
        "Denied by rule \"/all_tools/deny_if/args.g-exists\"",
    );
}

#[test]
fn glob_keys() {
    let p = policy(json!({
        "version": "1", "default": "deny",
        "tools": {
            "delete_*": {"action": "deny"},
            "delete_draft": {},
            "*_admin": {"require": [{"path": "args.reason", "op": "exists", "value": true}]},
            "delete_*_admin": {"limits": [{"counter": "never", "window": "day", "max": 1}]},
            "a/b": {"require": [{"path": "args.x", "op": "exists", "value": true}]},
            "get_{user,team}": {}
        }
    }));
    // Exact key wins over any glob.
    allowed(&eval(&p, "delete_draft", json!({})));
    denied(
        &eval(&p, "delete_user", json!({})),
        "/tools/delete_*/action",
        "Tool \"delete_user\" is denied by policy",
    );
    // The first matching glob in document order wins: delete_* before delete_*_admin.
    denied(
        &eval(&p, "delete_x_admin", json!({})),
        "/tools/delete_*/action",
        "Tool \"delete_x_admin\" is denied by policy",
    );
    assert_eq!(p.tool_key("delete_x_admin"), Some("delete_*"));
    denied(
        &eval(&p, "user_admin", json!({})),
        "/tools/*_admin/require/args.reason-exists",
        "Denied by rule \"/tools/*_admin/require/args.reason-exists\"",
    );
    allowed(&eval(&p, "user_admin", json!({"reason": "audit"})));
    // Rule ids carry the key as written, even with a slash.
    denied(
        &eval(&p, "a/b", json!({})),
        "/tools/a/b/require/args.x-exists",
        "Denied by rule \"/tools/a/b/require/args.x-exists\"",
    );
    allowed(&eval(&p, "get_team", json!({})));
    denied(
        &eval(&p, "get_org", json!({})),
        "(default deny)",
        "Tool \"get_org\" is not permitted by policy",
    );
    assert_eq!(p.tool_key("nothing"), None);
}

fn window(seconds: u64, calendar: bool, named: bool) -> Window {
    Window {
        seconds,
        calendar,
        named,
    }
}

#[test]
fn limits_are_reported_tool_first() {
    let p = policy(json!({
        "version": "1", "default": "allow",
        "all_tools": {"limits": [
            {"counter": "calls-per-minute", "window": "minute", "max": 60},
            {"counter": "daily", "window": 86400, "max": 1000, "scope": "global", "align": "calendar"}
        ]},
        "tools": {
            "create_charge": {"limits": [
                {"counter": "charge_total", "window": "day", "max": 50000, "scope": "grant", "increment_from": "args.amount"},
                {"counter": "charges", "window": "hour", "max": 10, "scope": "identity", "increment": 2}
            ]},
            "send_*": {"limits": [{"counter": "sends", "window": "second", "max": 1.5, "scope": "session"}]}
        }
    }));
    let d = eval(&p, "create_charge", json!({"amount": 12.5}));
    allowed(&d);
    assert_eq!(
        d.limits,
        vec![
            LimitCharge {
                counter: "charge_total".into(),
                window: window(86_400, false, true),
                max: 50_000.0,
                scope: Scope::Grant,
                amount: 12.5,
                rule: "/tools/create_charge/limits/charge_total".into(),
            },
            LimitCharge {
                counter: "charges".into(),
                window: window(3_600, false, true),
                max: 10.0,
                scope: Scope::Identity,
                amount: 2.0,
                rule: "/tools/create_charge/limits/charges".into(),
            },
            LimitCharge {
                counter: "calls-per-minute".into(),
                window: window(60, false, true),
                max: 60.0,
                scope: Scope::Grant,
                amount: 1.0,
                rule: "/all_tools/limits/calls-per-minute".into(),
            },
            LimitCharge {
                counter: "daily".into(),
                window: window(86_400, true, false),
                max: 1000.0,
                scope: Scope::Global,
                amount: 1.0,
                rule: "/all_tools/limits/daily".into(),
            },
        ]
    );
    // An unlisted tool under default allow still pays the all_tools limits.
    let d = eval(&p, "search", Value::Null);
    allowed(&d);
    let rules: Vec<&str> = d.limits.iter().map(|l| l.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "/all_tools/limits/calls-per-minute",
            "/all_tools/limits/daily"
        ]
    );
    // Glob keys name the key in limit rule ids too.
    let d = eval(&p, "send_sms", json!({}));
    assert_eq!(d.limits[0].rule, "/tools/send_*/limits/sends");
    assert_eq!(d.limits[0].scope, Scope::Session);
    assert_eq!(
        d.limits[0].exceeded(400).message,
        "Rate limit of 1.5 per second reached for \"sends\"; retry in 1 s"
    );
    assert_eq!(
        d.limits[2].exceeded(3_600_000).message,
        "Rate limit of 1000 per 86400s reached for \"daily\"; retry in 3600 s"
    );
    let exceeded = d.limits[1].exceeded(12_345);
    assert_eq!(exceeded.outcome, Outcome::RateLimited);
    assert_eq!(exceeded.rule, "/all_tools/limits/calls-per-minute");
    assert_eq!(exceeded.retry_after_ms, Some(12_345));
    assert_eq!(
        exceeded.message,
        "Rate limit of 60 per minute reached for \"calls-per-minute\"; retry in 13 s"
    );
}

#[test]
fn increment_from_must_be_a_non_negative_number() {
    let p = policy(
        json!({"version": "1", "default": "deny", "tools": {"pay": {"limits": [
            {"counter": "spend", "window": "day", "max": 100, "increment_from": "args.payment.amount"}
        ]}}}),
    );
    let rule = "/tools/pay/limits/spend";
    let cases = [
        (json!({}), "args.payment.amount is missing"),
        (Value::Null, "args.payment.amount is missing"),
        (
            json!({"payment": {"amount": null}}),
            "args.payment.amount is missing",
        ),
        (json!({"payment": "x"}), "args.payment.amount is missing"),
        (
            json!({"payment": {"amount": "10"}}),
            "args.payment.amount is not a number",
        ),
        (
            json!({"payment": {"amount": [10]}}),
            "args.payment.amount is not a number",
        ),
        (
            json!({"payment": {"amount": true}}),
            "args.payment.amount is not a number",
        ),
        (
            json!({"payment": {"amount": -0.01}}),
            "args.payment.amount is negative",
        ),
    ];
    for (args, message) in cases {
        denied(&eval(&p, "pay", args), rule, message);
    }
    for (amount, want) in [
        (json!(0), 0.0),
        (json!(7), 7.0),
        (json!(0.25), 0.25),
        (json!(1e3), 1000.0),
    ] {
        let d = eval(&p, "pay", json!({"payment": {"amount": amount}}));
        allowed(&d);
        assert_eq!(d.limits.len(), 1);
        assert_eq!(d.limits[0].amount, want);
    }
}

#[test]
fn increment_from_errors_come_after_predicates() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {"pay": {
        "require": [{"path": "args.to", "op": "exists", "value": true}],
        "limits": [{"counter": "spend", "window": "day", "max": 100, "increment_from": "args.amount"}]
    }}}));
    denied(
        &eval(&p, "pay", json!({})),
        "/tools/pay/require/args.to-exists",
        "Denied by rule \"/tools/pay/require/args.to-exists\"",
    );
    denied(
        &eval(&p, "pay", json!({"to": "x"})),
        "/tools/pay/limits/spend",
        "args.amount is missing",
    );
}

#[test]
fn approval_without_predicates_holds_every_call() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "refund": {
            "action": "require_approval",
            "limits": [{"counter": "refunds", "window": "day", "max": 5}]
        },
        "wire": {
            "action": "require_approval",
            "approval": {"timeout": "30m", "reuse": "1h"},
            "on_deny": "Wires need finance sign-off."
        }
    }}));
    let d = eval(&p, "refund", json!({"amount": 1}));
    check(
        &d,
        Outcome::ApprovalRequired,
        "/tools/refund/action",
        "Tool \"refund\" requires human approval",
    );
    assert_eq!(
        d.approval,
        Some(ApprovalSettings {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            reuse: Reuse::Once
        })
    );
    assert_eq!(DEFAULT_TIMEOUT_MS, 15 * 60 * 1000);
    assert_eq!(d.limits.len(), 1);
    assert_eq!(d.limits[0].rule, "/tools/refund/limits/refunds");
    assert!(!d.is_allowed());

    let d = eval(&p, "wire", Value::Null);
    check(
        &d,
        Outcome::ApprovalRequired,
        "/tools/wire/action",
        "Wires need finance sign-off.",
    );
    assert_eq!(
        d.approval,
        Some(ApprovalSettings {
            timeout_ms: 1_800_000,
            reuse: Reuse::For { ms: 3_600_000 }
        })
    );
}

#[test]
fn approval_predicates_select_calls() {
    let p = policy(json!({
        "version": "1", "default": "deny",
        "all_tools": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 1000000}]},
        "tools": {"create_charge": {
            "action": "require_approval",
            "schema": {"properties": {"amount": {"type": "number"}}},
            "require": [{"path": "args.reason", "op": "exists", "value": true}],
            "deny_if": [{"path": "args.amount", "op": "gt", "value": 10000, "on_deny": "Charges over 10000 need a human."}],
            "limits": [{"counter": "charge_total", "window": "day", "max": 50000, "increment_from": "args.amount"}]
        }}
    }));
    // No predicate would refuse: allowed, empty rule, limits reported.
    let d = eval(
        &p,
        "create_charge",
        json!({"amount": 50, "reason": "order 7"}),
    );
    allowed(&d);
    assert_eq!(d.limits[0].amount, 50.0);
    // deny_if would refuse: held instead, with that predicate's message.
    let d = eval(
        &p,
        "create_charge",
        json!({"amount": 20000, "reason": "big order"}),
    );
    check(
        &d,
        Outcome::ApprovalRequired,
        "/tools/create_charge/action",
        "Charges over 10000 need a human.",
    );
    assert_eq!(d.limits[0].amount, 20000.0);
    assert_eq!(d.approval, Some(ApprovalSettings::default()));
    // require would refuse: held too; it has no own message.
    check(
        &eval(&p, "create_charge", json!({"amount": 5})),
        Outcome::ApprovalRequired,
        "/tools/create_charge/action",
        "Tool \"create_charge\" requires human approval",
    );
    // The schema still denies outright.
    denied(
        &eval(&p, "create_charge", json!({"amount": "5"})),
        "/tools/create_charge/schema",
        "\"5\" is not of type \"number\" at /amount",
    );
    // all_tools predicates still deny outright, even for a call that would be held.
    denied(
        &eval(
            &p,
            "create_charge",
            json!({"amount": 2000000, "reason": "x"}),
        ),
        "/all_tools/deny_if/args.amount-gt",
        "Denied by rule \"/all_tools/deny_if/args.amount-gt\"",
    );
    // Limits come before approval: a bad increment_from denies.
    denied(
        &eval(&p, "create_charge", json!({"reason": "x"})),
        "/tools/create_charge/limits/charge_total",
        "args.amount is missing",
    );
}

#[test]
fn shadow_flag_and_reads_arguments() {
    let p = policy(json!({
        "version": "1", "default": "deny", "shadow": true,
        "hide": ["secret"],
        "tools": {
            "plain": {},
            "by_identity": {"require": [{"path": "identity.grant", "op": "eq", "value": "x"}]},
            "by_args": {"deny_if": [{"path": "args.x", "op": "exists", "value": true}]},
            "by_schema": {"schema": {"type": "object"}},
            "by_limit": {"limits": [{"counter": "c", "window": "day", "max": 1, "increment_from": "args.n"}]},
            "denied": {"action": "deny", "require": [{"path": "args.x", "op": "exists", "value": true}]},
            "secret": {"require": [{"path": "args.x", "op": "exists", "value": true}]}
        }
    }));
    assert!(p.shadow());
    assert!(!policy(json!({"version": "1", "default": "deny"})).shadow());
    for (tool, reads) in [
        ("plain", false),
        ("by_identity", false),
        ("by_args", true),
        ("by_schema", true),
        ("by_limit", true),
        ("denied", false),
        ("secret", false),
        ("unlisted", false),
    ] {
        assert_eq!(p.reads_arguments(tool), reads, "{tool}");
    }
    let p = policy(json!({"version": "1", "default": "allow",
        "all_tools": {"require": [{"path": "args.x", "op": "exists", "value": true}]}}));
    assert!(p.reads_arguments("unlisted"));
}

#[test]
fn a_shared_counter_must_count_the_same_way_everywhere() {
    // Same window, alignment and scope: one budget, each use with its own max.
    let p = policy(json!({"version": "1", "default": "allow",
        "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 60}]},
        "tools": {"search": {"limits": [{"counter": "calls", "window": 60, "max": 2}]}}
    }));
    let d = eval(&p, "search", json!({}));
    let got: Vec<(&str, u64, f64)> = d
        .limits
        .iter()
        .map(|l| (l.counter.as_str(), l.window.seconds, l.max))
        .collect();
    assert_eq!(got, [("calls", 60, 2.0), ("calls", 60, 60.0)]);
    // A different window, alignment or scope would make "one budget" meaningless.
    for (other, field) in [
        (
            json!({"counter": "calls", "window": "second", "max": 2}),
            "window",
        ),
        (
            json!({"counter": "calls", "window": "minute", "max": 2, "align": "calendar"}),
            "window",
        ),
        (
            json!({"counter": "calls", "window": "minute", "max": 2, "scope": "global"}),
            "scope",
        ),
    ] {
        let errs = errors(json!({"version": "1", "default": "allow",
            "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 60}]},
            "tools": {"search": {"limits": [other]}}
        }));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!("/tools/search/limits/0/{field}: counter \"calls\" is also used at /all_tools/limits/0")),
            "{errs:?}"
        );
    }
}

#[test]
fn glob_keys_match_their_literal_name_first() {
    let p = policy(json!({"version": "1", "default": "deny",
        "hide": ["secret[1]"],
        "tools": {
            "*": {"action": "deny"},
            "what?": {}
        }
    }));
    // "what?" is a glob, but a tool literally named "what?" is governed by it as an exact key.
    allowed(&eval(&p, "what?", json!({})));
    denied(
        &eval(&p, "whatx", json!({})),
        "/tools/*/action",
        "Tool \"whatx\" is denied by policy",
    );
    assert!(p.is_hidden("secret[1]"));
    assert!(p.is_hidden("secret1"));
    assert!(!p.is_hidden("secret2"));
}

#[test]
fn blank_on_deny_falls_back_to_the_default_message() {
    let p = policy(json!({"version": "1", "default": "deny", "tools": {
        "t": {"on_deny": "", "require": [{"path": "args.x", "op": "exists", "value": true, "on_deny": "  "}]},
        "d": {"action": "deny", "on_deny": ""}
    }}));
    denied(
        &eval(&p, "t", json!({})),
        "/tools/t/require/args.x-exists",
        "Denied by rule \"/tools/t/require/args.x-exists\"",
    );
    denied(
        &eval(&p, "d", json!({})),
        "/tools/d/action",
        "Tool \"d\" is denied by policy",
    );
}

#[test]
fn requires_approval_reports_whether_any_tool_waits_for_a_human() {
    let with = policy(json!({"version": "1", "default": "deny",
        "tools": {"refund": {"action": "require_approval"}, "list": {}}}));
    let without = policy(json!({"version": "1", "default": "deny",
        "tools": {"wipe": {"action": "deny"}, "list": {}}}));
    assert!(with.requires_approval());
    assert!(!without.requires_approval());
}
