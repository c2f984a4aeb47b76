//! Client side of an event stream: a WHATWG HTML §9.2 parser fed with bytes as they arrive,
//! and [`SseStream`], which reads a [`Response`] through an optional streaming gunzip into
//! the parser, keeping every item's arrival time.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use super::client::{End, Piece, Response};

/// A dispatched event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// `event:` field, `message` when absent.
    pub event: String,
    /// Data lines joined by LF.
    pub data: String,
    /// The last event ID at dispatch.
    pub id: String,
}

impl Event {
    /// `seq` from the origin's payload `{"seq":N,"t_ns":T}`.
    pub fn seq(&self) -> Option<u64> {
        json_u64(&self.data, "seq")
    }

    /// `t_ns` from the origin's payload: when the origin wrote the event.
    pub fn t_ns(&self) -> Option<u64> {
        json_u64(&self.data, "t_ns")
    }
}

fn json_u64(s: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = s.find(&pat)? + pat.len();
    let digits: String = s[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// What the parser yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Event(Event),
    /// A comment line, text after the colon (as is).
    Comment(String),
    /// A valid `retry:` field.
    Retry(u64),
}

/// An item and the arrival time (ns) of the bytes that completed it.
#[derive(Clone, Debug)]
pub struct Timed {
    pub item: Item,
    pub at_ns: u64,
}

/// Incremental event-stream parser (WHATWG HTML §9.2.6).
#[derive(Default)]
pub struct Parser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    head: Vec<u8>,
    data: String,
    data_set: bool,
    event: String,
    last_id: String,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds bytes; returns the items they complete.
    pub fn feed(&mut self, bytes: &[u8], at_ns: u64) -> Vec<Timed> {
        if !self.started {
            // A BOM is stripped only at the very start of the stream; it may arrive split.
            let bom = b"\xEF\xBB\xBF";
            self.head.extend_from_slice(bytes);
            if self.head.len() < bom.len() && bom.starts_with(&self.head) {
                return Vec::new();
            }
            self.started = true;
            let all = std::mem::take(&mut self.head);
            let rest = all.strip_prefix(bom).unwrap_or(&all);
            return self.feed_lines(rest, at_ns, Vec::new());
        }
        self.feed_lines(bytes, at_ns, Vec::new())
    }

    fn feed_lines(&mut self, bytes: &[u8], at_ns: u64, mut out: Vec<Timed>) -> Vec<Timed> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(item) = self.process(&line) {
                        out.push(Timed { item, at_ns });
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn process(&mut self, line: &[u8]) -> Option<Item> {
        if line.is_empty() {
            let fired = self.data_set.then(|| {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                Item::Event(Event {
                    event: if self.event.is_empty() {
                        "message".into()
                    } else {
                        self.event.clone()
                    },
                    data,
                    id: self.last_id.clone(),
                })
            });
            self.data.clear();
            self.data_set = false;
            self.event.clear();
            return fired;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(c) = line.strip_prefix(':') {
            return Some(Item::Comment(c.to_string()));
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.data_set = true;
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                return value.parse().ok().map(Item::Retry)
            }
            _ => {}
        }
        None
    }
}

/// A resumable stream's event id as the sidecar writes it (issue 15): `<token>.<seq>` or
/// `<token>.<seq>.<app id>`, the token 22 base64url characters. Parsed here rather than with the
/// crate's own parser so the tests check the documented format, not the implementation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeId {
    pub token: String,
    pub seq: u64,
    /// The app's own last event ID, when the app sent one.
    pub app: Option<String>,
}

impl ResumeId {
    /// `None` when `id` is not of that form.
    pub fn parse(id: &str) -> Option<ResumeId> {
        let token = id.get(..22)?;
        let token_ok = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let rest = id[22..].strip_prefix('.')?;
        let (seq, app) = match rest.split_once('.') {
            Some((seq, app)) if !app.is_empty() => (seq, Some(app.to_string())),
            Some(_) => return None,
            None => (rest, None),
        };
        let seq_ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
        if !(token_ok && seq_ok) {
            return None;
        }
        Some(ResumeId {
            token: token.to_string(),
            seq: seq.parse().ok()?,
            app,
        })
    }
}

/// Parses a whole byte stream.
pub fn parse_all(bytes: &[u8]) -> Vec<Item> {
    Parser::new()
        .feed(bytes, 0)
        .into_iter()
        .map(|t| t.item)
        .collect()
}

/// Only the events of a parse.
pub fn events_of(items: &[Item]) -> Vec<Event> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Streaming gunzip: compressed bytes in, whatever can be decoded so far out.
pub struct Gunzip(flate2::write::GzDecoder<Vec<u8>>);

impl Default for Gunzip {
    fn default() -> Self {
        Gunzip(flate2::write::GzDecoder::new(Vec::new()))
    }
}

impl Gunzip {
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        self.0.write_all(data)?;
        self.0.flush()?;
        Ok(std::mem::take(self.0.get_mut()))
    }
}

