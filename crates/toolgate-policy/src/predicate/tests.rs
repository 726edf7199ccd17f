//! Every operator against every kind of actual value, missing paths, and both shapes.

use super::*;
use serde_json::json;

fn args() -> Value {
    json!({
        "amount": 100,
        "price": 9.5,
        "one": 1,
        "one_float": 1.0,
        "neg": -3,
        "big": 9007199254740993_u64,
        "name": "alice@example.com",
        "empty": "",
        "unicode": "héllo",
        "tags": ["a", "b", 1, 2.0, {"k": 1}],
        "no_tags": [],
        "nested": {"a": {"b": [{"c": 5}, {"c": "x"}]}},
        "null": null,
        "flag": true,
        "obj": {"x": 1, "y": [1, 2]},
        "path": "/srv/data/reports/q1.csv",
        "num_str": "20000",
        "traversal": "/srv/data/../../etc/passwd",
        "dotted": "/srv/data/./reports//q1.csv"
    })
}

fn identity() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("groups".into(), json!(["support", "billing"]));
    claims.insert("level".into(), json!(3));
    Identity {
        grant: "alice-laptop".into(),
        sub: Some("user-42".into()),
        claims,
    }
}

fn compile_one(path: &str, op: &str, value: Value) -> Condition {
    let obj = json!({"path": path, "op": op, "value": value});
    let mut errs = Errors::default();
    let c = compile_condition(obj.as_object().unwrap(), &Pointer::root(), &mut errs);
    assert!(errs.is_empty(), "{path} {op}: {:?}", errs.into_inner());
    c.unwrap()
}

/// (path, op, value, holds)
type Case = (&'static str, &'static str, Value, bool);

