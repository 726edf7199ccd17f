//! Step 7 of the line: turning a decision's limits into counter charges and reserving them.
//!
//! Counter keys: a counter is per server — the same counter name on two servers is two
//! budgets — except under `scope: "global"`, which is one budget for the whole gateway.
//! Within a server the scope picks whose budget it is (grant, identity, session, or the
//! server itself). A counter name shared by several tools of one policy is one budget.
//!
//! Shadow mode counts apart: a policy on trial consumes a shadow copy of each counter (its
//! key prefixed `shadow`), so that it can say when its limits would have refused a call
//! without spending, or being stopped by, the budgets in force.

use std::future::Future;
use std::sync::Arc;
use toolgate_policy::{Decision, LimitCharge, Scope};
use toolgate_store::{Charge, CounterStore, Reservation, Reserve, StoreError};

/// Who is calling where: what scopes resolve to.
#[derive(Debug, Clone, Copy)]
pub struct CallScope<'a> {
    /// The server name.
    pub server: &'a str,
    /// The grant name.
    pub grant: &'a str,
    /// The authenticated subject (the grant until identities other than grants exist).
    pub identity: &'a str,
    /// The MCP session id.
    pub session: &'a str,
    /// Whether the decision is a shadow one (counted apart, see the module documentation).
    pub shadow: bool,
}

/// The store key of a limit's counter for this call. Parts are separated by U+001F (unit
/// separator), which cannot occur in a JSON-decoded counter or server name by accident of
/// formatting and keeps `a|b` + `c` distinct from `a` + `b|c`.
pub fn counter_key(limit: &LimitCharge, scope: &CallScope<'_>) -> String {
    let shadow = if scope.shadow { "shadow\u{1f}" } else { "" };
    let (kind, who) = match limit.scope {
        Scope::Grant => ("grant", scope.grant),
        Scope::Identity => ("identity", scope.identity),
        Scope::Session => ("session", scope.session),
        Scope::Server => ("server", ""),
        Scope::Global => return format!("{shadow}global\u{1f}{}", limit.counter),
    };
    format!(
        "{shadow}{kind}\u{1f}{}\u{1f}{who}\u{1f}{}",
        scope.server, limit.counter
    )
}

/// The charges of a decision's limits.
pub fn charges(limits: &[LimitCharge], scope: &CallScope<'_>) -> Vec<Charge> {
    limits
        .iter()
        .map(|limit| Charge {
            key: counter_key(limit, scope),
            window_ms: limit.window.seconds.saturating_mul(1000),
            calendar: limit.window.calendar,
            max: limit.max,
            amount: limit.amount,
        })
        .collect()
}

/// What reserving a call's limits came to.
#[derive(Debug)]
pub enum Quota {
    /// Nothing to reserve (no limits).
    Unlimited,
    /// Reserved; roll back if the call never runs.
    Reserved(Reservation),
    /// A limit is exhausted: the `rate_limited` decision to answer with.
    Exceeded(Decision),
    /// The counter store could not be reached: the fail-closed `deny` decision, and why.
    Unavailable(Decision, String),
}

/// Reserves every limit of an allowed call, atomically.
pub async fn reserve(
    store: &dyn CounterStore,
    limits: &[LimitCharge],
    scope: &CallScope<'_>,
) -> Quota {
    reserve_with(limits, scope, |charges| async move {
        store.reserve(&charges).await
    })
    .await
}

/// [`reserve`], the store operation being `reserve` (which gets the charges): so that the
/// embedded store can reserve and record the call in one commit.
pub async fn reserve_with<F, Fut>(
    limits: &[LimitCharge],
    scope: &CallScope<'_>,
    reserve: F,
) -> Quota
where
    F: FnOnce(Vec<Charge>) -> Fut,
    Fut: Future<Output = Result<Reserve, StoreError>>,
{
    if limits.is_empty() {
        return Quota::Unlimited;
    }
    // A call that alone exceeds a limit can never run: say so, rather than "retry later".
    if let Some(limit) = limits.iter().find(|l| l.amount > l.max) {
        return Quota::Exceeded(Decision::deny(
            limit.rule.clone(),
            format!(
                "this call would consume {} of \"{}\", more than its whole limit of {} per {}",
                limit.amount, limit.counter, limit.max, limit.window
            ),
        ));
    }
    match reserve(charges(limits, scope)).await {
        Ok(Reserve::Granted(reservation)) => Quota::Reserved(reservation),
        Ok(Reserve::Exceeded {
            charge,
            retry_after_ms,
        }) => {
            let limit = &limits[charge.min(limits.len() - 1)];
            Quota::Exceeded(limit.exceeded(retry_after_ms))
        }
        Err(e) => Quota::Unavailable(limits[0].store_unavailable(), e.to_string()),
    }
}

