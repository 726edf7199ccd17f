//! Pinned tool definitions (the rug-pull defence, SPEC §10), as the store keeps them.
//!
//! For each server and tool the store holds the definition an approver accepted — at first
//! sight, or explicitly with `toolgate tools approve` — as canonical JSON with its SHA-256.
//! When the server later serves a different definition under the same name, the store keeps
//! that one beside the pin (`served`) until an operator approves it or the server goes back
//! to the approved one. What to hash and how to compare is the gateway's business; the store
//! only keeps the texts and their hashes.

use serde::{Deserialize, Serialize};

/// Who approved a definition that was pinned automatically, the first time a server was seen
/// to serve it.
pub const FIRST_SIGHT: &str = "first-sight";

/// One tool's pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    /// The server that serves the tool.
    pub server: String,
    /// The tool's name.
    pub tool: String,
    /// Hex SHA-256 of the approved definition's canonical JSON.
    pub sha256: String,
    /// The approved definition (canonical JSON).
    pub definition: String,
    /// When it was approved (RFC 3339).
    pub approved_at: String,
    /// Who approved it: [`FIRST_SIGHT`], or the operator who ran the approval.
    pub approved_by: String,
    /// A definition the server served since that differs from the approved one: the tool is
    /// withheld while this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<ServedDefinition>,
}

impl ToolPin {
    /// Whether an operator (rather than first sight) approved the pinned definition.
    pub fn approved_by_operator(&self) -> bool {
        self.is_approved() && self.approved_by != FIRST_SIGHT
    }

    /// Whether any definition was ever approved (a new tool may wait for its first).
    pub fn is_approved(&self) -> bool {
        !self.sha256.is_empty()
    }
}

/// A definition as a server served it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedDefinition {
    /// Hex SHA-256 of `definition`.
    pub sha256: String,
    /// The definition (canonical JSON).
    pub definition: String,
    /// When it was first seen (RFC 3339).
    pub seen_at: String,
}

/// What one observation of a served definition changed in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The tool had no pin: the definition is now pinned, approved at first sight.
    FirstSight,
    /// The tool had no pin and waits for an operator (new tools are not trusted at first
    /// sight): recorded, not approved.
    Unapproved,
    /// The definition is the approved one, as before.
    Approved,
    /// The definition differs from the approved one, and it is a change the store had not
    /// recorded yet (a first report).
    Changed,
    /// The definition differs from the approved one, as already recorded.
    StillChanged,
    /// The server is back to the approved definition: the recorded change is dropped.
    Reverted,
}

/// Why an approval was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRefused {
    /// The store has never seen the tool on that server.
    Unknown {
        /// The server named.
        server: String,
        /// The tool named.
        tool: String,
    },
    /// The tool's served definition is the approved one: there is nothing to approve.
    NothingChanged {
        /// The server named.
        server: String,
        /// The tool named.
        tool: String,
    },
    /// The operator approved a definition by hash, and the one waiting is another (it
    /// changed again after they looked).
    NotTheOneWaiting {
        /// The hash prefix the operator gave.
        expected: String,
        /// The hash of the definition waiting.
        waiting: String,
    },
}

impl std::fmt::Display for PinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinRefused::Unknown { server, tool } => {
                write!(f, "server \"{server}\" has no tool \"{tool}\" on record")
            }
            PinRefused::NothingChanged { server, tool } => write!(
                f,
                "\"{tool}\" of server \"{server}\" serves its approved definition: nothing to approve"
            ),
            PinRefused::NotTheOneWaiting { expected, waiting } => write!(
                f,
                "the definition waiting for approval is {waiting}, not {expected}: it changed again; look at `toolgate tools diff` once more"
            ),
        }
    }
}

/// A tool as a server serves it now, for [`crate::EmbeddedStore::observe_tools`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTool {
    /// The tool's name.
    pub tool: String,
    /// Hex SHA-256 of `definition`.
    pub sha256: String,
    /// The definition (canonical JSON).
    pub definition: String,
    /// A tool never seen before is approved at first sight; `false`: it waits, withheld,
    /// for an operator (its pin then has no approved definition yet).
    pub pin_if_new: bool,
}

