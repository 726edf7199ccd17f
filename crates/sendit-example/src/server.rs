//! JSON-RPC 2.0 / MCP request handling: one input line in, at most one output line out.

use serde_json::{json, Map, Value};

use crate::store::Store;
use crate::tools::{self, ToolOutcome};

/// Protocol revisions this server speaks, newest first. The first one is the answer
/// to a client asking for a revision not in this list.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// Default number of tools per `tools/list` page.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// JSON-RPC: the input is not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: invalid method parameters (also: unknown tool, bad cursor).
pub const INVALID_PARAMS: i64 = -32602;

/// Prefix of the opaque `tools/list` cursor.
const CURSOR_PREFIX: &str = "sendit-page-";

/// Server settings, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Tools per `tools/list` page (at least 1).
    pub page_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl Config {
    /// Reads `SENDIT_PAGE_SIZE`; a missing, unparsable or zero value means the default.
    pub fn from_env() -> Self {
        let page_size = match std::env::var("SENDIT_PAGE_SIZE") {
            Ok(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!(
                        "sendit-example: ignoring SENDIT_PAGE_SIZE={raw:?} (want a positive integer); using {DEFAULT_PAGE_SIZE}"
                    );
                    DEFAULT_PAGE_SIZE
                }
            },
            Err(_) => DEFAULT_PAGE_SIZE,
        };
        Config { page_size }
    }
}

/// A JSON-RPC error object, before it is wrapped in a response.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// A short human-readable message.
    pub message: String,
    /// Optional structured details.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and a message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The error as the JSON object that goes under `"error"`.
    fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), json!(self.code));
        obj.insert("message".into(), json!(self.message));
        if let Some(data) = &self.data {
            obj.insert("data".into(), data.clone());
        }
        Value::Object(obj)
    }
}

/// The MCP server: protocol state plus the SendIt in-memory store.
#[derive(Debug)]
pub struct Server {
    /// Settings.
    config: Config,
    /// Contacts, messages, payments and jobs.
    store: Store,
    /// The protocol revision agreed at `initialize`, if it happened.
    protocol_version: Option<String>,
    /// Whether `notifications/initialized` arrived.
    initialized: bool,
    /// One line describing the last message handled, for the stderr log.
    last_summary: Option<String>,
}

impl Server {
    /// A fresh server with seeded demo data.
    pub fn new(config: Config) -> Self {
        Server {
            config,
            store: Store::seeded(),
            protocol_version: None,
            initialized: false,
            last_summary: None,
        }
    }

    /// The protocol revision agreed at `initialize`, if any.
    #[cfg(test)]
    pub fn protocol_version(&self) -> Option<&str> {
        self.protocol_version.as_deref()
    }

    /// Whether the client sent `notifications/initialized`.
    #[cfg(test)]
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// A one-line description of the last message handled (for logging).
    pub fn last_summary(&self) -> Option<&str> {
        self.last_summary.as_deref()
    }

    /// Handles one line of input and returns the line to write back, if any
    /// (notifications and responses get no answer).
    pub fn handle_line(&mut self, line: &str) -> Option<String> {
        self.last_summary = None;
        let value: Value = match serde_json::from_str(line.trim()) {
            Ok(value) => value,
            Err(err) => {
                self.last_summary = Some(format!("parse error: {err}"));
                let error = RpcError::new(PARSE_ERROR, format!("Parse error: {err}"));
                return Some(error_response(Value::Null, &error).to_string());
            }
        };
        self.handle_value(value).map(|reply| reply.to_string())
    }

    /// Handles one parsed JSON value: a message, or (protocol 2025-03-26) a batch.
    pub fn handle_value(&mut self, value: Value) -> Option<Value> {
        match value {
            Value::Array(items) => {
                if items.is_empty() {
                    let error = RpcError::new(INVALID_REQUEST, "Invalid Request: empty batch");
                    return Some(error_response(Value::Null, &error));
                }
                let replies: Vec<Value> = items
                    .into_iter()
                    .filter_map(|item| self.handle_message(item))
                    .collect();
                if replies.is_empty() {
                    None
                } else {
                    Some(Value::Array(replies))
                }
            }
            other => self.handle_message(other),
        }
    }

