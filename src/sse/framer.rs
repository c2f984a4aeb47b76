//! Event-boundary tracking over the raw bytes of one SSE stream.
//!
//! The framer keeps just enough state to answer "would a block written now
//! be a block of its own?" and "how many events did this chunk complete?"
//! (WHATWG HTML §9.2.6, DESIGN §2):
//!
//! - lines end with CRLF, LF or a lone CR; a CR ending one chunk may pair
//!   with an LF starting the next, so a trailing CR is remembered;
//! - of each line only the start is classified: empty (a blank line), a
//!   `data` field (`data` then `:` or the end of the line), or anything
//!   else. The rest of the line is skipped with `memchr2`, so long payload
//!   lines cost one SIMD scan and no per-byte branching;
//! - a UTF-8 BOM is only meaningful as the stream's first three bytes.
//!
//! A framer made with [`Framer::stamping`] also gives every dispatched
//! event an `id:` line of its own (see [`super::resume_id`]), placed right
//! before the blank line that dispatches it, so it overrides any `id` the
//! app gave that event. To know the app's own last event ID it also reads
//! `id` field lines. Only such a framer copies bytes: a chunk that completes
//! an event is rebuilt with the id lines in it.

use bytes::{Bytes, BytesMut};
use memchr::memchr2;

use super::resume_id::{ResumeId, Token};
use smallvec::SmallVec;
use std::ops::Range;

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// What [`Framer::forward`] hands back for one upstream chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Bytes to write downstream: a zero-copy slice of the chunk, except at
    /// stream start when held-back BOM bytes turned out not to be a BOM.
    pub bytes: Bytes,
    /// App events completed (dispatched) by this chunk.
    pub events: u32,
    /// A stamping framer: each event completed in [`Forwarded::bytes`], as its
    /// seq and the offset just past the first byte of the line end that
    /// dispatched it, in order (a client that has those bytes has the event).
    /// Empty, and never allocated, for a framer that does not stamp.
    pub ends: EventEnds,
}

/// [`Forwarded::ends`]: on the stack for a chunk that completes up to two
/// events.
pub type EventEnds = SmallVec<[(u64, usize); 2]>;

/// How much of the current line has been seen. Only the line's first five
/// bytes matter: they decide whether it is blank, a `data` field or other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At a line start, nothing seen yet.
    Start,
    /// Seen `d`, `da`, `dat`, `data`: still possibly a `data` field.
    D,
    Da,
    Dat,
    DataName,
    /// Seen `data:`; the value is irrelevant.
    Data,
    /// Stamping only: seen `i`, `id`, `id:` (the value is read into
    /// [`Stamp::pending`]).
    I,
    IdName,
    IdValue,
    /// Anything else (comment, other field, `datax`, ...).
    Other,
}

impl Line {
    /// Classifies one more byte (never CR or LF) of a line still undecided.
    /// `ids`: `id` lines are told apart (a stamping framer).
    fn advance(self, b: u8, ids: bool) -> Line {
        match (self, b) {
            (Line::Start, b'd') => Line::D,
            (Line::Start, b'i') if ids => Line::I,
            (Line::I, b'd') => Line::IdName,
            (Line::IdName, b':') => Line::IdValue,
            (Line::D, b'a') => Line::Da,
            (Line::Da, b't') => Line::Dat,
            (Line::Dat, b'a') => Line::DataName,
            (Line::DataName, b':') => Line::Data,
            (Line::Data, _) => Line::Data,
            _ => Line::Other,
        }
    }

    /// Whether the line is decided, so the rest of it can be skipped.
    fn decided(self) -> bool {
        matches!(self, Line::Data | Line::Other | Line::IdValue)
    }
}

/// Where the stream stands with respect to a leading BOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bom {
    /// Stream start: this many bytes (0..=2) of a BOM seen so far. When
    /// dropping, they are held back; otherwise already forwarded.
    Pending(u8),
    /// Past the point where a BOM could be.
    Done,
}

/// Per-stream framing state: boundary tracking and BOM handling. One per SSE
/// stream; a few bytes, no allocation per chunk.
#[derive(Debug, Clone)]
pub struct Framer {
    line: Line,
    /// The last byte processed was a CR ending a line: a leading LF in the
    /// next chunk belongs to the same line end.
    after_cr: bool,
    /// A line other than a blank line was completed since the last blank
    /// line (or stream start): a block is open.
    block_open: bool,
    /// A `data` line was completed in the open block, so the next blank line
    /// dispatches an event.
    has_data: bool,
    bom: Bom,
    /// Drop a BOM at the start of the app's body (something was written
    /// downstream before the app's first byte).
    drop_bom: bool,
    /// Set for a resumable stream: every dispatched event gets an id.
    stamp: Option<Box<Stamp>>,
}

