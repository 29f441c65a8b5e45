//! Lines from an agent's pipe, whatever its bytes: decoded lossily (an
//! invalid sequence becomes U+FFFD; a character split across reads stays
//! whole, as lines are decoded only once complete), and bounded — a line
//! longer than the limit is never held whole, so an agent writing hundreds
//! of megabytes without a newline costs a few kilobytes here. The pipe is
//! always read to its end: a reader that stopped would leave the agent to
//! die of SIGPIPE.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One read from a [`Lines`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its terminator.
    Text(String),
    /// A line longer than the limit: its first `limit` bytes (decoded
    /// lossily); the rest up to the next line end was read and dropped.
    Cut(String),
}

/// Lines of an async reader. `\n` ends a line (a `\r` before it is
/// dropped); with [`Lines::carriage_returns`], a lone `\r` ends one too, so
/// progress output that redraws one line reads as a line per redraw.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    limit: usize,
    /// Bytes of the current line past the limit are being dropped.
    dropping: bool,
    /// The current line was already returned cut (its rest is dropped).
    cut_sent: bool,
    cr_ends_lines: bool,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    /// Lines of at most `limit` bytes.
    pub fn new(reader: R, limit: usize) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            limit: limit.max(1),
            dropping: false,
            cut_sent: false,
            cr_ends_lines: false,
        }
    }

    /// A lone `\r` ends a line too (for stderr's progress bars).
    pub fn carriage_returns(mut self) -> Self {
        self.cr_ends_lines = true;
        self
    }

    /// The next line; `None` at the end of the pipe (a last line without a
    /// terminator is returned first). A line past the limit is returned
    /// once, [`Line::Cut`], as soon as the limit is reached. Cancel-safe:
    /// every byte taken from the reader is kept in `self` before the next
    /// await, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Option<std::io::Result<Line>> {
        loop {
            let available = match self.reader.fill_buf().await {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            if available.is_empty() {
                // End of the pipe: a last line without its terminator.
                let cut_sent = std::mem::take(&mut self.cut_sent);
                if self.buf.is_empty() || cut_sent {
                    self.buf.clear();
                    self.dropping = false;
                    return None;
                }
                return Some(Ok(self.finish_line()));
            }
            let end = available
                .iter()
                .position(|&b| b == b'\n' || (self.cr_ends_lines && b == b'\r'));
            let (piece, used, ended) = match end {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !self.dropping {
                // One byte over the limit for a `\r` that a `\n` may follow.
                let room = self.limit + 1 - self.buf.len();
                if piece.len() > room {
                    self.buf.extend_from_slice(&piece[..room]);
                    self.dropping = true;
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
            self.reader.consume(used);
            if ended {
                if std::mem::take(&mut self.cut_sent) {
                    // Its cut head was returned already.
                    self.buf.clear();
                    self.dropping = false;
                    continue;
                }
                return Some(Ok(self.finish_line()));
            }
            if self.dropping && !self.cut_sent {
                // Over the limit with no end in sight: say so now rather
                // than after the rest arrives (which may be never).
                self.cut_sent = true;
                self.buf.truncate(self.limit);
                return Some(Ok(Line::Cut(self.take())));
            }
        }
    }

    /// The line in the buffer, ended: without a trailing `\r`, cut when
    /// longer than the limit.
    fn finish_line(&mut self) -> Line {
        let dropping = std::mem::take(&mut self.dropping);
        if !dropping && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if dropping || self.buf.len() > self.limit {
            self.buf.truncate(self.limit);
            Line::Cut(self.take())
        } else {
            Line::Text(self.take())
        }
    }

    fn take(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], limit: usize, cr: bool) -> Vec<Line> {
        // A one-byte buffer: every boundary falls between reads.
        let reader = tokio::io::BufReader::with_capacity(1, input);
        let mut lines = Lines::new(reader, limit);
        if cr {
            lines = lines.carriage_returns();
        }
        let mut out = Vec::new();
        while let Some(l) = lines.next().await {
            out.push(l.unwrap());
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[tokio::test]
    async fn invalid_bytes_are_replaced_and_split_characters_kept() {
        let got = all("caf\u{e9}\r\ncaf\u{e9}\n".as_bytes(), 100, false).await;
        assert_eq!(got, [text("café"), text("café")]);
        let got = all(b"caf\xe9\nx\xffy", 100, false).await;
        assert_eq!(got, [text("caf\u{FFFD}"), text("x\u{FFFD}y")]);
    }

    #[tokio::test]
    async fn long_lines_are_cut_once_and_reading_goes_on() {
        let mut input = vec![b'a'; 50];
        input.extend_from_slice(b"\nok\n");
        let got = all(&input, 8, false).await;
        assert_eq!(got, [Line::Cut("a".repeat(8)), text("ok")]);
        // Without any end: cut once, then nothing more.
        let got = all(&[b'b'; 40], 8, false).await;
        assert_eq!(got, [Line::Cut("b".repeat(8))]);
    }

    #[tokio::test]
    async fn carriage_returns_end_lines_only_when_asked() {
        let got = all(b"10%\r50%\r100%\ndone\n", 100, true).await;
        assert_eq!(got, [text("10%"), text("50%"), text("100%"), text("done")]);
        let got = all(b"10%\r50%\n", 100, false).await;
        assert_eq!(got, [text("10%\r50%")]);
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_fits_with_either_ending() {
        assert_eq!(
            all(b"abcd\r\nabcd\nabcd", 4, false).await,
            [text("abcd"), text("abcd"), text("abcd")]
        );
        assert_eq!(all(b"abcd\r", 4, false).await, [text("abcd")]);
        assert_eq!(all(b"abcde\n", 4, false).await, [Line::Cut("abcd".into())]);
        assert_eq!(
            all(b"abcd\rx\n", 4, false).await,
            [Line::Cut("abcd".into())]
        );
    }
}
