//! What the store's integration tests against shared servers (Redis, PostgreSQL) share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Parts that make a name no other test, test process or earlier run uses: the process id,
/// the time in nanoseconds and a per-process sequence number, joined by `separator`.
pub fn unique_name(separator: char) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{}{separator}{nanos}{separator}{seq}", std::process::id())
}
