//! What an MCP tool can do, read off its definition: [`Category`] Read, Write, Execute,
//! Destructive or Financial, a [`Risk`] level, and the evidence for both (SPEC §10).
//!
//! Deterministic and offline: the verdict depends only on the tool's name, description,
//! input schema and annotations. The strongest evidence wins, in this order: Financial,
//! Destructive, Execute, Write, Read. Annotations are hints from the server and only fill
//! in what the definition itself does not say: `readOnlyHint` never makes a tool whose
//! name says it deletes (or writes) a Read tool, and `destructiveHint` raises the risk of
//! a Write tool without making it Destructive (a file write that may overwrite is still a
//! write). A tool with no evidence at all is a Write tool: guessing Read would let an
//! unknown action run unchecked.
//!
//! The [`inspect`](mod@inspect) module checks definitions for what a tool should not say:
//! hidden instructions to the model ("tool poisoning") and names that shadow another
//! server's tools.
#![forbid(unsafe_code)]

pub mod inspect;

pub use inspect::{inspect, shadowing, Flag, FlagKind};

use serde_json::Value;
use std::fmt;

/// What a tool does, from least to most dangerous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Looks things up; no lasting effect.
    Read,
    /// Changes state (creates, updates, sends).
    Write,
    /// Runs something open-ended: a command, a query language, a fetch of any URL.
    Execute,
    /// Deletes or wipes; cannot be undone.
    Destructive,
    /// Moves money.
    Financial,
}

impl Category {
    /// Its name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Read => "Read",
            Category::Write => "Write",
            Category::Execute => "Execute",
            Category::Destructive => "Destructive",
            Category::Financial => "Financial",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much harm a wrong call could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Reads.
    Low,
    /// Reversible changes.
    Medium,
    /// Open-ended execution, or a write the server calls destructive.
    High,
    /// Deletion and money: what cannot be taken back (SPEC §10's table).
    Critical,
}

impl Risk {
    /// Its name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

/// A tool's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// What it does.
    pub category: Category,
    /// How risky it is.
    pub risk: Risk,
    /// Why: each piece of evidence quoted (`name verb "delete"`, `input "command"`, …),
    /// the deciding one first.
    pub evidence: Vec<String>,
}

const FINANCIAL_WORDS: &[&str] = &[
    "pay",
    "payment",
    "payments",
    "charge",
    "refund",
    "payout",
    "transfer",
    "invoice",
    "withdraw",
    "withdrawal",
    "purchase",
    "buy",
    "billing",
    "checkout",
];
const FINANCIAL_INPUTS: &[&str] = &["amount", "currency", "iban", "card_number", "price"];
const DESTRUCTIVE_VERBS: &[&str] = &[
    "delete",
    "remove",
    "destroy",
    "drop",
    "purge",
    "wipe",
    "erase",
    "truncate",
    "kill",
    "terminate",
    "revoke",
    "unlink",
    "rm",
    "reset",
    "clear",
];
const EXECUTE_VERBS: &[&str] = &[
    "exec", "execute", "run", "eval", "evaluate", "shell", "spawn", "invoke", "script", "deploy",
];
const EXECUTE_INPUTS: &[&str] = &[
    "command",
    "cmd",
    "sql",
    "script",
    "code",
    "shell",
    "expression",
    "program",
];
const WRITE_VERBS: &[&str] = &[
    "create", "update", "write", "edit", "add", "set", "put", "post", "send", "push", "fork",
    "merge", "move", "rename", "upload", "insert", "toggle", "trigger", "comment", "approve",
    "assign", "publish", "patch", "modify", "save", "schedule", "start", "stop", "enable",
    "disable", "apply", "replace", "append", "register", "submit", "import", "sync", "copy",
    "close", "reopen", "lock", "unlock", "star", "follow", "invite", "mark", "upsert",
];
const READ_VERBS: &[&str] = &[
    "get",
    "list",
    "read",
    "search",
    "find",
    "fetch",
    "query",
    "open",
    "show",
    "describe",
    "view",
    "echo",
    "count",
    "check",
    "lookup",
    "inspect",
    "directory",
    "simulate",
    "browse",
    "preview",
    "explain",
    "summarize",
    "status",
    "stat",
    "info",
    "whoami",
    "ping",
    "return",
    "test",
    "greet",
    "hello",
    "say",
    "report",
    "suggest",
    "look",
];

