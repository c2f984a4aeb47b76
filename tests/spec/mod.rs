//! A reference parser for `text/event-stream`, written straight from WHATWG
//! HTML §9.2.6 ("Interpreting an event stream") and kept naive on purpose:
//! the property tests trust it, so it must be obviously right rather than
//! fast. It works on bytes; field values are compared as raw bytes, which is
//! stricter than comparing decoded strings (CR, LF and `:` are ASCII and a
//! UTF-8 decoder never swallows them, so the line structure is the same).
//!
//! Besides the dispatched events it records where things happened (byte
//! offsets into the input), so a test can tell the app's items from items
//! in injected blocks, and which lines formed one block.

use std::ops::Range;

pub mod relay;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type (`message` when no `event` field set it).
    pub event_type: Vec<u8>,
    /// The data buffer with its final LF removed.
    pub data: Vec<u8>,
    /// The last event ID buffer at dispatch.
    pub id: Vec<u8>,
}

/// Something a client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// A valid `retry` field: the new reconnection time, as its digits.
    Retry(Vec<u8>),
}

/// The result of parsing a whole stream.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Items in order, each with the offset of the line that produced it
    /// (the dispatching blank line for events).
    pub items: Vec<(usize, Item)>,
    /// Each block: from the start of its first line to the end of the blank
    /// line that closed it (or the end of input if none did). Runs of blank
    /// lines form no block.
    pub blocks: Vec<Range<usize>>,
    /// At end of input: nothing after the last line end, and that line was
    /// blank (or there was no line at all).
    pub at_boundary: bool,
    /// At end of input: the data buffer is non-empty, or the unfinished last
    /// line is (or could still become) a `data` field line.
    pub mid_event: bool,
}

impl Parsed {
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.items.iter().filter_map(|(_, item)| match item {
            Item::Event(e) => Some(e),
            Item::Retry(_) => None,
        })
    }
}

/// Parses a complete stream; an unfinished last line and an undispatched
/// last event are discarded, as at end of stream.
pub fn parse(input: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut data: Vec<u8> = Vec::new();
    let mut event_type: Vec<u8> = Vec::new();
    let mut last_id: Vec<u8> = Vec::new();
    let mut block_start: Option<usize> = None;

    // One leading BOM is ignored (the UTF-8 decode step strips it).
    let mut pos = if input.starts_with(BOM) { 3 } else { 0 };
    while let Some(eol) = input[pos..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|p| pos + p)
    {
        let line = &input[pos..eol];
        let next = if input[eol] == b'\r' && input.get(eol + 1) == Some(&b'\n') {
            eol + 2
        } else {
            eol + 1
        };

        if line.is_empty() {
            if let Some(start) = block_start.take() {
                parsed.blocks.push(start..next);
            }
            // Dispatch.
            if data.is_empty() {
                event_type.clear();
            } else {
                if data.last() == Some(&b'\n') {
                    data.pop();
                }
                let event = Event {
                    event_type: if event_type.is_empty() {
                        b"message".to_vec()
                    } else {
                        std::mem::take(&mut event_type)
                    },
                    data: std::mem::take(&mut data),
                    id: last_id.clone(),
                };
                parsed.items.push((pos, Item::Event(event)));
            }
        } else {
            block_start.get_or_insert(pos);
            if line[0] != b':' {
                let (field, value) = match line.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"event" => event_type = value.to_vec(),
                    b"data" => {
                        data.extend_from_slice(value);
                        data.push(b'\n');
                    }
                    b"id" if !value.contains(&0) => last_id = value.to_vec(),
                    // "Only ASCII digits": the empty value is ignored, as
                    // browsers do.
                    b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                        parsed.items.push((pos, Item::Retry(value.to_vec())));
                    }
                    // Unknown fields, an `id` with NUL, an invalid `retry`.
                    _ => {}
                }
            }
        }
        pos = next;
    }

    let partial = &input[pos..];
    if !partial.is_empty() {
        block_start.get_or_insert(pos);
    }
    if let Some(start) = block_start {
        parsed.blocks.push(start..input.len());
    }
    parsed.at_boundary = block_start.is_none();
    parsed.mid_event = !data.is_empty()
        || (!partial.is_empty() && (b"data".starts_with(partial) || partial.starts_with(b"data:")));
    parsed
}

#[test]
fn spec_parser_follows_whatwg_examples() {
    fn events(s: &[u8]) -> Vec<(String, String, String)> {
        parse(s)
            .events()
            .map(|e| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (text(&e.event_type), text(&e.data), text(&e.id))
            })
            .collect()
    }
    let ev = |t: &str, d: &str, i: &str| (t.to_owned(), d.to_owned(), i.to_owned());

    // The spec's own examples.
    assert_eq!(
        events(b"data: YHOO\ndata: +2\ndata: 10\n\n"),
        [ev("message", "YHOO\n+2\n10", "")]
    );
    assert_eq!(
        events(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"),
        [ev("message", "first event", "1"), ev("message", "second event", "")]
    );
    assert_eq!(
        events(b"data\n\ndata\ndata\n\ndata:"),
        [ev("message", "", ""), ev("message", "\n", "")]
    );
    assert_eq!(
        events(b"data:test\n\ndata: test\n\n"),
        [ev("message", "test", ""), ev("message", "test", "")]
    );
    // Line endings, event type reset, id persistence and NUL, BOM once.
    assert_eq!(
        events(b"\xEF\xBB\xBFevent: a\rdata: 1\r\n\rid: 7\ndata: 2\n\nid: x\x00\ndata: 3\r\r"),
        [
            ev("a", "1", ""),
            ev("message", "2", "7"),
            ev("message", "3", "7")
        ]
    );
    assert_eq!(events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: 1\n\n"), []);
    // A blank line without data still resets the event type.
    assert_eq!(events(b"event: a\n\ndata: 1\n\n"), [ev("message", "1", "")]);
    let retries: Vec<_> = parse(b"retry: 10\nretry: 1x\nretry\nretry:\nretry:20\n")
        .items
        .into_iter()
        .map(|(_, item)| item)
        .collect();
    assert_eq!(
        retries,
        [Item::Retry(b"10".to_vec()), Item::Retry(b"20".to_vec())]
    );
}

#[test]
fn spec_parser_tracks_blocks_and_end_state() {
    let p = parse(b"\n: a\ndata: 1\n\n\n\nevent: x\r\n\rdata");
    assert_eq!(p.blocks, [1..14, 16..27, 27..31]);
    assert!(!p.at_boundary);
    assert!(p.mid_event);
    let p = parse(b"data: 1\n\r");
    assert!(p.at_boundary);
    assert!(!p.mid_event);
    let p = parse(b"event: x\n");
    assert!(!p.at_boundary);
    assert!(!p.mid_event);
    assert!(parse(b"").at_boundary);
    assert!(parse(b"\xEF\xBB\xBF").at_boundary);
    assert!(!parse(b"\xEF\xBB").at_boundary);
}
