//! The compiled policy and its loading entry points.

use std::collections::HashMap;

use serde_json::Value;

use crate::approval::ApprovalSettings;
use crate::document::{self, Action, Rules};
use crate::dupkeys;
use crate::error::{Errors, PolicyError, PolicyErrors};
use crate::glob::{NameGlob, NameSet};
use crate::schema::Schema;

/// A validated, compiled policy document: immutable, `Send + Sync`, cheap to evaluate.
///
/// Everything that can be prepared is prepared at load (regexes, globs, schemas, rule ids,
/// messages), so evaluation only walks the call.
#[derive(Debug)]
pub struct Policy {
    pub(crate) default_allow: bool,
    pub(crate) shadow: bool,
    pub(crate) hide: NameSet,
    pub(crate) all_tools: Rules,
    pub(crate) tools: Vec<ToolRules>,
    /// Exact tool keys, by name.
    pub(crate) exact: HashMap<String, usize>,
    /// Glob tool keys, in document order (the first match wins).
    pub(crate) globs: Vec<(NameGlob, usize)>,
}

/// The compiled rules of one `tools` entry.
#[derive(Debug)]
pub(crate) struct ToolRules {
    /// The key as written (a name or a glob), for rule ids.
    pub(crate) key: String,
    pub(crate) action: Option<Action>,
    pub(crate) action_rule: String,
    pub(crate) schema_rule: String,
    pub(crate) on_deny: Option<String>,
    pub(crate) schema: Option<Schema>,
    pub(crate) rules: Rules,
    pub(crate) approval: ApprovalSettings,
}

impl Policy {
    /// Parses, validates and compiles a policy from its JSON text.
    ///
    /// # Errors
    ///
    /// Every problem found (invalid JSON, duplicate keys, invalid fields), not just the first.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Policy, PolicyErrors> {
        // Editors on Windows like to start files with a byte-order mark; JSON forbids it, but
        // refusing a policy over an invisible character helps nobody.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            PolicyErrors(vec![PolicyError::new("", format!("not valid JSON: {e}"))])
        })?;
        let mut errs = Errors::default();
        dupkeys::check(bytes, &mut errs);
        match document::compile(&doc) {
            Ok(policy) if errs.is_empty() => Ok(policy),
            Ok(_) => Err(PolicyErrors(errs.into_inner())),
            Err(more) => {
                errs.extend(more);
                Err(PolicyErrors(errs.into_inner()))
            }
        }
    }

    /// Validates and compiles an already parsed document (duplicate keys can no longer be seen
    /// here; prefer [`Policy::from_json_bytes`] for text).
    ///
    /// # Errors
    ///
    /// Every problem found, not just the first.
    pub fn from_value(doc: &Value) -> Result<Policy, PolicyErrors> {
        document::compile(doc).map_err(PolicyErrors)
    }

    /// True when `hide` covers the tool (by name or glob; `"*"` hides everything): it is removed
    /// from `tools/list` and answered as an unknown tool.
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.hide.contains(tool)
    }

    /// The top-level `shadow` flag: decisions are computed and audited but not enforced.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// True when some tool has `action: "require_approval"`.
    pub fn requires_approval(&self) -> bool {
        self.tools
            .iter()
            .any(|t| t.action == Some(Action::RequireApproval))
    }

    /// True for `"default": "allow"`.
    pub fn default_allows(&self) -> bool {
        self.default_allow
    }

    /// True when the decision for `tool` can depend on argument values (an `args.` predicate,
    /// a schema, or an `increment_from` limit applies). `policy replay` uses it to say
    /// "cannot tell" for calls whose arguments were not captured.
    pub fn reads_arguments(&self, tool: &str) -> bool {
        if self.is_hidden(tool) {
            return false;
        }
        match self.rules_for(tool) {
            None => self.default_allow && self.all_tools.reads_args(),
            Some(t) if t.action == Some(Action::Deny) => false,
            Some(t) => t.schema.is_some() || t.rules.reads_args() || self.all_tools.reads_args(),
        }
    }

    /// The `tools` entry that governs `tool`: its exact key, else the first matching glob key
    /// in document order.
    pub(crate) fn rules_for(&self, tool: &str) -> Option<&ToolRules> {
        let index = match self.exact.get(tool) {
            Some(i) => *i,
            None => self.globs.iter().find(|(g, _)| g.is_match(tool))?.1,
        };
        self.tools.get(index)
    }

    /// The key (as written) of the `tools` entry that governs `tool`, if any.
    pub fn tool_key(&self, tool: &str) -> Option<&str> {
        self.rules_for(tool).map(|t| t.key.as_str())
    }
}
