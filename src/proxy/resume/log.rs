//! A resumable stream's log: the bytes its clients were sent, with the sidecar's ids in them,
//! from its start or from the first whole event still held, and where each event ends, so
//! that a client resuming after any held event reads on from the byte after it
//! ([`Log::after`]). Bounded per stream by whole events ([`Log::trim`]); the
//! [`super::store`] keeps one per stream under the stream's lock.

use bytes::Bytes;
use std::collections::VecDeque;

/// The bytes sent to a stream's clients, from its start; the oldest whole events are dropped
/// past the per-stream bound.
///
/// An append touches the fields up to `chunks` and one new chunk record: an event's end is
/// kept in the record of the chunk that completes it, and only the other events a chunk
/// completes (an app writing several at once) go to `inner`.
#[derive(Default)]
#[repr(C)]
pub(super) struct Log {
    /// Stream offset of the first byte held.
    pub start: u64,
    /// Stream offset just past the last byte held.
    pub end: u64,
    /// The last event dropped (0 before any): resuming after it starts at `start`.
    floor_seq: u64,
    /// The last event completed.
    pub last_seq: u64,
    /// The bytes held, in order (a reader finds its chunk by binary search: a caught-up
    /// reader reads the last one of thousands).
    chunks: VecDeque<Chunk>,
    /// Events completed in a chunk before the last one it completes, still held: each one's
    /// seq and the offset just past it.
    inner: VecDeque<(u64, u64)>,
}

/// A chunk of the log and the last event it completes.
struct Chunk {
    /// Stream offset of its first byte.
    at: u64,
    bytes: Bytes,
    /// The last event completed by the end of this chunk, in it or before it.
    seq: u64,
    /// Stream offset just past event `seq` when this chunk completes it.
    seq_end: u64,
}

