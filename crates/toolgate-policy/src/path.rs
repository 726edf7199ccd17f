//! Predicate paths (`args.card.number`, `args.items[0].sku`, `identity.claims.groups`):
//! parsed once at load, then resolved against a call without allocating.

use serde_json::Value;

use crate::call::Identity;

/// Where a path starts reading.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Root {
    Args,
    Grant,
    Sub,
    Claims,
}

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    /// `.name`; `index` is set when the name is also a valid array index, so that `args.items.0`
    /// (the lodash-style spelling found in some published policies) reaches into arrays too.
    Key {
        name: Box<str>,
        index: Option<usize>,
    },
    /// `[n]`: only ever indexes arrays.
    Index(usize),
}

/// A compiled path.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    text: String,
    root: Root,
    segs: Vec<Seg>,
}

/// The value a path found. Identity fields are plain strings, not JSON values, so they get
/// their own variant instead of being copied into a `Value` on every call.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Actual<'a> {
    Json(&'a Value),
    Str(&'a str),
}

impl<'a> Actual<'a> {
    pub(crate) fn as_str(self) -> Option<&'a str> {
        match self {
            Actual::Json(v) => v.as_str(),
            Actual::Str(s) => Some(s),
        }
    }

    pub(crate) fn is_null(self) -> bool {
        matches!(self, Actual::Json(Value::Null))
    }
}

/// Which roots a path may start from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// Predicates: `args.` and `identity.`.
    ArgsOrIdentity,
    /// `increment_from`: the amount must come from the call's arguments.
    ArgsOnly,
}

impl Path {
    /// Parses a path as written in the policy.
    pub(crate) fn parse(text: &str, allowed: Allowed) -> Result<Path, String> {
        let expected = match allowed {
            Allowed::ArgsOrIdentity => "a path must start with \"args.\" or \"identity.\"",
            Allowed::ArgsOnly => "the path must start with \"args.\"",
        };
        if let Some(rest) = text.strip_prefix("args") {
            if !rest.starts_with('.') {
                return Err(format!("invalid path \"{text}\": {expected}"));
            }
            let segs = parse_segments(text, rest)?;
            return Ok(Path {
                text: text.to_owned(),
                root: Root::Args,
                segs,
            });
        }
        if let Some(rest) = text.strip_prefix("identity.") {
            if allowed == Allowed::ArgsOnly {
                return Err(format!("invalid path \"{text}\": {expected}"));
            }
            let unknown = || {
                format!(
                    "invalid path \"{text}\": expected identity.grant, identity.sub or identity.claims.<name>"
                )
            };
            let (root, segs) = match rest {
                "grant" => (Root::Grant, Vec::new()),
                "sub" => (Root::Sub, Vec::new()),
                _ => {
                    let Some(claims) = rest.strip_prefix("claims") else {
                        return Err(unknown());
                    };
                    if !claims.starts_with('.') {
                        return Err(unknown());
                    }
                    (Root::Claims, parse_segments(text, claims)?)
                }
            };
            return Ok(Path {
                text: text.to_owned(),
                root,
                segs,
            });
        }
        Err(format!("invalid path \"{text}\": {expected}"))
    }

    /// The path exactly as written, used in rule ids and messages.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// True when the path reads the call's arguments (as opposed to the caller's identity).
    pub(crate) fn reads_args(&self) -> bool {
        self.root == Root::Args
    }

    /// Follows the path; `None` when any step is missing.
    pub(crate) fn resolve<'a>(
        &self,
        args: &'a Value,
        identity: &'a Identity,
    ) -> Option<Actual<'a>> {
        match self.root {
            Root::Args => walk(args, &self.segs).map(Actual::Json),
            Root::Grant => Some(Actual::Str(&identity.grant)),
            Root::Sub => identity.sub.as_deref().map(Actual::Str),
            Root::Claims => {
                // The first segment is always a key (enforced by parse_segments' leading '.').
                let (first, rest) = self.segs.split_first()?;
                let Seg::Key { name, .. } = first else {
                    return None;
                };
                walk(identity.claims.get(&**name)?, rest).map(Actual::Json)
            }
        }
    }
}

/// A path into a call's arguments (`args.card.number`), for operators who name argument
/// values outside policies: the audit log's `redact` list.
#[derive(Clone, Debug)]
pub struct ArgPath(Path);

