//! What a proxy reads of an upstream's answer it passes on: whose answer it is and how it
//! went — not the result itself.
//!
//! There are two ways to read it, and they must agree: [`AnswerHead::of`] from a parsed
//! [`Value`], and [`AnswerHead::read_all`] straight from the bytes, which skips over results
//! without building them (a tool's result can be megabytes the gateway never looks at). The
//! fast reading gives up (`None`) on anything it is not sure of, and the caller then parses
//! in full; the fuzz target `answer_head` checks the agreement.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;

/// The parts of one JSON-RPC message from an upstream that the gateway acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerHead {
    /// The `id` member, when present (`Some(Value::Null)` for `"id": null`).
    pub id: Option<Value>,
    /// A `result` member is present (whatever its value).
    pub has_result: bool,
    /// An `error` member is present: `Some`, with its code when that is an integer.
    pub error: Option<Option<i64>>,
    /// The result is an object whose `isError` is `true`: the tool ran and failed.
    pub tool_error: bool,
    /// The `method` member, when it is a string: a request or notification sent along the
    /// answers (`notifications/tools/list_changed` matters to the gateway).
    pub method: Option<String>,
}

impl AnswerHead {
    /// Reads the head of a parsed message (anything that is not an object has an empty one).
    pub fn of(message: &Value) -> AnswerHead {
        let result = message.get("result");
        AnswerHead {
            id: message.get("id").cloned(),
            has_result: result.is_some(),
            error: message
                .get("error")
                .map(|e| e.get("code").and_then(Value::as_i64)),
            tool_error: result
                .and_then(|r| r.get("isError"))
                .and_then(Value::as_bool)
                == Some(true),
            method: message
                .get("method")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// The heads of a JSON answer (one message or a batch) read without building its
    /// results, or `None` when the answer is anything else or the fields read are not of the
    /// expected types (a duplicated `id`, a `code` that is not an integer…): the caller then
    /// parses the answer in full.
    ///
    /// Where it gives an answer, it is [`AnswerHead::of`] of the full parse, with one known
    /// leniency: skipped parts are only scanned, so a number out of `f64` range or nesting
    /// past serde_json's depth limit inside a result is accepted here and refused by a full
    /// parse. Such an answer is valid JSON (RFC 8259 leaves both limits to implementations),
    /// and the gateway passes it on as it came. Skipped strings are not checked for unpaired
    /// surrogate escapes either (the fuzz target found it), so a text with any surrogate
    /// escape (`\uD800`–`\uDFFF`) is left to the full parse.
    pub fn read_all(bytes: &[u8]) -> Option<Vec<AnswerHead>> {
        // Skipped strings are not checked for UTF-8 when read from bytes (the fuzz target
        // found this), so the whole text is checked first: a fast pass, and a text that is not
        // UTF-8 is not JSON.
        let text = std::str::from_utf8(bytes).ok()?;
        if has_surrogate_escape(text) {
            return None;
        }
        let envelopes: Vec<MapOnly<Envelope>> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).ok()?
        } else {
            vec![serde_json::from_str(text).ok()?]
        };
        Some(envelopes.into_iter().map(|e| e.0.into_head()).collect())
    }

    /// Whether this is an answer to a request: it has a result or an error.
    pub fn answered(&self) -> bool {
        self.has_result || self.error.is_some()
    }
}

