//! The gateway's fast reading of an upstream's answer (whose answer, how it went), which
//! decides what is audited and what is rolled back without parsing results.
//!
//! Property: wherever the fast reading gives an answer, it is exactly the reading of the full
//! parse — or the full parse refuses the text only for one of the two leniencies
//! `AnswerHead::read_all` documents (a number out of range, nesting past the depth limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_mcp::answer::AnswerHead;

fuzz_target!(|bytes: &[u8]| {
    let Some(fast) = AnswerHead::read_all(bytes) else {
        return;
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => {
            let full: Vec<AnswerHead> = items.iter().map(AnswerHead::of).collect();
            assert_eq!(fast, full);
        }
        Ok(one) => assert_eq!(fast, vec![AnswerHead::of(&one)]),
        Err(e) => {
            let why = e.to_string();
            assert!(
                why.contains("number out of range") || why.contains("recursion limit exceeded"),
                "fast reading accepted what a full parse refuses: {why}"
            );
        }
    }
});