/// An event stream read from a [`Response`].
pub struct SseStream {
    pub resp: Response,
    gunzip: Option<Gunzip>,
    parser: Parser,
    queue: VecDeque<Timed>,
    /// Decoded (and gunzipped) body bytes so far.
    pub bytes: Vec<u8>,
    /// Every item so far, with arrival times.
    pub items: Vec<Timed>,
    /// `(arrival_ns, decoded bytes)` per read, in order.
    pub reads: Vec<(u64, usize)>,
}

impl SseStream {
    /// Wraps a response; gunzips when it has `Content-Encoding: gzip`.
    pub fn new(resp: Response) -> SseStream {
        let gz = resp
            .head
            .tokens("content-encoding")
            .iter()
            .any(|t| t == "gzip");
        SseStream {
            resp,
            gunzip: gz.then(Gunzip::default),
            parser: Parser::new(),
            queue: VecDeque::new(),
            bytes: Vec::new(),
            items: Vec::new(),
            reads: Vec::new(),
        }
    }

    /// The next item within `timeout`; `None` at the end of the body or on timeout
    /// (see [`Self::ended`]).
    pub async fn next(&mut self, timeout: Duration) -> Option<Timed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.queue.pop_front() {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.resp.next(left).await {
                Piece::Data(d, at) => {
                    let d = match self.gunzip.as_mut() {
                        Some(g) => g.push(&d).expect("gunzip"),
                        None => d,
                    };
                    self.reads.push((at, d.len()));
                    self.bytes.extend_from_slice(&d);
                    let items = self.parser.feed(&d, at);
                    self.items.extend(items.iter().cloned());
                    self.queue.extend(items);
                }
                Piece::End(_) | Piece::Timeout => return None,
            }
        }
    }

    /// The next event (comments and retry fields are skipped but kept in `items`), with its
    /// arrival time.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<(Event, u64)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Timed {
                    item: Item::Event(e),
                    at_ns,
                } => return Some((e, at_ns)),
                _ => continue,
            }
        }
    }

    /// Reads to the end of the body (or `timeout`); returns how the body ended.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Option<End> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next(left).await.is_none() {
                return self.resp.end.clone();
            }
        }
    }

    /// How the body ended, if it has.
    pub fn ended(&self) -> Option<&End> {
        self.resp.end.as_ref()
    }

    /// All events so far, with arrival times.
    pub fn events(&self) -> Vec<(Event, u64)> {
        self.items
            .iter()
            .filter_map(|t| match &t.item {
                Item::Event(e) => Some((e.clone(), t.at_ns)),
                _ => None,
            })
            .collect()
    }

    /// All comments so far, with arrival times.
    pub fn comments(&self) -> Vec<(String, u64)> {
        self.items
            .iter()
            .filter_map(|t| match &t.item {
                Item::Comment(c) => Some((c.clone(), t.at_ns)),
                _ => None,
            })
            .collect()
    }
}

/// Asserts that every event but the last arrived before the origin wrote the next one (the
/// origin's `t_ns` stamp in the next event). `what` names the path for messages.
pub fn assert_each_before_next(events: &[(Event, u64)], what: &str) {
    assert!(
        events.len() >= 2,
        "{what}: need at least two events, got {events:?}"
    );
    for w in events.windows(2) {
        let (a, at) = &w[0];
        let (b, _) = &w[1];
        let next_sent = b.t_ns().expect("t_ns in event payload");
        assert!(
            *at < next_sent,
            "{what}: event {:?} arrived at {:.1} ms, after the origin sent event {:?} at {:.1} ms \
             (it was sent at {:.1} ms)",
            a.seq(),
            super::ms(*at),
            b.seq(),
            super::ms(next_sent),
            super::ms(a.t_ns().unwrap_or(0)),
        );
    }
}

/// Checks the stream of events has seq 1..=n in order.
pub fn assert_seqs(events: &[(Event, u64)], n: u64, what: &str) {
    let seqs: Vec<Option<u64>> = events.iter().map(|(e, _)| e.seq()).collect();
    let want: Vec<Option<u64>> = (1..=n).map(Some).collect();
    assert_eq!(seqs, want, "{what}: events received (by seq)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_parse() {
        let t = "AbC-_0123456789abcdefgh";
        let t = &t[..22];
        let id = ResumeId::parse(&format!("{t}.7")).unwrap();
        assert_eq!((id.token.as_str(), id.seq, id.app), (t, 7, None));
        let id = ResumeId::parse(&format!("{t}.12.a.b")).unwrap();
        assert_eq!((id.seq, id.app.as_deref()), (12, Some("a.b")));
        for bad in [
            "7",
            "",
            &format!("{t}."),
            &format!("{t}.x"),
            &format!("{t}.1."),
            &t[..21],
        ] {
            assert_eq!(ResumeId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_all_line_ends_and_bom() {
        let s = b"\xEF\xBB\xBF: hi\r\ndata: a\r\rdata: b\n\nid: 7\nevent: x\ndata\n\nretry: 10\n\n";
        let items = parse_all(s);
        assert_eq!(items[0], Item::Comment(" hi".into()));
        let ev = events_of(&items);
        assert_eq!(ev[0].data, "a");
        assert_eq!(ev[1].data, "b");
        assert_eq!(ev[2].event, "x");
        assert_eq!(ev[2].id, "7");
        assert_eq!(ev[2].data, "");
        assert!(items.contains(&Item::Retry(10)));
    }
}
