//! Approvals asked in-band in protocol 2026-07-28 (SPEC §6): the held call is answered with
//! an `input_required` result whose `inputRequests` put it to the human
//! (`elicitation/create`, tool and arguments in plain view) and whose `requestState` the
//! client hands back, unread, when it retries the call with the human's answer.
//!
//! That state is the only thing that ties the retry to the question, so it is bound and
//! signed: `tg1.<payload>.<tag>`, the payload naming the approval request, the caller
//! (grant principal), the server, the tool, the SHA-256 of the canonical arguments and an
//! expiry; the tag an HMAC-SHA256 of the payload under a key every replica shares (kept in
//! the shared store, [`toolgate_store::EmbeddedStore::secret`]). A state that was altered,
//! has expired, or is presented for another caller, tool or arguments is refused; and since
//! its approval request can be decided once, a state presented again after its call ran
//! (or was declined) is refused as used.

use crate::signed::Signer;
use serde::{Deserialize, Serialize};

/// What every state of this format starts with (a state without it is not ours, and goes to
/// the upstream untouched: it may be the upstream's own).
pub(crate) const PREFIX: &str = "tg1.";

/// The key of `inputRequests` (and `inputResponses`) that carries the approval question.
pub(crate) const QUESTION: &str = "toolgate-approval";

/// What a state binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bound {
    /// The approval request asked about.
    #[serde(rename = "a")]
    pub(crate) approval_id: String,
    /// The caller (grant principal) it was asked for.
    #[serde(rename = "g")]
    pub(crate) principal: String,
    /// The server.
    #[serde(rename = "s")]
    pub(crate) server: String,
    /// The tool.
    #[serde(rename = "t")]
    pub(crate) tool: String,
    /// The SHA-256 of the canonical arguments.
    #[serde(rename = "d")]
    pub(crate) args_sha256: String,
    /// Unix milliseconds after which it is refused.
    #[serde(rename = "e")]
    pub(crate) expires_ms: i64,
}

impl Bound {
    /// What a state about approval `approval_id` of call `message` binds, for `principal`
    /// on `server`, until `expires_ms` (`None` for a message that is not a `tools/call`).
    pub(crate) fn of_call(
        approval_id: &str,
        principal: &str,
        server: &str,
        message: &toolgate_mcp::Message,
        expires_ms: i64,
    ) -> Option<Bound> {
        let call = message.tool_call()?.ok()?;
        Some(Bound {
            approval_id: approval_id.to_owned(),
            principal: principal.to_owned(),
            server: server.to_owned(),
            tool: call.name.to_owned(),
            args_sha256: crate::approvals::args_sha256(call.arguments),
            expires_ms,
        })
    }
}

/// Why a state was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not of the format, or its signature does not hold.
    Forged,
    /// Past its expiry.
    Expired,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Forged => "requestState was not issued by this gateway, or was altered",
            Refused::Expired => "requestState has expired: call again to be asked anew",
        })
    }
}

/// Signs and checks states.
#[derive(Debug)]
pub(crate) struct StateKey(Signer);

impl StateKey {
    /// The key made from `secret` (32 random bytes shared by every replica).
    pub(crate) fn new(secret: &[u8; 32]) -> StateKey {
        StateKey(Signer::new(secret))
    }

    /// The state binding `bound`.
    pub(crate) fn seal(&self, bound: &Bound) -> String {
        self.0
            .sign(PREFIX, &serde_json::to_vec(bound).unwrap_or_default())
    }

    /// What `state` binds, if this gateway issued it unaltered and it has not expired at
    /// `now_ms`.
    pub(crate) fn open(&self, state: &str, now_ms: i64) -> Result<Bound, Refused> {
        let bound: Bound = self
            .0
            .open(PREFIX, state)
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(Refused::Forged)?;
        if now_ms > bound.expires_ms {
            return Err(Refused::Expired);
        }
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> Bound {
        Bound {
            approval_id: "apr-1".into(),
            principal: "alice".into(),
            server: "pay".into(),
            tool: "refund".into(),
            args_sha256: "ab".repeat(32),
            expires_ms: 2_000,
        }
    }

    #[test]
    fn a_sealed_state_opens_unaltered_and_in_time_only() {
        let key = StateKey::new(&[7; 32]);
        let state = key.seal(&bound());
        assert!(state.starts_with(PREFIX));
        assert_eq!(key.open(&state, 1_000), Ok(bound()));
        assert_eq!(key.open(&state, 2_001), Err(Refused::Expired));
        // Another replica's key (not shared) does not accept it.
        assert_eq!(
            StateKey::new(&[8; 32]).open(&state, 1_000),
            Err(Refused::Forged)
        );
        // Any altered character is caught: the payload (another tool), or the tag.
        let mut other = bound();
        other.tool = "delete".into();
        let other_state = key.seal(&other);
        let (signed, tag) = state.rsplit_once('.').unwrap();
        let (other_signed, _) = other_state.rsplit_once('.').unwrap();
        assert_eq!(
            key.open(&format!("{other_signed}.{tag}"), 1_000),
            Err(Refused::Forged)
        );
        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            key.open(&format!("{signed}.{flipped}"), 1_000),
            Err(Refused::Forged)
        );
        for junk in ["", "tg1.", "tg1..", "tg2.x.y", "tg1.bm90IGpzb24.AAAA"] {
            assert_eq!(key.open(junk, 1_000), Err(Refused::Forged), "{junk:?}");
        }
    }
}
