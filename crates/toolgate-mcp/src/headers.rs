//! HTTP header names of MCP's Streamable HTTP transport (lower-case, as `http` stores them).

/// The session id minted at `initialize`.
pub const MCP_SESSION_ID: &str = "mcp-session-id";
/// The negotiated protocol revision, sent by clients after initialization.
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// SSE resumption: the last event id the client saw.
pub const LAST_EVENT_ID: &str = "last-event-id";
/// 2026-07-28: the JSON-RPC method, mirrored in a header.
pub const MCP_METHOD: &str = "mcp-method";
/// 2026-07-28: the tool/resource/prompt name, mirrored in a header.
pub const MCP_NAME: &str = "mcp-name";
/// 2026-07-28: prefix of headers that mirror selected parameters.
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";

/// Opening marker of the 2026-07-28 base64 form of an `Mcp-Name`/`Mcp-Param-*` value.
const ENCODED_PREFIX: &str = "=?base64?";
/// Closing marker of the base64 form.
const ENCODED_SUFFIX: &str = "?=";

/// Why a mirrored header value (`Mcp-Name`, `Mcp-Param-*`) could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueError {
    /// A plain value holds a byte outside printable ASCII: the client should have used the
    /// base64 form.
    NotPrintable {
        /// Offset of the first such byte.
        at: usize,
    },
    /// The base64 form's payload is not standard base64.
    BadBase64,
    /// The base64 form decodes to bytes that are not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for HeaderValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderValueError::NotPrintable { at } => write!(
                f,
                "byte {at} is not printable ASCII (such values must use the =?base64?…?= form)"
            ),
            HeaderValueError::BadBase64 => f.write_str("the =?base64?…?= payload is not base64"),
            HeaderValueError::NotUtf8 => f.write_str("the =?base64?…?= payload is not UTF-8"),
        }
    }
}

impl std::error::Error for HeaderValueError {}

/// Reads a mirrored header value as the body's string it stands for: a plain printable-ASCII
/// value as it is, `=?base64?…?=` decoded (standard alphabet, UTF-8 inside). Anything wearing
/// the markers is encoded, so the two forms never overlap.
pub fn decode_value(raw: &[u8]) -> Result<std::borrow::Cow<'_, str>, HeaderValueError> {
    use base64::Engine as _;
    let encoded = raw
        .strip_prefix(ENCODED_PREFIX.as_bytes())
        .and_then(|rest| rest.strip_suffix(ENCODED_SUFFIX.as_bytes()));
    if let Some(payload) = encoded {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| HeaderValueError::BadBase64)?;
        return String::from_utf8(bytes)
            .map(std::borrow::Cow::Owned)
            .map_err(|_| HeaderValueError::NotUtf8);
    }
    match raw.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        Some(at) => Err(HeaderValueError::NotPrintable { at }),
        // Printable ASCII is UTF-8, so this cannot fail; the error arm is not a panic path.
        None => std::str::from_utf8(raw)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| HeaderValueError::NotUtf8),
    }
}

/// The header form of `value`: as it is when it is printable ASCII without surrounding
/// whitespace and does not look like the encoded form, else `=?base64?…?=` of its UTF-8.
pub fn encode_value(value: &str) -> std::borrow::Cow<'_, str> {
    use base64::Engine as _;
    let plain = value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && value.trim_matches(' ') == value
        && !(value.starts_with(ENCODED_PREFIX) && value.ends_with(ENCODED_SUFFIX));
    if plain {
        return std::borrow::Cow::Borrowed(value);
    }
    let payload = base64::engine::general_purpose::STANDARD.encode(value);
    std::borrow::Cow::Owned(format!("{ENCODED_PREFIX}{payload}{ENCODED_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_read_as_they_are_and_encoded_ones_are_decoded() {
        assert_eq!(decode_value(b"get_weather").unwrap(), "get_weather");
        // The specification's own example: a plain value that looks like the encoded form.
        assert_eq!(
            decode_value(b"=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").unwrap(),
            "=?base64?literal?="
        );
        assert_eq!(
            encode_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        assert_eq!(
            decode_value(encode_value("wetter_über").as_bytes()).unwrap(),
            "wetter_über"
        );
        assert_eq!(encode_value(" padded"), "=?base64?IHBhZGRlZA==?=");
    }

    #[test]
    fn unreadable_values_name_what_is_wrong() {
        assert_eq!(
            decode_value("wetter_über".as_bytes()),
            Err(HeaderValueError::NotPrintable { at: 7 })
        );
        assert_eq!(
            decode_value(b"=?base64?***?="),
            Err(HeaderValueError::BadBase64)
        );
        assert_eq!(
            decode_value(b"=?base64?/w==?="),
            Err(HeaderValueError::NotUtf8)
        );
    }
}
