//! The memory store of resumable streams: for each, the bytes its clients were sent (with the
//! sidecar's ids in them) as a log of whole events bounded by `resume.max_bytes`, who is
//! attached to it, and how it ended. All streams together are bounded by
//! `resume.max_total_bytes`: past it the streams parked longest are given up first.
//!
//! With a shared store (`resume.store: redis://…`, [`super::redis`]) the same entries hold
//! this replica's streams, mirrored into Redis as they are written, and the streams of other
//! replicas that a client resumed here, followed from Redis.

use crate::config::Resume;
use crate::metrics::Metrics;
use crate::proxy::upstream_error::{Failure, UpstreamError};
use crate::sse::resume_id::Token;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Instant;
use tokio::sync::Notify;

pub(crate) struct Store {
    streams: Mutex<HashMap<String, Arc<Entry>>>,
    config: Resume,
    metrics: Arc<Metrics>,
}

/// A keyed hash of a client's credentials for one stream (see [`Store::credentials`]).
pub(crate) type Credentials = [u8; 32];

/// One resumable stream.
///
/// Laid out for the append of every chunk, after its stream's state has left the cache: the
/// lock and what an append reads and writes under it (the start of [`State`], the start of
/// [`Log`]) are the first 128 bytes, a pair of cache lines fetched together.
#[repr(C, align(128))]
pub(crate) struct Entry {
    state: Mutex<State>,
    pub token: Token,
    /// Hash of the credentials of the client that opened it.
    pub(super) credentials: Credentials,
    /// The request target (path and query) it was opened for.
    pub(super) target: Vec<u8>,
    /// The app's response head, for a resumed connection.
    pub head: ResponseHeader,
    /// A consumer attaching or leaving, or the stream given up: what the producer and an
    /// attached consumer (taken over) wait for.
    pub(super) changed: Notify,
    /// New bytes or the end in the log: what a consumer waits for. Apart from `changed`, so
    /// that a producer is not woken by its own appends.
    pub(super) data: Notify,
    /// The attached consumer read some bytes: a producer held back by it may read again.
    pub(super) space: Notify,
    /// The event loop carrying the attached consumer, woken when another client takes the
    /// stream over (the loop waits on no [`Notify`]).
    watcher: Mutex<Option<Waker>>,
}

/// What a stream's lock guards; the fields an append uses first (see [`Entry`]).
#[repr(C)]
pub(super) struct State {
    /// The generation of the consumer attached now; `None` while parked.
    pub attached: Option<u64>,
    /// How far the attached consumer has read.
    pub consumer_at: u64,
    pub log: Log,
    generation: u64,
    /// Since when no client is attached.
    pub parked_since: Option<Instant>,
    /// How the app's stream ended (its last bytes are in the log).
    pub end: Option<End>,
    /// A client received the end: no id of this stream resumes any more.
    pub end_delivered: bool,
    /// Given up for the total budget.
    pub evicted: bool,
    /// Its client closed it on purpose: over, with nothing to resume.
    pub cancelled: bool,
}

/// How the app's stream ended.
#[derive(Debug, Clone)]
pub(crate) enum End {
    Clean,
    Failed(Failure, String),
}

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
                    self.start = upto;
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

impl Store {
    pub(crate) fn new(config: Resume, metrics: Arc<Metrics>) -> Store {
        Store {
            streams: Mutex::default(),
            config,
            metrics,
        }
    }

