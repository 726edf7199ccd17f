//! Load-time validation: every error reported at once, each at its JSON Pointer.

use super::*;

fn one_tool(rules: Value) -> Value {
    json!({"version": "1", "default": "deny", "tools": {"t": rules}})
}

/// Asserts the document is rejected with exactly these errors (as displayed), in this order.
fn rejects(doc: Value, want: &[&str]) {
    let got = errors(doc.clone());
    assert_eq!(got, want, "document: {doc}");
}

#[test]
fn minimal_documents_load() {
    for doc in [
        json!({"version": "1", "default": "deny"}),
        json!({"version": "1", "default": "allow", "tools": {}, "hide": [], "all_tools": {}}),
        json!({
            "version": "1", "default": "deny", "name": "n", "$schema": "https://x/s.json",
            "metadata": {"owner": "team"}, "description": "d", "shadow": true,
            "tools": {"t": {"description": "about t"}}
        }),
    ] {
        policy(doc);
    }
}

#[test]
fn every_error_is_reported_at_once() {
    let doc = json!({
        "version": 2,
        "default": "maybe",
        "deny-all": true,
        "shadow": "yes",
        "hide": ["ok", "", "[", 3],
        "all_tools": {
            "requires": [],
            "limits": [{
                "counter": "", "window": "fortnight", "max": 0, "scope": "team",
                "increment": 1, "increment_from": "args.x"
            }]
        },
        "tools": {
            "create_charge": {
                "deny_if": [{"path": "args.amount", "op": "greater", "value": 10000}],
                "deny-if": []
            },
            "a/b": {"require": [{"path": "amount", "op": "gt", "value": "10"}]},
            "x[": {},
            "": {},
            "t": {
                "action": "allow",
                "approval": {"timeout": "soon"},
                "schema": {"type": "nope"},
                "on_deny": 5
            }
        }
    });
    rejects(
        doc,
        &[
            "/deny-all: unknown field \"deny-all\"; expected one of version, default, hide, all_tools, tools, description, shadow",
            "/version: expected the string \"1\", found 2",
            "/default: expected \"allow\" or \"deny\", found \"maybe\"",
            "/shadow: expected true or false, found a string",
            "/hide/1: a tool name must not be empty",
            "/hide/2: invalid glob \"[\": unclosed character class; missing ']'",
            "/hide/3: expected a tool name or glob (a string), found a number",
            "/all_tools/requires: unknown field \"requires\"; did you mean \"require\"?; expected one of limits, require, deny_if, on_deny",
            "/all_tools/limits/0/counter: the counter name must not be empty",
            "/all_tools/limits/0/window: expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found \"fortnight\"",
            "/all_tools/limits/0/max: expected a number above 0, found 0",
            "/all_tools/limits/0/scope: expected one of grant, identity, session, server, global, found \"team\"",
            "/all_tools/limits/0: use either \"increment\" or \"increment_from\", not both",
            "/tools/create_charge/deny-if: unknown field \"deny-if\"; did you mean \"deny_if\"?; expected one of require, deny_if, limits, on_deny, action, approval, schema, description",
            "/tools/create_charge/deny_if/0/op: unknown operator \"greater\"; expected one of eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists, starts_with, ends_with, glob, len_lte, len_gte",
            "/tools/a~1b/require/0/path: invalid path \"amount\": a path must start with \"args.\" or \"identity.\"",
            "/tools/a~1b/require/0/value: operator \"gt\" needs a number, found a string",
            "/tools/x[: invalid glob \"x[\": unclosed character class; missing ']'",
            "/tools/: a tool name must not be empty",
            "/tools/t/on_deny: expected a message (a string), found a number",
            "/tools/t/action: expected \"deny\" or \"require_approval\", found \"allow\"",
            "/tools/t/approval/timeout: invalid duration \"soon\"; expected a whole number followed by ms, s, m, h or d (e.g. \"15m\")",
            "/tools/t/schema/type: invalid JSON Schema: \"nope\" is not valid under any of the schemas listed in the 'anyOf' keyword",
        ],
    );
}

#[test]
fn pointers_escape_slash_and_tilde() {
    let doc = json!({
        "version": "1", "default": "deny",
        "tools": {
            "a/b": {"deny_if": [{"path": "args.x", "op": "nope", "value": 1}]},
            "c~d": {"limits": "x"}
        }
    });
    let errs = Policy::from_value(&doc).unwrap_err();
    let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(pointers, ["/tools/a~1b/deny_if/0/op", "/tools/c~0d/limits"]);
}

