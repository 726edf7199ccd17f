//! The stateless revision 2026-07-28 at the front door (SPEC §5): which requests belong to
//! it, and the checks each must pass before its policy is decided.
//!
//! A 2026-07-28 request stands alone: no `initialize`, no session; its protocol version and
//! the client's capabilities ride in `params._meta`, and its POST repeats the version, the
//! method and (for `tools/call`, `prompts/get`, `resources/read`) the name in the
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, so that intermediaries can
//! route without reading the body. An intermediary that *does* read the body — toolgate
//! decides policy on the body only — must make sure the two agree, or a request could be
//! routed as one thing and run as another: a mismatch is refused with 400 and `-32020`.
//! The checks run in the order the MCP reference SDKs run them: envelope present
//! (`-32602`), headers agree with the body (`-32020`), version served (`-32022`, with the
//! revisions that are).

use crate::error::GatewayError;
use crate::proxy::header_str as header;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use toolgate_mcp::{codes, headers as mcp_headers, Message};

/// The stateless revisions the gateway serves.
pub(crate) const SERVED: &[&str] = &["2026-07-28"];

/// `params._meta` key of the request's protocol version.
const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
/// `params._meta` key of the client's capabilities.
const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";

/// What a stateless request says of itself, once checked.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// Its protocol revision.
    pub(crate) version: String,
    /// The client's capabilities, as it declared them for this request.
    pub(crate) capabilities: Value,
}

/// Whether `version` is a stateless revision (served or not: the header alone says the
/// client speaks that era).
pub(crate) fn is_stateless_version(version: &str) -> bool {
    version.as_bytes() >= b"2026-07-28".as_slice()
}

/// Whether a request belongs to the stateless era: `server/discover`, a protocol version
/// in its `_meta`, or a stateless revision in its `MCP-Protocol-Version` header.
pub(crate) fn is_stateless(headers: &HeaderMap, message: &Message) -> bool {
    message.method() == Some("server/discover")
        || message
            .params()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(PROTOCOL_VERSION_KEY))
            .is_some()
        || header(headers, mcp_headers::MCP_PROTOCOL_VERSION).is_some_and(is_stateless_version)
}

fn refused(code: i64, message: impl Into<String>) -> GatewayError {
    GatewayError::client(StatusCode::BAD_REQUEST, code, message)
}

/// The params key whose value `Mcp-Name` repeats, for the methods that have one.
fn named_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Checks a stateless request's envelope and headers against its body.
pub(crate) fn check(headers: &HeaderMap, message: &Message) -> Result<Envelope, GatewayError> {
    let meta = message
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let Some(meta) = meta else {
        return Err(refused(
            codes::INVALID_PARAMS,
            format!("params._meta must be an object carrying {PROTOCOL_VERSION_KEY:?} and {CLIENT_CAPABILITIES_KEY:?} (protocol 2026-07-28)"),
        ));
    };
    let missing: Vec<&str> = [PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(refused(
            codes::INVALID_PARAMS,
            format!("params._meta lacks {}", missing.join(" and ")),
        ));
    }
    for routing in [
        mcp_headers::MCP_PROTOCOL_VERSION,
        mcp_headers::MCP_METHOD,
        mcp_headers::MCP_NAME,
    ] {
        if headers.get_all(routing).iter().count() > 1 {
            return Err(refused(
                codes::HEADER_MISMATCH,
                format!("the {routing} header is given more than once"),
            ));
        }
    }
    let version = &meta[PROTOCOL_VERSION_KEY];
    if header(headers, mcp_headers::MCP_PROTOCOL_VERSION) != version.as_str() {
        return Err(refused(
            codes::HEADER_MISMATCH,
            "the MCP-Protocol-Version header does not match params._meta's protocol version",
        ));
    }
    let method = message.method().unwrap_or_default();
    if header(headers, mcp_headers::MCP_METHOD) != Some(method) {
        return Err(refused(
            codes::HEADER_MISMATCH,
            format!("the Mcp-Method header does not match the body's method {method:?}"),
        ));
    }
    if let Some(key) = named_param(method) {
        let body = message.params().and_then(|p| p.get(key));
        if let Some(body) = body.filter(|v| !v.is_null()) {
            let named = headers
                .get(mcp_headers::MCP_NAME)
                .and_then(|v| toolgate_mcp::headers::decode_value(v.as_bytes()).ok());
            if named.as_deref() != body.as_str() {
                return Err(refused(
                    codes::HEADER_MISMATCH,
                    format!("the Mcp-Name header does not match the body's {key} {body}"),
                ));
            }
        }
    }
    let Some(version) = version.as_str() else {
        return Err(refused(
            codes::INVALID_PARAMS,
            "params._meta's protocol version must be a string",
        ));
    };
    if !SERVED.contains(&version) {
        return Err(unsupported(version, SERVED));
    }
    Ok(Envelope {
        version: version.to_owned(),
        capabilities: meta[CLIENT_CAPABILITIES_KEY].clone(),
    })
}

