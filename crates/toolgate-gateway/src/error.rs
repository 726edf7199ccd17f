//! The gateway's one error type, classified once where a request is answered.
//!
//! Every failure records who is at fault and whether retrying can help, because both the
//! client's answer and (later) the audit record and metrics are derived from it.

use crate::body::{self, Body};
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use std::fmt;
use toolgate_mcp::{codes, jsonrpc};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something unacceptable (bad JSON, bad token, wrong server…).
    Client,
    /// The upstream MCP server failed, timed out or answered garbage.
    Upstream,
    /// The gateway itself failed (a bug or exhausted resource).
    Gateway,
}

/// How the failure is shown to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP status with a JSON-RPC error body.
    Http {
        /// The HTTP status.
        status: StatusCode,
        /// The JSON-RPC error code in the body.
        code: i64,
        /// Extra `data` for the JSON-RPC error.
        data: Option<Value>,
    },
    /// HTTP 401 with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// HTTP 200 carrying a JSON-RPC error (the request was well-formed, the call failed).
    JsonRpc {
        /// The JSON-RPC error code.
        code: i64,
    },
}

/// A failure on the way through the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    /// Who is at fault.
    pub fault: Fault,
    /// Whether the same request may succeed if retried later.
    pub retryable: bool,
    /// How the client sees it.
    pub answer: Answer,
    /// What went wrong, in a sentence that names the thing at fault.
    pub message: String,
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GatewayError {}

impl GatewayError {
    /// A client error answered with `status` and a JSON-RPC error body.
    pub fn client(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        GatewayError {
            fault: Fault::Client,
            retryable: false,
            answer: Answer::Http {
                status,
                code,
                data: None,
            },
            message: message.into(),
        }
    }

    /// A missing, unknown, expired or revoked credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        GatewayError {
            fault: Fault::Client,
            retryable: false,
            answer: Answer::Unauthorized,
            message: message.into(),
        }
    }

    /// An upstream failure (unreachable, timed out, exited, garbage); names the server.
    pub fn upstream(server: &str, what: impl fmt::Display) -> Self {
        GatewayError {
            fault: Fault::Upstream,
            retryable: true,
            answer: Answer::JsonRpc {
                code: codes::INTERNAL_ERROR,
            },
            message: format!("upstream server \"{server}\" {what}"),
        }
    }

    /// A failure of the gateway itself.
    pub fn internal(message: impl Into<String>) -> Self {
        GatewayError {
            fault: Fault::Gateway,
            retryable: true,
            answer: Answer::JsonRpc {
                code: codes::INTERNAL_ERROR,
            },
            message: message.into(),
        }
    }

    /// Attaches JSON-RPC `data` to an HTTP-status answer.
    pub fn with_data(mut self, value: Value) -> Self {
        if let Answer::Http { data, .. } = &mut self.answer {
            *data = Some(value);
        }
        self
    }

    /// The JSON-RPC error object for request `id`.
    pub fn to_jsonrpc(&self, id: Value) -> Value {
        let (code, data) = match &self.answer {
            Answer::Http { code, data, .. } => (*code, data.clone()),
            Answer::Unauthorized => (codes::INVALID_REQUEST, None),
            Answer::JsonRpc { code } => (*code, None),
        };
        jsonrpc::error_response(id, code, &self.message, data)
    }

    /// The complete HTTP response for request `id` (Null when unknown).
    pub fn into_response(self, id: Value) -> Response<Body> {
        match &self.answer {
            Answer::Unauthorized => {
                let mut r = body::json(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "unauthorized", "error_description": self.message}),
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Answer::Http { status, .. } => body::json(*status, &self.to_jsonrpc(id)),
            Answer::JsonRpc { .. } => body::json(StatusCode::OK, &self.to_jsonrpc(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_name_the_server_and_are_retryable() {
        let e = GatewayError::upstream("sendit", "is unreachable: connection refused");
        assert_eq!(e.fault, Fault::Upstream);
        assert!(e.retryable);
        let v = e.to_jsonrpc(json!(4));
        assert_eq!(v["error"]["code"], codes::INTERNAL_ERROR);
        assert_eq!(
            v["error"]["message"],
            "upstream server \"sendit\" is unreachable: connection refused"
        );
        assert_eq!(v["id"], 4);
    }

    #[test]
    fn unauthorized_answers_401_with_bearer_challenge() {
        let r = GatewayError::unauthorized("missing bearer token").into_response(Value::Null);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
