//! Byte-level, incremental decoders for the client: HTTP/1.1 chunked framing
//! and the event-stream format (WHATWG HTML §9.2). Both accept input split at
//! any byte and never copy payloads; the SSE parser only keeps what the bench
//! needs (is this a comment, does the event have data, the leading digits of
//! its first data line = the origin's timestamp).

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    Done,
}

/// Incremental decoder of a chunked body.
pub struct Chunked {
    state: CState,
    remaining: u64,
    digits: u32,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: CState::Size,
            remaining: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    /// Whether the terminating zero-size chunk and its trailer were seen.
    pub fn done(&self) -> bool {
        self.state == CState::Done
    }

    /// Feeds wire bytes; hands each run of payload bytes to `out`.
    pub fn feed(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), ProtoError> {
        while !input.is_empty() {
            if self.state == CState::Data {
                let n = (self.remaining.min(input.len() as u64)) as usize;
                out(&input[..n]);
                input = &input[n..];
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = CState::DataCr;
                }
                continue;
            }
            let b = input[0];
            input = &input[1..];
            self.state = match self.state {
                CState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(ProtoError("chunk size too long"));
                        }
                        self.remaining =
                            self.remaining * 16 + (b as char).to_digit(16).unwrap() as u64;
                        CState::Size
                    }
                    _ if self.digits == 0 => return Err(ProtoError("bad chunk size")),
                    b';' | b' ' | b'\t' => CState::Ext,
                    b'\r' => CState::SizeLf,
                    b'\n' => self.size_line_done(),
                    _ => return Err(ProtoError("bad chunk size")),
                },
                CState::Ext => match b {
                    b'\r' => CState::SizeLf,
                    b'\n' => self.size_line_done(),
                    _ => CState::Ext,
                },
                CState::SizeLf => match b {
                    b'\n' => self.size_line_done(),
                    _ => return Err(ProtoError("bad chunk size line end")),
                },
                CState::DataCr => match b {
                    b'\r' => CState::DataLf,
                    b'\n' => CState::Size,
                    _ => return Err(ProtoError("chunk data not followed by CRLF")),
                },
                CState::DataLf => match b {
                    b'\n' => CState::Size,
                    _ => return Err(ProtoError("chunk data not followed by CRLF")),
                },
                CState::TrailerStart => match b {
                    b'\r' => CState::TrailerLf,
                    b'\n' => CState::Done,
                    _ => CState::TrailerLine,
                },
                CState::TrailerLine => match b {
                    b'\n' => CState::TrailerStart,
                    _ => CState::TrailerLine,
                },
                CState::TrailerLf => match b {
                    b'\n' => CState::Done,
                    _ => return Err(ProtoError("bad trailer end")),
                },
                CState::Done => return Err(ProtoError("bytes after the last chunk")),
                CState::Data => unreachable!(),
            };
        }
        Ok(())
    }

    fn size_line_done(&mut self) -> CState {
        self.digits = 0;
        if self.remaining == 0 {
            CState::TrailerStart
        } else {
            CState::Data
        }
    }
}

/// What the SSE parser reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// An event was dispatched; `ts` is the number its first data line starts with.
    Event { ts: Option<u64> },
    /// A comment line (heartbeats, the sidecar's opening `: ok`).
    Comment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Start,
    Name,
    /// Right after a field's colon: one space is dropped.
    ValueFirst,
    /// In a data line's leading digits.
    Digits,
    /// Rest of the line is irrelevant: jump to its end.
    Skip,
}

/// Incremental event-stream parser.
pub struct Sse {
    line: Line,
    name: [u8; 4],
    name_len: usize,
    line_is_data: bool,
    line_ts: Option<u64>,
    after_cr: bool,
    at_stream_start: bool,
    bom_seen: usize,
    event_has_data: bool,
    event_ts: Option<u64>,
}

