//! Example calls with the decisions they must get: policies tested like code
//! (`toolgate policy test POLICY CASES`, SPEC §2).
//!
//! A cases file is `{"cases": [case, …]}` or a bare array of cases; a case is
//! `{"name", "tool", "arguments"?, "identity"? {"grant"?, "sub"?, "claims"?},
//! "expect": {"decision", "rule"?, "message"?}}`. Unknown fields are refused, so a typo in
//! `expect` cannot make a case pass by checking nothing.
//!
//! Decisions are the policy's alone: limits are reported by a decision but counted by the
//! gateway, so a case never expects `rate_limited`.

use crate::{Identity, Outcome, Policy, ToolCall};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One example call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, for the report.
    pub name: String,
    /// The tool called.
    pub tool: String,
    /// Its arguments (`{}` when absent).
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// Who calls.
    #[serde(default)]
    pub identity: CaseIdentity,
    /// What the policy must decide.
    pub expect: Expect,
}

/// The caller of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseIdentity {
    /// The grant's label (`policy-test` when absent).
    #[serde(default = "default_grant")]
    pub grant: String,
    /// The token's subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// The token's claims.
    #[serde(default)]
    pub claims: Map<String, Value>,
}

impl Default for CaseIdentity {
    fn default() -> Self {
        CaseIdentity {
            grant: default_grant(),
            sub: None,
            claims: Map::new(),
        }
    }
}

/// A case's expected decision; `rule` and `message` are checked only when given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow`, `deny`, `hide` or `approval_required`.
    pub decision: String,
    /// The rule id (`""` for an allowed call).
    #[serde(default)]
    pub rule: Option<String>,
    /// The message the agent would read.
    #[serde(default)]
    pub message: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_grant() -> String {
    "policy-test".to_owned()
}

/// The decisions a case may expect.
const DECISIONS: &[&str] = &["allow", "deny", "hide", "approval_required"];

/// Reads a JSON cases file; the error says where it is wrong.
pub fn parse_cases(bytes: &[u8]) -> Result<Vec<Case>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    cases_from_value(value)
}

/// The cases a cases file's value holds (read from JSON, or from YAML by the caller).
pub fn cases_from_value(value: Value) -> Result<Vec<Case>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        cases: Vec<Case>,
    }
    let cases = match value {
        Value::Array(_) => Vec::<Case>::deserialize(value),
        _ => File::deserialize(value).map(|f| f.cases),
    }
    .map_err(|e| e.to_string())?;
    for (i, case) in cases.iter().enumerate() {
        if !DECISIONS.contains(&case.expect.decision.as_str()) {
            return Err(format!(
                "case {i} ({:?}): expect.decision {:?} is not one of {}",
                case.name,
                case.expect.decision,
                DECISIONS.join(", ")
            ));
        }
    }
    Ok(cases)
}

/// Where a case's actual decision differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `decision`, `rule` or `message`.
    pub field: &'static str,
    /// What the case expects.
    pub expected: String,
    /// What the policy decided.
    pub actual: String,
}

/// The mismatches of `case` under `policy` (none: it holds).
pub fn check(policy: &Policy, case: &Case) -> Vec<Mismatch> {
    let identity = Identity {
        grant: case.identity.grant.clone(),
        sub: case.identity.sub.clone(),
        claims: case.identity.claims.clone(),
    };
    let decision = policy.evaluate(&ToolCall {
        tool: &case.tool,
        arguments: &case.arguments,
        identity: &identity,
    });
    let actual_decision = match decision.outcome {
        // The engine never decides this; listed so a new outcome is not missed.
        Outcome::RateLimited => "rate_limited",
        other => other.as_str(),
    };
    let mut mismatches = Vec::new();
    let mut compare = |field, expected: Option<&String>, actual: &str| {
        if let Some(expected) = expected {
            if expected != actual {
                mismatches.push(Mismatch {
                    field,
                    expected: expected.clone(),
                    actual: actual.to_owned(),
                });
            }
        }
    };
    compare("decision", Some(&case.expect.decision), actual_decision);
    compare("rule", case.expect.rule.as_ref(), &decision.rule);
    compare("message", case.expect.message.as_ref(), &decision.message);
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &[u8] = br#"{"version": "1", "default": "deny", "hide": ["secret_*"],
        "tools": {"pay": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100,
                                        "on_deny": "too much"}]},
                  "whoami": {"require": [{"path": "identity.sub", "op": "eq", "value": "alice"}]}}}"#;

    #[test]
    fn cases_hold_or_name_each_difference() {
        let policy = Policy::from_json_bytes(POLICY).unwrap();
        let cases = parse_cases(
            br#"{"cases": [
              {"name": "small", "tool": "pay", "arguments": {"amount": 5}, "expect": {"decision": "allow", "rule": ""}},
              {"name": "big", "tool": "pay", "arguments": {"amount": 500},
               "expect": {"decision": "deny", "rule": "/tools/pay/deny_if/args.amount-gt", "message": "too much"}},
              {"name": "hidden", "tool": "secret_x", "expect": {"decision": "hide"}},
              {"name": "alice", "tool": "whoami", "identity": {"sub": "alice"}, "expect": {"decision": "allow"}},
              {"name": "wrong", "tool": "pay", "arguments": {"amount": 500},
               "expect": {"decision": "allow", "message": "fine"}}
            ]}"#,
        )
        .unwrap();
        let results: Vec<Vec<Mismatch>> = cases.iter().map(|c| check(&policy, c)).collect();
        assert!(results[..4].iter().all(Vec::is_empty), "{results:?}");
        assert_eq!(
            results[4],
            vec![
                Mismatch {
                    field: "decision",
                    expected: "allow".into(),
                    actual: "deny".into()
                },
                Mismatch {
                    field: "message",
                    expected: "fine".into(),
                    actual: "too much".into()
                },
            ]
        );
    }

    #[test]
    fn a_bare_array_works_and_mistakes_are_named() {
        assert_eq!(
            parse_cases(br#"[{"name": "n", "tool": "t", "expect": {"decision": "deny"}}]"#)
                .unwrap()
                .len(),
            1
        );
        let typo = parse_cases(br#"[{"name": "n", "tool": "t", "expect": {"decison": "deny"}}]"#)
            .unwrap_err();
        assert!(typo.contains("decison"), "{typo}");
        let limited =
            parse_cases(br#"[{"name": "n", "tool": "t", "expect": {"decision": "rate_limited"}}]"#)
                .unwrap_err();
        assert!(
            limited.contains("rate_limited") && limited.contains("approval_required"),
            "{limited}"
        );
        assert!(parse_cases(b"{").unwrap_err().starts_with("not JSON"));
    }
}
