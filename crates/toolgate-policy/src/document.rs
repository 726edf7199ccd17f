//! The policy document model (SPEC §3.1–§3.2): walks the JSON once, validating every field
//! and compiling it into [`Policy`], collecting every error on the way.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::approval::{self, ApprovalSettings};
use crate::error::{describe, show, Errors, Pointer, PolicyError};
use crate::fields::{check_keys, expect_array, expect_object, expect_string};
use crate::glob::{is_glob, NameGlob, NameSet};
use crate::limits::{check_shared_counters, compile_limits, Limit};
use crate::policy::{Policy, ToolRules};
use crate::predicate::{compile_list, on_deny, Predicate, Section};
use crate::schema::Schema;

const TOP_KEYS: [&str; 7] = [
    "version",
    "default",
    "hide",
    "all_tools",
    "tools",
    "description",
    "shadow",
];
/// Metadata that published policies carry and that means nothing to the engine.
const TOP_TOLERATED: [&str; 3] = ["name", "$schema", "metadata"];
const ALL_TOOLS_KEYS: [&str; 4] = ["limits", "require", "deny_if", "on_deny"];
const TOOL_KEYS: [&str; 8] = [
    "require",
    "deny_if",
    "limits",
    "on_deny",
    "action",
    "approval",
    "schema",
    "description",
];

/// What a tool's `action` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Deny,
    RequireApproval,
}

/// The predicates and limits of one section (`all_tools` or one tool).
#[derive(Debug, Default)]
pub(crate) struct Rules {
    pub(crate) require: Vec<Predicate>,
    pub(crate) deny_if: Vec<Predicate>,
    pub(crate) limits: Vec<Limit>,
}

impl Rules {
    fn compile(
        obj: &Map<String, Value>,
        at: &Pointer,
        rule_base: &str,
        on_deny: Option<&str>,
        errs: &mut Errors,
    ) -> Rules {
        let mut rules = Rules::default();
        if let Some(v) = obj.get("require") {
            rules.require = compile_list(
                v,
                &at.key("require"),
                Section::Require,
                rule_base,
                on_deny,
                errs,
            );
        }
        if let Some(v) = obj.get("deny_if") {
            rules.deny_if = compile_list(
                v,
                &at.key("deny_if"),
                Section::DenyIf,
                rule_base,
                on_deny,
                errs,
            );
        }
        if let Some(v) = obj.get("limits") {
            rules.limits = compile_limits(v, &at.key("limits"), rule_base, errs);
        }
        rules
    }

    pub(crate) fn has_predicates(&self) -> bool {
        !self.require.is_empty() || !self.deny_if.is_empty()
    }

    pub(crate) fn reads_args(&self) -> bool {
        self.require.iter().any(Predicate::reads_args)
            || self.deny_if.iter().any(Predicate::reads_args)
            || self.limits.iter().any(Limit::reads_args)
    }
}

