//! Newline-delimited framing for stdio upstreams, bounded in line length.

/// One item produced by the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its terminator (and without a trailing CR).
    Line(Vec<u8>),
    /// A line exceeded the limit; its bytes were discarded up to the next newline.
    TooLong,
}

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
            self.buf.clear();
            self.discarding = true;
            out.push(Frame::TooLong);
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
        assert_eq!(f.push(b"defgh"), vec![Frame::TooLong]);
        assert_eq!(f.push(b"ijk\nok\n"), vec![Frame::Line(b"ok".to_vec())]);
    }
}