/// Whether `text` holds a `\u` escape of a UTF-16 surrogate (`\uD800`–`\uDFFF`, any case).
/// An escaped backslash before `u` counts too: a false alarm costs only a full parse.
fn has_surrogate_escape(text: &str) -> bool {
    text.as_bytes().windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

/// One message as [`AnswerHead::read_all`] reads it.
#[derive(Deserialize)]
struct Envelope {
    /// `Some(Null)` for `"id": null`, as [`AnswerHead::of`] reads it.
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    /// `Some(None)` for `"result": null`.
    #[serde(default, deserialize_with = "present")]
    result: Option<Option<MapOnly<ResultHead>>>,
    /// `Some(None)` for `"error": null`.
    #[serde(default, deserialize_with = "present")]
    error: Option<Option<MapOnly<ErrorHead>>>,
    /// A request or notification among the answers.
    #[serde(default)]
    method: Option<String>,
}

impl Envelope {
    fn into_head(self) -> AnswerHead {
        AnswerHead {
            id: self.id,
            has_result: self.result.is_some(),
            error: self.error.map(|e| e.and_then(|e| e.0.code)),
            tool_error: self.result.flatten().and_then(|r| r.0.is_error) == Some(true),
            method: self.method,
        }
    }
}

/// The part of a result the audit log records.
#[derive(Deserialize)]
struct ResultHead {
    /// Whether the tool reported an error.
    #[serde(default, rename = "isError")]
    is_error: Option<bool>,
}

/// The part of a JSON-RPC error the audit log records.
#[derive(Deserialize)]
struct ErrorHead {
    /// The error code.
    #[serde(default)]
    code: Option<i64>,
}

/// A present member, `null` included: serde's default would read `null` as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `T` read from a JSON object only. A derived struct also accepts an array of its fields
/// in order, which [`AnswerHead::of`] would not read as those fields.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = MapOnly<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapOnly<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Both readings of `text`, which must agree.
    fn both(text: &str) -> Option<Vec<AnswerHead>> {
        let fast = AnswerHead::read_all(text.as_bytes());
        let full = match serde_json::from_str::<Value>(text).unwrap() {
            Value::Array(items) => items.iter().map(AnswerHead::of).collect(),
            one => vec![AnswerHead::of(&one)],
        };
        if let Some(fast) = &fast {
            assert_eq!(fast, &full, "{text}");
        }
        fast
    }

    #[test]
    fn reads_results_tool_errors_errors_and_notifications() {
        let heads = both(
            r#"[{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}},
                {"jsonrpc":"2.0","id":"b","error":{"code":-32602,"message":"x"}},
                {"jsonrpc":"2.0","method":"notifications/tools/list_changed"},
                {"jsonrpc":"2.0","id":null,"result":null}]"#,
        )
        .unwrap();
        assert_eq!(heads[0].id, Some(json!(1)));
        assert!(heads[0].tool_error && heads[0].answered());
        assert_eq!(heads[1].error, Some(Some(-32602)));
        assert_eq!(
            heads[2].method.as_deref(),
            Some("notifications/tools/list_changed")
        );
        assert!(!heads[2].answered());
        assert_eq!(heads[3].id, Some(Value::Null));
        assert!(heads[3].has_result);
    }

    #[test]
    fn gives_up_where_the_full_parse_reads_differently() {
        // Arrays in place of objects, duplicated members, unexpected types.
        for text in [
            r#"[[1, {"isError": true}]]"#,
            r#"{"id": 1, "result": [true]}"#,
            r#"{"id": 1, "id": 2, "result": {}}"#,
            r#"{"id": 1, "result": {"isError": true, "isError": false}}"#,
            r#"{"id": 1, "error": {"code": 1.5}}"#,
            r#"{"id": 1, "method": 5}"#,
            r#"7"#,
        ] {
            assert_eq!(both(text), None, "{text}");
        }
        // A surrogate escape in a skipped string (found by the fuzz target): a full parse
        // decides, since skipping does not check that surrogates come in pairs.
        assert_eq!(both(r#"{"id": 1, "result": {"t": "\uD83D\uDE00"}}"#), None);
        assert_eq!(AnswerHead::read_all(br#"{"id": 1, "x\udbdE": 1}"#), None);
        // Not UTF-8 inside a skipped string (found by the fuzz target): not JSON at all.
        assert_eq!(
            AnswerHead::read_all(b"{\"id\":1,\"result\":{\"t\":\"\xff\"}}"),
            None
        );
    }
}
