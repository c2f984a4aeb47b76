//! A resumable stream runs in two halves, so that it outlives its client's connection:
//!
//! - the **producer** ([`spawn_producer`]), a task of its own, reads the app's body through a
//!   stamping [`Framer`] (every event gets the sidecar's id) into the stream's log, whether or
//!   not a client is attached; it holds back while an attached client is a whole buffer
//!   behind (so backpressure still reaches the app), gives the stream up `resume.grace` after
//!   its client left, and closes the app's connection then;
//! - a **consumer** per client connection ([`consume`]) runs the ordinary stream loop
//!   ([`crate::proxy::stream::run`]) with the log as its app side, from the start of the
//!   stream or from the event after the client's `Last-Event-ID`. Heartbeats, the drain, the
//!   idle and write timeouts stay where they are for every other stream.
//!
//! A client that resumes while an older connection is still attached takes the stream over:
//! the older consumer sees its client as gone and its connection is closed.
//!
//! The producer reads a [`Source`]: the app's body ([`AppSource`], mirrored into the shared
//! store when there is one), or, for a stream of another replica resumed here, the shared
//! store ([`super::redis::Follow`]). Either way the consumers, the grace and the budget are
//! the same code.

use super::source::{Framed, Over, Source};
use super::store::{Attached, End, Entry, Store};
use crate::metrics::{Outcome, ResumeResult};
use crate::proxy::shared::Shared;
use crate::proxy::stream::{
    self, respond, AppBody, Body, Client, Ended, Progress, StreamSummary, WriteError,
};
use crate::proxy::upstream_error::{Failure, UpstreamError};
use crate::sse::resume_id::ResumeId;
use crate::sse::{EventEnds, Framer};
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

/// What a request on a resumable path carrying a `Last-Event-ID` finds.
pub(crate) enum Lookup {
    /// Not a resume: no store, another path, no `Last-Event-ID`, or not one of ours.
    NotOurs,
    /// One of our ids, but no stream to resume (counted): a fresh request for the app.
    Fresh,
    /// The stream, attached to this client from the event after the id.
    Resume(Arc<Entry>, Attached),
}

/// Matches a request to the stream its `Last-Event-ID` names (see [`ResumeResult`]): in this
/// replica's store, else in the shared one.
pub(crate) async fn lookup(shared: &Arc<Shared>, req: &RequestHeader) -> Lookup {
    let Some(store) = shared.resume.as_deref() else {
        return Lookup::NotOurs;
    };
    if !shared.config.is_resume_path(req.uri.path()) {
        return Lookup::NotOurs;
    }
    let Some(id) = req
        .headers
        .get("last-event-id")
        .and_then(|v| ResumeId::parse(v.as_bytes()))
    else {
        return Lookup::NotOurs;
    };
    // The stream: this replica's, or one followed here from the shared store.
    let entry = match store.find(id.token) {
        Some(entry) if store.same_client(&entry, req) => Ok(entry),
        Some(_) => Err(ResumeResult::Denied),
        None => match &shared.redis {
            Some(redis) => follow(shared, store, redis, &id, req).await,
            None => Err(ResumeResult::Unknown),
        },
    };
    let result = match entry.map(|e| (e.attach(id.seq, &shared.metrics), e)) {
        Ok((Some(attached), entry)) => {
            shared
                .metrics
                .resume(ResumeResult::Resumed, attached.replayed);
            return Lookup::Resume(entry, attached);
        }
        Ok((None, _)) => ResumeResult::Unknown,
        Err(result) => result,
    };
    shared.metrics.resume(result, 0);
    Lookup::Fresh
}

/// A stream this replica does not hold, found in the shared store: followed from there into a
/// local entry (one per stream here, whatever its clients).
async fn follow(
    shared: &Arc<Shared>,
    store: &Store,
    redis: &Arc<super::redis::Redis>,
    id: &ResumeId<'_>,
    req: &RequestHeader,
) -> Result<Arc<Entry>, ResumeResult> {
    let found = super::redis::find(store, redis, id, req).await?;
    let (entry, new) = store
        .adopt(
            id.token,
            found.credentials,
            found.target,
            found.head,
            id.seq,
        )
        .ok_or(ResumeResult::Unknown)?;
    if new {
        let follow = super::redis::Follow::new(redis.clone(), id.token, id.seq);
        spawn_source(shared.clone(), entry.clone(), follow);
    }
    Ok(entry)
}

