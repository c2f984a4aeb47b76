//! sse-sidecar: a pingora reverse proxy that makes Server-Sent Events survive every buffering,
//! compressing and timing-out box between an app and a browser.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions only.
//! - [`config`]: layered (defaults < file < env < flags) and validated configuration.
//! - [`proxy`]: the head guard, the lean HTTP/1 relay and the pingora-session relay, the
//!   shared stream loop, the `ProxyHttp` implementation, header policy, graceful drain.
//! - [`sse`]: the byte-level boundary tracker and the blocks the relay may inject.
//! - [`metrics`]: every metric name, help text and bucket.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//! - [`server`]: wires the above into a pingora `Server`.
//!
//! # How a request flows
//!
//! pingora accepts connections on the listen port. [`proxy::head::HeadGuard`] reads each
//! request head first (under one deadline, at most 64 KiB, rejecting smuggling shapes) and
//! routes it:
//!
//! - an *SSE candidate* (its `Accept` names `text/event-stream`, or its path is under
//!   `sse.paths`) on plain-TCP HTTP/1 leaves pingora's connection task for the lean relay
//!   ([`proxy::h1`]), which speaks HTTP/1.1 on raw sockets: each stream's setup runs on a
//!   thread-per-core tokio runtime ([`proxy::workers`]), and once its head is written a
//!   per-core epoll loop ([`proxy::engine`]) relays its events and heartbeats;
//! - an SSE candidate over h2 or TLS is taken over in pingora's `request_filter` by
//!   [`proxy::relay`], which uses pingora's sessions and connector;
//! - everything else goes down pingora's normal proxy path, where an event-stream response
//!   still gets the header policy ([`proxy::headers`]).
//!
//! Both relays run the same stream loop ([`proxy::stream`]): one `select!` over the client
//! leaving, the app's next bytes, a timer (heartbeats, idle timeout, scheduled close) and the
//! drain signal, with the [`sse::Framer`] saying where a block may be injected. The lean
//! relay's epoll loop does only the common case itself (a chunk in, the same bytes framed
//! out; a heartbeat at a boundary) and hands the stream to that loop, with its
//! [`proxy::stream::Progress`], for everything else.

pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod sse;