/// Words a tool that only does arithmetic is named with (`add`, `add_two`, `calc`): such a
/// tool with only numeric inputs computes, it changes nothing.
const ARITHMETIC_WORDS: &[&str] = &[
    "add",
    "sum",
    "subtract",
    "multiply",
    "divide",
    "calc",
    "calculate",
    "compute",
    "two",
    "numbers",
    "number",
    "integers",
    "values",
];

/// Words a description may open with before its verb ("A tool that returns…").
const DESCRIPTION_FILLER: &[&str] = &[
    "a", "an", "the", "this", "that", "tool", "to", "simple", "sample", "demo", "which", "it",
    "just",
];

/// Classifies one tool definition (a `tools/list` entry).
pub fn classify(tool: &Value) -> Classification {
    let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
    let description = tool
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase();
    let words = name_words(name);
    // The verb: the first word that is one, so that a namespace prefix (`slack_`,
    // `brave_`) does not hide it — nor a test harness's `test_` the verb after it.
    let is_verb = |w: &&str| {
        [READ_VERBS, WRITE_VERBS, EXECUTE_VERBS, DESTRUCTIVE_VERBS]
            .iter()
            .any(|verbs| verbs.contains(w))
    };
    let mut verbs = words.iter().map(String::as_str).filter(is_verb);
    let verb = match verbs.next() {
        Some("test") => verbs.next().unwrap_or("test"),
        Some(verb) => verb,
        None => words.first().map_or("", String::as_str),
    };
    let schemas = input_schemas(tool);
    let inputs: Vec<&String> = schemas.iter().map(|(name, _)| name).collect();
    let hint = |key: &str| {
        tool.get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_bool)
    };
    let mut found: Vec<(Category, String)> = Vec::new();
    // Every word of the name that is in `list`, as evidence for `category`.
    let mut name_evidence = |list: &[&str], category: Category, what: &str| {
        for word in words.iter().filter(|w| list.contains(&w.as_str())) {
            found.push((category, format!("name {what} \"{word}\"")));
        }
    };
    name_evidence(FINANCIAL_WORDS, Category::Financial, "word");
    name_evidence(DESTRUCTIVE_VERBS, Category::Destructive, "verb");
    name_evidence(EXECUTE_VERBS, Category::Execute, "verb");

    let money_inputs: Vec<&String> = inputs
        .iter()
        .copied()
        .filter(|i| FINANCIAL_INPUTS.contains(&i.as_str()))
        .collect();
    if money_inputs.iter().any(|i| *i == "amount") && money_inputs.len() >= 2 {
        found.push((Category::Financial, format!("inputs {money_inputs:?}")));
    }
    if ["send money", "charge the", "refund"]
        .iter()
        .any(|w| description.contains(w))
    {
        found.push((
            Category::Financial,
            "description speaks of moving money".into(),
        ));
    }

    if !READ_VERBS.contains(&verb)
        && ["permanently delete", "cannot be undone", "wipes"]
            .iter()
            .any(|w| description.contains(w))
    {
        found.push((
            Category::Destructive,
            "description says it cannot be undone".into(),
        ));
    }

    for input in &inputs {
        if EXECUTE_INPUTS.contains(&input.as_str()) {
            found.push((Category::Execute, format!("free input \"{input}\"")));
        }
    }
    for (input, schema) in &schemas {
        let about_sql = description.contains("sql")
            || schema
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.to_lowercase().contains("sql"));
        if input == "query" && about_sql {
            found.push((Category::Execute, "input \"query\" takes SQL".into()));
        }
        // Whatever the verb: a tool that reaches any URL it is given can be pointed at
        // internal services (server-side request forgery).
        let is_url = schema.get("format").and_then(Value::as_str) == Some("uri")
            || matches!(input.as_str(), "url" | "uri" | "endpoint");
        if is_url {
            found.push((
                Category::Execute,
                format!("fetches any URL (input \"{input}\")"),
            ));
        }
    }

    if WRITE_VERBS.contains(&verb) {
        found.push((Category::Write, format!("name verb \"{verb}\"")));
    } else if let Some(word) = words.iter().find(|w| WRITE_VERBS.contains(&w.as_str())) {
        if !READ_VERBS.contains(&verb) {
            found.push((Category::Write, format!("name verb \"{word}\"")));
        }
    }
    if READ_VERBS.contains(&verb) {
        found.push((Category::Read, format!("name verb \"{verb}\"")));
    }

    // Arithmetic: a name made only of arithmetic words, and numbers in (an `op` may say
    // which operation): whatever its verb ("add"), it computes.
    let arithmetic = !words.is_empty()
        && words.iter().any(|w| ARITHMETIC_WORDS.contains(&w.as_str()))
        && words.iter().all(|w| {
            ARITHMETIC_WORDS.contains(&w.as_str()) || w.chars().all(|c| c.is_ascii_digit())
        })
        && !schemas.is_empty()
        && schemas.iter().all(|(input, schema)| {
            matches!(
                schema.get("type").and_then(Value::as_str),
                Some("number" | "integer")
            ) || matches!(input.as_str(), "op" | "operation" | "operator")
        });
    if arithmetic && found.iter().all(|(c, _)| *c <= Category::Write) {
        found.retain(|(c, _)| *c != Category::Write);
        found.push((Category::Read, "arithmetic on numeric inputs".into()));
    }
    // A name without a verb of any list: the description's opening verb, if that is all the
    // description says ("Returns the time"; not "Returns X after deleting Y").
    if found.is_empty() {
        found.extend(description_verb(&description));
    }

    let strongest = found.iter().map(|(c, _)| *c).max();
    let (category, mut evidence) = match strongest {
        Some(category) => {
            let mut evidence: Vec<String> = found
                .iter()
                .filter(|(c, _)| *c == category)
                .map(|(_, e)| e.clone())
                .collect();
            evidence.dedup();
            (category, evidence)
        }
        // Only the server's hints are left.
        None => match (hint("destructiveHint"), hint("readOnlyHint")) {
            (Some(true), _) => (
                Category::Destructive,
                vec!["annotation destructiveHint".to_owned()],
            ),
            (_, Some(true)) => (Category::Read, vec!["annotation readOnlyHint".to_owned()]),
            _ => (
                Category::Write,
                vec!["no evidence either way: assumed to change state".to_owned()],
            ),
        },
    };
    let mut risk = match category {
        Category::Read => Risk::Low,
        Category::Write => Risk::Medium,
        Category::Execute => Risk::High,
        Category::Destructive | Category::Financial => Risk::Critical,
    };
    if category == Category::Write && hint("destructiveHint") == Some(true) {
        risk = Risk::High;
        evidence.push("annotation destructiveHint raises the risk".to_owned());
    }
    if category > Category::Read && hint("readOnlyHint") == Some(true) {
        evidence.push("annotation readOnlyHint ignored: the definition says otherwise".to_owned());
    }
    Classification {
        category,
        risk,
        evidence,
    }
}

