//! The policy compiler (a policy file is operator input, but it arrives through reloads and
//! the admin API, and a crash there takes the gateway's decisions down with it).
//!
//! Properties: compiling never panics, and every refusal carries at least one error with a
//! message; a policy that compiles decides every call without panicking, the same way twice;
//! a tool it does not list gets its `default`; and the parsed document compiles to a policy
//! that decides the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use toolgate_policy::{Identity, Outcome, Policy, ToolCall};

fuzz_target!(|bytes: &[u8]| {
    let policy = match Policy::from_json_bytes(bytes) {
        Ok(policy) => policy,
        Err(errors) => {
            assert!(!errors.0.is_empty());
            assert!(errors.0.iter().all(|e| !e.message.is_empty()));
            return;
        }
    };
    let doc: Value = serde_json::from_slice(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .expect("a compiled policy is JSON");
    let again = Policy::from_value(&doc).expect("its document compiles too");

    let identity = Identity {
        grant: "fuzz".into(),
        sub: Some("alice".into()),
        ..Identity::default()
    };
    let mut tools: Vec<String> = doc
        .get("tools")
        .and_then(Value::as_object)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    tools.push("a tool no policy names \u{1F512}".into());
    let arguments = [
        json!({}),
        json!({"amount": 20000, "to": "x@example.com", "body": "hello", "path": "/etc/passwd"}),
        doc.clone(),
    ];
    for tool in &tools {
        for args in &arguments {
            let call = ToolCall {
                tool,
                arguments: args,
                identity: &identity,
            };
            let decision = policy.evaluate(&call);
            assert_eq!(decision, policy.evaluate(&call), "same call, same decision");
            assert_eq!(decision, again.evaluate(&call), "bytes and document agree");
            match decision.outcome {
                Outcome::Allow => assert!(decision.rule.is_empty()),
                _ => assert!(!decision.rule.is_empty() && !decision.message.is_empty()),
            }
        }
    }
    let unlisted = ToolCall {
        tool: tools.last().expect("pushed above"),
        arguments: &arguments[0],
        identity: &identity,
    };
    if policy.tool_key(unlisted.tool).is_none() && !policy.is_hidden(unlisted.tool) {
        let expected = if policy.default_allows() {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        let outcome = policy.evaluate(&unlisted).outcome;
        // A limit or approval on all tools can still hold an unlisted call.
        assert!(
            outcome == expected || outcome == Outcome::ApprovalRequired,
            "unlisted tool: {outcome} under default {expected}"
        );
    }
});
