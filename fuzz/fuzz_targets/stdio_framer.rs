//! The newline framer a stdio child's output goes through, and the scanner that finds whose
//! answer an over-long line was.
//!
//! Properties: the frames are exactly those of a plain reference (split at `\n`, drop one
//! trailing `\r`, skip blank lines, an over-long line reported once with its first
//! `HEAD_BYTES`), however the stream is cut into chunks; and the id scanner, given any prefix
//! of a JSON object, names either nothing or the id that object really has.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_mcp::json::parse_strict;
use toolgate_mcp::stdio::{id_in_head, Frame, LineFramer, HEAD_BYTES};

/// Longest line: small enough that the fuzzer reaches it.
const MAX_LINE: usize = 300;

fn reference(stream: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut parts = stream.split(|&b| b == b'\n').peekable();
    while let Some(line) = parts.next() {
        let terminated = parts.peek().is_some();
        if line.len() > MAX_LINE {
            frames.push(Frame::TooLong {
                head: line[..HEAD_BYTES.min(line.len())].to_vec(),
            });
        } else if terminated {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                frames.push(Frame::Line(line.to_vec()));
            }
        }
    }
    frames
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut_seed, stream)) = input.split_first() else {
        return;
    };
    let mut framer = LineFramer::new(MAX_LINE);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut seed = cut_seed as usize;
    while !rest.is_empty() {
        let take = (seed % 64 + 1).min(rest.len());
        seed = seed.wrapping_mul(31).wrapping_add(7);
        frames.extend(framer.push(&rest[..take]));
        rest = &rest[take..];
    }
    assert_eq!(frames, reference(stream));

    // The scanner on every prefix of the input, if it is a JSON object.
    if let Ok(Value::Object(object)) = parse_strict(stream) {
        let real = object.get("id").and_then(Value::as_u64);
        for end in 0..=stream.len() {
            if let Some(found) = id_in_head(&stream[..end]) {
                assert_eq!(Some(found), real, "prefix of {end} bytes");
            }
        }
    }
    // And on anything at all: no panic.
    let _ = id_in_head(stream);
});
