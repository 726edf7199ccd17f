//! YAML cases files (`toolgate policy test POLICY cases.yaml`, SPEC §2), read into the same
//! JSON value a JSON cases file gives, so that one parser and one set of checks serve both.
//!
//! Built from yaml-rust2's parser events rather than its document loader, to read only the
//! part of YAML that maps onto JSON and to refuse the rest by line: one document; no
//! aliases (the loader expands each by copying, so a few lines of nested aliases can ask for
//! gigabytes); no tags; no duplicate keys (as for JSON policies, a key given twice is an
//! error, not a silent choice); nesting at most as deep as serde_json allows.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// Deepest nesting read (serde_json's own limit for JSON).
const MAX_DEPTH: usize = 128;

/// `text` as the JSON value it spells; the error names the line.
pub(crate) fn to_json(text: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    let parsed = Parser::new_from_str(text).load(&mut builder, true);
    // What the builder refused came first: the parser stops at an error, not before.
    if let Some(error) = builder.error {
        return Err(error);
    }
    parsed.map_err(|e| format!("not YAML: {e}"))?;
    match builder.documents.len() {
        1 => Ok(builder.documents.remove(0)),
        0 => Err("the YAML holds no document".to_owned()),
        n => Err(format!(
            "the YAML holds {n} documents (separated by ---); one is read"
        )),
    }
}

/// A collection being read.
enum Open {
    /// A sequence's items so far.
    Sequence(Vec<Value>),
    /// A mapping's entries so far, and the key waiting for its value.
    Mapping(Map<String, Value>, Option<String>),
}

/// Builds values from parser events; stops at the first error.
#[derive(Default)]
struct Builder {
    /// The collections open, innermost last.
    open: Vec<Open>,
    /// The documents read.
    documents: Vec<Value>,
    /// What was wrong, at which line.
    error: Option<String>,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.take(event) {
            self.error = Some(format!("line {}: {e}", mark.line()));
        }
    }
}

impl Builder {
    fn take(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Scalar(text, style, _, tag) => {
                if tag.is_some() {
                    return Err("YAML tags (!…) are not read here".to_owned());
                }
                self.add(scalar(&text, style)?)
            }
            Event::SequenceStart(_, tag) | Event::MappingStart(_, tag) if tag.is_some() => {
                Err("YAML tags (!…) are not read here".to_owned())
            }
            Event::SequenceStart(..) => self.enter(Open::Sequence(Vec::new())),
            Event::MappingStart(..) => self.enter(Open::Mapping(Map::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => match self.open.pop() {
                Some(Open::Sequence(items)) => self.add(Value::Array(items)),
                Some(Open::Mapping(map, _)) => self.add(Value::Object(map)),
                None => Err("a collection ends that never began".to_owned()),
            },
            Event::Alias(_) => {
                Err("aliases (*name) are not read here: write the value out".to_owned())
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => Ok(()),
        }
    }

    fn enter(&mut self, collection: Open) -> Result<(), String> {
        if self.open.len() >= MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        self.open.push(collection);
        Ok(())
    }

    /// Puts a finished value where it belongs: a document, an item, a key or a key's value.
    fn add(&mut self, value: Value) -> Result<(), String> {
        match self.open.last_mut() {
            None => self.documents.push(value),
            Some(Open::Sequence(items)) => items.push(value),
            Some(Open::Mapping(map, pending)) => match pending.take() {
                None => *pending = Some(key(value)?),
                Some(key) => {
                    if map.contains_key(&key) {
                        return Err(format!("the key {key:?} is given twice"));
                    }
                    map.insert(key, value);
                }
            },
        }
        Ok(())
    }
}

/// A scalar as JSON: quoted ones are strings; plain ones follow YAML's core schema (null,
/// booleans, integers, floats, else a string).
fn scalar(text: &str, style: TScalarStyle) -> Result<Value, String> {
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(match Yaml::from_str(text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(real) => real
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{real} is not a number JSON can hold"))?,
        _ => Value::String(text.to_owned()),
    })
}

/// A mapping key as a JSON object key: strings as they are, numbers and booleans as
/// written.
fn key(value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("a key is null".to_owned()),
        Value::Array(_) | Value::Object(_) => Err("a key is a collection".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_reads_as_the_json_it_spells() {
        let text = r#"
cases:
  - name: small charge
    tool: create_charge
    arguments: {amount: 50, currency: "usd", note: 'x: y', ratio: 0.5, flag: true, none: ~}
    identity:
      grant: ci
      claims: {groups: [support, "billing"]}
    expect:
      decision: allow
  - name: "quoted numbers stay strings"
    tool: t
    arguments:
      code: "007"
      200: ok
    expect: {decision: deny, rule: "/tools/t/action"}
"#;
        assert_eq!(
            to_json(text).unwrap(),
            json!({"cases": [
                {"name": "small charge", "tool": "create_charge",
                 "arguments": {"amount": 50, "currency": "usd", "note": "x: y", "ratio": 0.5,
                               "flag": true, "none": null},
                 "identity": {"grant": "ci", "claims": {"groups": ["support", "billing"]}},
                 "expect": {"decision": "allow"}},
                {"name": "quoted numbers stay strings", "tool": "t",
                 "arguments": {"code": "007", "200": "ok"},
                 "expect": {"decision": "deny", "rule": "/tools/t/action"}},
            ]})
        );
        // JSON is YAML too.
        assert_eq!(
            to_json(r#"[{"a": [1, 2.5]}]"#).unwrap(),
            json!([{"a": [1, 2.5]}])
        );
    }

    #[test]
    fn what_json_cannot_say_is_refused_by_line() {
        let refused = |text: &str, expected: &str| {
            let error = to_json(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        };
        refused("a: 1\nb: 2\na: 3\n", "line 3: the key \"a\" is given twice");
        refused("a: &x [1]\nb: *x\n", "line 2: aliases");
        refused("a: !!str 5\n", "line 1: YAML tags");
        refused("a: 1\n---\nb: 2\n", "2 documents");
        refused("", "no document");
        refused("a: [1, 2\n", "not YAML");
        refused("? [1]\n: x\n", "a key is a collection");
        refused("a: .inf\n", "not a number JSON can hold");
        refused(
            &format!("{}x\n", "- ".repeat(200)),
            "nested more than 128 deep",
        );
        // The parser's own limit comes first for flow collections: refused all the same,
        // without exhausting the stack.
        refused(&"[".repeat(100_000), "recursion limit exceeded");
    }
}