    pub(crate) fn config(&self) -> &Resume {
        &self.config
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        // The map holds no invariant a panic could break.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hash of what identifies a client of the stream `token`: `Authorization`, and the
    /// cookies named in `resume.cookies` (the whole `Cookie` header when the list is empty).
    /// An HMAC keyed by the stream's secret token: the same on every replica, and it cannot be
    /// precomputed by anyone who does not hold the token.
    pub(crate) fn credentials(&self, req: &RequestHeader, token: &str) -> Credentials {
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let cookies: Vec<&[u8]> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let cookie = if self.config.cookies.is_empty() {
            cookies.join(&b"; "[..])
        } else {
            let mut picked: Vec<&[u8]> = cookies
                .iter()
                .flat_map(|c| c.split(|b| *b == b';'))
                .map(<[u8]>::trim_ascii)
                .filter(|pair| {
                    let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                    self.config.cookies.iter().any(|n| n.as_bytes() == name)
                })
                .collect();
            picked.sort_unstable();
            picked.join(&b"; "[..])
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
        let mut ctx = ring::hmac::Context::with_key(&key);
        // Length-prefixed, so no two (auth, cookie) pairs hash the same input.
        ctx.update(&(auth.len() as u64).to_be_bytes());
        ctx.update(&auth);
        ctx.update(&cookie);
        let mut out = [0; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// A new stream for a client whose first request was `req`, attached to that client as
    /// generation 1; `None` when attached streams alone fill `resume.max_total_bytes`.
    pub(crate) fn open(&self, req: &RequestHeader, head: ResponseHeader) -> Option<Arc<Entry>> {
        if !self.has_room() {
            return None;
        }
        let token = crate::sse::resume_id::new_token().ok()?;
        let credentials = self.credentials(req, &token);
        let entry = Entry::new(token, credentials, req.raw_path().to_vec(), head, 0);
        self.streams()
            .insert(entry.token.to_string(), entry.clone());
        Some(entry)
    }

    /// A stream of another replica that a client resumes here after event `after`, followed
    /// from the shared store; the one already followed here if there is one. `None` when the
    /// buffers are full.
    pub(crate) fn adopt(
        &self,
        token: &str,
        credentials: Credentials,
        target: Vec<u8>,
        head: ResponseHeader,
        after: u64,
    ) -> Option<(Arc<Entry>, bool)> {
        if let Some(entry) = self.find(token) {
            return Some((entry, false));
        }
        if !self.has_room() {
            return None;
        }
        let entry = Entry::new(Token::new(token)?, credentials, target, head, after);
        let mut streams = self.streams();
        if let Some(entry) = streams.get(token) {
            return Some((entry.clone(), false));
        }
        streams.insert(entry.token.to_string(), entry.clone());
        Some((entry, true))
    }

    /// Whether a new stream may buffer: parked streams make room when the total is full
    /// (their producers free it as they stop); when attached streams alone fill the budget,
    /// a new stream goes without resume (counted).
    fn has_room(&self) -> bool {
        if self.total() >= self.config.max_total_bytes && !self.evict(0) {
            self.metrics.resume_unbuffered();
            return false;
        }
        true
    }

    /// The stream an id names, if it is still here.
    pub(crate) fn find(&self, token: &str) -> Option<Arc<Entry>> {
        self.streams().get(token).cloned()
    }

    /// Whether `req` may resume `entry`: the same credentials, path and query.
    pub(crate) fn same_client(&self, entry: &Entry, req: &RequestHeader) -> bool {
        self.same_client_as(&entry.token, &entry.credentials, &entry.target, req)
    }

    /// Whether `req` may resume the stream `token` opened with `credentials` for `target`.
    pub(crate) fn same_client_as(
        &self,
        token: &str,
        credentials: &Credentials,
        target: &[u8],
        req: &RequestHeader,
    ) -> bool {
        *credentials == self.credentials(req, token) && target == req.raw_path()
    }

    /// Forgets a stream and the bytes it held.
    pub(crate) fn remove(&self, entry: &Entry) {
        let held = {
            let mut st = entry.lock();
            let held = st.log.len();
            st.log = Log::default();
            if st.attached.is_none() && st.parked_since.is_some() {
                st.parked_since = None;
                self.metrics.streams_parked_add(-1);
            }
            held
        };
        self.account(-(held as i64));
        self.streams().remove(entry.token.as_str());
    }

    /// Bytes held by every stream's log. The gauge `sse_sidecar_resume_buffer_bytes` is the
    /// count itself: every append updates one shared atomic, not two (it is the one the
    /// threads contend for).
    fn total(&self) -> usize {
        usize::try_from(self.metrics.resume_buffer_bytes()).unwrap_or(0)
    }

    /// Bytes added to (or, negative, dropped from) a log.
    pub(crate) fn account(&self, delta: i64) {
        self.metrics.resume_buffer_add(delta);
        if delta > 0 && self.total() > self.config.max_total_bytes {
            let _ = self.evict(0);
        }
    }

    /// Gives up the streams parked longest until the total is `room` bytes under the budget
    /// (their producers free the bytes and close the app connections). Returns whether any
    /// stream was given up.
    fn evict(&self, room: usize) -> bool {
        let total = self.total();
        let budget = self.config.max_total_bytes.saturating_sub(room);
        if total < budget {
            return false;
        }
        let mut parked: Vec<(Instant, usize, Arc<Entry>)> = self
            .streams()
            .values()
            .filter_map(|e| {
                let st = e.lock();
                match (st.parked_since, st.evicted) {
                    (Some(since), false) => Some((since, st.log.len(), e.clone())),
                    _ => None,
                }
            })
            .collect();
        parked.sort_by_key(|(since, _, _)| *since);
        let mut excess = (total - budget).max(1);
        let mut any = false;
        for (_, held, entry) in parked {
            if excess == 0 {
                break;
            }
            entry.lock().evicted = true;
            entry.changed.notify_waiters();
            excess = excess.saturating_sub(held.max(1));
            any = true;
        }
        any
    }
}

impl Entry {
    /// A stream attached to its first consumer (generation 1), whose log starts after event
    /// `after` (0 for a stream opened here).
    fn new(
        token: Token,
        credentials: Credentials,
        target: Vec<u8>,
        head: ResponseHeader,
        after: u64,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            state: Mutex::new(State {
                attached: Some(1),
                consumer_at: 0,
                log: Log {
                    floor_seq: after,
                    last_seq: after,
                    ..Log::default()
                },
                generation: 1,
                parked_since: None,
                end: None,
                end_delivered: false,
                evicted: false,
                cancelled: false,
            }),
            token,
            credentials,
            target,
            head,
            changed: Notify::new(),
            data: Notify::new(),
            space: Notify::new(),
            watcher: Mutex::new(None),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic mid-update leaves at worst a stale offset.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client resumes after event `seq`: it becomes the attached consumer (taking the stream
    /// over from one still attached) and reads from the returned offset. `None` when the log no
    /// longer holds the events after `seq` or the end was already delivered. Also returns how
    /// many events are replayed and the new consumer's generation.
    pub(crate) fn attach(&self, seq: u64, metrics: &Metrics) -> Option<Attached> {
        let attached = {
            let mut st = self.lock();
            if st.end_delivered || st.evicted || st.cancelled {
                return None;
            }
            let from = st.log.after(seq)?;
            st.generation += 1;
            if st.attached.is_none() {
                metrics.streams_parked_add(-1);
            }
            st.attached = Some(st.generation);
            st.parked_since = None;
            st.consumer_at = from;
            Attached {
                generation: st.generation,
                from,
                replayed: st.log.events_after(seq),
            }
        };
        // Wakes the producer (no grace timer now) and an old consumer (taken over), in its
        // task or in an event loop.
        self.changed.notify_waiters();
        if let Some(loop_) = &*self.watcher.lock().unwrap_or_else(PoisonError::into_inner) {
            loop_.wake_by_ref();
        }
        Some(attached)
    }

    /// The consumer of `generation` is done: its client left (the stream parks) or received
    /// the end (`delivered`: the stream is over).
    pub(crate) fn detach(&self, generation: u64, delivered: bool, metrics: &Metrics) {
        {
            let mut st = self.lock();
            if st.attached != Some(generation) {
                return; // taken over: the newer consumer owns the stream
            }
            st.attached = None;
            if delivered {
                st.end_delivered = true;
            } else {
                st.parked_since = Some(Instant::now());
                metrics.streams_parked_add(1);
            }
        }
        self.changed.notify_waiters();
    }

    /// The consumer of `generation` closed the stream on purpose: no resume will come.
    pub(crate) fn cancel(&self, generation: u64) {
        {
            let mut st = self.lock();
            if st.attached != Some(generation) {
                return;
            }
            st.attached = None;
            st.cancelled = true;
        }
        self.changed.notify_waiters();
    }

    /// The event loop to wake when the stream is taken over; `None` once it left the loop.
    pub(super) fn watch(&self, waker: Option<Waker>) {
        *self.watcher.lock().unwrap_or_else(PoisonError::into_inner) = waker;
    }

    /// Whether the consumer of `generation` is still the attached one.
    pub(super) fn is_attached(&self, generation: u64) -> bool {
        self.lock().attached == Some(generation)
    }

    /// The end as an error for a reader, if the app failed.
    pub(super) fn end_error(end: &End) -> Option<UpstreamError> {
        match end {
            End::Clean => None,
            End::Failed(failure, detail) => Some(UpstreamError::new(*failure, detail.clone())),
        }
    }
}

/// A consumer's place in a stream.
pub(crate) struct Attached {
    pub generation: u64,
    pub from: u64,
    pub replayed: u64,
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

    fn store(max_total: &str) -> Store {
        let yaml =
            format!("resume: {{paths: [/], max_bytes: 1KiB, max_total_bytes: {max_total}}}\n");
        let config = crate::config::Config::from_yaml(&yaml).unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        Store::new(config.resume, metrics)
    }

    fn request(auth: &str, cookie: &str, target: &[u8]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        req.insert_header("authorization", auth).unwrap();
        req.insert_header("cookie", cookie).unwrap();
        req
    }

    /// Full buffers: the stream parked longest is given up for a new one; with only
    /// attached streams, the new one goes without resume.
    #[test]
    fn the_total_budget_gives_up_parked_streams_first() {
        let store = store("2KiB");
        let head = || ResponseHeader::build(200, None).unwrap();
        let a = store.open(&request("a", "", b"/"), head()).unwrap();
        let b = store.open(&request("b", "", b"/"), head()).unwrap();
        for e in [&a, &b] {
            e.lock().log.push(Bytes::from(vec![b'x'; 1024]), &[]);
            store.account(1024);
        }
        assert!(
            store.open(&request("c", "", b"/"), head()).is_none(),
            "attached only"
        );
        b.detach(1, false, &store.metrics);
        assert!(store.open(&request("c", "", b"/"), head()).is_some());
        assert!(b.lock().evicted && !a.lock().evicted);
    }

    /// The same client resumes; another token holder with other credentials, or the same
    /// one on another target, does not.
    #[test]
    fn only_the_same_client_on_the_same_target_may_resume() {
        let store = store("1MiB");
        let head = ResponseHeader::build(200, None).unwrap();
        let e = store
            .open(&request("Bearer 1", "s=1; t=2", b"/e?x=1"), head)
            .unwrap();
        assert!(store.same_client(&e, &request("Bearer 1", "s=1; t=2", b"/e?x=1")));
        assert!(!store.same_client(&e, &request("Bearer 2", "s=1; t=2", b"/e?x=1")));
        assert!(!store.same_client(&e, &request("Bearer 1", "s=1", b"/e?x=1")));
        assert!(!store.same_client(&e, &request("Bearer 1", "s=1; t=2", b"/e?x=2")));
    }

    #[test]
    fn named_cookies_alone_identify_the_client() {
        let yaml = "resume: {paths: [/], cookies: [s]}\n";
        let config = crate::config::Config::from_yaml(yaml).unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let store = Store::new(config.resume, metrics);
        let a = store.credentials(&request("", "s=1; csrf=9", b"/"), "t");
        assert_eq!(
            a,
            store.credentials(&request("", "csrf=10; s=1", b"/"), "t")
        );
        assert_ne!(a, store.credentials(&request("", "s=2; csrf=9", b"/"), "t"));
        // Keyed by the stream: the same client hashes differently for another stream.
        assert_ne!(a, store.credentials(&request("", "s=1; csrf=9", b"/"), "u"));
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
            let mut log = Log { floor_seq: after, last_seq: after, ..Log::default() };
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