/// A new resumable stream for `req`, whose app answered `head`: `None` (a stream relayed
/// without resume) when this is not a resumable path or the buffers are full.
pub(crate) fn open(
    shared: &Shared,
    req: &RequestHeader,
    head: &ResponseHeader,
) -> Option<(Arc<Entry>, Attached)> {
    let store = shared.resume.as_deref()?;
    if !shared.config.is_resume_path(req.uri.path()) {
        return None;
    }
    // With the shared store away, a new stream could not be resumed elsewhere: it goes
    // without resume until the store is back.
    if shared.redis.as_ref().is_some_and(|r| !r.is_up()) {
        return None;
    }
    let entry = store.open(req, head.clone())?;
    let first = Attached {
        generation: 1,
        from: 0,
        replayed: 0,
    };
    Some((entry, first))
}

/// Starts the producer of `entry`, reading `app`. `wrote_prefix`: the client's response had
/// an opening block before the app's first byte (so a BOM there is dropped).
pub(crate) fn spawn_producer<A: AppBody + Send + 'static>(
    shared: Arc<Shared>,
    entry: Arc<Entry>,
    app: A,
    wrote_prefix: bool,
) {
    let framer = Framer::stamping(wrote_prefix, entry.token);
    start_producer(&shared, entry, framer, app);
}

/// The producer task of `entry`, reading `app` through `framer` (a fresh one, or the one an
/// [`Inline`](super::inline::Inline) half stamped the stream with so far), mirrored into the shared store if any.
pub(super) fn start_producer<A: AppBody + Send + 'static>(
    shared: &Arc<Shared>,
    entry: Arc<Entry>,
    framer: Framer,
    app: A,
) {
    let mirror = shared
        .redis
        .as_ref()
        .map(|redis| super::redis::Mirror::new(redis, &entry));
    let source = AppSource {
        framer,
        app: Some(app),
        mirror,
        shared: shared.clone(),
    };
    tokio::spawn(produce(shared.clone(), entry, source));
}

/// The app's body, stamped with the sidecar's ids, mirrored into the shared store if any.
struct AppSource<A> {
    framer: Framer,
    /// `None` once its body ended (or failed).
    app: Option<A>,
    mirror: Option<super::redis::Mirror>,
    shared: Arc<Shared>,
}

impl<A: AppBody + Send> Source for AppSource<A> {
    async fn next(&mut self) -> Result<Option<Framed>, UpstreamError> {
        let Some(app) = self.app.as_mut() else {
            return Ok(None);
        };
        match app.next().await {
            Ok(Some(bytes)) => {
                let framed = frame(&mut self.framer, bytes);
                if let Some(m) = &mut self.mirror {
                    m.push(&framed);
                }
                Ok(Some(framed))
            }
            Ok(None) => {
                // The app's connection closes now.
                self.app = None;
                let rest = self.framer.finish();
                if let Some(m) = &mut self.mirror {
                    m.end(rest.clone(), None);
                }
                Ok((!rest.is_empty()).then_some(Framed {
                    bytes: rest,
                    ends: EventEnds::new(),
                }))
            }
            Err(e) => {
                self.app = None;
                self.shared.metrics.upstream_error(e.failure.reason());
                if let Some(m) = &mut self.mirror {
                    m.end(Bytes::new(), Some(&e));
                }
                Err(e)
            }
        }
    }

    async fn followed_elsewhere(&mut self) -> bool {
        match &self.mirror {
            Some(m) => m.followed_elsewhere().await,
            None => false,
        }
    }

    fn hands_off(&self) -> bool {
        self.mirror.is_some()
    }