/// A stamping framer's state between chunks: the stream's token, the events
/// so far and the app's ids.
///
/// With thousands of streams a stream's state has left the cache by its
/// next event, so what an event without an `id` field of the app's touches
/// (`seq`, `app_id`'s length, `token`) is one cache line, and the token is
/// held inline rather than behind a pointer of its own. Where a chunk's id
/// lines go is gathered in [`IdLines`], which lives only while the chunk is
/// forwarded.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct Stamp {
    /// Events dispatched so far.
    seq: u64,
    /// The app's last event ID buffer (WHATWG HTML §9.2.6): set by every
    /// `id` field without NUL, kept across events.
    app_id: Vec<u8>,
    token: Token,
    /// The first byte of the pending value was seen (a leading space, if
    /// any, is already skipped).
    pending_started: bool,
    /// The pending value holds a NUL: the spec ignores the field.
    pending_nul: bool,
    /// The value of the `id` line being read.
    pending: Vec<u8>,
}

/// For the chunk being forwarded by a stamping framer: where its id lines go,
/// gathered while it is scanned and written straight into the output. On the
/// stack (nothing allocated) for a chunk completing up to two events whose app
/// gives no ids.
#[derive(Default)]
struct IdLines {
    /// Each dispatching blank line: its offset in the output before any id
    /// line goes in, and the app's last event ID at that event, in `apps`.
    marks: SmallVec<[(usize, Range<usize>); 2]>,
    /// Those app ids, back to back.
    apps: Vec<u8>,
    /// Added to scan positions to make them output offsets.
    base: usize,
}

impl Stamp {
    /// More of an `id` line's value.
    fn capture(&mut self, mut bytes: &[u8]) {
        if !self.pending_started && !bytes.is_empty() {
            self.pending_started = true;
            if bytes[0] == b' ' {
                bytes = &bytes[1..];
            }
        }
        self.pending_nul |= bytes.contains(&0);
        self.pending.extend_from_slice(bytes);
    }

    /// The `id` line ended: the spec's last event ID buffer takes its value.
    fn end_id_line(&mut self) {
        if !self.pending_nul {
            std::mem::swap(&mut self.app_id, &mut self.pending);
        }
        self.pending.clear();
        self.pending_started = false;
        self.pending_nul = false;
    }

    /// An event is dispatched by the blank line at scan position `pos`.
    fn dispatch(&mut self, pos: usize, ids: &mut IdLines) {
        self.seq += 1;
        let from = ids.apps.len();
        ids.apps.extend_from_slice(&self.app_id);
        ids.marks.push((ids.base + pos, from..ids.apps.len()));
    }

    /// `bytes` (a chunk's output) with the id lines of the events in `ids`,
    /// the last of which is `self.seq`, each right before the blank line that
    /// dispatches it; and each event's seq and end in the result.
    fn insert(&self, bytes: &[u8], ids: &IdLines) -> (Bytes, EventEnds) {
        let first = self.seq + 1 - ids.marks.len() as u64;
        let token = self.token.as_bytes();
        let events = || {
            (first..)
                .zip(&ids.marks)
                .map(|(seq, (at, app))| (seq, *at, &ids.apps[app.clone()]))
        };
        // Exactly: the log keeps the buffer.
        let room: usize = events()
            .map(|(seq, _, app)| ResumeId::line_len(token, seq, app))
            .sum();
        let mut out = BytesMut::with_capacity(bytes.len() + room);
        let mut ends = EventEnds::new();
        let mut last = 0;
        for (seq, at, app) in events() {
            out.extend_from_slice(&bytes[last..at]);
            ResumeId::write_line(&mut out, token, seq, app);
            // Just past the first byte of the line end that dispatches it.
            ends.push((seq, out.len() + 1));
            last = at;
        }
        out.extend_from_slice(&bytes[last..]);
        (out.freeze(), ends)
    }
}

