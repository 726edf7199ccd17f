//! Human approvals (SPEC §6), as the store keeps them.
//!
//! A call the policy holds for approval becomes a *request*, bound to its grant and caller,
//! server, tool, the SHA-256 of its canonical arguments and the policy version: only that
//! exact call can use the approval. The store answers the one question the gateway asks
//! when such a call arrives — may it run now? — in one transaction ([`Matched`]): an
//! approval waiting for it is consumed; a request still pending is reused (a retry does
//! not pile up requests); a refusal is reported once; otherwise a new request is opened.
//! Consumption is given back if the call then never ran.

use serde::{Deserialize, Serialize};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a human.
    Pending,
    /// A human said yes: the identical call may run (once, or for a while).
    Approved,
    /// A human said no.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// Approved once, and the call ran.
    Consumed,
}

impl ApprovalStatus {
    /// The spelling in the store, the CLI and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Consumed => "consumed",
        }
    }
}

/// The call an approval is for: what binds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalKey {
    /// The grant the call came with.
    pub grant: String,
    /// The caller within the grant (an OAuth subject), if any: two people sharing a grant do
    /// not share approvals.
    #[serde(default)]
    pub identity: Option<String>,
    /// The server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// Hex SHA-256 of the canonical arguments.
    pub args_sha256: String,
    /// The version of the policy that held it (a changed policy needs a new approval).
    pub policy_version: String,
}

/// One approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// `apr_` and 96 random bits, hex.
    pub id: String,
    /// What it is bound to.
    #[serde(flatten)]
    pub key: ApprovalKey,
    /// The call's arguments (JSON text), for the approver's eyes.
    pub arguments: String,
    /// The rule that held it, and its message.
    pub rule: String,
    /// What the policy says about it.
    pub message: String,
    /// Where it is.
    pub status: ApprovalStatus,
    /// When it was opened (Unix ms).
    pub created_ms: i64,
    /// Until when it may be decided; once approved, until when it may be used (Unix ms).
    pub expires_ms: i64,
    /// How long an approval stays usable (the policy's `approval.timeout`, ms).
    pub timeout_ms: u64,
    /// `None`: one approval admits one call; `Some(ms)`: identical calls for `ms` after it.
    #[serde(default)]
    pub reuse_ms: Option<u64>,
    /// Who decided, when (Unix ms) and why.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// When it was decided (Unix ms).
    #[serde(default)]
    pub decided_ms: Option<i64>,
    /// The approver's reason, if they gave one.
    #[serde(default)]
    pub reason: Option<String>,
    /// How many calls it admitted.
    #[serde(default)]
    pub uses: u32,
    /// A refusal is told to the agent once; a later identical call opens a new request.
    #[serde(default)]
    pub reported: bool,
}

/// What the store answered about a held call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// An approval admitted it (and was consumed, or counted): run it.
    Admitted(ApprovalRequest),
    /// A request for it is still waiting.
    Pending(ApprovalRequest),
    /// A new request was opened for it.
    Opened(ApprovalRequest),
    /// A human refused it (told once).
    Refused(ApprovalRequest),
}

/// Why a decision was not taken (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionRefused {
    /// No request has that id.
    Unknown(String),
    /// It was not decided in time.
    Expired(String),
    /// It was decided already.
    AlreadyDecided {
        /// The request.
        id: String,
        /// What it is now.
        status: ApprovalStatus,
        /// Who decided it.
        by: Option<String>,
    },
}

impl std::fmt::Display for DecisionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecisionRefused::Unknown(id) => write!(f, "no approval request has the id {id:?}"),
            DecisionRefused::Expired(id) => {
                write!(f, "approval request {id} expired before anyone decided it")
            }
            DecisionRefused::AlreadyDecided { id, status, by } => write!(
                f,
                "approval request {id} is already {}{}",
                status.as_str(),
                by.as_ref()
                    .map(|b| format!(" (by {b})"))
                    .unwrap_or_default()
            ),
        }
    }
}

impl ApprovalRequest {
    /// Its status at `now_ms`: a pending request past its deadline is expired, and so is an
    /// approval no longer usable.
    pub fn status_at(&self, now_ms: i64) -> ApprovalStatus {
        match self.status {
            ApprovalStatus::Pending | ApprovalStatus::Approved if now_ms >= self.expires_ms => {
                ApprovalStatus::Expired
            }
            status => status,
        }
    }

    /// Whether it admits its call at `now_ms`.
    pub fn admits(&self, now_ms: i64) -> bool {
        self.status_at(now_ms) == ApprovalStatus::Approved
    }

    /// After it admitted a call at `now_ms`: consumed (once), or counted (for a while).
    pub(crate) fn use_once(&mut self) {
        self.uses += 1;
        if self.reuse_ms.is_none() {
            self.status = ApprovalStatus::Consumed;
        }
    }

