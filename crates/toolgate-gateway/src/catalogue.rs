//! What tools an upstream really has, so that a call to a tool it lacks is answered exactly
//! like a call to a hidden one (`-32602 Unknown tool`) and the two cannot be told apart.

use crate::error::GatewayError;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A catalogue is refetched on a miss at most this often, so unknown-tool probes cannot
/// turn into a flood of upstream listings.
const REFETCH_AFTER: Duration = Duration::from_secs(2);

/// The tool names of one server.
#[derive(Debug, Default)]
pub struct Catalogue {
    /// Known names and when they were fetched.
    state: Mutex<Option<(HashSet<String>, Instant)>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Catalogue {
    /// Forgets the list (the upstream announced a change).
    pub fn invalidate(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn lookup(&self, tool: &str) -> Option<(bool, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(names, at)| (names.contains(tool), *at))
    }

    /// Whether the upstream has `tool`: `Some(false)` only when a fresh listing lacks it;
    /// `None` when no listing could be had (the call then goes on and meets the upstream's
    /// own failure).
    pub async fn has<F, Fut, E>(&self, tool: &str, fetch: F) -> Option<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<String>, E>>,
        E: std::fmt::Display,
    {
        match self.lookup(tool) {
            Some((true, _)) => return Some(true),
            Some((false, at)) if at.elapsed() < REFETCH_AFTER => return Some(false),
            _ => {}
        }
        let _guard = self.fetching.lock().await;
        // Another caller may have refreshed the list while we waited.
        if let Some((found, at)) = self.lookup(tool) {
            if found || at.elapsed() < REFETCH_AFTER {
                return Some(found);
            }
        }
        match fetch().await {
            Ok(names) => {
                let names: HashSet<String> = names.into_iter().collect();
                let found = names.contains(tool);
                *self.state.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((names, Instant::now()));
                Some(found)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list the upstream's tools");
                None
            }
        }
    }
}

/// Walks every page of a `tools/list` and collects the tools' definitions. `page` sends one
/// `tools/list` with the given params and returns its result; at most 1000 pages are read so a
/// server that keeps handing out cursors cannot hold the gateway forever.
pub async fn list_tools<F, Fut>(mut page: F) -> Result<Vec<Value>, GatewayError>
where
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = Result<Value, GatewayError>>,
{
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..1000 {
        let params = match cursor.take() {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let mut result = page(params).await?;
        if let Some(Value::Array(page_tools)) = result.get_mut("tools").map(Value::take) {
            tools.extend(page_tools);
        }
        cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn misses_refetch_at_most_every_two_seconds() {
        let c = Catalogue::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(vec!["a".to_owned()])
        };
        assert_eq!(c.has("a", fetch).await, Some(true));
        assert_eq!(c.has("a", fetch).await, Some(true));
        assert_eq!(c.has("b", fetch).await, Some(false));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        c.invalidate();
        assert_eq!(c.has("b", fetch).await, Some(false));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        let failing = || async { Err::<Vec<String>, _>("down") };
        c.invalidate();
        assert_eq!(c.has("x", failing).await, None);
    }
}
