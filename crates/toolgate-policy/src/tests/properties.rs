//! Properties over arbitrary arguments: evaluation is deterministic, total (never panics) and
//! its decisions are well-formed.

use proptest::prelude::*;

use super::*;
use crate::Outcome;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
        prop_oneof![
            Just("prod".to_owned()),
            Just("/srv/data/a/b.csv".to_owned()),
            Just("OPS-12".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("amount".to_owned()),
                        Just("env".to_owned()),
                        Just("items".to_owned()),
                        Just("path".to_owned()),
                        Just("0".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Arguments shaped like the policy's paths, so that predicates actually fire both ways.
fn arb_args() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_json(),
        (arb_json(), arb_json(), arb_json(), arb_json()).prop_map(|(amount, env, items, path)| {
            json!({"amount": amount, "env": env, "items": items, "path": path, "reason": "r"})
        }),
    ]
}

/// Every operator, both shapes, all sections, limits with increment_from, a schema.
fn every_feature_policy() -> Policy {
    policy(json!({
        "version": "1", "default": "deny",
        "hide": ["hidden_*"],
        "all_tools": {
            "require": [{"path": "identity.grant", "op": "len_gte", "value": 1}],
            "deny_if": [{"path": "args.env", "op": "in", "value": ["prod", 1, null, {"a": [1]}]}],
            "limits": [{"counter": "all", "window": "minute", "max": 60}]
        },
        "tools": {
            "everything": {
                "require": [
                    {"path": "args.reason", "op": "exists", "value": true},
                    {"path": "args.items", "op": "len_lte", "value": 100},
                    {"path": "args.items[0]", "op": "not_in", "value": ["x"]}
                ],
                "deny_if": [
                    {"path": "args.amount", "op": "gt", "value": 10000},
                    {"path": "args.amount", "op": "lt", "value": -5},
                    {"path": "args.amount", "op": "gte", "value": 1e300},
                    {"path": "args.amount", "op": "lte", "value": -1e300},
                    {"path": "args.env", "op": "eq", "value": {"nested": [1.0]}},
                    {"path": "args.env", "op": "neq", "value": "x"},
                    {"path": "args.path", "op": "regex", "value": "\\.\\./"},
                    {"path": "args.items", "op": "contains", "value": "rm"},
                    {"path": "args.path", "op": "starts_with", "value": "/etc"},
                    {"path": "args.path", "op": "ends_with", "value": ".key"},
                    {"path": "args.path", "op": "glob", "value": "/srv/**/secret*"},
                    {"path": "args.items.1.amount", "op": "len_gte", "value": 3},
                    {"conditions": [
                        {"path": "args.env", "op": "eq", "value": "staging"},
                        {"path": "identity.claims.groups", "op": "contains", "value": "support"}
                    ]},
                    {"conditions": [{"path": "args.amount", "op": "exists", "value": false}]}
                ],
                "limits": [{"counter": "spend", "window": 3600, "max": 1e6, "increment_from": "args.amount"}]
            },
            "approval": {
                "action": "require_approval",
                "deny_if": [{"path": "args.amount", "op": "gt", "value": 0}]
            },
            "schema": {"schema": {"type": "object", "properties": {"amount": {"type": "integer"}}}},
            "glob_*": {}
        }
    }))
}

fn well_formed(d: &Decision) -> Result<(), TestCaseError> {
    match d.outcome {
        Outcome::Allow => {
            prop_assert!(d.rule.is_empty() && d.message.is_empty());
            prop_assert!(d.approval.is_none());
        }
        Outcome::ApprovalRequired => {
            prop_assert!(!d.rule.is_empty() && !d.message.is_empty());
            prop_assert!(d.approval.is_some());
        }
        Outcome::Deny | Outcome::Hide => {
            prop_assert!(!d.rule.is_empty() && !d.message.is_empty());
            prop_assert!(d.limits.is_empty() && d.approval.is_none());
        }
        Outcome::RateLimited => prop_assert!(false, "evaluate never rate-limits"),
    }
    prop_assert!(d.retry_after_ms.is_none());
    for l in &d.limits {
        prop_assert!(l.amount >= 0.0 && l.amount.is_finite());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn evaluation_is_deterministic_and_total(
        args in arb_args(),
        tool in prop_oneof![
            Just("everything"), Just("approval"), Just("schema"), Just("glob_x"),
            Just("hidden_x"), Just("unlisted"),
        ],
        grant in prop_oneof![Just(String::new()), Just("alice".to_owned()), ".{0,8}"],
        claims in arb_json(),
    ) {
        let p = every_feature_policy();
        let identity = Identity {
            grant,
            sub: None,
            claims: match claims {
                Value::Object(m) => m,
                other => [("groups".to_owned(), other)].into_iter().collect(),
            },
        };
        let first = eval_as(&p, tool, args.clone(), &identity);
        let second = eval_as(&p, tool, args, &identity);
        prop_assert_eq!(&first, &second);
        well_formed(&first)?;
    }

    #[test]
    fn arbitrary_arguments_never_panic(args in arb_json()) {
        let p = every_feature_policy();
        for tool in ["everything", "approval", "schema", "glob_x", "hidden_x", "unlisted"] {
            well_formed(&eval(&p, tool, args.clone()))?;
        }
    }

    #[test]
    fn hidden_and_unlisted_ignore_arguments(args in arb_args()) {
        let p = every_feature_policy();
        prop_assert_eq!(eval(&p, "hidden_x", args.clone()).outcome, Outcome::Hide);
        prop_assert_eq!(eval(&p, "unlisted", args).rule, "(default deny)");
    }

    #[test]
    fn neq_and_not_in_negate_eq_and_in_when_present(actual in arb_json(), literal in arb_json()) {
        let list = json!([literal.clone(), 0]);
        let p = policy(json!({"version": "1", "default": "allow", "tools": {
            "eq": {"require": [{"path": "args.v", "op": "eq", "value": literal}]},
            "neq": {"require": [{"path": "args.v", "op": "neq", "value": literal}]},
            "in": {"require": [{"path": "args.v", "op": "in", "value": list}]},
            "not_in": {"require": [{"path": "args.v", "op": "not_in", "value": list}]}
        }}));
        let args = json!({"v": actual});
        prop_assert_ne!(eval(&p, "eq", args.clone()).is_allowed(), eval(&p, "neq", args.clone()).is_allowed());
        prop_assert_ne!(eval(&p, "in", args.clone()).is_allowed(), eval(&p, "not_in", args).is_allowed());
    }

    #[test]
    fn values_equal_themselves(v in arb_json()) {
        prop_assert!(crate::compare::json_eq(&v, &v));
    }

    #[test]
    fn random_documents_never_panic(doc in arb_json()) {
        let _ = Policy::from_value(&doc);
        let _ = Policy::from_value(&json!({"version": "1", "default": "deny", "tools": {"t": doc}}));
        let text = doc.to_string();
        let _ = Policy::from_json_bytes(text.as_bytes());
    }
}
