//! Predicates (SPEC §3.3): the flat `{path, op, value}` and grouped `{conditions}` shapes,
//! compiled at load (regexes, globs, value types checked) and evaluated without allocating.

use std::cmp::Ordering;

use globset::GlobMatcher;
use regex::Regex;
use serde_json::{Number, Value};

use crate::call::Identity;
use crate::compare::{actual_eq, cmp_numbers};
use crate::error::{describe, Errors, Pointer};
use crate::fields::{check_keys, expect_array, expect_object, expect_string};
use crate::glob::{normalize_path, value_glob};
use crate::path::{Actual, Allowed, Path};

/// The operators of SPEC §3.3, in the order error messages list them.
const OPS: [(&str, Op); 16] = [
    ("eq", Op::Eq),
    ("neq", Op::Neq),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("regex", Op::Regex),
    ("contains", Op::Contains),
    ("exists", Op::Exists),
    ("starts_with", Op::StartsWith),
    ("ends_with", Op::EndsWith),
    ("glob", Op::Glob),
    ("len_lte", Op::LenLte),
    ("len_gte", Op::LenGte),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Neq,
    In,
    NotIn,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    Contains,
    Exists,
    StartsWith,
    EndsWith,
    Glob,
    LenLte,
    LenGte,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        OPS.iter().find(|(n, _)| *n == name).map(|(_, op)| *op)
    }

    fn name(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(n, _)| n)
    }
}

fn op_list() -> String {
    OPS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// An operator with its literal, in the form evaluation needs.
#[derive(Debug)]
enum Test {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Cmp(Op, Number),
    Regex(Regex),
    Contains(Value),
    Exists(bool),
    StartsWith(String),
    EndsWith(String),
    Glob(GlobMatcher),
    LenLte(f64),
    LenGte(f64),
}

impl Test {
    fn compile(op: Op, value: &Value) -> Result<Test, String> {
        let needs = |what: &str| {
            format!(
                "operator \"{}\" needs {what}, found {}",
                op.name(),
                describe(value)
            )
        };
        Ok(match op {
            Op::Eq => Test::Eq(value.clone()),
            Op::Neq => Test::Neq(value.clone()),
            Op::Contains => Test::Contains(value.clone()),
            Op::In | Op::NotIn => {
                let list = value.as_array().ok_or_else(|| needs("a list"))?.clone();
                if op == Op::In {
                    Test::In(list)
                } else {
                    Test::NotIn(list)
                }
            }
            Op::Lt | Op::Lte | Op::Gt | Op::Gte => match value {
                Value::Number(n) => Test::Cmp(op, n.clone()),
                _ => return Err(needs("a number")),
            },
            Op::Regex => {
                let pattern = value.as_str().ok_or_else(|| needs("a string"))?;
                Test::Regex(Regex::new(pattern).map_err(|e| {
                    format!(
                        "invalid regular expression \"{pattern}\": {}",
                        regex_error_line(&e)
                    )
                })?)
            }
            Op::Exists => Test::Exists(value.as_bool().ok_or_else(|| needs("true or false"))?),
            Op::StartsWith | Op::EndsWith => {
                let s = value.as_str().ok_or_else(|| needs("a string"))?.to_owned();
                if op == Op::StartsWith {
                    Test::StartsWith(s)
                } else {
                    Test::EndsWith(s)
                }
            }
            Op::Glob => Test::Glob(value_glob(
                value.as_str().ok_or_else(|| needs("a string"))?,
            )?),
            Op::LenLte | Op::LenGte => {
                let n = value
                    .as_f64()
                    .filter(|n| *n >= 0.0)
                    .ok_or_else(|| needs("a number of at least 0"))?;
                if op == Op::LenLte {
                    Test::LenLte(n)
                } else {
                    Test::LenGte(n)
                }
            }
        })
    }

    /// SPEC §3.3: a missing path makes every op except `exists` and `not_in` not hold, and a
    /// value of the wrong type never makes a typed op hold.
    fn holds(&self, actual: Option<Actual<'_>>) -> bool {
        let Some(actual) = actual else {
            return match self {
                Test::Exists(want) => !want,
                Test::NotIn(_) => true,
                _ => false,
            };
        };
        match self {
            // Present means present and not null.
            Test::Exists(want) => actual.is_null() != *want,
            Test::Eq(v) => actual_eq(actual, v),
            Test::Neq(v) => !actual_eq(actual, v),
            Test::In(list) => list.iter().any(|v| actual_eq(actual, v)),
            Test::NotIn(list) => !list.iter().any(|v| actual_eq(actual, v)),
            Test::Cmp(op, limit) => {
                let Actual::Json(Value::Number(n)) = actual else {
                    return false;
                };
                match cmp_numbers(n, limit) {
                    Some(ord) => match op {
                        Op::Lt => ord == Ordering::Less,
                        Op::Lte => ord != Ordering::Greater,
                        Op::Gt => ord == Ordering::Greater,
                        _ => ord != Ordering::Less,
                    },
                    None => false,
                }
            }
            Test::Regex(re) => actual.as_str().is_some_and(|s| re.is_match(s)),
            Test::Contains(v) => match actual {
                Actual::Json(Value::Array(items)) => {
                    items.iter().any(|item| actual_eq(Actual::Json(item), v))
                }
                other => match (other.as_str(), v.as_str()) {
                    (Some(s), Some(needle)) => s.contains(needle),
                    _ => false,
                },
            },
            Test::StartsWith(p) => actual.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Test::EndsWith(p) => actual.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Test::Glob(g) => actual
                .as_str()
                .is_some_and(|s| g.is_match(normalize_path(s).as_ref())),
            Test::LenLte(n) => length(actual).is_some_and(|len| len as f64 <= *n),
            Test::LenGte(n) => length(actual).is_some_and(|len| len as f64 >= *n),
        }
    }
}

/// Characters of a string or elements of an array; other types have no length.
fn length(actual: Actual<'_>) -> Option<usize> {
    match actual {
        Actual::Json(Value::Array(items)) => Some(items.len()),
        other => other.as_str().map(|s| s.chars().count()),
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, message); an error
/// list wants one line per error, so keep only the message.
fn regex_error_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}

/// One `{path, op, value}` test.
#[derive(Debug)]
struct Condition {
    path: Path,
    op: Op,
    test: Test,
    on_deny: Option<String>,
}

impl Condition {
    fn holds(&self, args: &Value, identity: &Identity) -> bool {
        self.test.holds(self.path.resolve(args, identity))
    }
}

#[derive(Debug)]
enum Shape {
    Flat(Condition),
    Group(Vec<Condition>),
}

/// Which list a predicate sits in; it decides whether holding or failing refuses the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Section {
    Require,
    DenyIf,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Require => "require",
            Section::DenyIf => "deny_if",
        }
    }
}

