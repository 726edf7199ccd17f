//! Limits (SPEC §3.5): validated at load, and reported per call as [`LimitCharge`]s that the
//! gateway's counter store checks and reserves atomically. The engine never counts anything
//! itself: it has no clock and no state.
//!
//! A counter name used in several places is one shared budget, and the places need not agree
//! on `window` or `max`: each charge carries its own window and max, and the store checks each
//! charge against the counter's consumption within that charge's window. This lets a tool put
//! a tighter cap on a budget it shares with others.

use std::fmt;

use serde_json::Value;

use crate::call::Identity;
use crate::decision::{Decision, Outcome};
use crate::error::{show, Errors, Pointer};
use crate::fields::{check_keys, expect_array, expect_object, expect_string};
use crate::path::{Allowed, Path};

/// The span a limit counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Length of the window in seconds (`"minute"` is 60).
    pub seconds: u64,
    /// `align: "calendar"`: UTC-aligned fixed windows (a minute resets at :00) instead of the
    /// default strict rolling window.
    pub calendar: bool,
    /// True when the policy spelled the window as a word (`"minute"`), so messages say
    /// "per minute"; a numeric window reads "per 60s".
    pub named: bool,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.named, self.seconds) {
            (true, 1) => f.write_str("second"),
            (true, 60) => f.write_str("minute"),
            (true, 3_600) => f.write_str("hour"),
            (true, 86_400) => f.write_str("day"),
            (_, s) => write!(f, "{s}s"),
        }
    }
}

/// Whose calls share one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// One counter per grant (the default).
    #[default]
    Grant,
    /// One counter per authenticated subject.
    Identity,
    /// One counter per MCP session.
    Session,
    /// One counter for all callers of this server.
    Server,
    /// One counter across every server.
    Global,
}

const SCOPES: [(&str, Scope); 5] = [
    ("grant", Scope::Grant),
    ("identity", Scope::Identity),
    ("session", Scope::Session),
    ("server", Scope::Server),
    ("global", Scope::Global),
];

impl Scope {
    /// The policy spelling (`"grant"`, `"identity"`, …).
    pub fn as_str(&self) -> &'static str {
        SCOPES
            .iter()
            .find(|(_, s)| s == self)
            .map_or("grant", |(n, _)| n)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One limit that applies to a call: what the counter store must check and reserve.
///
/// `max` and `amount` are `f64` because `increment_from` consumes argument values that may be
/// fractional (`12.50`); integers up to 2^53 are represented exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitCharge {
    /// The counter's name; the same name anywhere in the policy is the same budget.
    pub counter: String,
    /// The window this limit counts over.
    pub window: Window,
    /// Most that may be consumed within any window.
    pub max: f64,
    /// Whose calls share the counter.
    pub scope: Scope,
    /// What this call consumes: `increment` (default 1), or the numeric value of the
    /// `increment_from` argument (never negative).
    pub amount: f64,
    /// `/tools/<tool key as written>/limits/<counter>` or `/all_tools/limits/<counter>`.
    pub rule: String,
}

impl LimitCharge {
    /// The decision when this limit refused the call: `rate_limited`, with the SPEC §4 message.
    pub fn exceeded(&self, retry_after_ms: u64) -> Decision {
        Decision {
            outcome: Outcome::RateLimited,
            rule: self.rule.clone(),
            message: format!(
                "Rate limit of {} per {} reached for \"{}\"; retry in {} s",
                self.max,
                self.window,
                self.counter,
                retry_after_ms.div_ceil(1000)
            ),
            limits: Vec::new(),
            retry_after_ms: Some(retry_after_ms),
            approval: None,
        }
    }

    /// The decision when the counter store could not be reached and the server fails closed
    /// (SPEC §3.5): `deny`, this limit's rule id, `counter store unavailable`.
    pub fn store_unavailable(&self) -> Decision {
        Decision::deny(self.rule.clone(), "counter store unavailable".to_owned())
    }
}

#[derive(Debug)]
enum Amount {
    Fixed,
    From(Path),
}

/// A compiled limit: the charge it makes, minus the amount when that comes from the call.
#[derive(Debug)]
pub(crate) struct Limit {
    template: LimitCharge,
    amount: Amount,
}

