//! JSON-RPC 2.0 envelopes: classify once, keep the whole object for forwarding.

use crate::codes;
use crate::json::parse_strict;
use serde_json::{json, Map, Value};
use std::fmt;

/// What kind of JSON-RPC message an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and exactly one of `result` / `error`.
    Response,
}

/// One validated JSON-RPC message. The object is kept whole so that what is forwarded is
/// exactly what was decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The full JSON object of the message.
    value: Map<String, Value>,
    /// Its classification, computed once at construction.
    kind: Kind,
}

/// A POST body: one message or (2025-03-26 only) a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A single JSON-RPC object.
    Single(Message),
    /// A JSON array of messages.
    Batch(Vec<Message>),
}

/// Why a body is not acceptable JSON-RPC; carries the code to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeError {
    /// `-32700` (not JSON) or `-32600` (not a valid JSON-RPC message).
    pub code: i64,
    /// What was wrong, for the client.
    pub message: String,
    /// The offending message's id, when one could be read.
    pub id: Option<Value>,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for EnvelopeError {}

impl EnvelopeError {
    fn invalid(message: impl Into<String>, id: Option<Value>) -> Self {
        EnvelopeError {
            code: codes::INVALID_REQUEST,
            message: message.into(),
            id,
        }
    }

    /// The JSON-RPC error response object describing this error.
    pub fn to_response(&self) -> Value {
        error_response(
            self.id.clone().unwrap_or(Value::Null),
            self.code,
            &self.message,
            None,
        )
    }
}

/// Parses a POST body strictly (duplicate keys rejected) into a payload.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, EnvelopeError> {
    let value = parse_strict(bytes).map_err(|e| EnvelopeError {
        code: if e.duplicate_key {
            codes::INVALID_REQUEST
        } else {
            codes::PARSE_ERROR
        },
        message: if e.duplicate_key {
            format!("Invalid Request: {e}")
        } else {
            format!("Parse error: {e}")
        },
        id: None,
    })?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(EnvelopeError::invalid("Invalid Request: empty batch", None));
            }
            items
                .into_iter()
                .map(Message::from_value)
                .collect::<Result<Vec<_>, _>>()
                .map(Payload::Batch)
        }
        other => Message::from_value(other).map(Payload::Single),
    }
}

fn valid_id(id: &Value) -> bool {
    matches!(id, Value::String(_)) || id.as_i64().is_some() || id.as_u64().is_some()
}

impl Message {
    /// Validates and classifies one JSON value as a JSON-RPC message.
    pub fn from_value(value: Value) -> Result<Message, EnvelopeError> {
        let Value::Object(map) = value else {
            return Err(EnvelopeError::invalid(
                "Invalid Request: a JSON-RPC message must be an object",
                None,
            ));
        };
        let id = map.get("id").cloned();
        if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(EnvelopeError::invalid(
                "Invalid Request: \"jsonrpc\" must be \"2.0\"",
                id,
            ));
        }
        if let Some(id_value) = &id {
            if !valid_id(id_value) {
                return Err(EnvelopeError::invalid(
                    "Invalid Request: \"id\" must be a string or an integer",
                    None,
                ));
            }
        }
        let kind =
            match (map.get("method"), &id) {
                (Some(Value::String(_)), Some(_)) => Kind::Request,
                (Some(Value::String(_)), None) => Kind::Notification,
                (Some(_), _) => {
                    return Err(EnvelopeError::invalid(
                        "Invalid Request: \"method\" must be a string",
                        id,
                    ))
                }
                (None, Some(_)) => match (map.contains_key("result"), map.contains_key("error")) {
                    (true, false) | (false, true) => Kind::Response,
                    _ => return Err(EnvelopeError::invalid(
                        "Invalid Request: a response needs exactly one of \"result\" and \"error\"",
                        id,
                    )),
                },
                (None, None) => {
                    return Err(EnvelopeError::invalid(
                        "Invalid Request: neither \"method\" nor \"id\" present",
                        None,
                    ))
                }
            };
        if let Some(params) = map.get("params") {
            if kind != Kind::Response && !params.is_object() && !params.is_array() {
                return Err(EnvelopeError::invalid(
                    "Invalid Request: \"params\" must be an object or an array",
                    id,
                ));
            }
        }
        Ok(Message { value: map, kind })
    }

    /// The message's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The id of a request or response.
    pub fn id(&self) -> Option<&Value> {
        self.value.get("id")
    }
    /// Replaces the id (used when remapping ids on a shared upstream connection).
    pub fn set_id(&mut self, id: Value) {
        self.value.insert("id".into(), id);
    }
    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        self.value.get("method").and_then(Value::as_str)
    }
    /// The params, if present.
    pub fn params(&self) -> Option<&Value> {
        self.value.get("params")
    }
    /// Mutable access to the params object, creating it when absent.
    pub fn params_object_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.value
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    }
    /// The result of a successful response.
    pub fn result(&self) -> Option<&Value> {
        self.value.get("result")
    }
    /// Mutable access to the result of a successful response.
    pub fn result_mut(&mut self) -> Option<&mut Value> {
        self.value.get_mut("result")
    }
    /// The whole object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.value
    }
    /// Consumes the message into its JSON value.
    pub fn into_value(self) -> Value {
        Value::Object(self.value)
    }
    /// Serializes the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.value).unwrap_or_default()
    }
    /// `params._meta.progressToken`, if the request asked for progress.
    pub fn progress_token(&self) -> Option<&Value> {
        self.params()?.get("_meta")?.get("progressToken")
    }
    /// Replaces `params._meta.progressToken` (no-op when there is none).
    pub fn set_progress_token(&mut self, token: Value) {
        if let Some(meta) = self
            .value
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        {
            if meta.contains_key("progressToken") {
                meta.insert("progressToken".into(), token);
            }
        }
    }

    /// For a `tools/call` request: the tool name and its `arguments` (`Null` when absent).
    /// `Err` carries the `-32602` message when the params are malformed.
    pub fn tool_call(&self) -> Option<Result<ToolCallParams<'_>, String>> {
        if self.kind != Kind::Request || self.method() != Some("tools/call") {
            return None;
        }
        Some(parse_tool_call(self.params()))
    }
}