#[test]
fn top_level_shape() {
    rejects(
        json!([]),
        &["(document): expected a policy document (a JSON object), found a list"],
    );
    rejects(
        json!({}),
        &["(document): missing required fields \"version\", \"default\" (\"allow\" or \"deny\")"],
    );
    rejects(
        json!({"default": "deny"}),
        &["(document): missing required field \"version\""],
    );
    rejects(
        json!({"version": 1, "default": "deny"}),
        &["/version: expected the string \"1\", found 1"],
    );
    rejects(
        json!({"version": "2", "default": "DENY"}),
        &[
            "/version: expected the string \"1\", found \"2\"",
            "/default: expected \"allow\" or \"deny\", found \"DENY\"",
        ],
    );
    rejects(
        json!({"version": "1", "default": "deny", "tools": [], "hide": "x", "all_tools": [], "description": 1}),
        &[
            "/description: expected a description (a string), found a number",
            "/hide: expected a list of tool names or globs, found a string",
            "/all_tools: expected an object ({\"limits\", \"require\", \"deny_if\"}), found a list",
            "/tools: expected an object keyed by tool name, found a list",
        ],
    );
    rejects(
        json!({"version": "1", "default": "deny", "tools": {"t": true}}),
        &["/tools/t: expected an object of rules for this tool ({} allows it), found a boolean"],
    );
}

#[test]
fn invalid_json_and_duplicate_keys() {
    let err = Policy::from_json_bytes(b"{\"version\": \"1\",").unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err.0[0].pointer, "");
    assert!(err.0[0].message.starts_with("not valid JSON: "), "{err}");

    let text = br#"{"version": "1", "default": "deny", "tools": {
        "create_charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 10}]},
        "create_charge": {},
        "t": {"on_deny": 5}
    }}"#;
    let err = Policy::from_json_bytes(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/tools/create_charge: duplicate key \"create_charge\"; each key may appear only once in an object\n\
         /tools/t/on_deny: expected a message (a string), found a number"
    );

    let ok = br#"{"version": "1", "default": "deny", "tools": {"a": {}, "b": {}}}"#;
    assert!(Policy::from_json_bytes(ok).is_ok());
    let with_bom = [b"\xEF\xBB\xBF".as_slice(), ok.as_slice()].concat();
    assert!(Policy::from_json_bytes(&with_bom).is_ok());
}

#[test]
fn operator_value_types() {
    let cases: &[(&str, Value, &str)] = &[
        (
            "in",
            json!("a"),
            "operator \"in\" needs a list, found a string",
        ),
        (
            "not_in",
            json!({}),
            "operator \"not_in\" needs a list, found an object",
        ),
        (
            "lt",
            json!("5"),
            "operator \"lt\" needs a number, found a string",
        ),
        (
            "lte",
            json!(null),
            "operator \"lte\" needs a number, found null",
        ),
        (
            "gt",
            json!([1]),
            "operator \"gt\" needs a number, found a list",
        ),
        (
            "gte",
            json!(true),
            "operator \"gte\" needs a number, found a boolean",
        ),
        (
            "regex",
            json!(1),
            "operator \"regex\" needs a string, found a number",
        ),
        (
            "regex",
            json!("a("),
            "invalid regular expression \"a(\": unclosed group",
        ),
        (
            "exists",
            json!("yes"),
            "operator \"exists\" needs true or false, found a string",
        ),
        (
            "exists",
            json!(1),
            "operator \"exists\" needs true or false, found a number",
        ),
        (
            "starts_with",
            json!(1),
            "operator \"starts_with\" needs a string, found a number",
        ),
        (
            "ends_with",
            json!(["x"]),
            "operator \"ends_with\" needs a string, found a list",
        ),
        (
            "glob",
            json!(false),
            "operator \"glob\" needs a string, found a boolean",
        ),
        (
            "glob",
            json!("a[b"),
            "invalid glob \"a[b\": unclosed character class; missing ']'",
        ),
        (
            "len_lte",
            json!("3"),
            "operator \"len_lte\" needs a number of at least 0, found a string",
        ),
        (
            "len_gte",
            json!(-1),
            "operator \"len_gte\" needs a number of at least 0, found a number",
        ),
    ];
    for (op, value, want) in cases {
        let doc = one_tool(json!({"require": [{"path": "args.a", "op": op, "value": value}]}));
        rejects(doc, &[&format!("/tools/t/require/0/value: {want}")]);
    }
    // eq, neq and contains take any value.
    for op in ["eq", "neq", "contains"] {
        for value in [
            json!(null),
            json!(1),
            json!("s"),
            json!([1]),
            json!({"a": 1}),
            json!(true),
        ] {
            policy(one_tool(
                json!({"deny_if": [{"path": "args.a", "op": op, "value": value}]}),
            ));
        }
    }
}

