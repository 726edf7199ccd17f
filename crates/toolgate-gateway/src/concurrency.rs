//! Per-grant concurrency (SPEC §5 limits): how many calls one caller — a grant, or with
//! OAuth a grant and the token's subject — may have running upstream at once. A call over
//! the limit is refused at once, before anything is reserved or forwarded, so one agent in
//! a loop cannot take every upstream connection and worker from the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The running calls of every caller.
#[derive(Debug)]
pub(crate) struct Concurrency {
    /// Calls one caller may have running (`[gateway] max_concurrent_calls`).
    limit: usize,
    /// One semaphore per caller seen, holding `limit` permits.
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Concurrency {
    pub(crate) fn new(limit: usize) -> Self {
        Concurrency {
            limit,
            callers: Mutex::default(),
        }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A permit for one more running call of `caller` (held until the call's answer is in),
    /// or `None` when it already has `limit` running.
    pub(crate) fn try_start(&self, caller: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
            match callers.get(caller) {
                Some(semaphore) => Arc::clone(semaphore),
                None => {
                    let semaphore = Arc::new(Semaphore::new(self.limit));
                    callers.insert(caller.to_owned(), Arc::clone(&semaphore));
                    semaphore
                }
            }
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_limit_and_a_finished_call_frees_its_place() {
        let running = Concurrency::new(2);
        let first = running.try_start("alice").expect("1 of 2");
        let _second = running.try_start("alice").expect("2 of 2");
        assert!(running.try_start("alice").is_none(), "a third is refused");
        assert!(
            running.try_start("bob").is_some(),
            "bob has places of his own"
        );
        drop(first);
        assert!(
            running.try_start("alice").is_some(),
            "a finished call frees its place"
        );
    }
}
