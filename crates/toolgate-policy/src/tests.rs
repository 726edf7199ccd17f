//! Whole-policy tests: validation (every error, with pointers), evaluation (every rule id
//! form and message), and properties of evaluation.

use serde_json::{json, Value};

use crate::{Decision, Identity, Policy, ToolCall};

mod evaluation;
mod properties;
mod validation;

fn policy(doc: Value) -> Policy {
    Policy::from_value(&doc).unwrap_or_else(|e| panic!("policy should load:\n{e}"))
}

/// Every error of a rejected document, as displayed.
fn errors(doc: Value) -> Vec<String> {
    match Policy::from_value(&doc) {
        Ok(_) => panic!("policy should be rejected: {doc}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn identity() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("groups".into(), json!(["support"]));
    Identity {
        grant: "alice-laptop".into(),
        sub: Some("alice".into()),
        claims,
    }
}

fn eval(p: &Policy, tool: &str, args: Value) -> Decision {
    eval_as(p, tool, args, &identity())
}

fn eval_as(p: &Policy, tool: &str, args: Value, identity: &Identity) -> Decision {
    p.evaluate(&ToolCall {
        tool,
        arguments: &args,
        identity,
    })
}
