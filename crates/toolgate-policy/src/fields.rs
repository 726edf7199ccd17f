//! Object-shape checks shared by every part of the document: required fields and unknown keys.
//!
//! Unknown keys are errors because a typo such as `"deny-if"` that was silently ignored would
//! drop a rule and open exactly the hole the rule was written to close.

use serde_json::{Map, Value};

use crate::error::{describe, Errors, Pointer};

/// Reports every key of `obj` that is neither `known` nor `tolerated` (metadata that is
/// accepted and ignored).
pub(crate) fn check_keys(
    obj: &Map<String, Value>,
    at: &Pointer,
    known: &[&str],
    tolerated: &[&str],
    errs: &mut Errors,
) {
    for key in obj.keys() {
        if known.contains(&key.as_str()) || tolerated.contains(&key.as_str()) {
            continue;
        }
        let mut message = format!("unknown field \"{key}\"");
        if let Some(near) = closest(key, known) {
            message.push_str(&format!("; did you mean \"{near}\"?"));
        }
        message.push_str("; expected one of ");
        message.push_str(&known.join(", "));
        errs.push(&at.key(key), message);
    }
}

/// Returns the object, or records what was expected instead.
pub(crate) fn expect_object<'a>(
    value: &'a Value,
    at: &Pointer,
    what: &str,
    errs: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            errs.push(at, format!("expected {what}, found {}", describe(other)));
            None
        }
    }
}

/// Returns the array, or records what was expected instead.
pub(crate) fn expect_array<'a>(
    value: &'a Value,
    at: &Pointer,
    what: &str,
    errs: &mut Errors,
) -> Option<&'a Vec<Value>> {
    match value {
        Value::Array(items) => Some(items),
        other => {
            errs.push(at, format!("expected {what}, found {}", describe(other)));
            None
        }
    }
}

/// Returns the string, or records what was expected instead.
pub(crate) fn expect_string<'a>(
    value: &'a Value,
    at: &Pointer,
    what: &str,
    errs: &mut Errors,
) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            errs.push(at, format!("expected {what}, found {}", describe(other)));
            None
        }
    }
}

/// The known key a misspelling most likely meant: same after normalising case and `-`/`_`, or
/// within two edits.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let key_norm = norm(key);
    if let Some(k) = known.iter().find(|k| norm(k) == key_norm) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(&key_norm, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = ["require", "deny_if", "limits", "on_deny"];
        assert_eq!(closest("deny-if", &known), Some("deny_if"));
        assert_eq!(closest("Deny_If", &known), Some("deny_if"));
        assert_eq!(closest("requires", &known), Some("require"));
        assert_eq!(closest("limit", &known), Some("limits"));
        assert_eq!(closest("banana", &known), None);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
