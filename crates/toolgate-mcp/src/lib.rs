//! The MCP wire protocol as toolgate needs it, and nothing more.
//!
//! The gateway must decide on exactly the bytes it forwards, so parsing here is strict:
//! duplicate object keys are rejected (a server and the gateway could otherwise read
//! different values), envelopes are classified once, and the framing layers (SSE,
//! newline-delimited stdio) are incremental and bounded so a hostile peer cannot make the
//! gateway buffer without limit. No policy and no storage live here.
#![forbid(unsafe_code)]

pub mod answer;
pub mod codes;
pub mod headers;
pub mod json;
pub mod jsonrpc;
pub mod sse;
pub mod stdio;
pub mod version;

pub use jsonrpc::{Kind, Message, Payload};
