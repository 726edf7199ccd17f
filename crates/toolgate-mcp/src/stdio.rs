//! Newline-delimited framing for stdio upstreams, bounded in line length.

/// One item produced by the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its terminator (and without a trailing CR).
    Line(Vec<u8>),
    /// A line exceeded the limit; its bytes were discarded up to the next newline, except
    /// its first [`HEAD_BYTES`] (enough to find whose answer it was).
    TooLong {
        /// The start of the line.
        head: Vec<u8>,
    },
}

/// How much of an over-long line [`Frame::TooLong`] keeps.
pub const HEAD_BYTES: usize = 256;

/// Splits a byte stream into lines, skipping blank ones.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes of the current unterminated line.
    buf: Vec<u8>,
    /// Longest line accepted, in bytes.
    max_line: usize,
    /// The current line already exceeded `max_line` and is being skipped.
    discarding: bool,
}

impl LineFramer {
    /// A framer refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    /// Feeds a chunk; returns the frames it completed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.append(&chunk[..i], &mut out);
                    self.end_line(&mut out);
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.append(chunk, &mut out);
                    break;
                }
            }
        }
        out
    }

    fn append(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        if self.discarding {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_line {
            let mut head = std::mem::take(&mut self.buf);
            head.truncate(HEAD_BYTES);
            let more = HEAD_BYTES.saturating_sub(head.len()).min(bytes.len());
            head.extend_from_slice(&bytes[..more]);
            self.discarding = true;
            out.push(Frame::TooLong { head });
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_line(&mut self, out: &mut Vec<Frame>) {
        if self.discarding {
            self.discarding = false;
            return;
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(Frame::Line(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks_and_skips_blanks() {
        let mut f = LineFramer::new(100);
        assert_eq!(f.push(b"{\"a\":"), vec![]);
        assert_eq!(
            f.push(b"1}\r\n\n  \n{}\n{"),
            vec![
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::Line(b"{}".to_vec())
            ]
        );
        assert_eq!(f.push(b"}\n"), vec![Frame::Line(b"{}".to_vec())]);
    }

    #[test]
    fn overlong_lines_are_reported_once_and_skipped() {
        let mut f = LineFramer::new(4);
        assert_eq!(f.push(b"abc"), vec![]);
        assert_eq!(
            f.push(b"defgh"),
            vec![Frame::TooLong {
                head: b"abcdefgh".to_vec()
            }]
        );
        assert_eq!(f.push(b"ijk\nok\n"), vec![Frame::Line(b"ok".to_vec())]);
    }
}

/// The `id` of a JSON-RPC message whose text begins with `head` (a number, as the gateway's
/// own ids to a stdio child are), if a top-level `"id"` comes before `head` ends: how the
/// gateway tells whose answer an over-long line was. Nested values are skipped, strings
/// with their escapes.
pub fn id_in_head(head: &[u8]) -> Option<u64> {
    let mut at = skip_space(head, 0);
    if head.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(head, at);
        if head.get(at) == Some(&b',') {
            at = skip_space(head, at + 1);
        }
        let (key, after) = string_at(head, at)?;
        at = skip_space(head, after);
        if head.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(head, at + 1);
        if key == b"id" {
            let digits = head[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            // The number must end inside `head`, or it may go on.
            let end = head.get(at + digits)?;
            if digits == 0 || !matches!(end, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                return None;
            }
            return std::str::from_utf8(&head[at..at + digits])
                .ok()?
                .parse()
                .ok();
        }
        at = skip_value(head, at)?;
    }
}

fn skip_space(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The raw bytes of the string starting at `at` and the index just past it.
fn string_at(text: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match text.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some((&text[at + 1..i], i + 1)),
            _ => i += 1,
        }
    }
}

/// The index just past the JSON value starting at `at`, if it ends within `text`.
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => string_at(text, at).map(|(_, end)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match text.get(i)? {
                    b'"' => {
                        i = string_at(text, i)?.1;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = text[at..]
                .iter()
                .take_while(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                .count();
            (at + len < text.len()).then_some(at + len)
        }
    }
}

#[cfg(test)]
mod id_tests {
    use super::id_in_head;

    #[test]
    fn finds_the_top_level_id_before_the_head_ends() {
        assert_eq!(
            id_in_head(br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"te"#),
            Some(42)
        );
        assert_eq!(id_in_head(br#" { "id" : 7 , "result""#), Some(7));
        // Nested ids, strings holding "id", escapes: only the top level counts.
        assert_eq!(
            id_in_head(br#"{"meta":{"id":1},"note":"\"id\":2","x":[{"id":3}],"id":4,"r"#),
            Some(4)
        );
    }

    #[test]
    fn gives_up_rather_than_guess() {
        assert_eq!(
            id_in_head(br#"{"jsonrpc":"2.0","result":{"content":"xxxx"#),
            None
        );
        assert_eq!(
            id_in_head(br#"{"jsonrpc":"2.0","id":12"#),
            None,
            "the number may go on"
        );
        assert_eq!(
            id_in_head(br#"{"id":"abc","result""#),
            None,
            "not a gateway id"
        );
        assert_eq!(id_in_head(b"not json"), None);
        assert_eq!(id_in_head(br#"{"result":{"a":[1,2"#), None);
    }
}
