//! Builds the pingora `Server`: the proxy service on every listener, the admin service and the
//! drain watcher.

use crate::admin::{AdminService, Readiness};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::drain::DrainService;
use crate::proxy::head_guard::{HeadGuard, KEEPALIVE_IDLE};
use crate::proxy::lean::workers::Workers;
use crate::proxy::service::{SidecarApp, SidecarProxy};
use crate::proxy::shared::Shared;
use crate::proxy::tls_accept::{TlsAccept, TlsListener};
use crate::proxy::trim::TrimService;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::sync::Arc;

/// Everything that can go wrong before the server runs, with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Upstream(String),
    #[error("cannot listen on {addr}: {io}")]
    Listen {
        addr: std::net::SocketAddr,
        io: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] crate::admin::BindError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start relay worker threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot start TLS handshake threads: {0}")]
    TlsThreads(std::io::Error),
    #[error("TLS listener {addr}: {msg}")]
    Tls {
        addr: std::net::SocketAddr,
        msg: String,
    },
}

/// Builds a ready-to-run server from a validated configuration.
pub fn build(config: Config, upgrade: bool) -> Result<Server, StartError> {
    // Before any runtime starts: growing the table later stalls the accepting thread.
    match crate::sys::reserve_fds() {
        Ok(n) => tracing::debug!(descriptors = n, "descriptor table grown"),
        Err(e) => tracing::warn!("cannot grow the descriptor table up front: {e}"),
    }
    let upstream_addr = config.upstream.resolve().map_err(StartError::Upstream)?;
    // Bind checks up front: a busy port fails with a clear message instead of inside pingora.
    if !upgrade {
        for l in &config.listeners {
            std::net::TcpListener::bind(l.addr)
                .map_err(|io| StartError::Listen { addr: l.addr, io })?;
        }
    }
    let admin_listener = match config.metrics_listen {
        Some(addr) => Some(AdminService::bind(addr)?),
        None => None,
    };

    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::new(&registry)?);
    let readiness = Arc::new(Readiness::new());

    let drain_window = config.shutdown.drain_window;
    // With a shared resume store, streams are handed off for up to the hand-off timeout.
    let handoff = match config.resume.redis {
        Some(_) if !config.resume.paths.is_empty() => config.shutdown.handoff_timeout.as_secs() + 3,
        _ => 0,
    };
    let mut conf = ServerConf {
        threads: config.threads,
        // The drain service exits as soon as streams are closed; these are only upper bounds.
        grace_period_seconds: Some(drain_window.as_secs() * 2 + 3 + handoff),
        graceful_shutdown_timeout_seconds: Some(1),
        // One runtime per thread, no stealing: an h2 connection's stream tasks are spawned by
        // its connection task and stay on its thread, so each DATA frame a stream writes wakes
        // the connection task without a cross-thread wake-up (futex, context switch).
        work_stealing: false,
        ..ServerConf::default()
    };
    conf.upgrade_sock = std::env::var("SSE_SIDECAR_UPGRADE_SOCK")
        .unwrap_or_else(|_| "/tmp/sse-sidecar-upgrade.sock".into());
    conf.pid_file = crate::control::pid_file().display().to_string();
    let opt = pingora_core::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listeners = config.listeners.clone();
    let header_read_timeout = config.timeouts.header_read;
    let threads = config.threads;
    let h2_max_concurrent_streams = config.limits.h2_max_concurrent_streams;
    let shared = Arc::new(Shared::new(config, metrics, upstream_addr));
    // Process-wide: an h2 stream's state borrows it across futures (SidecarApp::relay_h2).
    let statics: &'static Arc<Shared> = Box::leak(Box::new(shared.clone()));
    let app = |h2c: bool| {
        let mut app =
            pingora_proxy::http_proxy(&server.configuration, SidecarProxy { shared: statics });
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        // pingora keeps an h2 connection with no stream open forever by default.
        options.h2_idle_timeout = Some(KEEPALIVE_IDLE);
        app.server_options = Some(options);
        // pingora's bounded defaults (64 KiB header list), with our stream limit.
        let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
        h2.max_concurrent_streams(h2_max_concurrent_streams);
        app.h2_options = Some(h2);
        Arc::new(SidecarApp {
            proxy: Arc::new(app),
            sidecar: SidecarProxy { shared: statics },
        })
    };
    let mut tls_listeners = Vec::new();
    for l in &listeners {
        let Some(tls) = &l.tls else { continue };
        let mut settings = pingora_core::listeners::tls::TlsSettings::intermediate(
            &tls.cert.display().to_string(),
            &tls.key.display().to_string(),
        )
        .map_err(|e| StartError::Tls {
            addr: l.addr,
            msg: e.to_string(),
        })?;
        settings.enable_h2();
        // The pair was loaded and checked with the configuration, so this does not panic.
        tls_listeners.push(TlsListener {
            addr: l.addr,
            acceptor: settings.build(),
        });
    }
    let mut proxy = Service::new(
        "sse-sidecar".to_string(),
        HeadGuard {
            workers: Workers::start(threads, shared.clone()).map_err(StartError::Workers)?,
            shared: shared.clone(),
            h1: app(false),
            h2c: app(true),
            timeout: header_read_timeout,
            tls: TlsAccept::start(tls_listeners, threads, header_read_timeout)
                .map_err(StartError::TlsThreads)?,
        },
    );
    for l in &listeners {
        // No L4 read buffer downstream, TLS or not: pingora's default is 64 KiB per connection,
        // and an SSE client sends nothing after its request (on a TLS listener, where the head
        // guard has the handshake done (`TlsAccept`) over this same stream, rustls reads
        // records into its own buffer anyway). The small write buffer stays, so a chunk's size
        // line, data and CRLF leave in one syscall.
        proxy.add_listener(
            ListenerConfig::tcp(l.addr.to_string()).l4_buffer(L4BufferSettings::new(0, 1460)),
        );
    }
    server.add_service(proxy);

    let on_drain = {
        let readiness = readiness.clone();
        Box::new(move || readiness.set_draining())
    };
    server.add_service(background_service(
        "drain",
        DrainService {
            drain: shared.drain.clone(),
            on_drain,
        },
    ));
    if let Some(redis) = shared.redis.clone() {
        server.add_service(background_service(
            "resume-store",
            crate::proxy::resume::redis::Service(redis),
        ));
    }
    server.add_service(background_service(
        "malloc-trim",
        TrimService {
            drain: shared.drain.clone(),
        },
    ));
    if let Some(listener) = admin_listener {
        let admin = AdminService::new(listener, registry, upstream_addr, readiness.clone());
        server.add_service(background_service("admin", admin));
    }
    readiness.set_listeners_bound();
    Ok(server)
}
