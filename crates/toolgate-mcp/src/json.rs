//! Strict JSON parsing: like `serde_json::from_slice`, but duplicate object keys are an error.
//!
//! RFC 8259 leaves duplicate keys implementation-defined: one parser keeps the first value,
//! another the last. If the gateway decided on one and the server acted on the other, a
//! policy could be bypassed with `{"amount": 1, "amount": 1000000}`. Rejecting duplicates
//! closes that gap; everything the gateway reads is then exactly what it forwards.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Human-readable reason, with line and column where serde_json knows them.
    pub message: String,
    /// True when the text was syntactically JSON but repeated an object key.
    pub duplicate_key: bool,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JsonError {}

const DUPLICATE_MARKER: &str = "duplicate object key";

/// Parses one JSON text, rejecting duplicate object keys at any depth and trailing data.
/// Nesting depth is bounded by serde_json's recursion limit (128).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed.deserialize(&mut de).map_err(to_json_error)?;
    de.end().map_err(to_json_error)?;
    Ok(value)
}

fn to_json_error(e: serde_json::Error) -> JsonError {
    let message = e.to_string();
    JsonError {
        duplicate_key: message.contains(DUPLICATE_MARKER),
        message,
    }
}

/// Deserializes a `serde_json::Value`, refusing repeated keys in any object.
struct StrictSeed;

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_MARKER} \"{key}\""
                )));
            }
            let value = map.next_value_seed(StrictSeed)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The canonical text of a JSON value: object keys sorted (by UTF-16 code units, as
/// RFC 8785 sorts them), no whitespace, strings and numbers as serde_json writes them. Two
/// argument objects that mean the same thing — keys in another order, other spacing — get
/// the same text, so their SHA-256 (the audit log's `args_sha256`, an approval's binding)
/// is the same.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_serde_json() {
        let text = br#"{"a":[1,2.5,-3,true,null,"x"],"b":{"c":{}}}"#;
        assert_eq!(
            parse_strict(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        let e = parse_strict(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(e.duplicate_key, "{e}");
        assert!(e.message.contains("\"a\""));
        let e = parse_strict(br#"{"p":{"args":{"amount":1,"amount":9}}}"#).unwrap_err();
        assert!(e.duplicate_key);
        let e = parse_strict(br#"[{"k":1},{"k":2,"k":3}]"#).unwrap_err();
        assert!(e.duplicate_key);
    }

    #[test]
    fn rejects_syntax_errors_trailing_data_and_deep_nesting() {
        for bad in [&b"{"[..], b"{\"a\":}", b"[1,]", b"{} {}", b"\xff"] {
            let e = parse_strict(bad).unwrap_err();
            assert!(!e.duplicate_key, "{e}");
        }
        let deep = "[".repeat(100_000);
        assert!(parse_strict(deep.as_bytes()).is_err());
    }

    #[test]
    fn canonical_text_ignores_key_order_and_spacing() {
        let a = parse_strict(br#"{"b": [1, {"y": 2, "x": "\u00e9"}], "a": null}"#).unwrap();
        let b = parse_strict(br#"{"a":null,"b":[1,{"x":"\u00e9","y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#);
    }
}