/// A compiled predicate with its rule id and resolved denial message.
#[derive(Debug)]
pub(crate) struct Predicate {
    shape: Shape,
    section: Section,
    rule: String,
    /// The predicate's own `on_deny`.
    on_deny: Option<String>,
    /// What to say when neither the predicate nor a failing condition has an `on_deny`.
    fallback: String,
}

/// Why a predicate refused a call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal<'p> {
    pub(crate) rule: &'p str,
    pub(crate) message: &'p str,
    /// The `on_deny` written on the predicate itself (or its failing condition), if any.
    pub(crate) own_message: Option<&'p str>,
}

impl Predicate {
    /// `Some` when this predicate refuses the call.
    pub(crate) fn refuses(&self, args: &Value, identity: &Identity) -> Option<Refusal<'_>> {
        let (holds, failing_condition) = match &self.shape {
            Shape::Flat(c) => (c.holds(args, identity), None),
            Shape::Group(conditions) => {
                match conditions.iter().find(|c| !c.holds(args, identity)) {
                    Some(c) => (false, Some(c)),
                    None => (true, None),
                }
            }
        };
        let refused = match self.section {
            Section::Require => !holds,
            Section::DenyIf => holds,
        };
        if !refused {
            return None;
        }
        // A condition's own on_deny only explains a require group that failed at that
        // condition; a deny_if group fires because *all* held, so no single one explains it.
        let own_message = self
            .on_deny
            .as_deref()
            .or_else(|| failing_condition.and_then(|c| c.on_deny.as_deref()));
        Some(Refusal {
            rule: &self.rule,
            message: own_message.unwrap_or(&self.fallback),
            own_message,
        })
    }

    /// True when any condition reads `args.` (so the decision depends on argument values).
    pub(crate) fn reads_args(&self) -> bool {
        match &self.shape {
            Shape::Flat(c) => c.path.reads_args(),
            Shape::Group(cs) => cs.iter().any(|c| c.path.reads_args()),
        }
    }
}

/// Reads an `on_deny` message. A blank one counts as absent, so the default message is used
/// rather than refusing the agent with no explanation at all.
pub(crate) fn on_deny<'a>(
    obj: &'a serde_json::Map<String, Value>,
    at: &Pointer,
    errs: &mut Errors,
) -> Option<&'a str> {
    obj.get("on_deny")
        .and_then(|v| expect_string(v, &at.key("on_deny"), "a message (a string)", errs))
        .filter(|s| !s.trim().is_empty())
}

