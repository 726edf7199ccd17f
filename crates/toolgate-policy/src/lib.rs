//! PolicyLayer v1 policy documents for toolgate (SPEC §3): parsing, validation with JSON
//! Pointers, compilation and pure evaluation.
//!
//! The crate is deliberately pure: no async, no I/O, no clock, no counters. The gateway loads a
//! [`Policy`], asks it for a [`Decision`] per call, and does the stateful parts itself (reserving
//! [`LimitCharge`]s, holding calls for approval, auditing).
//!
//! ```
//! use serde_json::json;
//! use toolgate_policy::{Identity, Outcome, Policy, ToolCall};
//!
//! let policy = Policy::from_json_bytes(br#"{
//!   "version": "1", "default": "deny",
//!   "tools": { "create_charge": {
//!     "deny_if": [ { "path": "args.amount", "op": "gt", "value": 10000,
//!                    "on_deny": "Charges over 10000 need a human." } ] } }
//! }"#).unwrap();
//! let identity = Identity { grant: "ci-bot".into(), ..Identity::default() };
//! let args = json!({ "amount": 20000 });
//! let d = policy.evaluate(&ToolCall { tool: "create_charge", arguments: &args, identity: &identity });
//! assert_eq!(d.outcome, Outcome::Deny);
//! assert_eq!(d.rule, "/tools/create_charge/deny_if/args.amount-gt");
//! assert_eq!(d.message, "Charges over 10000 need a human.");
//! ```
//!
//! Conventions worth knowing:
//! - Rule ids name the tool key exactly as written (`/tools/delete_*/action`, `/tools/a/b/...`),
//!   as PolicyLayer does; error pointers ([`PolicyError::pointer`]) are real RFC 6901 pointers
//!   (`/tools/a~1b/...`).
//! - A missing required field is reported at the object that lacks it.
#![forbid(unsafe_code)]

mod approval;
mod call;
pub mod cases;
mod compare;
mod decision;
mod document;
mod dupkeys;
pub mod duration;
mod error;
mod evaluate;
mod fields;
mod glob;
mod limits;
mod path;
mod policy;
mod predicate;
mod schema;

pub use approval::{ApprovalSettings, Reuse, DEFAULT_TIMEOUT_MS};
pub use call::{Identity, ToolCall};
pub use decision::{Decision, Outcome};
pub use error::{PolicyError, PolicyErrors};
pub use limits::{LimitCharge, Scope, Window};
pub use path::ArgPath;
pub use policy::Policy;

#[cfg(test)]
mod tests;