impl Framer {
    /// `wrote_prefix`: the sidecar wrote bytes (opening comment, padding,
    /// retry) before the app's first byte; then a UTF-8 BOM at the very start
    /// of the app's body is dropped, since mid-stream it would corrupt the
    /// first field name. Without a prefix the BOM is forwarded untouched
    /// (unless a block is injected before the app's first byte, see
    /// [`Framer::injected`]).
    pub fn new(wrote_prefix: bool) -> Self {
        Framer {
            line: Line::Start,
            after_cr: false,
            block_open: false,
            has_data: false,
            bom: Bom::Pending(0),
            drop_bom: wrote_prefix,
            stamp: None,
        }
    }

    /// A framer for a resumable stream: as [`Framer::new`], and every
    /// dispatched event gets `id: <token>.<seq>[.<app id>]` (see
    /// [`super::resume_id`]) right before the blank line that dispatches it.
    pub fn stamping(wrote_prefix: bool, token: Token) -> Self {
        let mut f = Framer::new(wrote_prefix);
        f.stamp = Some(Box::new(Stamp {
            seq: 0,
            app_id: Vec::new(),
            token,
            pending_started: false,
            pending_nul: false,
            pending: Vec::new(),
        }));
        f
    }

    /// Feeds one upstream chunk; returns the bytes to forward downstream and
    /// the number of app events completed in it. O(chunk) with `memchr2`.
    ///
    /// The bytes are `chunk` itself (or a slice of it when a BOM is dropped),
    /// except when BOM bytes held back from earlier chunks turn out not to be
    /// a BOM: then they are copied in front of this chunk.
    #[must_use]
    pub fn forward(&mut self, chunk: Bytes) -> Forwarded {
        let mut ids = IdLines::default();
        let (bytes, events) = self.forward_unstamped(chunk, &mut ids);
        let (bytes, ends) = match self.stamp.as_ref() {
            Some(st) if !ids.marks.is_empty() => st.insert(&bytes, &ids),
            _ => (bytes, EventEnds::new()),
        };
        Forwarded {
            bytes,
            events,
            ends,
        }
    }

    /// [`Framer::forward`] before id lines go in, which `ids` gathers: the
    /// bytes and the events they complete.
    #[inline]
    fn forward_unstamped(&mut self, chunk: Bytes, ids: &mut IdLines) -> (Bytes, u32) {
        match self.bom {
            Bom::Done => {
                let events = self.scan(&chunk, ids);
                (chunk, events)
            }
            Bom::Pending(seen) => self.forward_at_start(chunk, usize::from(seen), ids),
        }
    }

    /// [`Framer::forward`] while the first bytes could still be a BOM.
    #[cold]
    fn forward_at_start(&mut self, chunk: Bytes, seen: usize, ids: &mut IdLines) -> (Bytes, u32) {
        let want = &BOM[seen..];
        let matched = chunk
            .iter()
            .zip(want)
            .take_while(|(got, want)| got == want)
            .count();
        if matched == want.len() {
            // A whole BOM. Classification starts after it either way.
            self.bom = Bom::Done;
            let rest = chunk.slice(matched..);
            ids.base = if self.drop_bom { 0 } else { matched };
            let events = self.scan(&rest, ids);
            let bytes = if self.drop_bom { rest } else { chunk };
            return (bytes, events);
        }
        if matched == chunk.len() {
            // Only a BOM prefix so far (or an empty chunk): undecided.
            self.bom = Bom::Pending((seen + matched) as u8);
            let bytes = if self.drop_bom { Bytes::new() } else { chunk };
            return (bytes, 0);
        }
        // Not a BOM: the bytes seen so far start the first line.
        self.bom = Bom::Done;
        // BOM bytes hold no CR/LF, so this only classifies the line start.
        let _ = self.scan(&BOM[..seen + matched], ids);
        let released = if self.drop_bom { seen } else { 0 };
        ids.base = released + matched;
        let events = self.scan(&chunk[matched..], ids);
        let bytes = if self.drop_bom && seen > 0 {
            let mut joined = BytesMut::with_capacity(seen + chunk.len());
            joined.extend_from_slice(&BOM[..seen]);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        } else {
            chunk
        };
        (bytes, events)
    }