    /// Handles a single JSON-RPC message.
    fn handle_message(&mut self, value: Value) -> Option<Value> {
        let Value::Object(mut msg) = value else {
            self.last_summary = Some("invalid request (not an object)".into());
            let error = RpcError::new(INVALID_REQUEST, "Invalid Request: expected a JSON object");
            return Some(error_response(Value::Null, &error));
        };
        let id = msg.remove("id");
        let method = msg.remove("method");

        // A response to a request of ours: this server sends none, so there is nothing to match.
        let Some(method) = method else {
            if msg.contains_key("result") || msg.contains_key("error") {
                self.last_summary =
                    Some("ignored a response (this server sends no requests)".into());
                return None;
            }
            self.last_summary = Some("invalid request (no method)".into());
            let error = RpcError::new(INVALID_REQUEST, "Invalid Request: missing \"method\"");
            return Some(error_response(valid_id(id).unwrap_or(Value::Null), &error));
        };

        if msg.get("jsonrpc") != Some(&json!("2.0")) {
            self.last_summary = Some("invalid request (jsonrpc is not \"2.0\")".into());
            let error = RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: \"jsonrpc\" must be \"2.0\"",
            );
            return id.map(|id| error_response(valid_id(Some(id)).unwrap_or(Value::Null), &error));
        }
        let Value::String(method) = method else {
            self.last_summary = Some("invalid request (method is not a string)".into());
            let error = RpcError::new(
                INVALID_REQUEST,
                "Invalid Request: \"method\" must be a string",
            );
            return id.map(|id| error_response(valid_id(Some(id)).unwrap_or(Value::Null), &error));
        };
        let params = msg.remove("params");

        match id {
            None => {
                self.handle_notification(&method, params);
                None
            }
            Some(id) => {
                let Some(id) = valid_id(Some(id)) else {
                    self.last_summary = Some(format!("{method}: invalid id"));
                    let error = RpcError::new(
                        INVALID_REQUEST,
                        "Invalid Request: \"id\" must be a string or an integer",
                    );
                    return Some(error_response(Value::Null, &error));
                };
                let reply = match self.handle_request(&method, params) {
                    Ok(result) => success_response(id, result),
                    Err(error) => {
                        let summary = self.last_summary.take().unwrap_or_else(|| method.clone());
                        self.last_summary = Some(format!("{summary} -> error {}", error.code));
                        error_response(id, &error)
                    }
                };
                Some(reply)
            }
        }
    }

    /// Handles a notification (no reply, whatever happens).
    fn handle_notification(&mut self, method: &str, _params: Option<Value>) {
        match method {
            "notifications/initialized" => {
                self.initialized = true;
                self.last_summary = Some("client initialized".into());
            }
            "notifications/cancelled" => {
                // Every request is answered synchronously, so there is never anything to cancel.
                self.last_summary =
                    Some("cancellation ignored (requests complete immediately)".into());
            }
            other => self.last_summary = Some(format!("notification {other} ignored")),
        }
    }

    /// Handles a request and returns its result or error.
    fn handle_request(&mut self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        self.last_summary = Some(method.to_string());
        let params = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "Invalid params: \"params\" must be an object",
                ))
            }
        };
        match method {
            "initialize" => Ok(self.initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => self.list_tools(&params),
            "tools/call" => self.call_tool(params),
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("Method not found: {other}"),
            )),
        }
    }

    /// `initialize`: agree on a protocol revision and describe the server.
    fn initialize(&mut self, params: &Map<String, Value>) -> Value {
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let version = match requested {
            Some(v) if SUPPORTED_PROTOCOL_VERSIONS.contains(&v) => v,
            _ => SUPPORTED_PROTOCOL_VERSIONS[0],
        };
        let client = params
            .get("clientInfo")
            .and_then(|info| info.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("unknown client");
        self.last_summary = Some(format!(
            "initialize from {client} (asked {}, agreed {version})",
            requested.unwrap_or("nothing")
        ));
        self.protocol_version = Some(version.to_string());
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": {
                "name": "sendit-example",
                "title": "SendIt (example)",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": "SendIt is a demo messaging and payments service with in-memory state. \
                             Contacts, messages, payments and jobs reset when the server restarts."
        })
    }

    /// `tools/list`: one page of the catalogue.
    fn list_tools(&mut self, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let catalogue = tools::catalogue();
        let start = match params.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(cursor)) => decode_cursor(cursor, catalogue.len())
                .ok_or_else(|| RpcError::new(INVALID_PARAMS, "Invalid params: unknown cursor"))?,
            Some(_) => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "Invalid params: \"cursor\" must be a string",
                ))
            }
        };
        let end = start
            .saturating_add(self.config.page_size)
            .min(catalogue.len());
        let page: Vec<Value> = catalogue[start..end].to_vec();
        self.last_summary = Some(format!("tools/list [{start}..{end})"));
        let mut result = Map::new();
        result.insert("tools".into(), Value::Array(page));
        if end < catalogue.len() {
            result.insert("nextCursor".into(), json!(encode_cursor(end)));
        }
        Ok(Value::Object(result))
    }

    /// `tools/call`: run a tool against the store.
    fn call_tool(&mut self, mut params: Map<String, Value>) -> Result<Value, RpcError> {
        let name = match params.remove("name") {
            Some(Value::String(name)) => name,
            Some(_) => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "Invalid params: \"name\" must be a string",
                ))
            }
            None => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "Invalid params: missing tool \"name\"",
                ))
            }
        };
        let arguments = match params.remove("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(RpcError::new(
                    INVALID_PARAMS,
                    "Invalid params: \"arguments\" must be an object",
                ))
            }
        };
        let outcome = tools::call(&mut self.store, &name, &arguments)
            .ok_or_else(|| RpcError::new(INVALID_PARAMS, format!("Unknown tool: {name}")))?;
        let result = match outcome {
            ToolOutcome::Success { text, structured } => {
                self.last_summary = Some(format!("tools/call {name}: ok"));
                let mut result = Map::new();
                result.insert("content".into(), json!([{ "type": "text", "text": text }]));
                if let Some(structured) = structured {
                    result.insert("structuredContent".into(), structured);
                }
                result.insert("isError".into(), json!(false));
                Value::Object(result)
            }
            ToolOutcome::Failure(message) => {
                self.last_summary = Some(format!("tools/call {name}: tool error: {message}"));
                json!({
                    "content": [{ "type": "text", "text": message }],
                    "isError": true
                })
            }
        };
        Ok(result)
    }
}

