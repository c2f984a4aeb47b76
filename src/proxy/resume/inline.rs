//! A new resumable stream while an event loop carries it (memory store, plain client): the
//! producer half rides along with the stream and stamps and logs each chunk on its way, by the
//! same steps as the producer task in [`super::relay`].

use super::relay::{append, consume, frame, start_producer};
use super::store::{Attached, Entry};
use crate::proxy::shared::Shared;
use crate::proxy::stream::{AppBody, Client, Ended, Progress};
use crate::proxy::upstream_error::{Failure, UpstreamError};
use crate::sse::Framer;
use bytes::Bytes;
use std::sync::Arc;
use std::task::Waker;

/// A resumable stream's producer half while an event loop carries the stream (memory store
/// only): the loop reads the app and writes the client itself, and each chunk goes through
/// [`Inline::append`] on the way — stamped and logged by the same steps as the producer task
/// ([`super::relay`]), and read at once by the attached consumer, with no task woken.
/// Whatever else happens (the client leaves, the app ends, another connection takes the stream
/// over, a drain) hands the stream back to its task, where [`Inline::into_halves`] makes it the
/// two halves again.
pub(crate) struct Inline {
    entry: Arc<Entry>,
    framer: Framer,
    generation: u64,
    /// How far the attached consumer has read: the log's end after each append.
    at: u64,
    /// Where a producer task goes if this half is dropped instead of handed on (see its
    /// `Drop`); `None` once handed on.
    home: Option<(tokio::runtime::Handle, Arc<Shared>)>,
}

impl Inline {
    /// The producer half of `entry`, opened here (in the stream's task) and attached to its
    /// first consumer. `wrote_prefix`: as for [`super::relay::spawn_producer`].
    pub(crate) fn new(
        shared: &Arc<Shared>,
        entry: Arc<Entry>,
        first: &Attached,
        wrote_prefix: bool,
    ) -> Box<Inline> {
        Box::new(Inline {
            framer: Framer::stamping(wrote_prefix, entry.token),
            generation: first.generation,
            at: first.from,
            entry,
            home: Some((tokio::runtime::Handle::current(), shared.clone())),
        })
    }

    /// Stamps the app's `bytes` into the log and returns them as the consumer reads them
    /// there; `None` once another connection took the stream over (the bytes wait in the log
    /// for it).
    pub(crate) fn append(&mut self, shared: &Shared, bytes: Bytes) -> Option<Bytes> {
        let store = shared.resume.as_deref()?;
        let framed = frame(&mut self.framer, bytes);
        let out = framed.bytes.clone();
        let max_bytes = store.config().max_bytes;
        self.at = append(store, &self.entry, framed, max_bytes, Some(self.generation))?;
        Some(out)
    }

    /// Whether this connection is still the stream's attached consumer.
    pub(crate) fn attached(&self) -> bool {
        self.entry.is_attached(self.generation)
    }

    /// The event loop to wake if another connection takes the stream over, while it carries
    /// the stream.
    pub(crate) fn watch(&self, waker: Option<Waker>) {
        self.entry.watch(waker);
    }

    /// Back in the stream's task: a producer task goes on reading `app` into the log, and
    /// the client's connection consumes it from where the loop left off, with the stream's
    /// `progress`.
    pub(crate) async fn into_halves<C: Client + Send, A: AppBody + Send + 'static>(
        mut self: Box<Self>,
        shared: &Arc<Shared>,
        client: &mut C,
        app: A,
        progress: Progress,
    ) -> Ended {
        self.hand_on(shared, app);
        consume(
            shared,
            client,
            &self.entry,
            self.generation,
            self.at,
            progress,
        )
        .await
    }

    /// The client left before the stream's first byte: the stream parks at once, its
    /// producer reading on.
    pub(crate) fn park_now<A: AppBody + Send + 'static>(mut self, shared: &Arc<Shared>, app: A) {
        self.park(shared, app);
    }

    /// The stream's producer task goes on reading `app` from where this half stopped, and
    /// this half's consumer is gone.
    fn park<A: AppBody + Send + 'static>(&mut self, shared: &Arc<Shared>, app: A) {
        self.hand_on(shared, app);
        self.entry.detach(self.generation, false, &shared.metrics);
    }

    /// The producer task, reading `app` on with this half's framer (an `Inline` exists only
    /// without a shared store, so there is no mirror to start).
    fn hand_on<A: AppBody + Send + 'static>(&mut self, shared: &Arc<Shared>, app: A) {
        self.home = None;
        let framer = std::mem::replace(&mut self.framer, Framer::new(false));
        start_producer(shared, self.entry.clone(), framer, app);
    }
}

