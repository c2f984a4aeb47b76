//! The admin listener: `/metrics`, `/healthz` and `/readyz` on their own address, never on
//! the proxy port.
//!
//! - `GET /metrics`: the registry in the Prometheus text format.
//! - `GET /healthz`: 200 `ok` while the process runs.
//! - `GET /readyz`: 200 `ok` once the proxy listeners are bound and the app accepts TCP
//!   connections; 503 with the reason otherwise. From the moment shutdown starts it answers
//!   503 `draining` (load balancers stop sending new streams) while the admin listener itself
//!   keeps serving until the process exits.
//!
//! HEAD works wherever GET does; other methods on these paths are 405, other paths 404.
//!
//! ```text
//! curl -i http://127.0.0.1:9090/readyz
//! ```
//!
//! `AdminService` is a pingora background service, not a listening one, for two reasons:
//! it must keep answering while pingora drains and stops its listening services, and on
//! `--upgrade` it is not handed over with the proxy listeners but bound anew with
//! `SO_REUSEPORT`, so the old and the new process both serve it during the hand-over. HTTP/1
//! itself is hyper's.
//!
//! # Layout
//!
//! - this file: binding, the accept loop with its cap on open connections, the shutdown watch;
//! - `connection.rs`: one connection under hyper, with a write timeout and a lingering close;
//! - `routes.rs`: which request gets which answer;
//! - `readiness.rs`: the `/readyz` judgement.

mod connection;
mod readiness;
mod routes;
#[cfg(test)]
mod tests;

pub(crate) use readiness::Readiness;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use readiness::ReadyCheck;
use routes::Routes;

/// Timeouts and limits of the admin listener.
#[derive(Debug, Clone)]
struct AdminOptions {
    /// Time allowed for a request head to arrive, counted from the connection's start or the
    /// end of the previous response (keep-alive idle time included), and for a stalled
    /// response write to make progress.
    io_timeout: Duration,
    /// Timeout of the TCP connect `/readyz` makes to the app.
    upstream_connect_timeout: Duration,
    /// How long a `/readyz` upstream check result is reused, so probes never hammer the app.
    upstream_check_interval: Duration,
    /// Admin connections open at once; further ones are closed at accept.
    max_connections: usize,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            io_timeout: Duration::from_secs(10),
            // Below the 1 s default timeout of Kubernetes probes.
            upstream_connect_timeout: Duration::from_millis(500),
            upstream_check_interval: Duration::from_secs(1),
            max_connections: 64,
        }
    }
}

/// The admin listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the admin (metrics) listener on {addr}: {io}")]
pub struct BindError {
    /// The address that was asked for.
    pub(crate) addr: SocketAddr,
    /// What the OS said.
    pub(crate) io: io::Error,
}

/// `/metrics`, `/healthz` and `/readyz` as a pingora background service.
pub(crate) struct AdminService {
    /// Bound early (see [`AdminService::bind`]); taken by `start`.
    listener: Mutex<Option<std::net::TcpListener>>,
    local_addr: Option<SocketAddr>,
    readiness: Arc<Readiness>,
    routes: Arc<Routes>,
    options: AdminOptions,
}

impl AdminService {
    /// Binds the admin address now, so a busy port fails startup (or `check`) with a clear
    /// error instead of failing inside a service.
    ///
    /// `SO_REUSEPORT` lets a new process started with `--upgrade` bind the same admin address
    /// while the old one drains (pingora hands over only the proxy listeners).
    pub(crate) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
        use socket2::{Domain, Socket, Type};
        let err = |io| BindError { addr, io };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.bind(&addr.into()).map_err(err)?;
        socket.listen(128).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        // Required by tokio's `from_std` in `start`.
        listener.set_nonblocking(true).map_err(err)?;
        Ok(listener)
    }

    /// Serves on `listener` (from [`AdminService::bind`]): `registry` at `/metrics`, and
    /// `/readyz` from `readiness` plus a TCP connect to `upstream`.
    pub(crate) fn new(
        listener: std::net::TcpListener,
        registry: Registry,
        upstream: SocketAddr,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self::with_options(
            listener,
            registry,
            upstream,
            readiness,
            AdminOptions::default(),
        )
    }

    fn with_options(
        listener: std::net::TcpListener,
        registry: Registry,
        upstream: SocketAddr,
        readiness: Arc<Readiness>,
        options: AdminOptions,
    ) -> Self {
        let ready = ReadyCheck::new(
            Arc::clone(&readiness),
            upstream,
            options.upstream_connect_timeout,
            options.upstream_check_interval,
        );
        AdminService {
            local_addr: listener.local_addr().ok(),
            listener: Mutex::new(Some(listener)),
            readiness,
            routes: Arc::new(Routes::new(registry, ready)),
            options,
        }
    }

    /// The bound listener as a tokio one, or `None` (logged) when it cannot be had.
    fn take_listener(&self) -> Option<TcpListener> {
        let taken = match self.listener.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(listener) = taken else {
            tracing::error!("admin service started twice; the second start does nothing");
            return None;
        };
        match listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
        {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable; /metrics and probes are off");
                None
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.take_listener() else {
            return;
        };
        if let Some(addr) = self.local_addr {
            tracing::info!(%addr, "admin listener serving /metrics, /healthz, /readyz");
        }
        let connections = Arc::new(Semaphore::new(self.options.max_connections));
        // The watch may already be set if the server is stopping as we start.
        if *shutdown.borrow_and_update() {
            self.readiness.set_draining();
        }
        let mut watching_shutdown = true;
        loop {
            tokio::select! {
                // Shutdown started: report draining, but keep serving so probes and the last
                // scrapes get answers until exit.
                changed = shutdown.changed(), if watching_shutdown => match changed {
                    Ok(()) => {
                        if *shutdown.borrow_and_update() {
                            self.readiness.set_draining();
                        }
                    }
                    // The server is gone; nothing will ever flip it.
                    Err(_) => watching_shutdown = false,
                },
                // A new admin connection: serve it on its own task, or close it at once when
                // too many are open.
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                            tracing::debug!(%peer, "too many admin connections; closing");
                            continue;
                        };
                        let routes = Arc::clone(&self.routes);
                        let io_timeout = self.options.io_timeout;
                        tokio::spawn(async move {
                            connection::serve(stream, routes, io_timeout).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning on it.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}
