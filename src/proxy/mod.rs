//! The proxy: every request from the listener to the app and back. `docs/ARCHITECTURE.md`
//! walks a chunk's path through these modules.
//!
//! - [`head_guard`]: reads each request head first (after the TLS handshake, on a TLS
//!   listener) and routes it: the lean relay, or pingora; h2 connections go to pingora under
//!   [`h2_guard`], which closes frame floods.
//! - [`candidate`]: which requests are SSE candidates, and [`learned_routes`], the routes
//!   learned from event streams met on pingora's normal path (`sse.learn`).
//! - [`lean`]: SSE candidates over HTTP/1 (plain TCP or TLS), on connections of our own and
//!   per-core event loops.
//! - [`service`]: pingora's `ProxyHttp` hooks; SSE candidates over h2 (and on an HTTP/1
//!   connection pingora answered before) go to [`session_relay`], everything else down
//!   pingora's normal path.
//! - [`stream`]: a stream once its head is written, for both relays, and the answers that are
//!   not streams.
//! - [`http1`]: HTTP/1.1 on raw sockets for the lean relay.
//! - [`upstream_request`], [`headers`], [`answers`], [`upstream_error`]: what the app is sent,
//!   the header policy, the answers the sidecar makes up, and app failures — one place each.
//! - [`probe_stream`]: the diagnostic stream `sse-sidecar probe` reads (`probe.*`), served
//!   by the sidecar itself.
//! - [`resume`]: resumable streams, which outlive their client's connection.
//! - [`tls_accept`]: TLS handshakes for the TLS listeners, bounded and off pingora's runtime;
//!   [`tls_conn`]: the TLS connection they give, which moves to the runtime that serves it.
//! - [`shared`], [`drain`], [`trim`], [`access_log`]: process-wide state and services.

pub(crate) mod access_log;
pub(crate) mod answers;
pub(crate) mod candidate;
pub(crate) mod drain;
pub(crate) mod h2_conn;
pub(crate) mod h2_guard;
pub(crate) mod head_guard;
pub(crate) mod headers;
pub(crate) mod http1;
pub(crate) mod lean;
pub(crate) mod learned_routes;
pub(crate) mod probe_stream;
pub(crate) mod resume;
pub(crate) mod service;
pub(crate) mod session_relay;
pub(crate) mod shared;
pub(crate) mod stream;
pub(crate) mod tls_accept;
pub(crate) mod tls_conn;
pub(crate) mod trim;
pub(crate) mod upstream_error;
pub(crate) mod upstream_request;