    /// `self` decided by `actor` at `now_ms`, or why not.
    pub(crate) fn decided(
        &self,
        approve: bool,
        actor: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<ApprovalRequest, DecisionRefused> {
        match (self.status, self.status_at(now_ms)) {
            (ApprovalStatus::Pending, ApprovalStatus::Pending) => {}
            (ApprovalStatus::Pending | ApprovalStatus::Expired, ApprovalStatus::Expired) => {
                return Err(DecisionRefused::Expired(self.id.clone()))
            }
            (status, _) => {
                return Err(DecisionRefused::AlreadyDecided {
                    id: self.id.clone(),
                    status,
                    by: self.decided_by.clone(),
                })
            }
        }
        let mut after = self.clone();
        after.status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        after.decided_by = Some(actor.to_owned());
        after.decided_ms = Some(now_ms);
        after.reason = reason.map(str::to_owned);
        if approve {
            // Usable from now: for the reuse window, or (once) for as long as a human had.
            after.expires_ms =
                now_ms.saturating_add(self.reuse_ms.unwrap_or(self.timeout_ms) as i64);
        }
        Ok(after)
    }
}

/// What matching a held call against its key's requests (newest first) decided, and the
/// audit actions of what changed: each request that changed, with the action to record.
pub(crate) struct Settled {
    /// The answer; for [`Matched::Opened`], the caller's new request.
    pub(crate) matched: Option<Matched>,
    /// Requests that changed (to be written), with the action to record for each.
    pub(crate) changed: Vec<(ApprovalRequest, &'static str)>,
}

impl Settled {
    /// The answer, opening the request `open` makes when nothing else answered; with every
    /// request to write and the action to record for it.
    pub(crate) fn or_open(
        self,
        open: &dyn Fn() -> ApprovalRequest,
    ) -> (Matched, Vec<(ApprovalRequest, &'static str)>) {
        let mut changed = self.changed;
        let matched = self.matched.unwrap_or_else(|| {
            let request = open();
            changed.push((request.clone(), "approval_requested"));
            Matched::Opened(request)
        });
        (matched, changed)
    }
}

/// Matches a held call against `requests` (its key's, newest first) at `now_ms`: expires
/// what is overdue, then admits with a usable approval, else reuses a pending request, else
/// reports a refusal not yet reported; `None` in `matched`: open a new request.
pub(crate) fn settle(mut requests: Vec<ApprovalRequest>, now_ms: i64) -> Settled {
    let mut changed = Vec::new();
    for request in &mut requests {
        if request.status == ApprovalStatus::Pending
            && request.status_at(now_ms) == ApprovalStatus::Expired
        {
            request.status = ApprovalStatus::Expired;
            changed.push((request.clone(), "approval_expired"));
        }
    }
    let matched = if let Some(request) = requests.iter_mut().find(|r| r.admits(now_ms)) {
        request.use_once();
        changed.push((request.clone(), "approval_used"));
        Some(Matched::Admitted(request.clone()))
    } else if let Some(request) = requests
        .iter()
        .find(|r| r.status == ApprovalStatus::Pending)
    {
        Some(Matched::Pending(request.clone()))
    } else if let Some(request) = requests
        .iter_mut()
        .take(1)
        .find(|r| r.status == ApprovalStatus::Denied && !r.reported)
    {
        request.reported = true;
        changed.push((request.clone(), "approval_refusal_told"));
        Some(Matched::Refused(request.clone()))
    } else {
        None
    };
    Settled { matched, changed }
}

/// What a change to one request (found by id) makes of it: the request as it becomes and
/// the audit action that records it, or why the change is refused (nothing written).
pub(crate) type Change = Result<(ApprovalRequest, &'static str), DecisionRefused>;

/// `request` given back after the call it admitted never ran: usable again.
pub(crate) fn restored(mut request: ApprovalRequest) -> Change {
    request.uses = request.uses.saturating_sub(1);
    if request.status == ApprovalStatus::Consumed {
        request.status = ApprovalStatus::Approved;
    }
    Ok((request, "approval_restored"))
}

/// `request` approved (or denied) by `actor` at `now_ms`, with its audit action.
pub(crate) fn decision(
    request: &ApprovalRequest,
    approve: bool,
    actor: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Change {
    let action = if approve {
        "approval_approved"
    } else {
        "approval_denied"
    };
    request
        .decided(approve, actor, reason, now_ms)
        .map(|decided| (decided, action))
}

/// The digest a request's key is looked up by.
pub(crate) fn key_digest(key: &ApprovalKey) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(key).expect("a key serializes");
    crate::audit::hex(&Sha256::digest(text.as_bytes()))
}
