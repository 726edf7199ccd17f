//! Validation errors, each located by a JSON Pointer into the policy document.

use std::fmt;

use serde_json::Value;

/// One problem found in a policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// Where the problem is: a JSON Pointer (RFC 6901, `~0`/`~1` escaping) into the document.
    /// The empty string designates the whole document.
    pub pointer: String,
    /// What is wrong, as a plain sentence.
    pub message: String,
}

impl PolicyError {
    /// Builds an error at `pointer` (already escaped) with `message`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An empty pointer would print as ": message", which reads like a formatting bug.
        let pointer = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{pointer}: {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a rejected policy document, in the order they were found
/// (duplicate keys first, then each section's fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The individual errors.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// How many errors were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Every error on one line, separated by `; ` (for messages that must stay one line).
    pub fn one_line(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// True when no error is recorded (never the case for a value returned by this crate).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A JSON Pointer under construction while walking the document.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pointer(String);

impl Pointer {
    pub(crate) fn root() -> Pointer {
        Pointer(String::new())
    }

    /// The pointer to member `key` of the object this pointer designates.
    pub(crate) fn key(&self, key: &str) -> Pointer {
        let mut s = String::with_capacity(self.0.len() + key.len() + 1);
        s.push_str(&self.0);
        s.push('/');
        push_escaped(&mut s, key);
        Pointer(s)
    }

    /// The pointer to element `index` of the array this pointer designates.
    pub(crate) fn index(&self, index: usize) -> Pointer {
        Pointer(format!("{}/{index}", self.0))
    }

    /// Appends a suffix that is already a JSON Pointer (e.g. one reported by the schema compiler).
    pub(crate) fn join_pointer(&self, escaped: &str) -> Pointer {
        Pointer(format!("{}{escaped}", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 6901: `~` becomes `~0` and `/` becomes `~1`, in that order.
fn push_escaped(out: &mut String, segment: &str) {
    for c in segment.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// Collects every error found while compiling, so that one load reports them all.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<PolicyError>);

impl Errors {
    pub(crate) fn push(&mut self, at: &Pointer, message: impl Into<String>) {
        self.0.push(PolicyError::new(at.as_str(), message));
    }

    /// Reports the required fields an object lacks, all in one error at the object.
    pub(crate) fn missing_fields(&mut self, at: &Pointer, missing: &[&str]) {
        if missing.is_empty() {
            return;
        }
        let noun = if missing.len() == 1 {
            "field"
        } else {
            "fields"
        };
        self.push(
            at,
            format!("missing required {noun} {}", missing.join(", ")),
        );
    }

    pub(crate) fn extend(&mut self, errors: impl IntoIterator<Item = PolicyError>) {
        self.0.extend(errors);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_inner(self) -> Vec<PolicyError> {
        self.0
    }
}

/// Names a JSON value's type the way an error sentence wants it ("found a string").
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A bad value as an error sentence shows it: scalars as written (when short), containers only
/// by kind, so that every error stays one short line.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => describe(value).to_owned(),
        _ => {
            let s = value.to_string();
            if s.chars().count() > 40 {
                describe(value).to_owned()
            } else {
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_tilde_before_slash() {
        let p = Pointer::root().key("tools").key("a/b~c").index(3);
        assert_eq!(p.as_str(), "/tools/a~1b~0c/3");
    }

    #[test]
    fn display_one_line_per_error() {
        let errors = PolicyErrors(vec![
            PolicyError::new("/version", "expected the string \"1\""),
            PolicyError::new("", "bad"),
        ]);
        assert_eq!(
            errors.to_string(),
            "/version: expected the string \"1\"\n(document): bad"
        );
    }
}
