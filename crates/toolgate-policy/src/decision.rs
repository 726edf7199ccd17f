//! The engine's answer for one call.

use std::fmt;

use crate::approval::ApprovalSettings;
use crate::limits::LimitCharge;

/// What happens to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forward it (after reserving `Decision::limits`).
    Allow,
    /// Refuse it with a `[POLICY DENIED]` result.
    Deny,
    /// Answer as if the tool did not exist.
    Hide,
    /// Refused by a limit (built by [`LimitCharge::exceeded`], never by `Policy::evaluate`).
    RateLimited,
    /// Hold it until a human approves (SPEC §6).
    ApprovalRequired,
}

impl Outcome {
    /// The wire and audit spelling: `allow`, `deny`, `hide`, `rate_limited`, `approval_required`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Hide => "hide",
            Outcome::RateLimited => "rate_limited",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one call: outcome, the rule that produced it and what to tell the agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What happens to the call.
    pub outcome: Outcome,
    /// The rule id of SPEC §3.4 (`(default deny)`, `/tools/x/deny_if/args.amount-gt`, …);
    /// empty when allowed.
    pub rule: String,
    /// The rule's `on_deny` or the default message of SPEC §4; empty when allowed.
    pub message: String,
    /// On `Allow` and `ApprovalRequired`: every limit that applies (the tool's, then
    /// `all_tools`'), in policy order, to be checked and reserved together by the counter store.
    /// Empty otherwise.
    pub limits: Vec<LimitCharge>,
    /// On `RateLimited`: how long until the call could succeed.
    pub retry_after_ms: Option<u64>,
    /// On `ApprovalRequired`: how long to wait for a human and how the approval may be reused.
    pub approval: Option<ApprovalSettings>,
}

impl Decision {
    /// SPEC §3.4 step 1, decided by the gateway: the grant has no policy for this server.
    pub fn no_policy(tool: &str) -> Decision {
        Decision::deny(
            "(no policy)".to_owned(),
            format!("Tool \"{tool}\" is not permitted by policy"),
        )
    }

    /// A denial by `rule` with `message` (also used by the gateway for its own refusals).
    pub fn deny(rule: String, message: String) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            rule,
            message,
            limits: Vec::new(),
            retry_after_ms: None,
            approval: None,
        }
    }

    /// An allowed call that consumes `limits` (also used by the gateway for a held call a
    /// human approved).
    pub fn allow(limits: Vec<LimitCharge>) -> Decision {
        Decision {
            outcome: Outcome::Allow,
            rule: String::new(),
            message: String::new(),
            limits,
            retry_after_ms: None,
            approval: None,
        }
    }

    /// True only for `Outcome::Allow`.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names() {
        let all = [
            (Outcome::Allow, "allow"),
            (Outcome::Deny, "deny"),
            (Outcome::Hide, "hide"),
            (Outcome::RateLimited, "rate_limited"),
            (Outcome::ApprovalRequired, "approval_required"),
        ];
        for (o, s) in all {
            assert_eq!(o.as_str(), s);
            assert_eq!(o.to_string(), s);
        }
    }

    #[test]
    fn no_policy() {
        let d = Decision::no_policy("send_email");
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.rule, "(no policy)");
        assert_eq!(d.message, "Tool \"send_email\" is not permitted by policy");
        assert!(!d.is_allowed());
        assert!(Decision::allow(Vec::new()).is_allowed());
    }
}
