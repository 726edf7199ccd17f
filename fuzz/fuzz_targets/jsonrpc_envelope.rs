//! The strict JSON-RPC envelope parser a client's POST body goes through.
//!
//! Properties: it never panics; every refusal is a parse error or an invalid request with a
//! reason; what it accepts is exactly what serde_json reads (the gateway forwards the bytes
//! it decided on, so the two must not differ), with no duplicate key anywhere; and a parsed
//! payload, written out and parsed again, is the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_mcp::codes;
use toolgate_mcp::json::parse_strict;
use toolgate_mcp::jsonrpc::parse_payload;
use toolgate_mcp::{Message, Payload};

fuzz_target!(|bytes: &[u8]| {
    let strict = parse_strict(bytes);
    let lenient = serde_json::from_slice::<Value>(bytes);
    match (&strict, &lenient) {
        (Ok(strict), Ok(lenient)) => assert_eq!(strict, lenient),
        (Ok(_), Err(e)) => panic!("strict parse accepted what serde_json refuses: {e}"),
        (Err(e), Ok(_)) => assert!(e.duplicate_key, "strict parse refused valid JSON: {e}"),
        (Err(_), Err(_)) => {}
    }

    let payload = match parse_payload(bytes) {
        Ok(payload) => payload,
        Err(e) => {
            assert!(
                e.code == codes::PARSE_ERROR || e.code == codes::INVALID_REQUEST,
                "unexpected code {}",
                e.code
            );
            assert!(!e.message.is_empty());
            return;
        }
    };
    let value = strict.expect("a parsed payload is JSON");
    let messages: Vec<&Message> = match &payload {
        Payload::Single(one) => vec![one],
        Payload::Batch(all) => all.iter().collect(),
    };
    match &value {
        Value::Array(items) => assert_eq!(items.len(), messages.len()),
        _ => assert!(matches!(payload, Payload::Single(_))),
    }
    for message in messages {
        let again = parse_payload(&message.to_bytes()).expect("a parsed message parses again");
        match again {
            Payload::Single(again) => {
                assert_eq!(again.kind(), message.kind());
                assert_eq!(again.id(), message.id());
                assert_eq!(again.method(), message.method());
                assert_eq!(again.as_map(), message.as_map());
            }
            Payload::Batch(_) => panic!("one message came back as a batch"),
        }
    }
});
