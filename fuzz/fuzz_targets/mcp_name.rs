//! The `Mcp-Name` / `Mcp-Param-*` header value decoder (2026-07-28: plain printable ASCII,
//! or `=?base64?…?=`).
//!
//! Properties: it never panics; a value it accepts in plain form is the header text itself;
//! every string survives encoding and decoding unchanged; an encoded value is a valid
//! header value (printable ASCII).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_mcp::headers::{decode_value, encode_value};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(name) = decode_value(bytes) {
        if !bytes.starts_with(b"=?base64?") || !bytes.ends_with(b"?=") {
            assert_eq!(name.as_bytes(), bytes);
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let encoded = encode_value(&text);
    assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    let decoded = decode_value(encoded.as_bytes()).expect("an encoded value decodes");
    assert_eq!(decoded, text);
});
