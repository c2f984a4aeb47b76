//! What `/readyz` answers. Ready means a load balancer may send new streams here: the proxy
//! listeners are bound, shutdown has not started, and the app accepts TCP connections. The
//! app check is cached, so a burst of probes (several load balancers, several replicas of a
//! probe) costs the app one connect, and a slow app cannot make probes pile up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::timeout;

/// Process state `/readyz` reports on, shared with the rest of the sidecar.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Not ready yet: listeners unbound, not draining.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The proxy listeners are bound; `/readyz` may now report ready.
    pub(crate) fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Shutdown has started: `/readyz` answers 503 `draining` from now on.
    /// The admin service calls this itself when its `ShutdownWatch` flips.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether [`set_listeners_bound`](Self::set_listeners_bound) was called.
    pub(crate) fn listeners_bound(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire)
    }

    /// Whether shutdown has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Why `/readyz` answers 503; the message is the response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum NotReady {
    #[error("draining")]
    Draining,
    #[error("proxy listeners not bound yet")]
    ListenersNotBound,
    #[error("upstream {0} refused connection")]
    Refused(SocketAddr),
    /// Any other connect failure; the OS's words, kept as text so the cached result can be
    /// handed to every probe.
    #[error("upstream {addr} not reachable: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("upstream {addr} did not accept a connection within {}ms", limit.as_millis())]
    ConnectTimeout { addr: SocketAddr, limit: Duration },
}

/// The `/readyz` judgement: [`Readiness`] plus a cached TCP connect to the app.
pub(super) struct ReadyCheck {
    readiness: Arc<Readiness>,
    upstream: SocketAddr,
    connect_timeout: Duration,
    /// How long one app check's result is reused.
    interval: Duration,
    /// When the last app check finished and what it found. An async mutex, so concurrent
    /// probes wait for one check instead of each connecting.
    last: Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl ReadyCheck {
    pub(super) fn new(
        readiness: Arc<Readiness>,
        upstream: SocketAddr,
        connect_timeout: Duration,
        interval: Duration,
    ) -> Self {
        ReadyCheck {
            readiness,
            upstream,
            connect_timeout,
            interval,
            last: Mutex::new(None),
        }
    }

    /// `Ok` when ready, else why not.
    pub(super) async fn check(&self) -> Result<(), NotReady> {
        if self.readiness.is_draining() {
            return Err(NotReady::Draining);
        }
        if !self.readiness.listeners_bound() {
            return Err(NotReady::ListenersNotBound);
        }
        self.upstream_accepts().await
    }

    /// Whether the app accepts TCP connections, checked at most once per `interval`.
    async fn upstream_accepts(&self) -> Result<(), NotReady> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < self.interval {
                return result.clone();
            }
        }
        let addr = self.upstream;
        let limit = self.connect_timeout;
        let result = match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(_conn)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(NotReady::Refused(addr))
            }
            Ok(Err(e)) => Err(NotReady::Unreachable {
                addr,
                reason: e.to_string(),
            }),
            Err(_) => Err(NotReady::ConnectTimeout { addr, limit }),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
