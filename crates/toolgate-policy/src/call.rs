//! What the engine is asked about: one `tools/call` and who makes it.

use serde_json::{Map, Value};

/// Who is calling, as far as policy predicates (`identity.*` paths) can see.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The grant's label (`alice-laptop`); read by `identity.grant`.
    pub grant: String,
    /// The authenticated subject (JWT `sub`), when there is one; read by `identity.sub`.
    pub sub: Option<String>,
    /// Validated token claims; read by `identity.claims.<name>` and deeper paths.
    pub claims: Map<String, Value>,
}

/// One tool call to decide on.
#[derive(Clone, Copy, Debug)]
pub struct ToolCall<'a> {
    /// The tool's name as the client sent it.
    pub tool: &'a str,
    /// The exact `arguments` object that would be forwarded upstream, or `Null` when the
    /// request had none (then every `args.` path is missing).
    pub arguments: &'a Value,
    /// The caller.
    pub identity: &'a Identity,
}