/// The id of a request if it is a valid JSON-RPC id (string or integer).
fn valid_id(id: Option<Value>) -> Option<Value> {
    match id {
        Some(Value::String(s)) => Some(Value::String(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        _ => None,
    }
}

/// A success response.
fn success_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response.
fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

/// The opaque cursor for the page starting at `offset`.
fn encode_cursor(offset: usize) -> String {
    format!("{CURSOR_PREFIX}{offset:x}")
}

/// The offset encoded in `cursor`, when it is one this server issued for a catalogue of
/// `len` tools.
fn decode_cursor(cursor: &str, len: usize) -> Option<usize> {
    let hex = cursor.strip_prefix(CURSOR_PREFIX)?;
    if hex.is_empty()
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let offset = usize::from_str_radix(hex, 16).ok()?;
    (offset > 0 && offset < len).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one line and parses the reply.
    fn send(server: &mut Server, line: &str) -> Option<Value> {
        server
            .handle_line(line)
            .map(|reply| serde_json::from_str(&reply).expect("reply is JSON"))
    }

    /// Feeds a request built from method and params, and returns the reply.
    fn request(server: &mut Server, id: i64, method: &str, params: Value) -> Value {
        let line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let reply = send(server, &line).expect("a request gets a reply");
        assert_eq!(reply["jsonrpc"], "2.0");
        assert_eq!(reply["id"], id);
        reply
    }

    /// Calls a tool and returns the `result`.
    fn call(server: &mut Server, name: &str, arguments: Value) -> Value {
        let reply = request(
            server,
            7,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        );
        assert!(reply.get("error").is_none(), "unexpected error: {reply}");
        reply["result"].clone()
    }

    /// A server with the default configuration.
    fn server() -> Server {
        Server::new(Config::default())
    }

    #[test]
    fn initialize_echoes_a_supported_version() {
        let mut s = server();
        for version in SUPPORTED_PROTOCOL_VERSIONS {
            let reply = request(
                &mut s,
                1,
                "initialize",
                json!({"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            );
            assert_eq!(reply["result"]["protocolVersion"], version);
        }
        assert_eq!(s.protocol_version(), Some("2025-03-26"));
    }

    #[test]
    fn initialize_answers_latest_for_unknown_versions() {
        let mut s = server();
        let reply = request(
            &mut s,
            1,
            "initialize",
            json!({"protocolVersion": "2024-11-05", "capabilities": {}}),
        );
        let result = &reply["result"];
        assert_eq!(result["protocolVersion"], "2025-11-25");
        assert_eq!(
            result["capabilities"],
            json!({"tools": {"listChanged": false}})
        );
        assert_eq!(result["serverInfo"]["name"], "sendit-example");
        let reply = request(&mut s, 2, "initialize", json!({}));
        assert_eq!(reply["result"]["protocolVersion"], "2025-11-25");
    }

    #[test]
    fn initialized_notification_gets_no_reply() {
        let mut s = server();
        assert!(!s.is_initialized());
        let reply = send(
            &mut s,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        assert!(reply.is_none());
        assert!(s.is_initialized());
        assert!(send(
            &mut s,
            r#"{"jsonrpc":"2.0","method":"notifications/whatever","params":{}}"#
        )
        .is_none());
    }

    #[test]
    fn ping_answers_empty_result() {
        let mut s = server();
        let reply = send(&mut s, r#"{"jsonrpc":"2.0","id":"p-1","method":"ping"}"#).unwrap();
        assert_eq!(reply, json!({"jsonrpc": "2.0", "id": "p-1", "result": {}}));
    }

    #[test]
    fn parse_error_has_null_id() {
        let mut s = server();
        let reply = send(&mut s, "{not json").unwrap();
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(reply["error"]["code"], PARSE_ERROR);
    }

    #[test]
    fn unknown_method_is_32601() {
        let mut s = server();
        let reply = request(&mut s, 3, "resources/list", json!({}));
        assert_eq!(reply["error"]["code"], METHOD_NOT_FOUND);
        assert!(reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resources/list"));
    }

    #[test]
    fn invalid_requests_are_32600() {
        let mut s = server();
        let reply = send(&mut s, r#"{"jsonrpc":"2.0","id":4}"#).unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        assert_eq!(reply["id"], 4);
        let reply = send(&mut s, r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#).unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        let reply = send(&mut s, r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#).unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        assert_eq!(reply["id"], Value::Null);
        let reply = send(&mut s, "42").unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
        let reply = send(&mut s, "[]").unwrap();
        assert_eq!(reply["error"]["code"], INVALID_REQUEST);
    }

    #[test]
    fn responses_from_the_client_are_ignored() {
        let mut s = server();
        assert!(send(&mut s, r#"{"jsonrpc":"2.0","id":9,"result":{}}"#).is_none());
    }

    #[test]
    fn batches_get_an_array_of_replies() {
        let mut s = server();
        let reply = send(
            &mut s,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
        )
        .unwrap();
        let replies = reply.as_array().unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0]["result"], json!({}));
        assert_eq!(replies[1]["error"]["code"], METHOD_NOT_FOUND);
    }

    #[test]
    fn tools_list_single_page_by_default() {
        let mut s = server();
        let reply = request(&mut s, 1, "tools/list", json!({}));
        let tools = reply["result"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), tools::catalogue().len());
        assert!(reply["result"].get("nextCursor").is_none());
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        for expected in [
            "list_contacts",
            "get_message",
            "search_messages",
            "send_message",
            "create_contact",
            "run_report",
            "schedule_job",
            "delete_contact",
            "purge_all_messages",
            "create_payment",
            "refund_payment",
        ] {
            assert!(names.contains(&expected), "missing {expected}");
        }
        for tool in tools {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
            assert!(!tool["description"].as_str().unwrap().is_empty());
            assert!(tool["annotations"].is_object());
        }
    }

    #[test]
    fn tools_list_paginates() {
        let mut s = Server::new(Config { page_size: 4 });
        let mut names = Vec::new();
        let mut cursor: Option<Value> = None;
        let mut pages = 0;
        loop {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let reply = request(&mut s, pages, "tools/list", params);
            let tools = reply["result"]["tools"].as_array().unwrap();
            assert!(tools.len() <= 4);
            names.extend(
                tools
                    .iter()
                    .map(|t| t["name"].as_str().unwrap().to_string()),
            );
            pages += 1;
            match reply["result"].get("nextCursor") {
                Some(next) => {
                    assert!(next.is_string());
                    cursor = Some(next.clone());
                }
                None => break,
            }
        }
        let all: Vec<String> = tools::catalogue()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, all);
        assert_eq!(pages as usize, all.len().div_ceil(4));
    }

    #[test]
    fn tools_list_rejects_bad_cursors() {
        let mut s = Server::new(Config { page_size: 4 });
        for cursor in [
            json!("garbage"),
            json!("sendit-page-0"),
            json!("sendit-page-ff"),
            json!(3),
        ] {
            let reply = request(&mut s, 1, "tools/list", json!({ "cursor": cursor }));
            assert_eq!(reply["error"]["code"], INVALID_PARAMS, "{cursor}");
        }
    }

    #[test]
    fn unknown_tool_is_32602() {
        let mut s = server();
        let reply = request(
            &mut s,
            1,
            "tools/call",
            json!({"name": "nope", "arguments": {}}),
        );
        assert_eq!(reply["error"]["code"], INVALID_PARAMS);
        assert_eq!(reply["error"]["message"], "Unknown tool: nope");
    }

    #[test]
    fn malformed_call_params_are_32602() {
        let mut s = server();
        for params in [
            json!({}),
            json!({"name": 5}),
            json!({"name": "list_contacts", "arguments": [1]}),
        ] {
            let reply = request(&mut s, 1, "tools/call", params.clone());
            assert_eq!(reply["error"]["code"], INVALID_PARAMS, "{params}");
        }
        let reply = request(&mut s, 1, "tools/call", json!("list_contacts"));
        assert_eq!(reply["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn call_without_arguments_member_works() {
        let mut s = server();
        let reply = request(&mut s, 1, "tools/call", json!({"name": "list_contacts"}));
        assert_eq!(reply["result"]["isError"], false);
    }

    #[test]
    fn send_then_search_and_get() {
        let mut s = server();
        let sent = call(
            &mut s,
            "send_message",
            json!({"to": "alice@example.com", "body": "The zebra report is ready"}),
        );
        assert_eq!(sent["isError"], false);
        let id = sent["structuredContent"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(sent["content"][0]["type"], "text");

        let found = call(&mut s, "search_messages", json!({"query": "ZEBRA"}));
        let hits = found["structuredContent"]["messages"].as_array().unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0]["id"], id.as_str());

        let got = call(&mut s, "get_message", json!({"id": id}));
        assert_eq!(
            got["structuredContent"]["body"],
            "The zebra report is ready"
        );
        // The text block carries the same JSON as structuredContent.
        let text: Value =
            serde_json::from_str(got["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, got["structuredContent"]);
    }

    #[test]
    fn tool_failures_are_is_error_results() {
        let mut s = server();
        let missing = call(&mut s, "get_message", json!({"id": "msg_999"}));
        assert_eq!(missing["isError"], true);
        assert!(missing.get("structuredContent").is_none());
        let bad = call(&mut s, "send_message", json!({"to": "alice@example.com"}));
        assert_eq!(bad["isError"], true);
        assert!(bad["content"][0]["text"].as_str().unwrap().contains("body"));
        let extra = call(&mut s, "list_contacts", json!({"surprise": true}));
        assert_eq!(extra["isError"], true);
    }

    #[test]
    fn payments_and_refunds() {
        let mut s = server();
        let paid = call(
            &mut s,
            "create_payment",
            json!({"amount": 120.5, "currency": "EUR", "recipient": "bob@example.com", "reason": "team lunch"}),
        );
        assert_eq!(paid["isError"], false, "{paid}");
        let pid = paid["structuredContent"]["payment_id"]
            .as_str()
            .unwrap()
            .to_string();
        let refund = call(
            &mut s,
            "refund_payment",
            json!({"payment_id": pid, "amount": 20.5}),
        );
        assert_eq!(refund["structuredContent"]["refunded_total"], 20.5);
        let too_much = call(
            &mut s,
            "refund_payment",
            json!({"payment_id": pid, "amount": 500}),
        );
        assert_eq!(too_much["isError"], true);
        let rest = call(&mut s, "refund_payment", json!({"payment_id": pid}));
        assert_eq!(rest["structuredContent"]["refunded_total"], 120.5);
        assert_eq!(rest["structuredContent"]["status"], "refunded");
    }

    #[test]
    fn destructive_tools_change_state() {
        let mut s = server();
        let before = call(&mut s, "list_contacts", json!({}));
        let n = before["structuredContent"]["contacts"]
            .as_array()
            .unwrap()
            .len();
        let first = before["structuredContent"]["contacts"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let deleted = call(&mut s, "delete_contact", json!({"id": first}));
        assert_eq!(deleted["isError"], false);
        let after = call(&mut s, "list_contacts", json!({}));
        assert_eq!(
            after["structuredContent"]["contacts"]
                .as_array()
                .unwrap()
                .len(),
            n - 1
        );
        let again = call(&mut s, "delete_contact", json!({"id": first}));
        assert_eq!(again["isError"], true);

        let purged = call(&mut s, "purge_all_messages", json!({}));
        assert!(purged["structuredContent"]["purged"].as_u64().unwrap() > 0);
        let empty = call(&mut s, "search_messages", json!({"query": ""}));
        assert_eq!(empty["structuredContent"]["messages"], json!([]));
    }

    #[test]
    fn cursor_round_trip() {
        assert_eq!(decode_cursor(&encode_cursor(17), 40), Some(17));
        assert_eq!(decode_cursor(&encode_cursor(40), 40), None);
        assert_eq!(decode_cursor("sendit-page-A", 40), None);
        assert_eq!(decode_cursor("sendit-page-", 40), None);
    }
}
