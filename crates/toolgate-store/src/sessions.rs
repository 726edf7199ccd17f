//! Client sessions outlive a gateway restart: an agent mid-conversation keeps its
//! `Mcp-Session-Id` across a deploy instead of being forced to start over.

use crate::StoreError;
use serde_json::Value;

/// What the gateway must remember about a session to resume it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The gateway-minted session id.
    pub id: String,
    /// The grant that owns it.
    pub grant: String,
    /// The server it belongs to.
    pub server: String,
    /// The negotiated protocol revision.
    pub protocol_version: String,
    /// The upstream's own session id (HTTP upstreams).
    pub upstream_session: Option<String>,
    /// The capabilities the client declared.
    pub client_capabilities: Value,
}

/// Persistence of sessions.
pub trait SessionStore: Send + Sync {
    /// Records a new session.
    fn save_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Forgets a session (closed by the client, expired, or dead upstream).
    fn delete_session(&self, id: &str) -> Result<(), StoreError>;
    /// Every remembered session, for restoring at start-up.
    fn load_sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
}
