//! HTTP header names of MCP's Streamable HTTP transport (lower-case, as `http` stores them).

/// The session id minted at `initialize`.
pub const MCP_SESSION_ID: &str = "mcp-session-id";
/// The negotiated protocol revision, sent by clients after initialization.
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// SSE resumption: the last event id the client saw.
pub const LAST_EVENT_ID: &str = "last-event-id";
/// 2026-07-28: the JSON-RPC method, mirrored in a header.
pub const MCP_METHOD: &str = "mcp-method";
/// 2026-07-28: the tool/resource/prompt name, mirrored in a header.
pub const MCP_NAME: &str = "mcp-name";
/// 2026-07-28: prefix of headers that mirror selected parameters.
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";
