//! A realistic policy for a billing/CRM MCP server (17 tool entries), exercised through the
//! public API only, the way `toolgate policy test` and the gateway use it.

use serde_json::{json, Value};
use toolgate_policy::{ApprovalSettings, Identity, Outcome, Policy, Reuse, ToolCall};

const POLICY: &[u8] = include_bytes!("fixtures/support-desk.json");

fn load() -> Policy {
    Policy::from_json_bytes(POLICY).unwrap_or_else(|e| panic!("fixture must load:\n{e}"))
}

fn agent() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("groups".into(), json!(["support"]));
    Identity {
        grant: "support-assistant".into(),
        sub: Some("alice@example.com".into()),
        claims,
    }
}

fn analyst() -> Identity {
    let mut id = agent();
    id.claims
        .insert("groups".into(), json!(["support", "analysts"]));
    id
}

struct Case {
    name: &'static str,
    tool: &'static str,
    args: Value,
    identity: fn() -> Identity,
    outcome: Outcome,
    rule: &'static str,
    message: &'static str,
}

fn case(name: &'static str, tool: &'static str, args: Value) -> Case {
    Case {
        name,
        tool,
        args,
        identity: agent,
        outcome: Outcome::Allow,
        rule: "",
        message: "",
    }
}

impl Case {
    fn deny(mut self, rule: &'static str, message: &'static str) -> Case {
        self.outcome = Outcome::Deny;
        self.rule = rule;
        self.message = message;
        self
    }
    fn held(mut self, rule: &'static str, message: &'static str) -> Case {
        self.outcome = Outcome::ApprovalRequired;
        self.rule = rule;
        self.message = message;
        self
    }
    fn hidden(mut self, message: &'static str) -> Case {
        self.outcome = Outcome::Hide;
        self.rule = "(hidden)";
        self.message = message;
        self
    }
    fn by(mut self, identity: fn() -> Identity) -> Case {
        self.identity = identity;
        self
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("listing is open", "list_customers", Value::Null),
        case("well-formed customer id", "get_customer", json!({"customer_id": "cus_123"})),
        case("malformed customer id", "get_customer", json!({"customer_id": "123; drop"}))
            .deny("/tools/get_customer/require/args.customer_id-regex", "Denied by rule \"/tools/get_customer/require/args.customer_id-regex\""),
        case("internal account", "get_customer", json!({"customer_id": "cus_internal1"}))
            .deny("/all_tools/deny_if/args.customer_id-in", "Internal accounts are off limits."),
        case("get_* glob admits other getters", "get_invoice", json!({"id": 1})),
        case("hidden by name", "delete_customer", json!({"customer_id": "cus_1"}))
            .hidden("Unknown tool: delete_customer"),
        case("hidden by glob", "admin_reset", json!({})).hidden("Unknown tool: admin_reset"),
        case("unlisted", "merge_customers", json!({}))
            .deny("(default deny)", "Tool \"merge_customers\" is not permitted by policy"),
        case("short search", "search_orders", json!({"query": "late delivery"})),
        case("search too long", "search_orders", json!({"query": "x".repeat(201)}))
            .deny("/tools/search_orders/require/args.query-len_lte", "Denied by rule \"/tools/search_orders/require/args.query-len_lte\""),
        case("small charge", "create_charge", json!({"customer_id": "cus_1", "amount": 25, "currency": "usd", "reason": "late fee"})),
        case("charge without reason", "create_charge", json!({"customer_id": "cus_1", "amount": 25, "currency": "usd"}))
            .deny("/tools/create_charge/require/args.reason-exists", "Say why you are charging."),
        case("big charge", "create_charge", json!({"customer_id": "cus_1", "amount": 20000, "currency": "usd", "reason": "annual"}))
            .deny("/tools/create_charge/deny_if/args.amount-gt", "Charges over 10000 need a human."),
        case("charge in a bad currency", "create_charge", json!({"customer_id": "cus_1", "amount": 5, "currency": "btc", "reason": "x"}))
            .deny("/tools/create_charge/schema", "\"btc\" is not one of \"usd\", \"eur\" or \"gbp\" at /currency"),
        case("charge smuggling a string amount", "create_charge", json!({"customer_id": "cus_1", "amount": "20000", "currency": "usd", "reason": "x"}))
            .deny("/tools/create_charge/schema", "\"20000\" is not of type \"number\" at /amount"),
        case("charge with an extra field", "create_charge", json!({"customer_id": "cus_1", "amount": 5, "currency": "usd", "reason": "x", "capture": false}))
            .deny("/tools/create_charge/schema", "Additional properties are not allowed ('capture' was unexpected) at /"),
        case("small refund", "refund_charge", json!({"charge_id": "ch_1", "amount": 40})),
        case("big refund is held", "refund_charge", json!({"charge_id": "ch_1", "amount": 400}))
            .held("/tools/refund_charge/action", "Refunds over 100 need a supervisor."),
        case("refund without amount", "refund_charge", json!({"charge_id": "ch_1"}))
            .deny("/tools/refund_charge/limits/refund_total", "args.amount is missing"),
        case("good email", "send_email", json!({"from": "support@example.com", "to": ["a@x.com"], "subject": "Hi", "body": "Thanks"})),
        case("email from elsewhere", "send_email", json!({"from": "ceo@example.com", "to": ["a@x.com"]}))
            .deny("/tools/send_email/require/args.from-eq", "Emails go to customers only, from the support address."),
        case("email to everyone", "send_email", json!({"from": "support@example.com", "to": ["a@x.com", "all@example.com"]}))
            .deny("/tools/send_email/deny_if/args.to-contains", "Emails go to customers only, from the support address."),
        case("phishing-like email", "send_email", json!({"from": "support@example.com", "to": ["a@x.com"], "subject": "Reset your PASSWORD", "body": "click http://x"}))
            .deny("/tools/send_email/deny_if/1", "That looks like phishing."),
        case("password email without link", "send_email", json!({"from": "support@example.com", "to": ["a@x.com"], "subject": "Password tips", "body": "use a manager"})),
        case("plan change", "update_customer", json!({"customer_id": "cus_1", "fields": {"plan": "pro"}})),
        case("email change", "update_customer", json!({"customer_id": "cus_1", "fields": {"email": "new@x.com"}}))
            .deny("/tools/update_customer/deny_if/args.fields.email-exists", "Email changes go through verification."),
        case("enterprise plan", "update_customer", json!({"customer_id": "cus_1", "fields": {"plan": "enterprise"}}))
            .deny("/tools/update_customer/deny_if/args.fields.plan-not_in", "Denied by rule \"/tools/update_customer/deny_if/args.fields.plan-not_in\""),
        case("select", "execute_sql", json!({"query": "  SELECT * FROM orders"})),
        case("delete via sql", "execute_sql", json!({"query": "DELETE FROM orders"}))
            .deny("/tools/execute_sql/require/args.query-regex", "Denied by rule \"/tools/execute_sql/require/args.query-regex\""),
        case("catalog snooping", "execute_sql", json!({"query": "select * from information_schema.tables"}))
            .deny("/tools/execute_sql/deny_if/args.query-regex", "Denied by rule \"/tools/execute_sql/deny_if/args.query-regex\""),
        case("export file", "read_file", json!({"path": "/srv/exports/2025/q1.csv"})),
        case("file outside exports", "read_file", json!({"path": "/etc/passwd"}))
            .deny("/tools/read_file/require/args.path-glob", "Denied by rule \"/tools/read_file/require/args.path-glob\""),
        // The glob sees the path as the upstream will resolve it.
        case("path traversal", "read_file", json!({"path": "/srv/exports/../../etc/passwd"}))
            .deny("/tools/read_file/require/args.path-glob", "Denied by rule \"/tools/read_file/require/args.path-glob\""),
        case("dot-dot that stays inside", "read_file", json!({"path": "/srv/exports/a/../b.csv"}))
            .deny("/tools/read_file/deny_if/args.path-contains", "Denied by rule \"/tools/read_file/deny_if/args.path-contains\""),
        case("writing", "write_file", json!({"path": "/tmp/x"}))
            .deny("/tools/write_file/action", "The assistant cannot write files."),
        case("staging deploy", "deploy_service", json!({"service": "web", "env": "staging"})),
        case("prod deploy is held", "deploy_service", json!({"service": "web", "env": "prod"}))
            .held("/tools/deploy_service/action", "Tool \"deploy_service\" requires human approval"),
        case("key rotation is always held", "rotate_api_key", json!({}))
            .held("/tools/rotate_api_key/action", "Tool \"rotate_api_key\" requires human approval"),
        case("ticket", "create_ticket", json!({"priority": 2.0, "tags": ["billing"]})),
        case("ticket with bad priority", "create_ticket", json!({"priority": "high", "tags": ["billing"]}))
            .deny("/tools/create_ticket/require/args.priority-in", "Denied by rule \"/tools/create_ticket/require/args.priority-in\""),
        case("ticket without tags", "create_ticket", json!({"priority": 1, "tags": []}))
            .deny("/tools/create_ticket/require/args.tags-len_gte", "Denied by rule \"/tools/create_ticket/require/args.tags-len_gte\""),
        case("export by a non-analyst", "export_data", json!({"rows": 10}))
            .deny("/tools/export_data/require/identity.claims.groups-contains", "Denied by rule \"/tools/export_data/require/identity.claims.groups-contains\""),
        case("export by an analyst", "export_data", json!({"rows": 10})).by(analyst),
        case("huge export", "export_data", json!({"rows": 100000})).by(analyst)
            .deny("/tools/export_data/deny_if/args.rows-gte", "Denied by rule \"/tools/export_data/deny_if/args.rows-gte\""),
        case("debug tools via glob", "debug_dump", json!({}))
            .deny("/tools/debug_*/action", "Tool \"debug_dump\" is denied by policy"),
    ]
}