    /// Bytes still held back at end of stream: the start of a BOM that never
    /// completed. Forward them before ending the stream.
    #[must_use]
    pub fn finish(&mut self) -> Bytes {
        match self.bom {
            Bom::Pending(seen) if self.drop_bom && seen > 0 => {
                self.bom = Bom::Done;
                let _ = self.scan(&BOM[..usize::from(seen)], &mut IdLines::default());
                Bytes::from_static(&BOM[..usize::from(seen)])
            }
            _ => Bytes::new(),
        }
    }

    /// True when the stream is between events: at stream start, or right
    /// after a blank line, with no partial line pending downstream. Only
    /// then may the relay inject a block. Held-back BOM bytes are not
    /// downstream yet, so they do not count as a partial line.
    ///
    /// "Right after a blank line" is stricter than "not mid-event": after
    /// `event: x\n` an injected blank line would reset the event type.
    pub fn at_boundary(&self) -> bool {
        let bom_forwarded = matches!(self.bom, Bom::Pending(n) if n > 0 && !self.drop_bom);
        self.line == Line::Start && !self.block_open && !bom_forwarded
    }

    /// Tells the framer the relay wrote a whole block (heartbeat, retry)
    /// downstream. Call it only when [`Framer::at_boundary`] was true.
    ///
    /// A CR that ended the last line can no longer pair with an LF that
    /// arrives next, so that LF becomes its own empty line: a blank line in
    /// an empty block, which dispatches nothing and resets nothing that is
    /// not already reset. A block written before the app's first byte means
    /// the app's BOM would land mid-stream, so from then on it is dropped.
    pub fn injected(&mut self) {
        self.after_cr = false;
        if self.bom == Bom::Pending(0) {
            self.drop_bom = true;
        }
    }

    /// True when closing the stream now could lose an app event: a `data`
    /// line was completed since the last blank line, or the pending partial
    /// line is (or could still become) a `data` line. False at a boundary
    /// and inside blocks that cannot dispatch (comments, `event:`/`id:`
    /// lines with no data yet). `!mid_event()` does not imply
    /// [`Framer::at_boundary`].
    pub fn mid_event(&self) -> bool {
        self.has_data
            || matches!(
                self.line,
                Line::D | Line::Da | Line::Dat | Line::DataName | Line::Data
            )
    }

    /// Runs the line state machine over `buf`; returns events dispatched.
    /// A stamping framer also records in `ids` where id lines go: at scan
    /// positions plus `ids.base`, which is 0 again for the next slice.
    fn scan(&mut self, buf: &[u8], ids: &mut IdLines) -> u32 {
        let events = self.scan_lines(buf, ids);
        ids.base = 0;
        events
    }