/// Compiles a `require` or `deny_if` list found at `at`.
///
/// `rule_base` is `/tools/<key>` or `/all_tools`; `default_on_deny` is the enclosing section's
/// `on_deny` (the tool's), used when a predicate has none of its own.
pub(crate) fn compile_list(
    value: &Value,
    at: &Pointer,
    section: Section,
    rule_base: &str,
    default_on_deny: Option<&str>,
    errs: &mut Errors,
) -> Vec<Predicate> {
    let Some(items) = expect_array(value, at, "a list of predicates", errs) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = at.index(index);
        let Some(obj) = expect_object(
            item,
            &at,
            "a predicate object ({\"path\", \"op\", \"value\"} or {\"conditions\": [...]})",
            errs,
        ) else {
            continue;
        };
        let (shape, rule, on_deny) = if let Some(conditions) = obj.get("conditions") {
            check_keys(obj, &at, &["conditions", "on_deny"], &[], errs);
            let on_deny = on_deny(obj, &at, errs).map(str::to_owned);
            let shape = compile_group(conditions, &at.key("conditions"), errs);
            (
                shape,
                format!("{rule_base}/{}/{index}", section.key()),
                on_deny,
            )
        } else {
            match compile_condition(obj, &at, errs) {
                Some(mut c) => {
                    let rule = format!(
                        "{rule_base}/{}/{}-{}",
                        section.key(),
                        c.path.text(),
                        c.op.name()
                    );
                    // For the flat shape the condition's on_deny is the predicate's.
                    let on_deny = c.on_deny.take();
                    (Some(Shape::Flat(c)), rule, on_deny)
                }
                None => (None, String::new(), None),
            }
        };
        if let Some(shape) = shape {
            let fallback =
                default_on_deny.map_or_else(|| format!("Denied by rule \"{rule}\""), str::to_owned);
            out.push(Predicate {
                shape,
                section,
                rule,
                on_deny,
                fallback,
            });
        }
    }
    out
}

fn compile_group(value: &Value, at: &Pointer, errs: &mut Errors) -> Option<Shape> {
    let items = expect_array(value, at, "a list of conditions", errs)?;
    let mut conditions = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.iter().enumerate() {
        let at = at.index(index);
        let Some(obj) = expect_object(
            item,
            &at,
            "a condition object ({\"path\", \"op\", \"value\"})",
            errs,
        ) else {
            ok = false;
            continue;
        };
        if obj.contains_key("conditions") {
            errs.push(
                &at.key("conditions"),
                "groups cannot be nested; a condition is {\"path\", \"op\", \"value\"}",
            );
            ok = false;
            continue;
        }
        match compile_condition(obj, &at, errs) {
            Some(c) => conditions.push(c),
            None => ok = false,
        }
    }
    ok.then_some(Shape::Group(conditions))
}

/// Compiles `{path, op, value, on_deny?}`, reporting every problem in it.
fn compile_condition(
    obj: &serde_json::Map<String, Value>,
    at: &Pointer,
    errs: &mut Errors,
) -> Option<Condition> {
    check_keys(obj, at, &["path", "op", "value", "on_deny"], &[], errs);
    let mut missing = Vec::new();
    let path = match obj.get("path") {
        None => {
            missing.push("\"path\"");
            None
        }
        Some(v) => expect_string(
            v,
            &at.key("path"),
            "a path (a string such as \"args.amount\")",
            errs,
        )
        .and_then(|text| match Path::parse(text, Allowed::ArgsOrIdentity) {
            Ok(p) => Some(p),
            Err(e) => {
                errs.push(&at.key("path"), e);
                None
            }
        }),
    };
    let op = match obj.get("op") {
        None => {
            missing.push("\"op\"");
            None
        }
        Some(Value::String(name)) => match Op::from_name(name) {
            Some(op) => Some(op),
            None => {
                errs.push(
                    &at.key("op"),
                    format!("unknown operator \"{name}\"; expected one of {}", op_list()),
                );
                None
            }
        },
        Some(other) => {
            errs.push(
                &at.key("op"),
                format!(
                    "expected an operator name, found {}; expected one of {}",
                    describe(other),
                    op_list()
                ),
            );
            None
        }
    };
    let value = obj.get("value");
    if value.is_none() {
        missing.push("\"value\"");
    }
    let on_deny = on_deny(obj, at, errs).map(str::to_owned);
    errs.missing_fields(at, &missing);
    let test = match (op, value) {
        (Some(op), Some(value)) => match Test::compile(op, value) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(&at.key("value"), e);
                None
            }
        },
        _ => None,
    };
    Some(Condition {
        path: path?,
        op: op?,
        test: test?,
        on_deny,
    })
}

#[cfg(test)]
mod tests;
