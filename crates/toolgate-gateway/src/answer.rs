//! What the agent sees when the gateway answers a call itself (SPEC §4).

use serde_json::{json, Value};
use toolgate_mcp::{codes, jsonrpc};
use toolgate_policy::{Decision, Outcome};

/// The `-32602 Unknown tool` error used for hidden tools and for tools the upstream lacks,
/// so the two are indistinguishable.
pub fn unknown_tool(id: Value, tool: &str) -> Value {
    jsonrpc::error_response(
        id,
        codes::INVALID_PARAMS,
        &format!("Unknown tool: {tool}"),
        None,
    )
}

/// The `tools/call` result for a refused call: `isError`, one text block, and the decision
/// under `_meta["toolgate/decision"]`.
pub fn refusal(id: Value, decision: &Decision) -> Value {
    if decision.outcome == Outcome::Hide {
        // The message of a hide decision is the unknown-tool text itself.
        let tool = decision
            .message
            .strip_prefix("Unknown tool: ")
            .unwrap_or(&decision.message);
        return unknown_tool(id, tool);
    }
    let mut meta = json!({
        "decision": decision.outcome.as_str(),
        "rule": decision.rule,
        "message": decision.message,
    });
    if let Some(ms) = decision.retry_after_ms {
        meta["retry_after_ms"] = json!(ms);
    }
    let text = format!("[POLICY DENIED] {}", decision.message);
    jsonrpc::result_response(
        id,
        json!({
            "content": [{"type": "text", "text": text}],
            "isError": true,
            "_meta": {"toolgate/decision": meta},
        }),
    )
}

/// The answer to a call held for approval (SPEC §4): approval request `approval_id` waits
/// for a human; the agent retries the identical call once it is approved.
pub fn approval_required(id: Value, decision: &Decision, approval_id: &str) -> Value {
    jsonrpc::result_response(
        id,
        json!({
            "content": [{"type": "text", "text": format!(
                "[APPROVAL REQUIRED] {} (approval {approval_id}; retry the same call once approved)",
                decision.message
            )}],
            "isError": true,
            "_meta": {"toolgate/decision": {
                "decision": decision.outcome.as_str(),
                "rule": decision.rule,
                "message": decision.message,
                "approval_id": approval_id,
            }},
        }),
    )
}

/// Removes hidden tools from a `tools/list` result in place; pagination fields are kept.
pub fn filter_tool_list(result: &mut Value, is_hidden: &dyn Fn(&str) -> bool) {
    if let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) {
        tools.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_none_or(|name| !is_hidden(name))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(outcome: Outcome, rule: &str, message: &str) -> Decision {
        Decision {
            outcome,
            rule: rule.into(),
            message: message.into(),
            limits: Vec::new(),
            retry_after_ms: None,
            approval: None,
        }
    }

    #[test]
    fn refusals_follow_the_spec() {
        let v = refusal(
            json!(3),
            &decision(
                Outcome::Deny,
                "(default deny)",
                "Tool \"x\" is not permitted by policy",
            ),
        );
        assert_eq!(v["id"], 3);
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(
            v["result"]["content"][0]["text"],
            "[POLICY DENIED] Tool \"x\" is not permitted by policy"
        );
        assert_eq!(
            v["result"]["_meta"]["toolgate/decision"]["rule"],
            "(default deny)"
        );
        assert_eq!(
            v["result"]["_meta"]["toolgate/decision"]["decision"],
            "deny"
        );
        assert!(v["result"].get("structuredContent").is_none());
        let mut limited = decision(Outcome::RateLimited, "/all_tools/limits/c", "Rate limit");
        limited.retry_after_ms = Some(1500);
        let v = refusal(json!(1), &limited);
        assert_eq!(
            v["result"]["_meta"]["toolgate/decision"]["retry_after_ms"],
            1500
        );
        assert_eq!(
            v["result"]["_meta"]["toolgate/decision"]["decision"],
            "rate_limited"
        );
        let v = refusal(
            json!(1),
            &decision(Outcome::Hide, "(hidden)", "Unknown tool: secret"),
        );
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "Unknown tool: secret");
    }

    #[test]
    fn list_filtering_keeps_pagination() {
        let mut result =
            json!({"tools": [{"name": "a"}, {"name": "delete_x"}], "nextCursor": "c2"});
        filter_tool_list(&mut result, &|n| n.starts_with("delete_"));
        assert_eq!(
            result,
            json!({"tools": [{"name": "a"}], "nextCursor": "c2"})
        );
    }
}
