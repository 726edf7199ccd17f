//! Per-tool approval settings (`"approval": {"timeout": "30m", "reuse": "once"}`, SPEC §6).

use serde_json::Value;

use crate::duration;
use crate::error::{describe, Errors, Pointer};
use crate::fields::{check_keys, expect_object};

/// How long a held call waits for a human when the policy does not say.
pub const DEFAULT_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// How a held call waits for a human, and what an approval covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApprovalSettings {
    /// How long the request stays open before it is denied (default 15 minutes).
    pub timeout_ms: u64,
    /// Whether one approval admits one call or every identical call for a while.
    pub reuse: Reuse,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            reuse: Reuse::Once,
        }
    }
}

/// What an approval covers. It is always bound to the same grant, server, tool, arguments and
/// policy version; reuse only widens it in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Reuse {
    /// Consumed by the first call it admits (the default).
    #[default]
    Once,
    /// Admits identical calls for `ms` milliseconds after it is granted.
    For {
        /// How long the approval keeps admitting identical calls.
        ms: u64,
    },
}

/// Parses `{ "timeout": D, "reuse": "once" | D }` (or `"for": D`, meaning `reuse: D`).
pub(crate) fn compile(value: &Value, at: &Pointer, errs: &mut Errors) -> ApprovalSettings {
    let mut settings = ApprovalSettings::default();
    let Some(obj) = expect_object(
        value,
        at,
        "an object such as {\"timeout\": \"30m\", \"reuse\": \"once\"}",
        errs,
    ) else {
        return settings;
    };
    check_keys(obj, at, &["timeout", "reuse", "for"], &[], errs);
    if let Some(v) = obj.get("timeout") {
        if let Some(ms) = positive_duration(v, &at.key("timeout"), errs) {
            settings.timeout_ms = ms;
        }
    }
    match (obj.get("reuse"), obj.get("for")) {
        (Some(_), Some(_)) => errs.push(at, "use either \"reuse\" or \"for\", not both"),
        (Some(Value::String(s)), None) if s == "once" => settings.reuse = Reuse::Once,
        (Some(v @ Value::String(_)), None) => {
            if let Some(ms) = positive_duration(v, &at.key("reuse"), errs) {
                settings.reuse = Reuse::For { ms };
            }
        }
        (Some(v), None) => errs.push(
            &at.key("reuse"),
            format!(
                "expected \"once\" or a duration such as \"1h\", found {}",
                describe(v)
            ),
        ),
        (None, Some(v)) => {
            if let Some(ms) = positive_duration(v, &at.key("for"), errs) {
                settings.reuse = Reuse::For { ms };
            }
        }
        (None, None) => {}
    }
    settings
}

fn positive_duration(v: &Value, at: &Pointer, errs: &mut Errors) -> Option<u64> {
    let Value::String(s) = v else {
        errs.push(
            at,
            format!("expected a duration such as \"30m\", found {}", describe(v)),
        );
        return None;
    };
    match duration::parse(s) {
        Ok(d) if !d.is_zero() => Some(duration::as_millis_u64(d)),
        Ok(_) => {
            errs.push(at, "the duration must be longer than 0");
            None
        }
        Err(e) => {
            errs.push(at, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> (ApprovalSettings, Vec<String>) {
        let mut errs = Errors::default();
        let s = compile(&v, &Pointer::root().key("approval"), &mut errs);
        (
            s,
            errs.into_inner()
                .into_iter()
                .map(|e| e.to_string())
                .collect(),
        )
    }

    #[test]
    fn accepted() {
        let cases = [
            (json!({}), ApprovalSettings::default()),
            (
                json!({"timeout": "30m", "reuse": "once"}),
                ApprovalSettings {
                    timeout_ms: 1_800_000,
                    reuse: Reuse::Once,
                },
            ),
            (
                json!({"reuse": "1h"}),
                ApprovalSettings {
                    timeout_ms: DEFAULT_TIMEOUT_MS,
                    reuse: Reuse::For { ms: 3_600_000 },
                },
            ),
            (
                json!({"for": "10s", "timeout": "90"}),
                ApprovalSettings {
                    timeout_ms: 90_000,
                    reuse: Reuse::For { ms: 10_000 },
                },
            ),
        ];
        for (input, want) in cases {
            let (got, errs) = run(input.clone());
            assert!(errs.is_empty(), "{input}: {errs:?}");
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn rejected() {
        let cases = [
            (json!("30m"), "/approval: expected an object"),
            (
                json!({"timeout": 30}),
                "/approval/timeout: expected a duration",
            ),
            (
                json!({"timeout": "0s"}),
                "/approval/timeout: the duration must be longer than 0",
            ),
            (
                json!({"timeout": "soon"}),
                "/approval/timeout: invalid duration \"soon\"",
            ),
            (
                json!({"reuse": "twice"}),
                "/approval/reuse: invalid duration \"twice\"",
            ),
            (
                json!({"reuse": 3}),
                "/approval/reuse: expected \"once\" or a duration",
            ),
            (
                json!({"reuse": "once", "for": "1h"}),
                "/approval: use either",
            ),
            (
                json!({"for": "0ms"}),
                "/approval/for: the duration must be longer than 0",
            ),
            (
                json!({"timout": "1m"}),
                "/approval/timout: unknown field \"timout\"; did you mean \"timeout\"?",
            ),
        ];
        for (input, want) in cases {
            let (_, errs) = run(input.clone());
            assert_eq!(errs.len(), 1, "{input}: {errs:?}");
            assert!(errs[0].starts_with(want), "{input}: {}", errs[0]);
        }
    }
}