/// Gives a reservation back because the call never ran; logged, never fatal (a reservation
/// that cannot be returned errs on the side of the budget).
/// What a forwarded call holds until its outcome is known: the reservation of its limits
/// and the approval it used, each given back if the call never ran, and its place among
/// its caller's running calls, freed when the hold is dropped.
#[derive(Debug, Default)]
pub struct Hold {
    /// The reservation, if the call has limits.
    pub reservation: Option<Reservation>,
    /// The approval request that admitted it, if it was held for approval.
    pub approval: Option<String>,
    /// Its place among its caller's running calls (`[gateway] max_concurrent_calls`).
    pub running: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Hold {
    /// Whether it holds nothing (then it need not be kept until the answer).
    pub fn is_empty(&self) -> bool {
        self.reservation.is_none() && self.approval.is_none() && self.running.is_none()
    }
}

/// Rolls `reservation` back (the call never ran); a failure is logged.
pub async fn rollback(store: &Arc<dyn CounterStore>, reservation: &Reservation) {
    if let Err(e) = store.rollback(reservation).await {
        tracing::warn!(reservation = %reservation.id, error = %e, "could not roll back a reservation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_policy::{Identity, Policy, ToolCall};

    fn limits(policy: &str, tool: &str, args: serde_json::Value) -> Vec<LimitCharge> {
        let policy = Policy::from_json_bytes(policy.as_bytes()).unwrap();
        let identity = Identity::default();
        policy
            .evaluate(&ToolCall {
                tool,
                arguments: &args,
                identity: &identity,
            })
            .limits
    }

    #[test]
    fn keys_separate_servers_and_scopes_but_not_tools() {
        let policy = r#"{"version":"1","default":"allow","tools":{
            "a":{"limits":[{"counter":"c","window":"minute","max":5}]},
            "b":{"limits":[{"counter":"c","window":"minute","max":5}]},
            "g":{"limits":[{"counter":"all","window":60,"max":5,"scope":"global"},
                           {"counter":"s","window":"hour","max":5,"scope":"session","increment_from":"args.n"}]}}}"#;
        let one = CallScope {
            server: "s1",
            grant: "alice",
            identity: "alice",
            session: "tgs-1",
            shadow: false,
        };
        let other_server = CallScope {
            server: "s2",
            ..one
        };
        let a = charges(&limits(policy, "a", serde_json::json!({})), &one);
        let b = charges(&limits(policy, "b", serde_json::json!({})), &one);
        assert_eq!(
            a[0].key, b[0].key,
            "one counter name is one budget across tools"
        );
        let a2 = charges(&limits(policy, "a", serde_json::json!({})), &other_server);
        assert_ne!(a[0].key, a2[0].key, "counters are per server");
        let g = charges(&limits(policy, "g", serde_json::json!({"n": 2.5})), &one);
        let g2 = charges(
            &limits(policy, "g", serde_json::json!({"n": 1})),
            &other_server,
        );
        assert_eq!(g[0].key, g2[0].key, "global means the whole gateway");
        assert_eq!(g[0].window_ms, 60_000);
        assert!(g[1].key.contains("tgs-1"));
        assert_eq!(g[1].amount, 2.5);
        assert_eq!(g[1].window_ms, 3_600_000);
        let shadowed = CallScope {
            shadow: true,
            ..one
        };
        for tool in ["a", "g"] {
            let real = charges(&limits(policy, tool, serde_json::json!({"n": 1})), &one);
            let trial = charges(
                &limits(policy, tool, serde_json::json!({"n": 1})),
                &shadowed,
            );
            for (real, trial) in real.iter().zip(&trial) {
                assert_eq!(trial.key, format!("shadow\u{1f}{}", real.key));
            }
        }
    }
}
