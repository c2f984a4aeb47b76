//! TLS handshakes for the TLS listeners, which are plain TCP listeners to pingora.
//!
//! Done here rather than by pingora for two reasons. pingora bounds a handshake only by a
//! fixed 60 s, so a client that sends half a ClientHello holds its connection (a slowloris on
//! the handshake); here [`TlsAccept::handshake`] gives it the header timeout. And a handshake
//! is CPU work (a signature, a key exchange) on pingora's runtime, where 1,000 handshakes
//! started at once queue ahead of every established stream's task; here they run on their own
//! runtime threads (half the proxy's threads, at least one), so the established streams keep
//! their cores and the kernel's scheduler shares the rest.

use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::TlsStream;
use pingora_core::protocols::GetSocketDigest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// A listener that speaks TLS, and its certificate.
pub(crate) struct TlsListener {
    pub(crate) addr: SocketAddr,
    pub(crate) acceptor: Acceptor,
}

/// Why a handshake did not give a TLS stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(String),
    #[error("TLS handshake runtime gone")]
    Runtime,
}

/// The TLS listeners and the runtime their handshakes run on.
pub(crate) struct TlsAccept {
    listeners: Vec<(SocketAddr, Arc<Acceptor>)>,
    runtime: Handle,
    timeout: Duration,
}

impl TlsAccept {
    /// Starts the handshake threads; `None` when no listener speaks TLS (and no thread).
    pub(crate) fn start(
        listeners: Vec<TlsListener>,
        proxy_threads: usize,
        timeout: Duration,
    ) -> std::io::Result<Option<TlsAccept>> {
        if listeners.is_empty() {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(proxy_threads.div_ceil(2).max(1))
            .thread_name("sse-tls-handshake")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        // The runtime lives as long as the process (dropping one inside pingora's runtime
        // at shutdown would panic).
        std::thread::Builder::new()
            .name("sse-tls-runtime".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        Ok(Some(TlsAccept {
            listeners: listeners
                .into_iter()
                .map(|l| (l.addr, Arc::new(l.acceptor)))
                .collect(),
            runtime: handle,
            timeout,
        }))
    }

    /// The acceptor of the TLS listener `tcp` was accepted on, if it was one: its local
    /// address is the listener's, or has the port of a listener on the unspecified address.
    pub(crate) fn acceptor(&self, tcp: &L4Stream) -> Option<Arc<Acceptor>> {
        let digest = tcp.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        let exact = self.listeners.iter().find(|(addr, _)| *addr == local);
        exact
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|(addr, _)| addr.port() == local.port() && addr.ip().is_unspecified())
            })
            .map(|(_, acceptor)| acceptor.clone())
    }

    /// The handshake on the handshake runtime, within the timeout.
    pub(crate) async fn handshake(
        &self,
        acceptor: Arc<Acceptor>,
        tcp: L4Stream,
    ) -> Result<TlsStream<L4Stream>, HandshakeError> {
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(timeout, acceptor.tls_handshake(tcp)).await {
                Ok(Ok(tls)) => Ok(tls),
                Ok(Err(e)) => Err(HandshakeError::Failed(e.to_string())),
                Err(_) => Err(HandshakeError::TimedOut(timeout)),
            }
        });
        task.await.map_err(|_| HandshakeError::Runtime)?
    }
}