impl Log {
    /// An empty log whose next event is `after + 1` (a stream followed from the shared store
    /// from there): resuming after event `after` starts at its first byte.
    pub(super) fn after_event(after: u64) -> Log {
        Log {
            floor_seq: after,
            last_seq: after,
            ..Log::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Appends bytes; `ends` are (seq, offset within `bytes` just past the event).
    pub(super) fn push(&mut self, bytes: Bytes, ends: &[(u64, usize)]) {
        let at = self.end;
        let mut seq_end = 0;
        if let Some((&(last, off), rest)) = ends.split_last() {
            self.inner
                .extend(rest.iter().map(|&(seq, off)| (seq, at + off as u64)));
            self.last_seq = last;
            seq_end = at + off as u64;
        }
        self.end += bytes.len() as u64;
        if !bytes.is_empty() {
            self.chunks.push_back(Chunk {
                at,
                bytes,
                seq: self.last_seq,
                seq_end,
            });
        }
    }

    /// The bytes from `at` to the end of the chunk holding it; `None` when `at` is the end or
    /// no longer held.
    pub(super) fn read(&self, at: u64) -> Option<Bytes> {
        if at < self.start || at >= self.end {
            return None;
        }
        let i = self.chunks.partition_point(|c| c.at <= at).checked_sub(1)?;
        let c = &self.chunks[i];
        Some(c.bytes.slice((at - c.at) as usize..))
    }

    /// Where the bytes after event `seq` start, if the log still holds them.
    pub(super) fn after(&self, seq: u64) -> Option<u64> {
        if seq == self.floor_seq {
            return Some(self.start);
        }
        if seq < self.floor_seq {
            return None;
        }
        self.end_of(seq)
    }

    /// The offset just past event `seq`, one the log holds.
    fn end_of(&self, seq: u64) -> Option<u64> {
        // The chunk that completes it: the first whose last completed event is it or later.
        let c = self
            .chunks
            .get(self.chunks.partition_point(|c| c.seq < seq))?;
        if c.seq == seq {
            return Some(c.seq_end);
        }
        let i = self.inner.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(self.inner[i].1)
    }

    /// Events completed after `seq`.
    pub(super) fn events_after(&self, seq: u64) -> u64 {
        self.last_seq.saturating_sub(seq)
    }

    /// Drops the oldest whole events while the log is over `max` bytes, never past `keep`
    /// (what an attached consumer has not read yet). Returns the bytes dropped.
    pub(super) fn trim(&mut self, max: usize, keep: Option<u64>) -> usize {
        let before = self.len();
        while self.len() > max && self.floor_seq < self.last_seq {
            let seq = self.floor_seq + 1;
            let Some(upto) = self.end_of(seq) else {
                break;
            };
            if keep.is_some_and(|k| upto > k) {
                break;
            }
            while let Some(front) = self.chunks.front_mut() {
                let len = front.bytes.len() as u64;
                if self.start + len <= upto {
                    self.start += len;
                    self.chunks.pop_front();
                } else {
                    let cut = (upto - self.start) as usize;
                    front.bytes = front.bytes.slice(cut..);
                    front.at = upto;
                    break;
                }
            }
            self.start = upto;
            self.floor_seq = seq;
            while self.inner.front().is_some_and(|&(s, _)| s <= seq) {
                self.inner.pop_front();
            }
        }
        before - self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(events: &[&[u8]]) -> Log {
        let mut log = Log::default();
        for (i, e) in events.iter().enumerate() {
            log.push(Bytes::copy_from_slice(e), &[(i as u64 + 1, e.len())]);
        }
        log
    }

    fn read_all(log: &Log, mut at: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = log.read(at) {
            at += b.len() as u64;
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn resumes_after_any_held_event() {
        let log = log_of(&[b"a\n\n", b"bb\n\n", b"ccc\n\n"]);
        assert_eq!(read_all(&log, log.after(0).unwrap()), b"a\n\nbb\n\nccc\n\n");
        assert_eq!(read_all(&log, log.after(1).unwrap()), b"bb\n\nccc\n\n");
        assert_eq!(read_all(&log, log.after(3).unwrap()), b"");
        assert_eq!(log.after(4), None);
        assert_eq!(log.events_after(1), 2);
    }

    #[test]
    fn trims_whole_events_from_the_front_and_remembers_the_last_one() {
        let mut log = log_of(&[b"a\n\n", b"bb\n\n", b"ccc\n\n"]);
        let dropped = log.trim(8, None);
        assert_eq!(dropped, 7);
        assert_eq!(log.after(1), None, "event 1's successor is gone");
        assert_eq!(read_all(&log, log.after(2).unwrap()), b"ccc\n\n");
        assert_eq!(log.len(), 5);
    }

    #[test]
    fn trimming_never_passes_what_the_consumer_has_not_read() {
        let mut log = log_of(&[b"a\n\n", b"bb\n\n", b"ccc\n\n"]);
        assert_eq!(log.trim(1, Some(3)), 3);
        assert_eq!(read_all(&log, 3), b"bb\n\nccc\n\n");
    }

    proptest::proptest! {
        /// Whatever the chunking and trimming, a read at any offset held returns the stream's
        /// bytes from there to the end of that chunk, and every offset no longer held reads
        /// nothing.
        #[test]
        fn reads_at_any_offset_match_the_stream(
            events in proptest::collection::vec((1usize..40, 1usize..4), 1..60),
            max in 0usize..400,
        ) {
            let mut log = Log::default();
            let mut stream = Vec::new();
            for (seq, &(len, parts)) in events.iter().enumerate() {
                let event: Vec<u8> = (0..len).map(|i| (stream.len() + i) as u8).collect();
                let cut = len * (parts - 1) / parts;
                log.push(Bytes::copy_from_slice(&event[..cut]), &[]);
                log.push(Bytes::copy_from_slice(&event[cut..]), &[(seq as u64 + 1, len - cut)]);
                stream.extend_from_slice(&event);
                if seq % 7 == 6 {
                    log.trim(max, None);
                }
            }
            log.trim(max, None);
            proptest::prop_assert_eq!(log.end, stream.len() as u64);
            for at in 0..=log.end + 1 {
                let got = log.read(at);
                if at < log.start || at >= log.end {
                    proptest::prop_assert!(got.is_none(), "offset {} read past the log", at);
                    continue;
                }
                let got = got.unwrap();
                proptest::prop_assert!(!got.is_empty());
                let want = &stream[at as usize..at as usize + got.len()];
                proptest::prop_assert_eq!(&got[..], want);
            }
            proptest::prop_assert_eq!(&read_all(&log, log.start)[..], &stream[log.start as usize..]);
        }
    }

    proptest::proptest! {
        /// Whatever the chunking (several events in a chunk, an event over several) and the
        /// trimming, resuming after any event finds the offset just past it while the log
        /// holds it, and nothing once it is dropped; trimming drops whole events, never past
        /// `keep`. The model: every event's end in a list.
        #[test]
        fn resuming_after_any_event_finds_its_end(
            chunks in proptest::collection::vec((1usize..30, 0usize..4), 1..80),
            max in 0usize..300,
            keep_back in proptest::option::of(0u64..200),
            after in 0u64..5,
        ) {
            let mut log = Log::after_event(after);
            // (seq, offset just past it), every event completed so far.
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut seq = after;
            for (i, &(len, events)) in chunks.iter().enumerate() {
                let events = events.min(len);
                // Events end evenly spread in the chunk, the last one at its end.
                let ends: Vec<(u64, usize)> = (1..=events)
                    .map(|k| (seq + k as u64, len * k / events))
                    .collect();
                for &(s, off) in &ends {
                    model.push((s, log.end + off as u64));
                }
                seq += events as u64;
                log.push(Bytes::from(vec![b'x'; len]), &ends);
                if i % 5 == 4 {
                    let keep = keep_back.map(|b| log.end.saturating_sub(b));
                    let floor = log.floor_seq;
                    let dropped = log.trim(max, keep);
                    // Whole events only, never past keep, and only while over the bound.
                    proptest::prop_assert!(log.floor_seq >= floor);
                    if dropped > 0 {
                        let end = model.iter().find(|(s, _)| *s == log.floor_seq).unwrap().1;
                        proptest::prop_assert_eq!(log.start, end);
                        proptest::prop_assert!(keep.is_none_or(|k| log.start <= k));
                    }
                    let next = model.iter().find(|(s, _)| *s == log.floor_seq + 1);
                    if let Some(&(_, next_end)) = next {
                        let over = log.len() > max;
                        let blocked = keep.is_some_and(|k| next_end > k);
                        proptest::prop_assert!(!over || blocked, "stopped trimming early");
                    }
                }
            }
            proptest::prop_assert_eq!(log.last_seq, seq);
            proptest::prop_assert_eq!(log.after(log.floor_seq), Some(log.start));
            for s in 0..=seq + 1 {
                let want = match model.iter().find(|(m, _)| *m == s) {
                    _ if s == log.floor_seq => Some(log.start),
                    Some(&(_, end)) if s > log.floor_seq => Some(end),
                    _ => None,
                };
                proptest::prop_assert_eq!(log.after(s), want, "after event {}", s);
            }
            if let Some(at) = log.after(seq) {
                proptest::prop_assert_eq!(read_all(&log, at).len() as u64, log.end - at);
            }
        }
    }

    #[test]
    fn an_event_split_over_chunks_is_trimmed_whole() {
        let mut log = Log::default();
        log.push(Bytes::from_static(b"data: x"), &[]);
        log.push(Bytes::from_static(b"\n\ndata: y\n"), &[(1, 2)]);
        log.push(Bytes::from_static(b"\n"), &[(2, 1)]);
        assert_eq!(log.trim(10, None), 9);
        assert_eq!(read_all(&log, log.after(1).unwrap()), b"data: y\n\n");
    }
}