    #[inline]
    fn scan_lines(&mut self, buf: &[u8], out: &mut IdLines) -> u32 {
        let ids = self.stamp.is_some();
        let mut events = 0u32;
        let mut i = 0;
        if self.after_cr {
            let Some(&first) = buf.first() else {
                return 0;
            };
            self.after_cr = false;
            if first == b'\n' {
                i = 1;
            }
        }
        while i < buf.len() {
            let end = if self.line.decided() {
                // The rest of the line is irrelevant (but an id's value): jump to its end.
                let found = memchr2(b'\r', b'\n', &buf[i..]);
                if self.line == Line::IdValue {
                    let stop = found.map_or(buf.len(), |p| i + p);
                    if let Some(st) = self.stamp.as_mut() {
                        st.capture(&buf[i..stop]);
                    }
                }
                match found {
                    Some(p) => i + p,
                    None => break,
                }
            } else {
                let b = buf[i];
                if b != b'\r' && b != b'\n' {
                    self.line = self.line.advance(b, ids);
                    i += 1;
                    continue;
                }
                i
            };
            // buf[end] is CR or LF: the current line ends here.
            if self.end_line(end, out) {
                events = events.saturating_add(1);
            }
            i = end + 1;
            if buf[end] == b'\r' {
                match buf.get(i) {
                    Some(b'\n') => i += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        events
    }

    /// Ends the current line, whose end is at scan position `pos`; returns
    /// whether it dispatched an event.
    fn end_line(&mut self, pos: usize, ids: &mut IdLines) -> bool {
        let line = std::mem::replace(&mut self.line, Line::Start);
        match line {
            Line::Start => {
                let dispatched = self.has_data;
                self.has_data = false;
                self.block_open = false;
                if dispatched {
                    if let Some(st) = self.stamp.as_mut() {
                        st.dispatch(pos, ids);
                    }
                }
                dispatched
            }
            // `id` alone is an id field with an empty value: it resets the
            // last event ID.
            Line::IdName | Line::IdValue => {
                if let Some(st) = self.stamp.as_mut() {
                    st.end_id_line();
                }
                self.block_open = true;
                false
            }
            // `data` alone is a data field with an empty value: it still
            // makes the data buffer non-empty.
            Line::DataName | Line::Data => {
                self.has_data = true;
                self.block_open = true;
                false
            }
            Line::D | Line::Da | Line::Dat | Line::I | Line::Other => {
                self.block_open = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` in order; returns (output, events per chunk).
    fn run(framer: &mut Framer, chunks: &[&[u8]]) -> (Vec<u8>, Vec<u32>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        for chunk in chunks {
            let f = framer.forward(Bytes::copy_from_slice(chunk));
            out.extend_from_slice(&f.bytes);
            events.push(f.events);
        }
        out.extend_from_slice(&framer.finish());
        (out, events)
    }

    #[test]
    fn counts_events_with_every_line_ending() {
        for stream in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\rdata: b\n\r\n",
        ] {
            let mut f = Framer::new(false);
            let (out, events) = run(&mut f, &[stream]);
            assert_eq!(out, stream);
            assert_eq!(events, [2], "{stream:?}");
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn dispatch_needs_a_data_line() {
        let mut f = Framer::new(false);
        let (_, events) = run(
            &mut f,
            &[b"event: x\nid: 1\n\n: comment\n\nretry: 5\n\ndata\n\n"],
        );
        // Only the bare `data` line (empty value) makes an event.
        assert_eq!(events, [1]);
    }

    #[test]
    fn data_field_name_must_be_exact() {
        for (stream, want) in [
            (&b"data:x\n\n"[..], 1),
            (b"data\n\n", 1),
            (b"data\r\r", 1),
            (b"dat\n\n", 0),
            (b"datax: y\n\n", 0),
            (b"data x\n\n", 0),
            (b" data: x\n\n", 0),
            (b"Data: x\n\n", 0),
            (b"d\n\n", 0),
        ] {
            let mut f = Framer::new(false);
            let (_, events) = run(&mut f, &[stream]);
            assert_eq!(events, [want], "{:?}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn data_split_anywhere() {
        let stream = b"data: x\n\n";
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut f = Framer::new(false);
                let (out, events) = run(
                    &mut f,
                    &[&stream[..cut], &stream[cut..cut2], &stream[cut2..]],
                );
                assert_eq!(out, stream);
                assert_eq!(events.iter().sum::<u32>(), 1, "cuts {cut} {cut2}");
            }
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let mut f = Framer::new(false);
        assert_eq!(f.forward(Bytes::from_static(b"data: x\r")).events, 0);
        assert!(!f.at_boundary());
        // The LF pairs with the CR: no blank line, no event yet.
        assert_eq!(f.forward(Bytes::from_static(b"\n")).events, 0);
        assert!(f.mid_event());
        assert_eq!(f.forward(Bytes::from_static(b"\r")).events, 1);
        assert!(f.at_boundary());
        // An empty chunk must not forget the pending CR.
        assert_eq!(f.forward(Bytes::new()).events, 0);
        assert_eq!(f.forward(Bytes::from_static(b"\ndata: y\n")).events, 0);
        assert!(f.mid_event());
        assert_eq!(f.forward(Bytes::from_static(b"\n")).events, 1);
    }

    #[test]
    fn injection_unpairs_a_trailing_cr() {
        let mut f = Framer::new(false);
        assert_eq!(f.forward(Bytes::from_static(b"data: x\r\r")).events, 1);
        assert!(f.at_boundary());
        f.injected();
        // The LF is now its own blank line: still a boundary, no event.
        assert_eq!(f.forward(Bytes::from_static(b"\n")).events, 0);
        assert!(f.at_boundary());
    }

    #[test]
    fn boundary_only_right_after_a_blank_line() {
        let mut f = Framer::new(false);
        assert!(f.at_boundary());
        assert!(!f.mid_event());
        let _ = f.forward(Bytes::from_static(b"event: x\n"));
        // A blank line here would reset the event type: not a boundary.
        assert!(!f.at_boundary());
        assert!(!f.mid_event());
        let _ = f.forward(Bytes::from_static(b"da"));
        assert!(!f.at_boundary());
        assert!(f.mid_event());
        let _ = f.forward(Bytes::from_static(b"ta: 1\n"));
        assert!(f.mid_event());
        assert_eq!(f.forward(Bytes::from_static(b"\n: hi\n")).events, 1);
        assert!(!f.at_boundary());
        assert!(!f.mid_event());
        let _ = f.forward(Bytes::from_static(b"\n"));
        assert!(f.at_boundary());
    }

    #[test]
    fn bom_forwarded_without_prefix() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        for cut in 0..=stream.len() {
            let mut f = Framer::new(false);
            let (out, events) = run(&mut f, &[&stream[..cut], &stream[cut..]]);
            assert_eq!(out, stream);
            // The BOM is not part of the field name.
            assert_eq!(events.iter().sum::<u32>(), 1, "cut {cut}");
        }
    }

    #[test]
    fn bom_dropped_after_prefix_even_when_split() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut f = Framer::new(true);
                let (out, events) = run(
                    &mut f,
                    &[&stream[..cut], &stream[cut..cut2], &stream[cut2..]],
                );
                assert_eq!(out, &stream[3..], "cuts {cut} {cut2}");
                assert_eq!(events.iter().sum::<u32>(), 1);
            }
        }
    }

    #[test]
    fn only_the_first_bom_is_dropped() {
        let mut f = Framer::new(true);
        let (out, events) = run(&mut f, &[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"]);
        assert_eq!(out, b"\xEF\xBB\xBFdata: x\n\n");
        // The second BOM is part of a field name, so no data field.
        assert_eq!(events, [0]);
    }

    #[test]
    fn held_partial_bom_that_is_not_a_bom_is_released() {
        let mut f = Framer::new(true);
        assert!(f.forward(Bytes::from_static(b"\xEF")).bytes.is_empty());
        assert!(f.forward(Bytes::from_static(b"\xBB")).bytes.is_empty());
        // Nothing is downstream yet, so a block may still go first.
        assert!(f.at_boundary());
        let got = f.forward(Bytes::from_static(b"x\ndata: 1\n\n"));
        assert_eq!(got.bytes, Bytes::from_static(b"\xEF\xBBx\ndata: 1\n\n"));
        assert_eq!(got.events, 1);

        let mut f = Framer::new(true);
        assert!(f.forward(Bytes::from_static(b"\xEF\xBB")).bytes.is_empty());
        assert_eq!(f.finish(), Bytes::from_static(b"\xEF\xBB"));
        assert!(f.finish().is_empty());
    }

    #[test]
    fn partial_bom_without_prefix_is_not_a_boundary() {
        let mut f = Framer::new(false);
        let got = f.forward(Bytes::from_static(b"\xEF\xBB"));
        assert_eq!(got.bytes, Bytes::from_static(b"\xEF\xBB"));
        assert!(!f.at_boundary());
        let _ = f.forward(Bytes::from_static(b"\xBF"));
        assert!(f.at_boundary());
        assert!(f.finish().is_empty());
    }

    #[test]
    fn injecting_before_the_first_byte_drops_the_bom() {
        let mut f = Framer::new(false);
        assert!(f.at_boundary());
        f.injected();
        let (out, events) = run(&mut f, &[b"\xEF\xBB\xBFdata: x\n\n"]);
        assert_eq!(out, b"data: x\n\n");
        assert_eq!(events, [1]);
    }

    #[test]
    fn forwarded_bytes_share_the_chunk() {
        let mut f = Framer::new(true);
        let chunk = Bytes::from(b"\xEF\xBB\xBFdata: x\n\n".to_vec());
        let got = f.forward(chunk.clone());
        assert_eq!(got.bytes.as_ptr(), chunk[3..].as_ptr());
        let chunk = Bytes::from(vec![b'x'; 1 << 16]);
        let got = f.forward(chunk.clone());
        assert_eq!(got.bytes.as_ptr(), chunk.as_ptr());
        assert_eq!(got.bytes.len(), chunk.len());
    }

    #[test]
    fn long_line_then_boundary() {
        let mut f = Framer::new(false);
        let mut stream = b"data: ".to_vec();
        stream.extend(std::iter::repeat_n(b'z', 100 * 1024));
        stream.extend_from_slice(b"\r\n\r\n");
        let (_, events) = run(&mut f, &stream.chunks(4096).collect::<Vec<_>>());
        assert_eq!(events.iter().sum::<u32>(), 1);
        assert!(f.at_boundary());
    }
}