    async fn over(&mut self, how: Over) {
        // The app's connection closes now: its body is over, or nobody will read it.
        self.app = None;
        if let Some(m) = self.mirror.take() {
            m.over(how).await;
        }
    }
}

/// Stamps the app's `bytes` and numbers the events they complete.
pub(super) fn frame(framer: &mut Framer, bytes: Bytes) -> Framed {
    let fwd = framer.forward(bytes);
    Framed {
        bytes: fwd.bytes,
        ends: fwd.ends,
    }
}

/// Starts a producer reading `source` into `entry` (a stream followed from the shared store).
pub(crate) fn spawn_source<S: Source + 'static>(shared: Arc<Shared>, entry: Arc<Entry>, source: S) {
    tokio::spawn(produce(shared, entry, source));
}

async fn produce<S: Source>(shared: Arc<Shared>, entry: Arc<Entry>, mut source: S) {
    let Some(store) = shared.resume.clone() else {
        return;
    };
    let (grace, max_bytes) = (store.config().grace, store.config().max_bytes);
    let started = Instant::now();
    // Draining, a stream with a shared store stays until its source ends: its clients resume
    // on other replicas. The process waits for it (bounded by the hand-off timeout).
    let drain = &shared.drain;
    let hands_off = source.hands_off();
    let _handoff = hands_off.then(|| drain.handoff());
    let handoff_deadline = || (hands_off && drain.is_draining()).then(|| drain.handoff_deadline());

    // Until the source ends or fails, or the stream is given up.
    let mut over = loop {
        let mut changed = pin!(entry.changed.notified());
        changed.as_mut().enable();
        let handoff = handoff_deadline();
        let (lagging, expires, evicted, cancelled) = {
            let st = entry.lock();
            let behind = (st.log.end - st.consumer_at) as usize;
            let lagging = st.attached.is_some() && behind >= max_bytes;
            let expires = handoff.or(st.parked_since.map(|t| t + grace));
            (lagging, expires, st.evicted, st.cancelled)
        };
        if cancelled {
            break Some(Over::Cancelled);
        }
        if evicted {
            break Some(Over::GivenUp);
        }
        if expires.is_some_and(|t| Instant::now() >= t) {
            if handoff.is_none() && source.followed_elsewhere().await {
                // A client on another replica follows it: a new grace.
                let mut st = entry.lock();
                if st.parked_since.is_some() {
                    st.parked_since = Some(Instant::now());
                }
                continue;
            }
            break Some(Over::GivenUp);
        }
        tokio::select! {
            biased;
            // A client attached, left or took over; the stream was given up.
            () = &mut changed => {}
            // The drain started: the hand-off deadline replaces the grace.
            () = drain.signal(), if handoff.is_none() && hands_off => {}
            // The attached client read some: read the source again.
            () = entry.space.notified(), if lagging => {}
            // The grace of a parked stream ran out.
            () = sleep_until(expires) => {}
            chunk = source.next(), if !lagging => match chunk {
                Ok(Some(framed)) => {
                    append(&store, &entry, framed, max_bytes, None);
                }
                Ok(None) => {
                    finish(&entry, End::Clean);
                    break None;
                }
                Err(e) => {
                    finish(&entry, End::Failed(e.failure, e.detail));
                    break None;
                }
            }
        }
    };

    // The end waits in the log for a client, until one receives it or the grace runs out
    // (while draining with a shared store, the end is there for other replicas).
    while over.is_none() {
        let mut changed = pin!(entry.changed.notified());
        changed.as_mut().enable();
        let expires = {
            let st = entry.lock();
            if st.end_delivered {
                over = Some(Over::Delivered);
                break;
            }
            if st.cancelled {
                over = Some(Over::Cancelled);
                break;
            }
            if st.evicted {
                over = Some(Over::GivenUp);
                break;
            }
            st.parked_since.map(|t| t + grace)
        };
        if hands_off && drain.is_draining() {
            over = Some(Over::HandedOff);
            break;
        }
        if expires.is_some_and(|t| Instant::now() >= t) {
            over = Some(Over::GivenUp);
            break;
        }
        tokio::select! {
            () = &mut changed => {}
            () = drain.signal(), if hands_off => {}
            () = sleep_until(expires) => {}
        }
    }
    let over = over.unwrap_or(Over::GivenUp);
    if over == Over::GivenUp {
        shared
            .metrics
            .stream_finished(Outcome::ParkedExpired, started.elapsed());
    }
    source.over(over).await;
    store.remove(&entry);
}