/// The starter policy for `tools` (SPEC §10): Read allowed; Write 30 calls a minute per
/// grant; Execute 10 a minute per grant with the tool's input schema enforced; Destructive
/// hidden; Financial held for approval. Everything else (tools added later) is denied.
pub fn starter_policy(server: &str, tools: &[Value]) -> Value {
    let mut hide = Vec::new();
    let mut rules = serde_json::Map::new();
    for tool in tools {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            continue;
        };
        let limit = |max: u32| serde_json::json!([{"counter": format!("{name}:calls"), "window": "minute", "max": max, "scope": "grant"}]);
        let rule = match classify(tool).category {
            Category::Read => serde_json::json!({}),
            Category::Write => serde_json::json!({ "limits": limit(30) }),
            Category::Execute => {
                let mut rule = serde_json::json!({ "limits": limit(10) });
                if let Some(schema) = tool.get("inputSchema").filter(|s| s.is_object()) {
                    rule["schema"] = schema.clone();
                }
                rule
            }
            Category::Destructive => {
                hide.push(Value::String(name.to_owned()));
                continue;
            }
            Category::Financial => serde_json::json!({ "action": "require_approval" }),
        };
        rules.insert(name.to_owned(), rule);
    }
    serde_json::json!({
        "version": "1",
        "description": format!("Starter policy for {server}, written by `toolgate scan`: Read allowed, Write 30/min and Execute 10/min per grant (Execute with its input schema enforced), Destructive hidden, Financial held for approval. Review before use."),
        "default": "deny",
        "hide": hide,
        "tools": rules,
    })
}

