//! The SSE decoder an upstream's event stream goes through.
//!
//! Properties: it never panics; how the stream is cut into chunks changes nothing (the
//! events, and where the size limit strikes, are the same); and every event it produces,
//! encoded by the gateway and decoded again, is the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_mcp::sse::{encode, SseDecoder, SseEvent};

/// The size limit: small enough that the fuzzer reaches it.
const LIMIT: usize = 512;

/// All events of `stream` fed in one chunk, or `Err` with the events of an unbounded
/// decoder when the limit strikes.
fn whole(stream: &[u8], limit: usize) -> Result<Vec<SseEvent>, ()> {
    SseDecoder::new(limit).push(stream).map_err(|_| ())
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut_seed, stream)) = input.split_first() else {
        return;
    };
    let reference = whole(stream, LIMIT);
    let unbounded = whole(stream, usize::MAX).expect("no limit, no error");

    // The same stream in chunks of 1..=16 bytes, sizes drawn from the seed.
    let mut decoder = SseDecoder::new(LIMIT);
    let mut events = Vec::new();
    let mut failed = false;
    let mut rest = stream;
    let mut seed = cut_seed as usize;
    while !rest.is_empty() {
        let take = (seed % 16 + 1).min(rest.len());
        seed = seed.wrapping_mul(31).wrapping_add(7);
        match decoder.push(&rest[..take]) {
            Ok(more) => events.extend(more),
            Err(_) => {
                failed = true;
                break;
            }
        }
        rest = &rest[take..];
    }
    match &reference {
        Ok(all) => {
            assert!(!failed, "chunking made the limit strike");
            assert_eq!(&events, all);
        }
        Err(()) => {
            assert!(failed, "chunking let an over-size event through");
            assert!(unbounded.starts_with(&events));
        }
    }

    for event in &unbounded {
        let again = whole(&encode(event), usize::MAX).expect("no limit");
        assert_eq!(again.as_slice(), std::slice::from_ref(event));
    }
});