impl Limit {
    /// The charge for this call, or the denial message when `increment_from` cannot be read.
    pub(crate) fn charge(&self, args: &Value, identity: &Identity) -> Result<LimitCharge, String> {
        match &self.amount {
            Amount::Fixed => Ok(self.template.clone()),
            Amount::From(path) => {
                let value = match path.resolve(args, identity) {
                    Some(crate::path::Actual::Json(v)) if !v.is_null() => v,
                    _ => return Err(format!("{} is missing", path.text())),
                };
                let Some(amount) = value.as_f64().filter(|_| value.is_number()) else {
                    return Err(format!("{} is not a number", path.text()));
                };
                // A negative amount would hand quota back: an agent could refill its own budget.
                if amount < 0.0 {
                    return Err(format!("{} is negative", path.text()));
                }
                let mut charge = self.template.clone();
                charge.amount = amount;
                Ok(charge)
            }
        }
    }

    pub(crate) fn reads_args(&self) -> bool {
        matches!(self.amount, Amount::From(_))
    }

    pub(crate) fn rule(&self) -> &str {
        &self.template.rule
    }
}

/// A counter name used by several limits is one budget, so every use must count it the same
/// way: same window length, alignment and scope. `sections` yields each `limits` list with
/// its pointer; a disagreement is reported at the later limit's `window` (or `scope`).
pub(crate) fn check_shared_counters<'a>(
    sections: impl IntoIterator<Item = (Pointer, &'a [Limit])>,
    errs: &mut Errors,
) {
    let mut first: std::collections::HashMap<&str, (Pointer, &LimitCharge)> =
        std::collections::HashMap::new();
    for (at, limits) in sections {
        for (index, limit) in limits.iter().enumerate() {
            let this = &limit.template;
            let here = at.index(index);
            match first.get(this.counter.as_str()) {
                None => {
                    first.insert(&this.counter, (here, this));
                }
                Some((there, earlier)) => {
                    let describe = |c: &LimitCharge| {
                        format!(
                            "window {} s{}, scope {}",
                            c.window.seconds,
                            if c.window.calendar { " (calendar)" } else { "" },
                            c.scope.as_str()
                        )
                    };
                    if earlier.window.seconds != this.window.seconds
                        || earlier.window.calendar != this.window.calendar
                        || earlier.scope != this.scope
                    {
                        let field = if earlier.scope != this.scope {
                            "scope"
                        } else {
                            "window"
                        };
                        errs.push(
                            &here.key(field),
                            format!(
                                "counter {:?} is also used at {} with {}, but here with {}; one counter is one budget, so every use needs the same window, alignment and scope",
                                this.counter,
                                there.as_str(),
                                describe(earlier),
                                describe(this)
                            ),
                        );
                    }
                }
            }
        }
    }
}

const LIMIT_KEYS: [&str; 7] = [
    "counter",
    "window",
    "max",
    "scope",
    "increment",
    "increment_from",
    "align",
];

/// Compiles a `limits` list found at `at`; `rule_base` is `/tools/<key>` or `/all_tools`.
pub(crate) fn compile_limits(
    value: &Value,
    at: &Pointer,
    rule_base: &str,
    errs: &mut Errors,
) -> Vec<Limit> {
    let Some(items) = expect_array(value, at, "a list of limits", errs) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| compile_limit(item, &at.index(i), rule_base, errs))
        .collect()
}