#[test]
fn predicate_shapes() {
    let cases: &[(Value, &[&str])] = &[
        (json!("x"), &["/tools/t/require: expected a list of predicates, found a string"]),
        (
            json!([1]),
            &["/tools/t/require/0: expected a predicate object ({\"path\", \"op\", \"value\"} or {\"conditions\": [...]}), found a number"],
        ),
        (
            json!([{}]),
            &["/tools/t/require/0: missing required fields \"path\", \"op\", \"value\""],
        ),
        (
            json!([{"path": "args.a", "op": "eq"}]),
            &["/tools/t/require/0: missing required field \"value\""],
        ),
        (
            json!([{"path": 5, "op": 6, "value": 1, "on_deny": [], "note": 1}]),
            &[
                "/tools/t/require/0/note: unknown field \"note\"; expected one of path, op, value, on_deny",
                "/tools/t/require/0/path: expected a path (a string such as \"args.amount\"), found a number",
                "/tools/t/require/0/op: expected an operator name, found a number; expected one of eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists, starts_with, ends_with, glob, len_lte, len_gte",
                "/tools/t/require/0/on_deny: expected a message (a string), found a list",
            ],
        ),
        (
            json!([{"conditions": {}}]),
            &["/tools/t/require/0/conditions: expected a list of conditions, found an object"],
        ),
        (
            json!([{"conditions": [], "path": "args.a", "on_deny": 1}]),
            &[
                "/tools/t/require/0/path: unknown field \"path\"; expected one of conditions, on_deny",
                "/tools/t/require/0/on_deny: expected a message (a string), found a number",
            ],
        ),
        (
            json!([{"conditions": [
                {"path": "args.a", "op": "eq", "value": 1},
                {"conditions": []},
                {"path": "args.b", "op": "between", "value": 1},
                "x"
            ]}]),
            &[
                "/tools/t/require/0/conditions/1/conditions: groups cannot be nested; a condition is {\"path\", \"op\", \"value\"}",
                "/tools/t/require/0/conditions/2/op: unknown operator \"between\"; expected one of eq, neq, in, not_in, lt, lte, gt, gte, regex, contains, exists, starts_with, ends_with, glob, len_lte, len_gte",
                "/tools/t/require/0/conditions/3: expected a condition object ({\"path\", \"op\", \"value\"}), found a string",
            ],
        ),
        (
            json!([{"path": "identity.email", "op": "eq", "value": 1}]),
            &["/tools/t/require/0/path: invalid path \"identity.email\": expected identity.grant, identity.sub or identity.claims.<name>"],
        ),
    ];
    for (list, want) in cases {
        rejects(one_tool(json!({"require": list})), want);
    }
}

#[test]
fn limit_fields() {
    let cases: &[(Value, &[&str])] = &[
        (json!({}), &["/tools/t/limits/0: missing required fields \"counter\", \"window\", \"max\""]),
        (
            json!({"counter": 1, "window": 0, "max": "10"}),
            &[
                "/tools/t/limits/0/counter: expected a counter name (a string), found a number",
                "/tools/t/limits/0/window: expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found 0",
                "/tools/t/limits/0/max: expected a number above 0, found \"10\"",
            ],
        ),
        (
            json!({"counter": "c", "window": 1.5, "max": -1}),
            &[
                "/tools/t/limits/0/window: expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found 1.5",
                "/tools/t/limits/0/max: expected a number above 0, found -1",
            ],
        ),
        (
            json!({"counter": "c", "window": "Minute", "max": 1, "align": "utc", "increment": 0}),
            &[
                "/tools/t/limits/0/window: expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found \"Minute\"",
                "/tools/t/limits/0/align: expected \"rolling\" or \"calendar\", found \"utc\"",
                "/tools/t/limits/0/increment: expected a number above 0, found 0",
            ],
        ),
        (
            json!({"counter": "c", "window": "day", "max": 1, "increment_from": "identity.grant"}),
            &["/tools/t/limits/0/increment_from: invalid path \"identity.grant\": the path must start with \"args.\""],
        ),
        (
            json!({"counter": "c", "window": "day", "max": 1, "increment_from": 5}),
            &["/tools/t/limits/0/increment_from: expected an argument path (a string such as \"args.amount\"), found a number"],
        ),
        (
            json!({"counter": "c", "window": "day", "max": 1, "scope": "grant", "per": "x"}),
            &["/tools/t/limits/0/per: unknown field \"per\"; expected one of counter, window, max, scope, increment, increment_from, align"],
        ),
        (json!("c"), &["/tools/t/limits/0: expected a limit object ({\"counter\", \"window\", \"max\"}), found a string"]),
    ];
    for (limit, want) in cases {
        rejects(one_tool(json!({"limits": [limit]})), want);
    }
    rejects(
        one_tool(json!({"limits": {}})),
        &["/tools/t/limits: expected a list of limits, found an object"],
    );
    // Every accepted form.
    policy(one_tool(json!({"limits": [
        {"counter": "a", "window": "second", "max": 1},
        {"counter": "a2", "window": "minute", "max": 2.5, "scope": "identity", "align": "calendar"},
        {"counter": "b", "window": "hour", "max": 1, "scope": "session", "increment": 0.5},
        {"counter": "c", "window": "day", "max": 1, "scope": "server", "increment_from": "args.n"},
        {"counter": "d", "window": 90, "max": 1, "scope": "global", "align": "rolling"}
    ]})));
}