fn run(cases: Vec<Case>) {
    let args = args();
    let id = identity();
    let mut failures = Vec::new();
    for (path, op, value, want) in cases {
        let c = compile_one(path, op, value.clone());
        let got = c.holds(&args, &id);
        if got != want {
            failures.push(format!("{path} {op} {value}: expected {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn eq_and_neq() {
    run(vec![
        ("args.amount", "eq", json!(100), true),
        ("args.amount", "eq", json!(100.0), true),
        ("args.one_float", "eq", json!(1), true),
        ("args.one", "eq", json!(1.0), true),
        ("args.amount", "eq", json!(101), false),
        ("args.amount", "eq", json!("100"), false),
        ("args.big", "eq", json!(9007199254740992_u64), false),
        ("args.big", "eq", json!(9007199254740993_u64), true),
        ("args.name", "eq", json!("alice@example.com"), true),
        ("args.name", "eq", json!("Alice@example.com"), false),
        ("args.flag", "eq", json!(true), true),
        ("args.flag", "eq", json!(1), false),
        ("args.null", "eq", json!(null), true),
        ("args.missing", "eq", json!(null), false),
        ("args.obj", "eq", json!({"y": [1.0, 2], "x": 1.0}), true),
        ("args.obj", "eq", json!({"x": 1}), false),
        (
            "args.tags",
            "eq",
            json!(["a", "b", 1.0, 2, {"k": 1.0}]),
            true,
        ),
        ("args.nested.a.b[0].c", "eq", json!(5.0), true),
        ("args.nested.a.b[1].c", "eq", json!("x"), true),
        ("args.nested.a.b[2].c", "eq", json!("x"), false),
        ("args.amount", "neq", json!(100.0), false),
        ("args.amount", "neq", json!(5), true),
        ("args.amount", "neq", json!("100"), true),
        ("args.missing", "neq", json!(1), false),
        ("args.null", "neq", json!(1), true),
        ("identity.grant", "eq", json!("alice-laptop"), true),
        ("identity.grant", "neq", json!("bob"), true),
        ("identity.grant", "eq", json!(1), false),
        ("identity.sub", "eq", json!("user-42"), true),
        ("identity.claims.level", "eq", json!(3.0), true),
        ("identity.claims.groups[1]", "eq", json!("billing"), true),
    ]);
}

#[test]
fn in_and_not_in() {
    run(vec![
        ("args.amount", "in", json!([1, 100.0]), true),
        ("args.amount", "in", json!([1, 2]), false),
        ("args.amount", "in", json!([]), false),
        ("args.amount", "in", json!(["100"]), false),
        ("args.name", "in", json!(["x", "alice@example.com"]), true),
        ("args.obj", "in", json!([{"x": 1.0, "y": [1, 2]}]), true),
        ("args.missing", "in", json!([null]), false),
        ("args.null", "in", json!([null]), true),
        ("args.amount", "not_in", json!([1, 100.0]), false),
        ("args.amount", "not_in", json!([1, 2]), true),
        ("args.amount", "not_in", json!([]), true),
        ("args.missing", "not_in", json!([1]), true),
        ("args.missing", "not_in", json!([]), true),
        ("identity.grant", "in", json!(["ci", "alice-laptop"]), true),
        ("identity.grant", "not_in", json!(["ci"]), true),
        ("identity.claims.nope", "not_in", json!(["x"]), true),
    ]);
}

#[test]
fn numeric_comparisons() {
    run(vec![
        ("args.amount", "gt", json!(99), true),
        ("args.amount", "gt", json!(100), false),
        ("args.amount", "gt", json!(100.0), false),
        ("args.amount", "gt", json!(99.99), true),
        ("args.amount", "gte", json!(100.0), true),
        ("args.amount", "gte", json!(100.5), false),
        ("args.amount", "lt", json!(100), false),
        ("args.amount", "lt", json!(100.01), true),
        ("args.amount", "lte", json!(100), true),
        ("args.amount", "lte", json!(99), false),
        ("args.price", "gt", json!(9), true),
        ("args.price", "lt", json!(10), true),
        ("args.neg", "lt", json!(0), true),
        ("args.neg", "gt", json!(-3.5), true),
        ("args.big", "gt", json!(9007199254740992_u64), true),
        ("args.one_float", "gte", json!(1), true),
        ("args.one_float", "lte", json!(1), true),
        // Wrong types never hold, for any comparison.
        ("args.num_str", "gt", json!(10000), false),
        ("args.num_str", "lt", json!(10000), false),
        ("args.name", "gte", json!(0), false),
        ("args.flag", "gt", json!(0), false),
        ("args.null", "lt", json!(1), false),
        ("args.tags", "gt", json!(0), false),
        ("args.obj", "lte", json!(0), false),
        ("args.missing", "lt", json!(1), false),
        ("args.missing", "gte", json!(-1), false),
        ("identity.grant", "gt", json!(0), false),
        ("identity.claims.level", "gte", json!(3), true),
    ]);
}

#[test]
fn regex() {
    run(vec![
        ("args.name", "regex", json!("@example\\.com$"), true),
        ("args.name", "regex", json!("example"), true),
        ("args.name", "regex", json!("^example"), false),
        ("args.name", "regex", json!("(?i)ALICE"), true),
        ("args.unicode", "regex", json!("^h.llo$"), true),
        ("args.empty", "regex", json!("^$"), true),
        ("args.amount", "regex", json!("100"), false),
        ("args.tags", "regex", json!("a"), false),
        ("args.null", "regex", json!(".*"), false),
        ("args.missing", "regex", json!(".*"), false),
        ("identity.sub", "regex", json!("^user-\\d+$"), true),
    ]);
}

#[test]
fn contains() {
    run(vec![
        ("args.name", "contains", json!("@example"), true),
        ("args.name", "contains", json!(""), true),
        ("args.name", "contains", json!("bob"), false),
        ("args.name", "contains", json!(1), false),
        ("args.tags", "contains", json!("a"), true),
        ("args.tags", "contains", json!("c"), false),
        ("args.tags", "contains", json!(1.0), true),
        ("args.tags", "contains", json!(2), true),
        ("args.tags", "contains", json!({"k": 1.0}), true),
        ("args.tags", "contains", json!(["a"]), false),
        ("args.no_tags", "contains", json!("a"), false),
        ("args.amount", "contains", json!(1), false),
        ("args.obj", "contains", json!("x"), false),
        ("args.missing", "contains", json!("a"), false),
        ("identity.claims.groups", "contains", json!("billing"), true),
        ("identity.claims.groups", "contains", json!("admins"), false),
        ("identity.grant", "contains", json!("laptop"), true),
    ]);
}

#[test]
fn exists() {
    run(vec![
        ("args.amount", "exists", json!(true), true),
        ("args.amount", "exists", json!(false), false),
        ("args.empty", "exists", json!(true), true),
        ("args.no_tags", "exists", json!(true), true),
        ("args.flag", "exists", json!(true), true),
        ("args.null", "exists", json!(true), false),
        ("args.null", "exists", json!(false), true),
        ("args.missing", "exists", json!(true), false),
        ("args.missing", "exists", json!(false), true),
        ("args.nested.a.b[1].c", "exists", json!(true), true),
        ("args.nested.a.b[9].c", "exists", json!(false), true),
        ("args.name.deeper", "exists", json!(true), false),
        ("identity.sub", "exists", json!(true), true),
        ("identity.claims.groups", "exists", json!(true), true),
        ("identity.claims.nope", "exists", json!(false), true),
    ]);
}

#[test]
fn prefixes_and_suffixes() {
    run(vec![
        ("args.name", "starts_with", json!("alice"), true),
        ("args.name", "starts_with", json!("bob"), false),
        ("args.name", "starts_with", json!(""), true),
        ("args.name", "ends_with", json!(".com"), true),
        ("args.name", "ends_with", json!(".org"), false),
        ("args.amount", "starts_with", json!("1"), false),
        ("args.tags", "starts_with", json!("a"), false),
        ("args.missing", "starts_with", json!(""), false),
        ("args.missing", "ends_with", json!(""), false),
        ("identity.grant", "starts_with", json!("alice-"), true),
        ("identity.grant", "ends_with", json!("-laptop"), true),
    ]);
}

#[test]
fn glob() {
    run(vec![
        ("args.path", "glob", json!("/srv/data/**"), true),
        ("args.path", "glob", json!("/srv/data/*"), false),
        ("args.path", "glob", json!("/srv/data/*/*.csv"), true),
        ("args.path", "glob", json!("/srv/data/**/*.csv"), true),
        ("args.path", "glob", json!("/srv/other/**"), false),
        ("args.path", "glob", json!("*.csv"), false),
        ("args.path", "glob", json!("**/*.csv"), true),
        ("args.path", "glob", json!("/srv/data/reports/q?.csv"), true),
        (
            "args.path",
            "glob",
            json!("/srv/data/reports/q[12].csv"),
            true,
        ),
        ("args.name", "glob", json!("*@example.com"), true),
        ("args.amount", "glob", json!("*"), false),
        ("args.missing", "glob", json!("*"), false),
        ("identity.grant", "glob", json!("alice-*"), true),
        // Dot segments are resolved before matching, both ways round.
        ("args.traversal", "glob", json!("/srv/data/**"), false),
        ("args.traversal", "glob", json!("/etc/**"), true),
        ("args.dotted", "glob", json!("/srv/data/*/q1.csv"), true),
    ]);
}

#[test]
fn lengths() {
    run(vec![
        ("args.name", "len_lte", json!(17), true),
        ("args.name", "len_lte", json!(16), false),
        ("args.name", "len_gte", json!(17), true),
        ("args.name", "len_gte", json!(18), false),
        // Characters, not bytes: "héllo" is 5 characters and 6 bytes.
        ("args.unicode", "len_lte", json!(5), true),
        ("args.unicode", "len_gte", json!(6), false),
        ("args.empty", "len_lte", json!(0), true),
        ("args.tags", "len_gte", json!(5), true),
        ("args.tags", "len_lte", json!(4), false),
        ("args.no_tags", "len_lte", json!(0), true),
        ("args.tags", "len_lte", json!(5.5), true),
        ("args.amount", "len_lte", json!(100), false),
        ("args.obj", "len_lte", json!(100), false),
        ("args.null", "len_lte", json!(100), false),
        ("args.missing", "len_lte", json!(100), false),
        ("args.missing", "len_gte", json!(0), false),
        ("identity.grant", "len_gte", json!(12), true),
        ("identity.claims.groups", "len_lte", json!(2), true),
    ]);
}

#[test]
fn missing_path_only_exists_and_not_in_can_hold() {
    let values = [
        ("eq", json!(null)),
        ("neq", json!(1)),
        ("in", json!([null])),
        ("not_in", json!([1])),
        ("lt", json!(1)),
        ("lte", json!(1)),
        ("gt", json!(1)),
        ("gte", json!(1)),
        ("regex", json!("")),
        ("contains", json!("")),
        ("exists", json!(false)),
        ("starts_with", json!("")),
        ("ends_with", json!("")),
        ("glob", json!("**")),
        ("len_lte", json!(100)),
        ("len_gte", json!(0)),
    ];
    assert_eq!(values.len(), OPS.len());
    let id = Identity::default();
    for (op, value) in values {
        let c = compile_one("args.nope.deeper[3]", op, value);
        let want = op == "exists" || op == "not_in";
        assert_eq!(c.holds(&args(), &id), want, "{op}");
        // Absent arguments altogether behave the same way.
        assert_eq!(c.holds(&Value::Null, &id), want, "{op} on null arguments");
        // So does an identity path to nothing.
        let c = compile_one("identity.sub", op, c_value(op));
        assert_eq!(c.holds(&Value::Null, &id), want, "{op} on identity.sub");
    }
}

fn c_value(op: &str) -> Value {
    match op {
        "in" | "not_in" => json!([]),
        "lt" | "lte" | "gt" | "gte" | "len_lte" | "len_gte" => json!(0),
        "exists" => json!(false),
        _ => json!(""),
    }
}

fn compile_section(section: Section, list: Value, default_on_deny: Option<&str>) -> Vec<Predicate> {
    let mut errs = Errors::default();
    let preds = compile_list(
        &list,
        &Pointer::root().key("tools").key("t").key(section.key()),
        section,
        "/tools/t",
        default_on_deny,
        &mut errs,
    );
    assert!(errs.is_empty(), "{:?}", errs.into_inner());
    preds
}

fn first(preds: &[Predicate], args: &Value) -> Option<(String, String, Option<String>)> {
    let id = identity();
    preds.iter().find_map(|p| {
        p.refuses(args, &id).map(|r| {
            (
                r.rule.to_owned(),
                r.message.to_owned(),
                r.own_message.map(str::to_owned),
            )
        })
    })
}

#[test]
fn flat_rule_ids_and_messages() {
    let preds = compile_section(
        Section::Require,
        json!([
            {"path": "args.amount", "op": "exists", "value": true},
            {"path": "args.items[0].sku", "op": "regex", "value": "^SKU-", "on_deny": "bad sku"}
        ]),
        None,
    );
    assert_eq!(
        first(&preds, &json!({})),
        Some((
            "/tools/t/require/args.amount-exists".into(),
            "Denied by rule \"/tools/t/require/args.amount-exists\"".into(),
            None
        ))
    );
    assert_eq!(
        first(&preds, &json!({"amount": 1, "items": [{"sku": "X"}]})),
        Some((
            "/tools/t/require/args.items[0].sku-regex".into(),
            "bad sku".into(),
            Some("bad sku".into())
        ))
    );
    assert_eq!(
        first(&preds, &json!({"amount": 1, "items": [{"sku": "SKU-1"}]})),
        None
    );

    // The section's on_deny replaces the generic message but is not the predicate's own.
    let preds = compile_section(
        Section::DenyIf,
        json!([{"path": "args.amount", "op": "gt", "value": 10}]),
        Some("tool says no"),
    );
    assert_eq!(
        first(&preds, &json!({"amount": 11})),
        Some((
            "/tools/t/deny_if/args.amount-gt".into(),
            "tool says no".into(),
            None
        ))
    );
}

#[test]
fn grouped_predicates() {
    let group = json!([{
        "conditions": [
            {"path": "args.env", "op": "eq", "value": "prod"},
            {"path": "args.force", "op": "eq", "value": true, "on_deny": "force needed"}
        ],
        "on_deny": "no forced prod deploys"
    }]);
    let deny_if = compile_section(Section::DenyIf, group.clone(), None);
    let both = json!({"env": "prod", "force": true});
    let one = json!({"env": "prod", "force": false});
    assert_eq!(
        first(&deny_if, &both),
        Some((
            "/tools/t/deny_if/0".into(),
            "no forced prod deploys".into(),
            Some("no forced prod deploys".into())
        ))
    );
    assert_eq!(first(&deny_if, &one), None);

    let require = compile_section(Section::Require, group, None);
    assert_eq!(first(&require, &both), None);
    assert_eq!(
        first(&require, &one).map(|r| r.0),
        Some("/tools/t/require/0".into())
    );

    // Without a group on_deny, a failing require condition's own on_deny explains the refusal.
    let require = compile_section(
        Section::Require,
        json!([
            {"path": "args.x", "op": "exists", "value": true},
            {"conditions": [
                {"path": "args.env", "op": "eq", "value": "prod"},
                {"path": "args.force", "op": "eq", "value": true, "on_deny": "force needed"}
            ]}
        ]),
        Some("tool default"),
    );
    let r = first(&require, &json!({"x": 1, "env": "prod", "force": false})).unwrap();
    assert_eq!(
        r,
        (
            "/tools/t/require/1".into(),
            "force needed".into(),
            Some("force needed".into())
        )
    );
    let r = first(&require, &json!({"x": 1, "env": "dev"})).unwrap();
    assert_eq!(
        r,
        ("/tools/t/require/1".into(), "tool default".into(), None)
    );

    // A deny_if group that fires has no single condition to blame: the condition's on_deny is
    // not used.
    let deny_if = compile_section(
        Section::DenyIf,
        json!([{"conditions": [{"path": "args.x", "op": "exists", "value": true, "on_deny": "cond"}]}]),
        None,
    );
    let r = first(&deny_if, &json!({"x": 1})).unwrap();
    assert_eq!(r.1, "Denied by rule \"/tools/t/deny_if/0\"");
}

#[test]
fn empty_group_always_holds() {
    let deny_if = compile_section(Section::DenyIf, json!([{"conditions": []}]), None);
    assert_eq!(
        first(&deny_if, &json!({})).map(|r| r.0),
        Some("/tools/t/deny_if/0".into())
    );
    assert!(first(&deny_if, &Value::Null).is_some());
    let require = compile_section(Section::Require, json!([{"conditions": []}]), None);
    assert_eq!(first(&require, &json!({})), None);
}

#[test]
fn regex_errors_are_one_line() {
    let mut errs = Errors::default();
    compile_list(
        &json!([{"path": "args.a", "op": "regex", "value": "(unclosed"}]),
        &Pointer::root().key("r"),
        Section::Require,
        "/tools/t",
        None,
        &mut errs,
    );
    let errs = errs.into_inner();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].pointer, "/r/0/value");
    assert!(!errs[0].message.contains('\n'), "{}", errs[0].message);
    assert!(
        errs[0]
            .message
            .starts_with("invalid regular expression \"(unclosed\": "),
        "{}",
        errs[0].message
    );
}
