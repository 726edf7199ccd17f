//! Value comparison as predicates define it: numbers compare by value (`1` equals `1.0`) at
//! any nesting depth, everything else structurally.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::path::Actual;

/// Compares two JSON numbers by value. Integers compare exactly (no rounding through `f64`,
/// which would make 2^53 + 1 equal 2^53); mixed integer/float comparisons go through `f64`.
pub(crate) fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (as_i128(a), as_i128(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Deep equality with numeric equality. Recursion is bounded by the depth of the smaller value,
/// and one side is always the policy's own literal, so hostile arguments cannot make it deep.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Equality between what a path found and a policy literal.
pub(crate) fn actual_eq(actual: Actual<'_>, expected: &Value) -> bool {
    match actual {
        Actual::Json(v) => json_eq(v, expected),
        Actual::Str(s) => expected.as_str() == Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        let cases = [
            (json!(1), json!(1.0), Some(Ordering::Equal)),
            (json!(-1), json!(1), Some(Ordering::Less)),
            (json!(u64::MAX), json!(-1), Some(Ordering::Greater)),
            (
                json!(9007199254740993_u64),
                json!(9007199254740992_u64),
                Some(Ordering::Greater),
            ),
            (json!(0.5), json!(1), Some(Ordering::Less)),
            (json!(-0.0), json!(0), Some(Ordering::Equal)),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                cmp_numbers(&n(a.clone()), &n(b.clone())),
                want,
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn deep_equality() {
        assert!(json_eq(
            &json!({"a": [1, {"b": 2.0}]}),
            &json!({"a": [1.0, {"b": 2}]})
        ));
        assert!(json_eq(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!([1, 2]), &json!([1, 2, 3])));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(json_eq(&Value::Null, &Value::Null));
        assert!(!json_eq(&json!(true), &json!(1)));
    }
}