impl ArgPath {
    /// Parses `args.…`; the error says what is wrong with the text.
    pub fn parse(text: &str) -> Result<ArgPath, String> {
        Path::parse(text, Allowed::ArgsOnly).map(ArgPath)
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// Replaces the value at this path in `args` with `mask`, if there is one there;
    /// says whether there was.
    pub fn mask(&self, args: &mut Value, mask: &Value) -> bool {
        let mut value = args;
        for seg in &self.0.segs {
            value = match (seg, value) {
                (Seg::Key { name, .. }, Value::Object(map)) => match map.get_mut(&**name) {
                    Some(v) => v,
                    None => return false,
                },
                (Seg::Key { index: Some(i), .. }, Value::Array(items))
                | (Seg::Index(i), Value::Array(items)) => match items.get_mut(*i) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        *value = mask.clone();
        true
    }
}

fn walk<'a>(mut value: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    for seg in segs {
        value = match (seg, value) {
            (Seg::Key { name, .. }, Value::Object(map)) => map.get(&**name)?,
            (Seg::Key { index: Some(i), .. }, Value::Array(items)) => items.get(*i)?,
            (Seg::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Parses `.a.b[0][1].c`; `rest` must start with '.'.
fn parse_segments(text: &str, mut rest: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let err = |why: &str| format!("invalid path \"{text}\": {why}");
    while let Some(c) = rest.chars().next() {
        match c {
            '.' => {
                let body = &rest[1..];
                let end = body.find(['.', '[', ']']).unwrap_or(body.len());
                if end == 0 {
                    return Err(err("empty name after \".\""));
                }
                let name = &body[..end];
                let index = if name.bytes().all(|b| b.is_ascii_digit()) {
                    name.parse().ok()
                } else {
                    None
                };
                segs.push(Seg::Key {
                    name: name.into(),
                    index,
                });
                rest = &body[end..];
            }
            '[' => {
                let Some(close) = rest.find(']') else {
                    return Err(err("\"[\" without a matching \"]\""));
                };
                let inner = &rest[1..close];
                if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(&format!(
                        "\"[{inner}]\" is not an array index; expected a whole number such as [0]"
                    )));
                }
                let index = inner
                    .parse()
                    .map_err(|_| err(&format!("array index {inner} is too large")))?;
                segs.push(Seg::Index(index));
                rest = &rest[close + 1..];
            }
            _ => {
                return Err(err(&format!(
                    "unexpected \"{c}\"; expected \".name\" or \"[index]\""
                )))
            }
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod arg_path_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_nested_values_and_leaves_the_rest() {
        let mut args = json!({"card": {"number": "4242", "exp": "12/30"}, "items": [{"sku": "a"}]});
        let mask = json!("[REDACTED]");
        assert!(ArgPath::parse("args.card.number")
            .unwrap()
            .mask(&mut args, &mask));
        assert!(ArgPath::parse("args.items[0].sku")
            .unwrap()
            .mask(&mut args, &mask));
        assert!(!ArgPath::parse("args.missing.x")
            .unwrap()
            .mask(&mut args, &mask));
        assert_eq!(
            args,
            json!({"card": {"number": "[REDACTED]", "exp": "12/30"}, "items": [{"sku": "[REDACTED]"}]})
        );
        assert!(ArgPath::parse("identity.sub")
            .unwrap_err()
            .contains("args."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("groups".into(), json!(["support", "admins"]));
        claims.insert("org".into(), json!({"id": 7}));
        Identity {
            grant: "alice".into(),
            sub: Some("user-1".into()),
            claims,
        }
    }

    fn get(path: &str, args: &Value) -> Option<Value> {
        let identity = id();
        let p = Path::parse(path, Allowed::ArgsOrIdentity).unwrap();
        p.resolve(args, &identity).map(|a| match a {
            Actual::Json(v) => v.clone(),
            Actual::Str(s) => Value::String(s.to_owned()),
        })
    }

    #[test]
    fn resolves() {
        let args =
            json!({"a": {"b": [{"c": 1}, {"c": [5, 6]}]}, "n": null, "arr": [10, 20], "0": "zero"});
        let cases: &[(&str, Option<Value>)] = &[
            ("args.a.b[0].c", Some(json!(1))),
            ("args.a.b[1].c[1]", Some(json!(6))),
            ("args.a.b.1.c.0", Some(json!(5))),
            ("args.a.b[2].c", None),
            ("args.a.x", None),
            ("args.n", Some(Value::Null)),
            ("args.n.deeper", None),
            ("args.arr[1]", Some(json!(20))),
            ("args.arr.1", Some(json!(20))),
            ("args.a[0]", None),
            ("args.0", Some(json!("zero"))),
            ("identity.grant", Some(json!("alice"))),
            ("identity.sub", Some(json!("user-1"))),
            ("identity.claims.groups", Some(json!(["support", "admins"]))),
            ("identity.claims.groups[1]", Some(json!("admins"))),
            ("identity.claims.org.id", Some(json!(7))),
            ("identity.claims.missing", None),
        ];
        for (path, want) in cases {
            assert_eq!(&get(path, &args), want, "{path}");
        }
    }

    #[test]
    fn null_or_non_object_arguments_resolve_nothing() {
        for args in [Value::Null, json!([1, 2]), json!("x")] {
            assert_eq!(get("args.a", &args), None);
        }
    }

    #[test]
    fn missing_sub() {
        let identity = Identity::default();
        let p = Path::parse("identity.sub", Allowed::ArgsOrIdentity).unwrap();
        assert!(p.resolve(&Value::Null, &identity).is_none());
    }

    #[test]
    fn rejects() {
        let cases = [
            ("amount", "must start with"),
            ("args", "must start with"),
            ("args.", "empty name"),
            ("args..a", "empty name"),
            ("args.a.", "empty name"),
            ("args[0]", "must start with"),
            ("arguments.a", "must start with"),
            ("args.a[", "without a matching"),
            ("args.a[x]", "not an array index"),
            ("args.a[-1]", "not an array index"),
            ("args.a[]", "not an array index"),
            ("args.a[0]b", "unexpected \"b\""),
            ("args.a]", "unexpected \"]\""),
            ("args.a[99999999999999999999999]", "too large"),
            ("identity.name", "expected identity.grant"),
            ("identity.claims", "expected identity.grant"),
            ("identity.claimsx", "expected identity.grant"),
            ("identity.grant.x", "expected identity.grant"),
            ("identity", "must start with"),
        ];
        for (path, want) in cases {
            let err = Path::parse(path, Allowed::ArgsOrIdentity).unwrap_err();
            assert!(err.contains(want), "{path}: {err}");
        }
        let err = Path::parse("identity.grant", Allowed::ArgsOnly).unwrap_err();
        assert!(err.contains("must start with \"args.\""), "{err}");
    }
}