fn compile_limit(value: &Value, at: &Pointer, rule_base: &str, errs: &mut Errors) -> Option<Limit> {
    let obj = expect_object(
        value,
        at,
        "a limit object ({\"counter\", \"window\", \"max\"})",
        errs,
    )?;
    check_keys(obj, at, &LIMIT_KEYS, &[], errs);
    let mut missing = Vec::new();

    let counter = match obj.get("counter") {
        None => {
            missing.push("\"counter\"");
            None
        }
        Some(v) => expect_string(v, &at.key("counter"), "a counter name (a string)", errs)
            .and_then(|s| {
                if s.is_empty() {
                    errs.push(&at.key("counter"), "the counter name must not be empty");
                    None
                } else {
                    Some(s)
                }
            }),
    };

    let seconds_named = match obj.get("window") {
        None => {
            missing.push("\"window\"");
            None
        }
        Some(v) => {
            let parsed = match v {
                Value::String(s) => match s.as_str() {
                    "second" => Some((1, true)),
                    "minute" => Some((60, true)),
                    "hour" => Some((3_600, true)),
                    "day" => Some((86_400, true)),
                    _ => None,
                },
                Value::Number(n) => n.as_u64().filter(|s| *s > 0).map(|s| (s, false)),
                _ => None,
            };
            if parsed.is_none() {
                errs.push(
                    &at.key("window"),
                    format!(
                        "expected \"second\", \"minute\", \"hour\", \"day\" or a whole number of seconds above 0, found {}",
                        show(v)
                    ),
                );
            }
            parsed
        }
    };

    let max = match obj.get("max") {
        None => {
            missing.push("\"max\"");
            None
        }
        Some(v) => positive(v, &at.key("max"), errs),
    };

    let scope = match obj.get("scope") {
        None => Some(Scope::Grant),
        Some(v) => {
            let found = v
                .as_str()
                .and_then(|s| SCOPES.iter().find(|(n, _)| *n == s).map(|(_, sc)| *sc));
            if found.is_none() {
                errs.push(
                    &at.key("scope"),
                    format!(
                        "expected one of grant, identity, session, server, global, found {}",
                        show(v)
                    ),
                );
            }
            found
        }
    };

    let calendar = match obj.get("align") {
        None => Some(false),
        Some(Value::String(s)) if s == "rolling" => Some(false),
        Some(Value::String(s)) if s == "calendar" => Some(true),
        Some(v) => {
            errs.push(
                &at.key("align"),
                format!("expected \"rolling\" or \"calendar\", found {}", show(v)),
            );
            None
        }
    };

    let amount = match (obj.get("increment"), obj.get("increment_from")) {
        (Some(_), Some(_)) => {
            errs.push(
                at,
                "use either \"increment\" or \"increment_from\", not both",
            );
            None
        }
        (Some(v), None) => positive(v, &at.key("increment"), errs).map(|n| (n, Amount::Fixed)),
        (None, Some(v)) => expect_string(
            v,
            &at.key("increment_from"),
            "an argument path (a string such as \"args.amount\")",
            errs,
        )
        .and_then(|text| match Path::parse(text, Allowed::ArgsOnly) {
            Ok(p) => Some((0.0, Amount::From(p))),
            Err(e) => {
                errs.push(&at.key("increment_from"), e);
                None
            }
        }),
        (None, None) => Some((1.0, Amount::Fixed)),
    };

    errs.missing_fields(at, &missing);

    let counter = counter?;
    let (seconds, named) = seconds_named?;
    let (amount, source) = amount?;
    Some(Limit {
        template: LimitCharge {
            counter: counter.to_owned(),
            window: Window {
                seconds,
                calendar: calendar?,
                named,
            },
            max: max?,
            scope: scope?,
            amount,
            rule: format!("{rule_base}/limits/{counter}"),
        },
        amount: source,
    })
}

fn positive(v: &Value, at: &Pointer, errs: &mut Errors) -> Option<f64> {
    let n = v.as_f64().filter(|n| v.is_number() && *n > 0.0);
    if n.is_none() {
        errs.push(at, format!("expected a number above 0, found {}", show(v)));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(window: Window, max: f64, counter: &str) -> LimitCharge {
        LimitCharge {
            counter: counter.into(),
            window,
            max,
            scope: Scope::Grant,
            amount: 1.0,
            rule: format!("/all_tools/limits/{counter}"),
        }
    }

    #[test]
    fn exceeded_messages() {
        let minute = Window {
            seconds: 60,
            calendar: false,
            named: true,
        };
        let numeric = Window {
            seconds: 60,
            calendar: false,
            named: false,
        };
        let d = charge(minute, 60.0, "calls").exceeded(1_500);
        assert_eq!(d.outcome, Outcome::RateLimited);
        assert_eq!(d.rule, "/all_tools/limits/calls");
        assert_eq!(
            d.message,
            "Rate limit of 60 per minute reached for \"calls\"; retry in 2 s"
        );
        assert_eq!(d.retry_after_ms, Some(1_500));
        assert!(d.limits.is_empty());
        let d = charge(numeric, 2.5, "spend").exceeded(0);
        assert_eq!(
            d.message,
            "Rate limit of 2.5 per 60s reached for \"spend\"; retry in 0 s"
        );
        for (secs, word) in [(1, "second"), (3_600, "hour"), (86_400, "day")] {
            let w = Window {
                seconds: secs,
                calendar: true,
                named: true,
            };
            assert_eq!(w.to_string(), word);
        }
    }

    #[test]
    fn store_unavailable() {
        let minute = Window {
            seconds: 60,
            calendar: false,
            named: true,
        };
        let d = charge(minute, 1.0, "c").store_unavailable();
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.rule, "/all_tools/limits/c");
        assert_eq!(d.message, "counter store unavailable");
    }

    #[test]
    fn scope_names_round_trip() {
        for (name, scope) in SCOPES {
            assert_eq!(scope.as_str(), name);
        }
        assert_eq!(Scope::default(), Scope::Grant);
    }
}