/// The words of a tool name, lower-cased: split at `_`, `-`, `.`, `/`, spaces and
/// lower-to-upper case changes (`createIssue` → `create`, `issue`).
/// The category the opening verb of `description` (lower-cased) gives, with its evidence.
/// Read only when no word of the description names a stronger action.
fn description_verb(description: &str) -> Option<(Category, String)> {
    let words: Vec<&str> = description
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let verb = words.iter().find(|w| !DESCRIPTION_FILLER.contains(w))?;
    let lists: [(&[&str], Category); 4] = [
        (DESTRUCTIVE_VERBS, Category::Destructive),
        (EXECUTE_VERBS, Category::Execute),
        (WRITE_VERBS, Category::Write),
        (READ_VERBS, Category::Read),
    ];
    let category_of = |word: &str| {
        let stems = [Some(word), word.strip_suffix("es"), word.strip_suffix('s')];
        lists.iter().find_map(|(list, category)| {
            stems
                .iter()
                .flatten()
                .any(|stem| list.contains(stem))
                .then_some(*category)
        })
    };
    let category = category_of(verb)?;
    let stronger = words
        .iter()
        .filter_map(|w| category_of(w))
        .chain(
            words
                .iter()
                .filter(|w| FINANCIAL_WORDS.contains(w))
                .map(|_| Category::Financial),
        )
        .any(|c| c > Category::Read);
    if category == Category::Read && stronger {
        return None;
    }
    Some((category, format!("description opens with \"{verb}\"")))
}

fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The top-level input properties (names lower-cased) with their schemas.
fn input_schemas(tool: &Value) -> Vec<(String, &Value)> {
    tool.get("inputSchema")
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, schema)| (name.to_lowercase(), schema))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_namespace_prefix_does_not_hide_the_verb() {
        assert_eq!(
            classify(&json!({"name": "slack_get_users"})).category,
            Category::Read
        );
        assert_eq!(
            classify(&json!({"name": "slack_post_message"})).category,
            Category::Write
        );
    }

    #[test]
    fn the_starter_policy_follows_the_spec_table() {
        let tools = [
            json!({"name": "get_user"}),
            json!({"name": "create_user"}),
            json!({"name": "run_sql", "inputSchema": {"type": "object", "properties": {"sql": {"type": "string"}}}}),
            json!({"name": "delete_user"}),
            json!({"name": "refund_payment"}),
            json!({"description": "no name: skipped"}),
        ];
        let policy = starter_policy("users", &tools);
        assert_eq!(policy["default"], "deny");
        assert_eq!(policy["tools"]["get_user"], json!({}));
        assert_eq!(policy["tools"]["create_user"]["limits"][0]["max"], 30);
        assert_eq!(policy["tools"]["run_sql"]["limits"][0]["max"], 10);
        assert_eq!(
            policy["tools"]["run_sql"]["schema"]["properties"]["sql"]["type"],
            "string"
        );
        assert_eq!(policy["hide"], json!(["delete_user"]));
        assert_eq!(
            policy["tools"]["refund_payment"],
            json!({"action": "require_approval"})
        );
        assert_eq!(policy["tools"].as_object().unwrap().len(), 4);
    }

    #[test]
    fn names_split_into_words() {
        assert_eq!(name_words("createIssue"), ["create", "issue"]);
        assert_eq!(name_words("get-env"), ["get", "env"]);
        assert_eq!(
            name_words("purge_all_messages"),
            ["purge", "all", "messages"]
        );
    }

    #[test]
    fn hints_never_downgrade_what_the_definition_says() {
        let tool = json!({"name": "delete_user", "annotations": {"readOnlyHint": true}});
        let verdict = classify(&tool);
        assert_eq!(
            (verdict.category, verdict.risk),
            (Category::Destructive, Risk::Critical)
        );
        let write = json!({"name": "write_file", "annotations": {"destructiveHint": true}});
        assert_eq!(
            classify(&write).risk,
            Risk::High,
            "a destructive hint raises a write's risk"
        );
        assert!(verdict
            .evidence
            .iter()
            .any(|e| e.contains("readOnlyHint ignored")));
        let unknown = json!({"name": "frobnicate"});
        assert_eq!(classify(&unknown).category, Category::Write);
        let hinted = json!({"name": "frobnicate", "annotations": {"readOnlyHint": true}});
        assert_eq!(classify(&hinted).category, Category::Read);
    }
}