impl Default for Sse {
    fn default() -> Self {
        Sse {
            line: Line::Start,
            name: [0; 4],
            name_len: 0,
            line_is_data: false,
            line_ts: None,
            after_cr: false,
            at_stream_start: true,
            bom_seen: 0,
            event_has_data: false,
            event_ts: None,
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Sse {
    pub fn feed(&mut self, buf: &[u8], mut on: impl FnMut(Item)) {
        let mut i = 0;
        // A UTF-8 BOM is dropped at the very start of the stream, even when split across reads.
        while self.at_stream_start && i < buf.len() {
            if buf[i] == BOM[self.bom_seen] {
                self.bom_seen += 1;
                i += 1;
                self.at_stream_start = self.bom_seen < BOM.len();
            } else {
                self.at_stream_start = false;
            }
        }
        while i < buf.len() {
            let b = buf[i];
            if self.after_cr {
                // CRLF: the LF belongs to the line the CR already ended.
                self.after_cr = false;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.line {
                Line::Start => match b {
                    b'\r' | b'\n' => self.eol(b, &mut on),
                    b':' => {
                        on(Item::Comment);
                        self.line = Line::Skip;
                    }
                    _ => {
                        self.name[0] = b;
                        self.name_len = 1;
                        self.line = Line::Name;
                    }
                },
                Line::Name => match b {
                    b'\r' | b'\n' => {
                        // A line without a colon is a field with an empty value.
                        self.line_is_data = self.name_is_data();
                        self.eol(b, &mut on);
                    }
                    b':' => {
                        self.line_is_data = self.name_is_data();
                        self.line = if self.line_is_data {
                            Line::ValueFirst
                        } else {
                            Line::Skip
                        };
                    }
                    _ => {
                        if self.name_len < self.name.len() {
                            self.name[self.name_len] = b;
                        }
                        self.name_len += 1;
                    }
                },
                Line::ValueFirst => {
                    self.line = Line::Digits;
                    if b == b' ' {
                        i += 1;
                    }
                    continue;
                }
                Line::Digits => match b {
                    b'0'..=b'9' => {
                        let d = (b - b'0') as u64;
                        self.line_ts = match self.line_ts {
                            None => Some(d),
                            Some(t) => t.checked_mul(10).and_then(|t| t.checked_add(d)),
                        };
                        if self.line_ts.is_none() {
                            self.line = Line::Skip; // overflow: not a timestamp
                        }
                    }
                    b'\r' | b'\n' => self.eol(b, &mut on),
                    _ => self.line = Line::Skip,
                },
                Line::Skip => match buf[i..].iter().position(|&c| c == b'\n' || c == b'\r') {
                    Some(p) => {
                        i += p;
                        self.eol(buf[i], &mut on);
                    }
                    None => return,
                },
            }
            i += 1;
        }
    }

    fn name_is_data(&self) -> bool {
        self.name_len == 4 && &self.name == b"data"
    }

    /// End of a line (at `b`, a CR or LF).
    fn eol(&mut self, b: u8, on: &mut impl FnMut(Item)) {
        self.after_cr = b == b'\r';
        if self.line == Line::Start {
            // Blank line: dispatch.
            if self.event_has_data {
                on(Item::Event { ts: self.event_ts });
            }
            self.event_has_data = false;
            self.event_ts = None;
        } else if self.line_is_data {
            if !self.event_has_data {
                self.event_ts = self.line_ts;
            }
            self.event_has_data = true;
        }
        self.line = Line::Start;
        self.line_is_data = false;
        self.line_ts = None;
        self.name_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_split(input: &[u8], step: usize) -> Vec<Item> {
        let mut p = Sse::default();
        let mut items = vec![];
        for part in input.chunks(step) {
            p.feed(part, |it| items.push(it));
        }
        items
    }

    /// Every split of the input yields the same items, for all three line endings.
    #[test]
    fn sse_events_comments_and_timestamps_any_split() {
        for eol in ["\n", "\r\n", "\r"] {
            let text = "\u{feff}: ok\n\ndata: 123 tail\ndata: 9\n\n: \n\nevent: x\ndata:77\n\nid: 1\n\ndata\n\ndata: abc\n\ndata: 99999999999999999999999\n\n";
            let text = text.replace('\n', eol);
            let want = vec![
                Item::Comment,
                Item::Event { ts: Some(123) },
                Item::Comment,
                Item::Event { ts: Some(77) },
                Item::Event { ts: None },
                Item::Event { ts: None },
                Item::Event { ts: None },
            ];
            for step in 1..text.len() {
                assert_eq!(
                    parse_split(text.as_bytes(), step),
                    want,
                    "eol {eol:?} step {step}"
                );
            }
        }
    }

    /// An event cut off by the end of the stream is not dispatched.
    #[test]
    fn sse_unterminated_event_is_not_dispatched() {
        assert_eq!(parse_split(b"data: 1\n", 3), vec![]);
    }

    #[test]
    fn chunked_any_split() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..wire.len() {
            let mut d = Chunked::default();
            let mut out = vec![];
            for part in wire.chunks(step) {
                d.feed(part, |p| out.extend_from_slice(p)).unwrap();
            }
            assert_eq!(out, b"hello world!", "step {step}");
            assert!(d.done());
        }
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut d = Chunked::default();
        assert!(d.feed(b"zz\r\n", |_| {}).is_err());
        let mut d = Chunked::default();
        assert!(d.feed(b"2\r\nabX", |_| {}).is_err());
    }
}