/// The `-32022` refusal of `requested`, naming the revisions that are `supported`.
pub(crate) fn unsupported(requested: &str, supported: &[&str]) -> GatewayError {
    refused(
        codes::UNSUPPORTED_PROTOCOL_VERSION,
        format!("protocol version {requested:?} is not supported here"),
    )
    .with_data(json!({"supported": supported, "requested": requested}))
}

/// A gateway-made result as the stateless era writes it: with `resultType`.
pub(crate) fn completed(mut answer: Value) -> Value {
    if let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) {
        result
            .entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn call(meta: Value) -> Message {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "send email", "arguments": {}, "_meta": meta}});
        toolgate_mcp::jsonrpc::parse_payload(body.to_string().as_bytes())
            .ok()
            .and_then(|p| match p {
                toolgate_mcp::jsonrpc::Payload::Single(m) => Some(m),
                _ => None,
            })
            .unwrap()
    }

    fn envelope() -> Value {
        json!({PROTOCOL_VERSION_KEY: "2026-07-28", CLIENT_CAPABILITIES_KEY: {"elicitation": {}}})
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn code(result: Result<Envelope, GatewayError>) -> i64 {
        match result.unwrap_err().answer {
            crate::error::Answer::Http { status, code, .. } => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                code
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_ladder_refuses_in_order() {
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?c2VuZCBlbWFpbA==?="),
        ];
        let ok = check(&headers(&good), &call(envelope())).unwrap();
        assert_eq!(ok.version, "2026-07-28");
        assert_eq!(ok.capabilities, json!({"elicitation": {}}));
        assert!(is_stateless(&HeaderMap::new(), &call(envelope())));

        assert_eq!(
            code(check(&headers(&good), &call(json!({})))),
            codes::INVALID_PARAMS
        );
        let other_name = [good[0], good[1], ("mcp-name", "delete_everything")];
        assert_eq!(
            code(check(&headers(&other_name), &call(envelope()))),
            codes::HEADER_MISMATCH
        );
        let other_method = [good[0], ("mcp-method", "tools/list"), good[2]];
        assert_eq!(
            code(check(&headers(&other_method), &call(envelope()))),
            codes::HEADER_MISMATCH
        );
        let twice = [good[0], good[1], good[2], ("mcp-name", "send email")];
        assert_eq!(
            code(check(&headers(&twice), &call(envelope()))),
            codes::HEADER_MISMATCH
        );
        assert_eq!(
            code(check(&headers(&good[1..]), &call(envelope()))),
            codes::HEADER_MISMATCH
        );
        let future = json!({PROTOCOL_VERSION_KEY: "2027-01-01", CLIENT_CAPABILITIES_KEY: {}});
        let future_headers = [("mcp-protocol-version", "2027-01-01"), good[1], good[2]];
        let refusal = check(&headers(&future_headers), &call(future)).unwrap_err();
        let crate::error::Answer::Http { code, data, .. } = refusal.answer else {
            panic!("{refusal:?}");
        };
        assert_eq!(code, codes::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(
            data,
            Some(json!({"supported": ["2026-07-28"], "requested": "2027-01-01"}))
        );
    }

    #[test]
    fn gateway_results_say_they_are_complete() {
        let denial = json!({"jsonrpc": "2.0", "id": 1, "result": {"isError": true, "content": []}});
        assert_eq!(completed(denial)["result"]["resultType"], "complete");
        let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "x"}});
        assert_eq!(completed(error.clone()), error);
    }
}
