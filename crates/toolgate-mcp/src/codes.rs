//! JSON-RPC and MCP error codes the gateway emits.

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON is not a valid JSON-RPC request object (or a batch where batches are forbidden).
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters; MCP also uses it for "Unknown tool".
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error; the gateway uses it for upstream failures, naming the server.
pub const INTERNAL_ERROR: i64 = -32603;
/// The request was cancelled by the client (LSP's code, used by MCP SDKs). Only sent where
/// a body is unavoidable: a JSON (non-streamed) response to a cancelled request.
pub const REQUEST_CANCELLED: i64 = -32800;
/// 2026-07-28: an `Mcp-Method`/`Mcp-Name` header does not match the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported (`data.supported` lists ours).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