/// The policy-relevant parameters of a `tools/call` request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolCallParams<'a> {
    /// `params.name`.
    pub name: &'a str,
    /// `params.arguments`, or `Null` when the client sent none.
    pub arguments: &'a Value,
}

static NULL: Value = Value::Null;

fn parse_tool_call(params: Option<&Value>) -> Result<ToolCallParams<'_>, String> {
    let params = params
        .and_then(Value::as_object)
        .ok_or("Invalid params: tools/call needs a params object")?;
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or("Invalid params: tools/call needs a string \"name\"")?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &NULL,
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err("Invalid params: \"arguments\" must be an object".into()),
    };
    Ok(ToolCallParams { name, arguments })
}

/// A JSON-RPC error response.
pub fn error_response(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// A JSON-RPC success response.
pub fn result_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Message {
        match parse_payload(text.as_bytes()).unwrap() {
            Payload::Single(m) => m,
            Payload::Batch(_) => panic!("batch"),
        }
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).kind(),
            Kind::Request
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).kind(),
            Kind::Notification
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).kind(),
            Kind::Response
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#).kind(),
            Kind::Response
        );
    }

    #[test]
    fn rejects_invalid_envelopes_with_the_right_code() {
        let cases = [
            (r#"{"id":1,"method":"ping"}"#, codes::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                codes::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                codes::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, codes::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
                codes::INVALID_REQUEST,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
                codes::INVALID_REQUEST,
            ),
            (r#"[]"#, codes::INVALID_REQUEST),
            (r#"7"#, codes::INVALID_REQUEST),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
                codes::INVALID_REQUEST,
            ),
            (r#"{"jsonrpc":"2.0","#, codes::PARSE_ERROR),
        ];
        for (text, code) in cases {
            let err = parse_payload(text.as_bytes()).unwrap_err();
            assert_eq!(err.code, code, "{text}: {err}");
            let response = err.to_response();
            assert_eq!(response["error"]["code"], code);
        }
    }

    #[test]
    fn batches_are_parsed_element_by_element() {
        let p = parse_payload(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"n"}]"#,
        )
        .unwrap();
        let Payload::Batch(items) = p else { panic!() };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].kind(), Kind::Notification);
    }

    #[test]
    fn tool_call_params_are_extracted_and_checked() {
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}"#,
        );
        let call = m.tool_call().unwrap().unwrap();
        assert_eq!(call.name, "t");
        assert_eq!(call.arguments["a"], 1);
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#);
        assert!(m.tool_call().unwrap().unwrap().arguments.is_null());
        let m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#,
        );
        assert!(m.tool_call().unwrap().is_err());
        let m = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#);
        assert!(m.tool_call().unwrap().is_err());
        assert!(single(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .tool_call()
            .is_none());
    }

    #[test]
    fn progress_tokens_can_be_remapped() {
        let mut m = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":"p1"}}}"#,
        );
        assert_eq!(m.progress_token(), Some(&json!("p1")));
        m.set_progress_token(json!(77));
        m.set_id(json!("g-1"));
        let v = m.into_value();
        assert_eq!(v["params"]["_meta"]["progressToken"], 77);
        assert_eq!(v["id"], "g-1");
    }
}
