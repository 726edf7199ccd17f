//! Duplicate object keys in the raw policy text.
//!
//! serde_json keeps the last of two equal keys without a word, so a second `"create_charge"`
//! entry would silently replace the first one's rules. This pass re-reads the bytes (after they
//! have parsed as JSON) and reports each duplicate at its JSON Pointer.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{Errors, Pointer};

/// Reports every duplicate key in `bytes` (which must already be valid JSON).
pub(crate) fn check(bytes: &[u8], errs: &mut Errors) {
    let found = RefCell::new(Errors::default());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The bytes already parsed once, so an error here can only be a nesting limit that the
    // first parse also enforces; nothing more to report.
    let _ = Walk {
        at: Pointer::root(),
        found: &found,
    }
    .deserialize(&mut de);
    errs.extend(found.into_inner().into_inner());
}

struct Walk<'e> {
    at: Pointer,
    found: &'e RefCell<Errors>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(Walk {
                at: self.at.index(index),
                found: self.found,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = self.at.key(&key);
            if seen.contains(&key) {
                self.found.borrow_mut().push(
                    &at,
                    format!("duplicate key \"{key}\"; each key may appear only once in an object"),
                );
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Walk {
                    at,
                    found: self.found,
                })?;
                seen.insert(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dups(text: &str) -> Vec<String> {
        let mut errs = Errors::default();
        check(text.as_bytes(), &mut errs);
        errs.into_inner()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn finds_nested_duplicates() {
        let text = r#"{"a": 1, "tools": {"x/y": {}, "z": [{"p": 1, "p": 2}], "x/y": {}}, "a": 2}"#;
        assert_eq!(
            dups(text),
            vec![
                "/tools/z/0/p: duplicate key \"p\"; each key may appear only once in an object",
                "/tools/x~1y: duplicate key \"x/y\"; each key may appear only once in an object",
                "/a: duplicate key \"a\"; each key may appear only once in an object",
            ]
        );
    }

    #[test]
    fn clean_document() {
        assert!(dups(r#"{"a": [1, 2.5, "s", null, true, {"b": {}}], "c": {"a": 1}}"#).is_empty());
    }
}
