//! TLS handshakes for the TLS listeners, which are plain TCP listeners to pingora.
//!
//! Done here rather than by pingora for two reasons. pingora bounds a handshake only by a
//! fixed 60 s, so a client that sends half a ClientHello holds its connection (a slowloris on
//! the handshake); here [`TlsAccept::handshake`] gives it the header timeout. And a handshake
//! is CPU work (a signature, a key exchange) on pingora's runtime, where 1,000 handshakes
//! started at once queue ahead of every established stream's task; here they run on their own
//! runtime threads (half the proxy's threads, at least one), so the established streams keep
//! their cores and the kernel's scheduler shares the rest.

use crate::proxy::tls_conn::{Sock, TlsConn};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
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

    /// The acceptor of the TLS listener `tcp` was accepted on, if it was one.
    pub(crate) fn acceptor(&self, tcp: &L4Stream) -> Option<Arc<Acceptor>> {
        let digest = tcp.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        listener_of(self.listeners.iter().map(|(addr, _)| *addr), local)
            .map(|i| self.listeners[i].1.clone())
    }

    /// The handshake on the handshake runtime, within the timeout, with the listener's
    /// rustls configuration (certificate, ALPN h2 and http/1.1). The connection comes back
    /// registered with the handshake runtime: [`Sock::rehome`] it where it is served.
    pub(crate) async fn handshake(
        &self,
        acceptor: Arc<Acceptor>,
        tcp: std::net::TcpStream,
    ) -> Result<Box<TlsConn>, HandshakeError> {
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let sock = Sock::new(tcp).map_err(|e| HandshakeError::Failed(e.to_string()))?;
            match tokio::time::timeout(timeout, acceptor.acceptor.accept(sock)).await {
                Ok(Ok(tls)) => Ok(Box::new(tls)),
                Ok(Err(e)) => Err(HandshakeError::Failed(e.to_string())),
                Err(_) => Err(HandshakeError::TimedOut(timeout)),
            }
        });
        task.await.map_err(|_| HandshakeError::Runtime)?
    }
}

/// Which of the `listeners` a connection whose local address is `local` came in on: the one
/// with that exact address, else one on the unspecified address of the same family (`[::]`
/// takes IPv4 too, as `::ffff:a.b.c.d`) and port.
fn listener_of(
    listeners: impl Iterator<Item = SocketAddr> + Clone,
    local: SocketAddr,
) -> Option<usize> {
    listeners
        .clone()
        .position(|addr| addr == local)
        .or_else(|| {
            listeners.into_iter().position(|addr| {
                addr.port() == local.port()
                    && addr.ip().is_unspecified()
                    && addr.is_ipv4() == local.is_ipv4()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::listener_of;
    use std::net::SocketAddr;

    #[test]
    fn a_connection_is_matched_to_its_listener() {
        let listeners: Vec<SocketAddr> = ["127.0.0.1:8443", "0.0.0.0:9443", "[::]:7443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let of = |local: &str| listener_of(listeners.iter().copied(), local.parse().unwrap());
        assert_eq!(of("127.0.0.1:8443"), Some(0));
        assert_eq!(of("10.1.2.3:9443"), Some(1));
        assert_eq!(of("[::ffff:10.1.2.3]:7443"), Some(2));
        assert_eq!(of("[::1]:7443"), Some(2));
        // A plain listener elsewhere: [::1]:9443 is not the IPv4 TLS listener's.
        assert_eq!(of("[::1]:9443"), None);
        assert_eq!(of("127.0.0.1:8080"), None);
        assert_eq!(of("10.0.0.1:8443"), None);
    }
}
