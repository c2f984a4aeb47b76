//! The memory store of resumable streams: for each, the bytes its clients were sent (with the
//! sidecar's ids in them) as a log of whole events bounded by `resume.max_bytes`, who is
//! attached to it, and how it ended. All streams together are bounded by
//! `resume.max_total_bytes`: past it the streams parked longest are given up first.
//!
//! With a shared store (`resume.store: redis://…`, [`super::redis`]) the same entries hold
//! this replica's streams, mirrored into Redis as they are written, and the streams of other
//! replicas that a client resumed here, followed from Redis.

use super::log::Log;
use crate::config::Resume;
use crate::metrics::Metrics;
use crate::proxy::upstream_error::{Failure, UpstreamError};
use crate::sse::resume_id::Token;
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashMap;
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
                log: Log::after_event(after),
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
    use bytes::Bytes;

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
}
