//! An h2 connection's accept loop: every stream it opens is served by a task on the thread
//! (pingora's single-threaded runtime) that drives the connection.
//!
//! pingora's own loop spawns each stream on a runtime picked at random. A stream's events then
//! travel between threads: its task on one thread hands each DATA frame to h2's shared state,
//! and the connection task that writes it is woken on the other (an eventfd write, a second
//! thread awake), for half of all streams with two threads. Here the stream, its app
//! connection and the client's connection share one thread's reactor, so an event wakes one
//! thread once, and the frames of streams woken together go out in the same writes.
//! Otherwise this is pingora's loop (`accept_downstream_sessions`, pingora-core 0.9): a
//! graceful GOAWAY on shutdown, the connection closed after `h2_idle_timeout` with no stream
//! open, and at most [`MAX_REJECTED`] malformed requests per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::v2::server::{handshake, H2Accept, HttpSession as V2Session};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Digest, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::metrics::{H2Abuse, Metrics};
use crate::proxy::h2_guard::stream::Guarded;

/// Malformed requests (answered or reset by h2 itself) a connection may send before it is
/// closed: pingora's own bound.
const MAX_REJECTED: usize = 32;

/// Serves the client's h2 connection `stream` with `app` until it closes, its frames counted
/// by a [`Guarded`] under h2 (whose closes go to `metrics`, as does one for malformed requests).
pub(crate) async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    stream: Stream,
    shutdown: &ShutdownWatch,
    metrics: &Arc<Metrics>,
) {
    let stream: Stream = Box::new(Guarded::new(stream, metrics.clone()));
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match handshake(stream, app.h2_options()).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!("h2 handshake: {e}");
            return;
        }
    };
    let idle = app.server_options().and_then(|o| o.h2_idle_timeout);
    let active = Arc::new(Active::default());
    let mut watch = shutdown.clone();
    let mut closing = *watch.borrow();
    if closing {
        conn.graceful_shutdown();
    }
    let mut rejected = 0;
    loop {
        let accepted = if closing {
            V2Session::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                _ = watch.changed() => {
                    conn.graceful_shutdown();
                    closing = true;
                    continue;
                }
                accepted = V2Session::from_h2_conn(&mut conn, digest.clone()) => accepted,
                _ = active.idle_for(idle.unwrap_or_default()), if idle.is_some() => return,
            }
        };
        let session = match accepted {
            Ok(Some(H2Accept::Session(session))) => session,
            Ok(Some(H2Accept::Rejected)) => {
                rejected += 1;
                if rejected >= MAX_REJECTED {
                    tracing::warn!("closing an h2 connection after {rejected} malformed requests");
                    metrics.h2_abuse(H2Abuse::MalformedRequests);
                    return;
                }
                continue;
            }
            // The client closed, or the connection failed (often a client that simply
            // disconnects): nothing to report.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("h2 connection ended: {e}");
                return;
            }
        };
        let guard = active.start();
        let app = app.clone();
        let shutdown = shutdown.clone();
        // This thread's runtime: pingora's runtimes are single-threaded, one per thread.
        tokio::spawn(async move {
            let _guard = guard;
            app.process_new_http(ServerSession::new_http2(session), &shutdown)
                .await;
        });
    }
}

/// The streams of one connection still being served.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    none: Notify,
}

impl Active {
    fn start(self: &Arc<Self>) -> StreamGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Returns once no stream has been open for `idle` (a zero `idle`: once none is open).
    async fn idle_for(&self, idle: Duration) {
        while self.count.load(Ordering::Relaxed) != 0 {
            self.none.notified().await;
        }
        if !idle.is_zero() {
            tokio::time::sleep(idle).await;
        }
    }
}

/// One stream being served; the last one dropped starts the connection's idle timeout.
struct StreamGuard(Arc<Active>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.none.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The idle timeout does not run while a stream is open, and runs whole from the moment
    /// the last one ends.
    #[tokio::test]
    async fn idle_starts_when_the_last_stream_ends() {
        let active = Arc::new(Active::default());
        let (a, b) = (active.start(), active.start());
        let idle = Duration::from_millis(40);
        let waited = tokio::time::timeout(Duration::from_millis(100), active.idle_for(idle)).await;
        assert!(waited.is_err(), "idle with two streams open");
        drop(a);
        let waited = tokio::time::timeout(Duration::from_millis(100), active.idle_for(idle)).await;
        assert!(waited.is_err(), "idle with one stream open");
        let wait = tokio::spawn({
            let active = active.clone();
            async move {
                active.idle_for(idle).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ended = Instant::now();
        drop(b);
        let idle_at = wait.await.unwrap();
        let after = idle_at - ended;
        assert!(
            after >= idle && after < idle * 3,
            "idle {after:?} after the last stream"
        );
    }
}