#[test]
fn every_case_decides_as_expected() {
    let policy = load();
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        let identity = (c.identity)();
        let d = policy.evaluate(&ToolCall {
            tool: c.tool,
            arguments: &c.args,
            identity: &identity,
        });
        let want = (c.outcome, c.rule, c.message);
        let got = (d.outcome, d.rule.as_str(), d.message.as_str());
        if want != got {
            failures.push(format!(
                "{}:\n  expected {want:?}\n  got      {got:?}",
                c.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn limits_and_approval_settings() {
    let policy = load();
    let id = agent();
    let args = json!({"customer_id": "cus_1", "amount": 25.5, "currency": "eur", "reason": "x"});
    let d = policy.evaluate(&ToolCall {
        tool: "create_charge",
        arguments: &args,
        identity: &id,
    });
    assert!(d.is_allowed());
    let got: Vec<(&str, f64, &str)> = d
        .limits
        .iter()
        .map(|l| (l.counter.as_str(), l.amount, l.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "charge_total",
                25.5,
                "/tools/create_charge/limits/charge_total"
            ),
            (
                "calls-per-minute",
                1.0,
                "/all_tools/limits/calls-per-minute"
            ),
            ("calls-per-day", 1.0, "/all_tools/limits/calls-per-day"),
        ]
    );
    assert!(d.limits[2].window.calendar);

    let args = json!({"service": "web", "env": "prod"});
    let d = policy.evaluate(&ToolCall {
        tool: "deploy_service",
        arguments: &args,
        identity: &id,
    });
    assert_eq!(
        d.approval,
        Some(ApprovalSettings {
            timeout_ms: 3_600_000,
            reuse: Reuse::For { ms: 600_000 }
        })
    );
    assert_eq!(d.limits.len(), 2);

    let args = json!({"query": "x"});
    let d = policy.evaluate(&ToolCall {
        tool: "search_orders",
        arguments: &args,
        identity: &id,
    });
    assert_eq!(
        d.limits[0].exceeded(2_100).message,
        "Rate limit of 5 per 10s reached for \"search-rate\"; retry in 3 s"
    );
}

#[test]
fn tools_list_filtering() {
    let policy = load();
    let upstream = [
        "list_customers",
        "get_customer",
        "delete_customer",
        "admin_reset",
        "admin_audit",
        "write_file",
        "merge_customers",
    ];
    let visible: Vec<&str> = upstream
        .iter()
        .copied()
        .filter(|t| !policy.is_hidden(t))
        .collect();
    // Denied-but-not-hidden tools stay listed (SPEC §4).
    assert_eq!(
        visible,
        [
            "list_customers",
            "get_customer",
            "write_file",
            "merge_customers"
        ]
    );
    assert!(!policy.shadow());
}