/// Sleeps until `at`; forever when there is no deadline.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Puts bytes into the log, drops what the bound says, wakes the consumer. `reader`: the
/// generation of a consumer that reads them at once ([`Inline`](super::inline::Inline)); then the log's end, if it
/// is still the attached one.
pub(super) fn append(
    store: &Store,
    entry: &Entry,
    framed: Framed,
    max_bytes: usize,
    reader: Option<u64>,
) -> Option<u64> {
    let added = framed.bytes.len();
    let (dropped, read) = {
        let mut st = entry.lock();
        st.log.push(framed.bytes, &framed.ends);
        let read = reader.filter(|g| st.attached == Some(*g)).map(|_| {
            st.consumer_at = st.log.end;
            st.log.end
        });
        let keep = st.attached.map(|_| st.consumer_at);
        (st.log.trim(max_bytes, keep), read)
    };
    store.account(added as i64 - dropped as i64);
    // The attached consumer read them here; any other reader waits for them.
    if read.is_none() {
        entry.data.notify_waiters();
    }
    read
}

fn finish(entry: &Entry, end: End) {
    entry.lock().end = Some(end);
    entry.data.notify_waiters();
}

/// One client connection's share of a resumable stream: its head (again, for a resume) with
/// the opening block, then [`consume`] from `attached.from`. `ready`: the request is fully
/// read; when it is not (the client left while its body was read) or the head cannot be
/// written, the client is gone before its first byte and the stream parks at once.
pub(crate) async fn serve_client<C: Client + Send>(
    shared: &Shared,
    client: &mut C,
    entry: &Arc<Entry>,
    attached: &Attached,
    request_started: Instant,
    ready: Result<(), WriteError>,
) -> Ended {
    let written = match ready {
        Ok(()) => respond::start_stream(shared, client, entry.head.clone()).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(prefix) => {
            let p = Progress::new(shared, request_started, prefix);
            consume(shared, client, entry, attached.generation, attached.from, p).await
        }
        Err(e) => {
            entry.detach(attached.generation, false, &shared.metrics);
            Ended {
                summary: StreamSummary::ended_early(shared, e.outcome(), 0),
                error: None,
                app_done: false,
            }
        }
    }
}

/// Runs one client connection of a resumable stream whose head it has written, as the
/// consumer of `generation`, from log offset `at` on, with the stream's progress `p`. The
/// stream parks when the client leaves and is over when a client received its end.
pub(super) async fn consume<C: Client + Send>(
    shared: &Shared,
    client: &mut C,
    entry: &Arc<Entry>,
    generation: u64,
    at: u64,
    p: Progress,
) -> Ended {
    let mut watched = Watched {
        inner: client,
        entry: entry.clone(),
        generation,
    };
    let mut reader = Reader {
        entry: entry.clone(),
        at,
        generation,
    };
    let ended = stream::run(shared, &mut watched, &mut reader, p).await;
    if watched.cancelled() {
        // Closed on purpose: no resume will come; the app's connection closes now.
        entry.cancel(generation);
        return ended;
    }
    // The app's end reached the client: clean, or the app's failure (a resume would only
    // meet the same failure again).
    let delivered = matches!(
        ended.summary.outcome,
        Some(Outcome::Completed | Outcome::UpstreamError)
    );
    entry.detach(generation, delivered, &shared.metrics);
    ended
}

/// The log as a consumer's app side.
struct Reader {
    entry: Arc<Entry>,
    at: u64,
    generation: u64,
}

