//! Evaluation (SPEC §3.4 steps 2–9): the first refusal wins, in a fixed order.

use serde_json::Value;

use crate::call::{Identity, ToolCall};
use crate::decision::{Decision, Outcome};
use crate::document::{Action, Rules};
use crate::policy::Policy;
use crate::predicate::Refusal;

impl Policy {
    /// Decides one call (SPEC §3.4 steps 2–9; step 1, "(no policy)", is the gateway's: see
    /// [`Decision::no_policy`]).
    ///
    /// Limits are only reported (`Decision::limits`); checking and reserving them against the
    /// counters is the gateway's job, and a refusal there is built with
    /// [`crate::LimitCharge::exceeded`].
    pub fn evaluate(&self, call: &ToolCall<'_>) -> Decision {
        let ToolCall {
            tool,
            arguments: args,
            identity,
        } = *call;

        // 2. hidden
        if self.is_hidden(tool) {
            return Decision {
                outcome: Outcome::Hide,
                rule: "(hidden)".to_owned(),
                message: format!("Unknown tool: {tool}"),
                limits: Vec::new(),
                retry_after_ms: None,
                approval: None,
            };
        }

        // 3. not listed under default deny
        let rules = self.rules_for(tool);
        if rules.is_none() && !self.default_allow {
            return Decision::deny(
                "(default deny)".to_owned(),
                format!("Tool \"{tool}\" is not permitted by policy"),
            );
        }

        // Some(own on_deny of the selecting predicate) when step 8 will hold the call.
        let mut hold_for_approval: Option<Option<&str>> = None;
        if let Some(t) = rules {
            // 4. action: deny
            if t.action == Some(Action::Deny) {
                let message = t
                    .on_deny
                    .clone()
                    .unwrap_or_else(|| format!("Tool \"{tool}\" is denied by policy"));
                return Decision::deny(t.action_rule.clone(), message);
            }
            // 5. schema
            if let Some(violation) = t.schema.as_ref().and_then(|s| s.violation(args)) {
                return Decision::deny(t.schema_rule.clone(), violation);
            }
            // 6a. the tool's predicates; under require_approval they select calls to hold
            // instead of refusing them.
            let refusal = first_refusal(&t.rules, args, identity);
            if t.action == Some(Action::RequireApproval) {
                match refusal {
                    Some(r) => hold_for_approval = Some(r.own_message),
                    None if !t.rules.has_predicates() => hold_for_approval = Some(None),
                    None => {}
                }
            } else if let Some(r) = refusal {
                return refused(r);
            }
        }

        // 6b. all_tools predicates
        if let Some(r) = first_refusal(&self.all_tools, args, identity) {
            return refused(r);
        }

        // 7. limits: the tool's, then all_tools'
        let tool_limits = rules.map_or(&[][..], |t| &t.rules.limits[..]);
        let all_limits = tool_limits.iter().chain(&self.all_tools.limits);
        let mut limits = Vec::with_capacity(tool_limits.len() + self.all_tools.limits.len());
        for limit in all_limits {
            match limit.charge(args, identity) {
                Ok(charge) => limits.push(charge),
                Err(message) => return Decision::deny(limit.rule().to_owned(), message),
            }
        }

        // 8. require_approval
        if let (Some(own_message), Some(t)) = (hold_for_approval, rules) {
            let message = own_message.or(t.on_deny.as_deref()).map_or_else(
                || format!("Tool \"{tool}\" requires human approval"),
                str::to_owned,
            );
            return Decision {
                outcome: Outcome::ApprovalRequired,
                rule: t.action_rule.clone(),
                message,
                limits,
                retry_after_ms: None,
                approval: Some(t.approval),
            };
        }

        // 9. allowed
        Decision::allow(limits)
    }
}

/// `require` in order, then `deny_if` in order; the first refusal.
fn first_refusal<'p>(rules: &'p Rules, args: &Value, identity: &Identity) -> Option<Refusal<'p>> {
    rules
        .require
        .iter()
        .chain(&rules.deny_if)
        .find_map(|p| p.refuses(args, identity))
}

fn refused(r: Refusal<'_>) -> Decision {
    Decision::deny(r.rule.to_owned(), r.message.to_owned())
}