#[test]
fn tool_fields() {
    rejects(
        one_tool(json!({"approval": {"timeout": "5m"}})),
        &["/tools/t/approval: \"approval\" only applies with \"action\": \"require_approval\""],
    );
    rejects(
        one_tool(json!({"action": "deny", "approval": {}})),
        &["/tools/t/approval: \"approval\" only applies with \"action\": \"require_approval\""],
    );
    rejects(
        one_tool(json!({"action": ["deny"]})),
        &["/tools/t/action: expected \"deny\" or \"require_approval\", found a list"],
    );
    rejects(
        one_tool(json!({"description": 3, "Require": []})),
        &[
            "/tools/t/Require: unknown field \"Require\"; did you mean \"require\"?; expected one of require, deny_if, limits, on_deny, action, approval, schema, description",
            "/tools/t/description: expected a description (a string), found a number",
        ],
    );
    policy(one_tool(
        json!({"action": "require_approval", "approval": {"timeout": "5m", "for": "1h"}}),
    ));
    policy(one_tool(
        json!({"action": "deny", "on_deny": "use the console"}),
    ));
}

#[test]
fn schemas() {
    // An invalid schema is reported inside the schema.
    rejects(
        one_tool(json!({"schema": {"properties": {"a": {"minimum": "x"}}}})),
        &["/tools/t/schema/properties/a/minimum: invalid JSON Schema: \"x\" is not of type \"number\""],
    );
    // No remote references: the schema fails to load instead of fetching anything.
    let errs = errors(one_tool(
        json!({"schema": {"$ref": "https://example.com/s.json"}}),
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("/tools/t/schema: invalid JSON Schema: "),
        "{}",
        errs[0]
    );
    let errs = errors(one_tool(json!({"schema": {"$ref": "file:///etc/passwd"}})));
    assert!(
        errs[0].starts_with("/tools/t/schema: invalid JSON Schema: "),
        "{}",
        errs[0]
    );
    // Local references and boolean schemas are fine.
    policy(one_tool(json!({"schema": {
        "$defs": {"amount": {"type": "number"}},
        "type": "object",
        "properties": {"amount": {"$ref": "#/$defs/amount"}}
    }})));
    policy(one_tool(json!({"schema": true})));
    // Declaring a well-known draft needs no fetching: meta-schemas are built in.
    for draft in [
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2020-12/schema",
    ] {
        policy(one_tool(
            json!({"schema": {"$schema": draft, "type": "object"}}),
        ));
    }
    rejects(
        one_tool(json!({"schema": 5})),
        &["/tools/t/schema: invalid JSON Schema: 5 is not of types \"boolean\", \"object\""],
    );
}

#[test]
fn all_tools_fields() {
    rejects(
        json!({"version": "1", "default": "allow", "all_tools": {
            "on_deny": 1,
            "require": [{"path": "args.x", "op": "exists"}],
            "limits": [{"counter": "c", "window": "week", "max": 1}],
            "action": "deny"
        }}),
        &[
            "/all_tools/action: unknown field \"action\"; expected one of limits, require, deny_if, on_deny",
            "/all_tools/on_deny: expected a message (a string), found a number",
            "/all_tools/require/0: missing required field \"value\"",
            "/all_tools/limits/0/window: expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found \"week\"",
        ],
    );
}

#[test]
fn policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Decision>();
    assert_send_sync::<crate::PolicyErrors>();
}