impl AppBody for Reader {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            let mut data = pin!(self.entry.data.notified());
            data.as_mut().enable();
            {
                let mut st = self.entry.lock();
                if let Some(bytes) = st.log.read(self.at) {
                    self.at += bytes.len() as u64;
                    if st.attached == Some(self.generation) {
                        st.consumer_at = self.at;
                    }
                    drop(st);
                    self.entry.space.notify_one();
                    return Ok(Some(bytes));
                }
                if self.at < st.log.start {
                    return Err(UpstreamError::new(
                        Failure::ClosedMidBody,
                        "the client fell behind the resume buffer",
                    ));
                }
                if let Some(end) = &st.end {
                    return match Entry::end_error(end) {
                        None => Ok(None),
                        Some(e) => Err(e),
                    };
                }
            }
            data.await;
        }
    }
}

/// A consumer's client, which also counts as gone once another connection took the stream
/// over.
struct Watched<'a, C> {
    inner: &'a mut C,
    entry: Arc<Entry>,
    generation: u64,
}

impl<C: Client + Send> Client for Watched<'_, C> {
    fn chunked(&self) -> bool {
        self.inner.chunked()
    }

    async fn write_head(
        &mut self,
        head: ResponseHeader,
        body: Body,
        close: bool,
        first: Option<Bytes>,
    ) -> Result<(), WriteError> {
        self.inner.write_head(head, body, close, first).await
    }

    async fn send(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.inner.send(data).await
    }

    async fn send_raw(&mut self, wire: Bytes) -> Result<(), WriteError> {
        self.inner.send_raw(wire).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> Result<(), WriteError> {
        self.inner.finish(last).await
    }

    async fn gone(&mut self) {
        let (entry, generation) = (self.entry.clone(), self.generation);
        tokio::select! {
            () = self.inner.gone() => {}
            () = taken_over(&entry, generation) => {}
        }
    }

    async fn abort(&mut self) {
        self.inner.abort().await
    }

    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
}

/// Resolves once the consumer of `generation` is no longer the attached one.
async fn taken_over(entry: &Entry, generation: u64) {
    loop {
        let mut changed = pin!(entry.changed.notified());
        changed.as_mut().enable();
        if !entry.is_attached(generation) {
            return;
        }
        changed.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn store() -> (Store, Arc<crate::metrics::Metrics>) {
        let config = Config::from_yaml("resume: {paths: [/], max_bytes: 1KiB}\n").unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new(&prometheus::Registry::new()).unwrap());
        (Store::new(config.resume, metrics.clone()), metrics)
    }

    fn request() -> RequestHeader {
        RequestHeader::build("GET", b"/events", None).unwrap()
    }

    /// The log the producer writes replays from exactly the byte after the event a client
    /// last had, whatever the chunking.
    #[test]
    fn replay_starts_right_after_the_event() {
        for split in [false, true] {
            let (store, metrics) = store();
            let head = ResponseHeader::build(200, None).unwrap();
            let entry = store.open(&request(), head).unwrap();
            let mut framer = Framer::stamping(true, entry.token);
            for n in 1..=5 {
                let event = format!("id: {n}\ndata: x{n}\n\n");
                if split {
                    let (a, b) = event.split_at(event.len() - 1);
                    for part in [a, b] {
                        let bytes = Bytes::copy_from_slice(part.as_bytes());
                        append(&store, &entry, frame(&mut framer, bytes), 1 << 20, None);
                    }
                } else {
                    append(
                        &store,
                        &entry,
                        frame(&mut framer, Bytes::from(event)),
                        1 << 20,
                        None,
                    );
                }
            }
            entry.detach(1, false, &metrics);
            let attached = entry.attach(4, &metrics).unwrap();
            assert_eq!(attached.replayed, 1);
            let st = entry.lock();
            let mut got = Vec::new();
            let mut at = attached.from;
            while let Some(b) = st.log.read(at) {
                at += b.len() as u64;
                got.extend_from_slice(&b);
            }
            let want = format!("id: 5\ndata: x5\nid: {}.5.5\n\n", entry.token);
            assert_eq!(String::from_utf8_lossy(&got), want, "split={split}");
        }
    }
}
