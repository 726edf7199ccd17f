//! Server-Sent Events: an incremental, size-bounded decoder and an encoder.
//!
//! The decoder follows the WHATWG event-stream rules (LF, CRLF or CR line ends; `data`,
//! `event`, `id`, `retry` fields; `:` comments). It is fed arbitrary chunks as they arrive
//! from an upstream, so a line split across chunks — even a CR/LF pair — is handled.

use bytes::Bytes;
use std::fmt;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field, when the event set one.
    pub id: Option<String>,
    /// The `event` field (event type), when set.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The `retry` field in milliseconds, when set.
    pub retry: Option<u64>,
}

/// The stream exceeded the configured maximum event size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit that was exceeded, in bytes.
    pub limit: usize,
}

impl fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SSE event larger than {} bytes", self.limit)
    }
}

impl std::error::Error for EventTooLarge {}

/// Incremental SSE decoder.
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The event being assembled.
    pending: SseEvent,
    /// Whether any `data` field was seen for the pending event.
    has_data: bool,
    /// Whether any field at all was seen for the pending event.
    has_field: bool,
    /// Upper bound on one event's size (line + data), in bytes.
    max_event_bytes: usize,
}

impl SseDecoder {
    /// A decoder that refuses events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            pending: SseEvent::default(),
            has_data: false,
            has_field: false,
            max_event_bytes,
        }
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut out = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => {
                    self.line.push(byte);
                    if self.line.len() + self.pending.data.len() > self.max_event_bytes {
                        return Err(EventTooLarge {
                            limit: self.max_event_bytes,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether the bytes pushed so far end between events (no line or event begun): where
    /// a relay may slip in an event of its own without splitting one of the stream's.
    pub fn at_boundary(&self) -> bool {
        self.line.is_empty() && !self.has_field
    }

    /// Ends the stream: an unterminated final event is discarded, as the SSE rules say.
    pub fn finish(&mut self) {
        self.line.clear();
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.pending = SseEvent::default();
        self.has_data = false;
        self.has_field = false;
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_field {
                let mut event = std::mem::take(&mut self.pending);
                if self.has_data && event.data.ends_with('\n') {
                    event.data.pop();
                }
                out.push(event);
            }
            self.reset_event();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                self.pending.data.push_str(value);
                self.pending.data.push('\n');
                self.has_data = true;
                self.has_field = true;
            }
            "event" => {
                self.pending.event = Some(value.to_owned());
                self.has_field = true;
            }
            "id" if !value.contains('\0') => {
                self.pending.id = Some(value.to_owned());
                self.has_field = true;
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.pending.retry = Some(ms);
                    self.has_field = true;
                }
            }
            _ => {}
        }
    }
}

/// Encodes one event. Multi-line data becomes several `data:` lines.
pub fn encode(event: &SseEvent) -> Bytes {
    let mut out = String::with_capacity(event.data.len() + 32);
    if let Some(id) = &event.id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    if let Some(kind) = &event.event {
        out.push_str("event: ");
        out.push_str(kind);
        out.push('\n');
    }
    if let Some(retry) = event.retry {
        out.push_str(&format!("retry: {retry}\n"));
    }
    for line in event.data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// Encodes a JSON-RPC message as a `message` event with an optional id.
pub fn encode_message(id: Option<&str>, json: &str) -> Bytes {
    encode(&SseEvent {
        id: id.map(str::to_owned),
        event: Some("message".into()),
        data: json.to_owned(),
        retry: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.push(c).unwrap());
        }
        out
    }

    #[test]
    fn knows_when_it_is_between_events() {
        let mut d = SseDecoder::new(1 << 20);
        assert!(d.at_boundary());
        for (chunk, between) in [
            (&b"id: 1\nda"[..], false),
            (b"ta: x\n", false),
            (b"\n", true),
            (b": comment\n", true),
            (b"data: y\r\n\r\n", true),
        ] {
            d.push(chunk).unwrap();
            assert_eq!(
                d.at_boundary(),
                between,
                "after {:?}",
                String::from_utf8_lossy(chunk)
            );
        }
    }

    #[test]
    fn decodes_fields_comments_and_multiline_data() {
        let events =
            decode_all(&[b": hello\nid: 7\nevent: message\ndata: a\ndata: b\nretry: 50\n\n"]);
        assert_eq!(
            events,
            vec![SseEvent {
                id: Some("7".into()),
                event: Some("message".into()),
                data: "a\nb".into(),
                retry: Some(50)
            }]
        );
    }

    #[test]
    fn handles_every_line_ending_split_anywhere() {
        let text = b"data: one\r\n\r\ndata: two\r\rdata:three\n\n";
        for split in 0..text.len() {
            let events = decode_all(&[&text[..split], &text[split..]]);
            let data: Vec<_> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["one", "two", "three"], "split at {split}");
        }
    }

    #[test]
    fn priming_event_with_id_and_empty_data_is_dispatched() {
        let events = decode_all(&[b"id: p-0\ndata: \n\n"]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("p-0"));
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn blank_lines_without_fields_dispatch_nothing() {
        assert!(decode_all(&[b"\n\n: comment\n\n"]).is_empty());
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut d = SseDecoder::new(16);
        assert!(d.push(b"data: 0123456789abcdef0123\n").is_err());
    }

    #[test]
    fn encode_round_trips() {
        let e = SseEvent {
            id: Some("s1-2".into()),
            event: Some("message".into()),
            data: "{\"a\":1}\nsecond".into(),
            retry: None,
        };
        assert_eq!(decode_all(&[&encode(&e)]), vec![e]);
    }
}