/// Validates and compiles a whole document.
pub(crate) fn compile(doc: &Value) -> Result<Policy, Vec<PolicyError>> {
    let mut errs = Errors::default();
    let root = Pointer::root();
    let Some(obj) = expect_object(doc, &root, "a policy document (a JSON object)", &mut errs)
    else {
        return Err(errs.into_inner());
    };
    check_keys(obj, &root, &TOP_KEYS, &TOP_TOLERATED, &mut errs);

    let mut missing = Vec::new();
    match obj.get("version") {
        None => missing.push("\"version\""),
        Some(Value::String(v)) if v == "1" => {}
        Some(v) => errs.push(
            &root.key("version"),
            format!("expected the string \"1\", found {}", show(v)),
        ),
    }
    let default_allow = match obj.get("default") {
        None => {
            missing.push("\"default\" (\"allow\" or \"deny\")");
            false
        }
        Some(Value::String(v)) if v == "allow" => true,
        Some(Value::String(v)) if v == "deny" => false,
        Some(v) => {
            errs.push(
                &root.key("default"),
                format!("expected \"allow\" or \"deny\", found {}", show(v)),
            );
            false
        }
    };
    errs.missing_fields(&root, &missing);
    if let Some(v) = obj.get("description") {
        expect_string(
            v,
            &root.key("description"),
            "a description (a string)",
            &mut errs,
        );
    }
    let shadow = match obj.get("shadow") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            errs.push(
                &root.key("shadow"),
                format!("expected true or false, found {}", describe(v)),
            );
            false
        }
    };

    let hide = obj
        .get("hide")
        .map(|v| compile_hide(v, &root.key("hide"), &mut errs))
        .unwrap_or_default();

    let all_tools = match obj.get("all_tools") {
        None => Rules::default(),
        Some(v) => {
            let at = root.key("all_tools");
            match expect_object(
                v,
                &at,
                "an object ({\"limits\", \"require\", \"deny_if\"})",
                &mut errs,
            ) {
                None => Rules::default(),
                Some(section) => {
                    check_keys(section, &at, &ALL_TOOLS_KEYS, &[], &mut errs);
                    let on_deny = on_deny(section, &at, &mut errs);
                    Rules::compile(section, &at, "/all_tools", on_deny, &mut errs)
                }
            }
        }
    };

    let mut tools = Vec::new();
    let mut exact = HashMap::new();
    let mut globs = Vec::new();
    if let Some(v) = obj.get("tools") {
        let at = root.key("tools");
        if let Some(map) = expect_object(v, &at, "an object keyed by tool name", &mut errs) {
            for (key, rules) in map {
                let at = at.key(key);
                if key.is_empty() {
                    errs.push(&at, "a tool name must not be empty");
                    continue;
                }
                let matcher = if is_glob(key) {
                    match NameGlob::new(key) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            errs.push(&at, e);
                            continue;
                        }
                    }
                } else {
                    None
                };
                let Some(tool) = compile_tool(key, rules, &at, &mut errs) else {
                    continue;
                };
                let index = tools.len();
                tools.push(tool);
                // A glob key also matches its own literal text as an exact key: a tool really
                // named "what?" is governed by the "what?" entry, not by an earlier glob.
                exact.insert(key.clone(), index);
                if let Some(m) = matcher {
                    globs.push((m, index));
                }
            }
        }
    }

    let tools_at = root.key("tools");
    check_shared_counters(
        std::iter::once((
            root.key("all_tools").key("limits"),
            all_tools.limits.as_slice(),
        ))
        .chain(tools.iter().map(|t| {
            (
                tools_at.key(&t.key).key("limits"),
                t.rules.limits.as_slice(),
            )
        })),
        &mut errs,
    );
    if !errs.is_empty() {
        return Err(errs.into_inner());
    }
    Ok(Policy {
        default_allow,
        shadow,
        hide,
        all_tools,
        tools,
        exact,
        globs,
    })
}

fn compile_hide(value: &Value, at: &Pointer, errs: &mut Errors) -> NameSet {
    let Some(items) = expect_array(value, at, "a list of tool names or globs", errs) else {
        return NameSet::default();
    };
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = at.index(i);
        let Some(name) = expect_string(item, &at, "a tool name or glob (a string)", errs) else {
            continue;
        };
        if name.is_empty() {
            errs.push(&at, "a tool name must not be empty");
        } else if is_glob(name) {
            match NameGlob::new(name) {
                Ok(_) => names.push(name),
                Err(e) => errs.push(&at, e),
            }
        } else {
            names.push(name);
        }
    }
    NameSet::new(names).unwrap_or_else(|e| {
        errs.push(at, e);
        NameSet::default()
    })
}

fn compile_tool(key: &str, value: &Value, at: &Pointer, errs: &mut Errors) -> Option<ToolRules> {
    let obj = expect_object(
        value,
        at,
        "an object of rules for this tool ({} allows it)",
        errs,
    )?;
    check_keys(obj, at, &TOOL_KEYS, &[], errs);
    let rule_base = format!("/tools/{key}");
    let on_deny = on_deny(obj, at, errs);

    let action = match obj.get("action") {
        None => Ok(None),
        Some(Value::String(s)) if s == "deny" => Ok(Some(Action::Deny)),
        Some(Value::String(s)) if s == "require_approval" => Ok(Some(Action::RequireApproval)),
        Some(v) => {
            errs.push(
                &at.key("action"),
                format!(
                    "expected \"deny\" or \"require_approval\", found {}",
                    show(v)
                ),
            );
            Err(())
        }
    };
    let approval = match obj.get("approval") {
        None => ApprovalSettings::default(),
        Some(v) => {
            // Settings that would silently do nothing usually mean the operator forgot the
            // action, and the tool they meant to gate is running unattended.
            if matches!(action, Ok(None | Some(Action::Deny))) {
                errs.push(
                    &at.key("approval"),
                    "\"approval\" only applies with \"action\": \"require_approval\"",
                );
            }
            approval::compile(v, &at.key("approval"), errs)
        }
    };
    if let Some(v) = obj.get("description") {
        expect_string(v, &at.key("description"), "a description (a string)", errs);
    }
    let schema = obj
        .get("schema")
        .and_then(|v| Schema::compile(v, &at.key("schema"), errs));
    let rules = Rules::compile(obj, at, &rule_base, on_deny, errs);

    Some(ToolRules {
        key: key.to_owned(),
        action: action.ok().flatten(),
        action_rule: format!("{rule_base}/action"),
        schema_rule: format!("{rule_base}/schema"),
        on_deny: on_deny.map(str::to_owned),
        schema,
        rules,
        approval,
    })
}