/// The columns a pin is stored in, in the order [`pin_from_columns`] reads them.
pub(crate) const COLUMNS: &str = "server, tool, sha256, definition, approved_at, approved_by, \
                                  served_sha256, served_definition, served_at";

/// A pin from its [`COLUMNS`], read by `column(index)` (SQL NULL: `None`).
pub(crate) fn pin_from_columns<E>(
    mut column: impl FnMut(usize) -> Result<Option<String>, E>,
) -> Result<ToolPin, E> {
    let mut text = |i| column(i).map(Option::unwrap_or_default);
    let pin = ToolPin {
        server: text(0)?,
        tool: text(1)?,
        sha256: text(2)?,
        definition: text(3)?,
        approved_at: text(4)?,
        approved_by: text(5)?,
        served: None,
    };
    let served = match column(6)? {
        Some(sha256) => Some(ServedDefinition {
            sha256,
            definition: column(7)?.unwrap_or_default(),
            seen_at: column(8)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(ToolPin { served, ..pin })
}

/// What observing `served` does to `existing` (the tool's pin, if it has one), at `ts`: the
/// pin as it is afterwards, what happened, and whether the pin must be written.
pub(crate) fn observe_one(
    server: &str,
    existing: Option<ToolPin>,
    served: &ServedTool,
    ts: &str,
) -> (ToolPin, Observed, bool) {
    match existing {
        None if !served.pin_if_new => (
            ToolPin {
                server: server.to_owned(),
                tool: served.tool.clone(),
                sha256: String::new(),
                definition: String::new(),
                approved_at: String::new(),
                approved_by: String::new(),
                served: Some(ServedDefinition {
                    sha256: served.sha256.clone(),
                    definition: served.definition.clone(),
                    seen_at: ts.to_owned(),
                }),
            },
            Observed::Unapproved,
            true,
        ),
        None => (
            ToolPin {
                server: server.to_owned(),
                tool: served.tool.clone(),
                sha256: served.sha256.clone(),
                definition: served.definition.clone(),
                approved_at: ts.to_owned(),
                approved_by: FIRST_SIGHT.to_owned(),
                served: None,
            },
            Observed::FirstSight,
            true,
        ),
        Some(mut pin) if pin.sha256 == served.sha256 => {
            if pin.served.take().is_some() {
                (pin, Observed::Reverted, true)
            } else {
                (pin, Observed::Approved, false)
            }
        }
        Some(pin)
            if pin
                .served
                .as_ref()
                .is_some_and(|s| s.sha256 == served.sha256) =>
        {
            (pin, Observed::StillChanged, false)
        }
        Some(mut pin) => {
            pin.served = Some(ServedDefinition {
                sha256: served.sha256.clone(),
                definition: served.definition.clone(),
                seen_at: ts.to_owned(),
            });
            (pin, Observed::Changed, true)
        }
    }
}

/// `before` with the definition waiting for approval approved by `actor` at `ts`
/// (`expected`: a prefix of the hash the operator reviewed), or why not.
pub(crate) fn approved(
    before: &ToolPin,
    expected: Option<&str>,
    actor: &str,
    ts: &str,
) -> Result<ToolPin, PinRefused> {
    let (sha256, definition) = match &before.served {
        Some(s) => (s.sha256.clone(), s.definition.clone()),
        None => (before.sha256.clone(), before.definition.clone()),
    };
    if let Some(expected) = expected {
        if expected.is_empty() || !sha256.starts_with(&expected.to_ascii_lowercase()) {
            return Err(PinRefused::NotTheOneWaiting {
                expected: expected.to_owned(),
                waiting: sha256,
            });
        }
    }
    if before.served.is_none() && before.approved_by_operator() {
        return Err(PinRefused::NothingChanged {
            server: before.server.clone(),
            tool: before.tool.clone(),
        });
    }
    Ok(ToolPin {
        sha256,
        definition,
        approved_at: ts.to_owned(),
        approved_by: actor.to_owned(),
        served: None,
        ..before.clone()
    })
}
