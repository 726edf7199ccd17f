//! toolgate's persistent state.
//!
//! One interface per concern, each with an embedded implementation on SQLite in the data
//! directory (the default: zero setup, survives restarts). Cluster implementations (Redis,
//! PostgreSQL) implement the same interfaces. The stores know nothing about HTTP or MCP
//! beyond the records they keep.
#![forbid(unsafe_code)]

pub mod approvals;
pub mod audit;
pub mod counters;
mod embedded;
pub mod grants;
pub mod pins;
pub mod postgres_audit;
pub mod redis_counters;
mod sessions;

pub use approvals::{ApprovalKey, ApprovalRequest, ApprovalStatus, DecisionRefused, Matched};
pub use audit::{AuditEntry, AuditLog};
pub use counters::{Charge, Clock, CounterStore, Reservation, Reserve, StoreFuture, SystemClock};
pub use embedded::{EmbeddedStore, GrantsStamp};
pub use grants::{GrantChange, GrantRefused, StoredGrant, StoredPolicy};
pub use pins::{Observed, PinRefused, ServedTool, ToolPin};
pub use postgres_audit::PostgresAuditLog;
pub use redis_counters::RedisCounterStore;
pub use sessions::{SessionRecord, SessionStore};

use std::fmt;

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What failed, naming the store and the operation.
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub(crate) fn new(context: &str, error: impl fmt::Display) -> Self {
        StoreError {
            message: format!("{context}: {error}"),
        }
    }
}