/// Dropped without being handed on: the event loop carrying the stream is gone (it panicked),
/// and the app's connection with it. The stream ends as an app that failed mid-body does —
/// its end waits in the log for a client that resumes it, for the grace, and then the store
/// forgets it — rather than staying attached to no one, with its log counted against the
/// total budget, forever.
impl Drop for Inline {
    fn drop(&mut self) {
        let Some((runtime, shared)) = self.home.take() else {
            return;
        };
        // The loop registered its waker and never took it back.
        self.entry.watch(None);
        // Possibly on the loop's own thread, outside any runtime.
        let _runtime = runtime.enter();
        self.park(&shared, Lost);
    }
}

/// The app's side of a stream whose event loop is gone: it failed there.
struct Lost;

impl AppBody for Lost {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        Err(UpstreamError::new(
            Failure::ClosedMidBody,
            "the relay event loop carrying the stream stopped",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::proxy::resume::store::End;
    use pingora_http::{RequestHeader, ResponseHeader};

    fn request() -> RequestHeader {
        RequestHeader::build("GET", b"/events", None).unwrap()
    }

    /// An inline half dropped with its event loop (a panic there) leaves its stream as an app
    /// failing mid-body would: parked, its events and then the failure there for a client that
    /// resumes, and forgotten, bytes and all, once the grace runs out.
    #[tokio::test]
    async fn an_inline_half_dropped_with_its_loop_ends_the_stream() {
        let config = Config::from_yaml("resume: {paths: [/], grace: 150ms}\n").unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new(&prometheus::Registry::new()).unwrap());
        let shared = Arc::new(Shared::new(
            config,
            metrics.clone(),
            "127.0.0.1:9".parse().unwrap(),
        ));
        let store = shared.resume.clone().unwrap();
        let head = ResponseHeader::build(200, None).unwrap();
        let entry = store.open(&request(), head).unwrap();
        let first = Attached {
            generation: 1,
            from: 0,
            replayed: 0,
        };
        let mut inline = Inline::new(&shared, entry.clone(), &first, false);
        for n in 1..=2 {
            let sent = inline.append(&shared, Bytes::from(format!("data: {n}\n\n")));
            assert!(sent.is_some(), "event {n} read by the attached consumer");
        }
        assert!(metrics.resume_buffer_bytes() > 0);
        // Dropped on another thread, outside any runtime, as the loop's thread unwinds.
        std::thread::spawn(move || drop(inline)).join().unwrap();

        let resumed = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            loop {
                if entry.lock().end.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(resumed.is_ok(), "the stream never ended");
        {
            let st = entry.lock();
            assert_eq!(st.attached, None, "still attached to the dropped half");
            assert!(st.parked_since.is_some(), "not parked");
            match &st.end {
                Some(End::Failed(Failure::ClosedMidBody, why)) => {
                    assert!(why.contains("event loop"), "{why}")
                }
                other => panic!("end {other:?}"),
            }
        }
        // A client that had event 1 resumes to event 2 and then the failure.
        let attached = entry.attach(1, &metrics).expect("resumable");
        assert_eq!(attached.replayed, 1);
        entry.detach(attached.generation, false, &metrics);

        let forgotten = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while store.find(&entry.token).is_some() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            forgotten.is_ok(),
            "the store kept the stream past its grace"
        );
        assert_eq!(metrics.resume_buffer_bytes(), 0, "its bytes still counted");
    }
}
