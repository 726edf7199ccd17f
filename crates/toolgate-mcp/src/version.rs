//! Protocol revisions the gateway serves.

/// The newest session-based revision; what the gateway asks for when it is itself a client.
pub const LATEST: &str = "2025-11-25";

/// Session-based revisions the gateway speaks, newest first.
pub const SUPPORTED: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// The stateless revision (no `initialize`, no sessions), not served yet.
pub const STATELESS: &str = "2026-07-28";

/// The revision assumed when a client sends no `MCP-Protocol-Version` header
/// (the 2025-06-18 transport spec says to assume 2025-03-26).
pub const ASSUMED_WITHOUT_HEADER: &str = "2025-03-26";

/// Whether `version` is a revision the gateway serves.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// JSON-RPC batches were allowed only in 2025-03-26; later revisions forbid them.
pub fn allows_batch(version: &str) -> bool {
    version == "2025-03-26"
}

/// The revision to answer an `initialize` with: the client's if we serve it, else our latest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED.iter().find(|v| **v == r).copied())
        .unwrap_or(LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_clients_supported_revision() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2024-11-05")), LATEST);
        assert_eq!(negotiate(None), LATEST);
        assert!(allows_batch("2025-03-26"));
        assert!(!allows_batch("2025-06-18"));
    }
}
