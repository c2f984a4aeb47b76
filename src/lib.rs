//! sse-sidecar: a pingora reverse proxy that makes Server-Sent Events survive every buffering,
//! compressing and timing-out box between an app and a browser.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions only.
//! - [`config`]: layered (defaults < file < env < flags) and validated configuration.
//! - [`proxy`]: the `ProxyHttp` implementation, the SSE [`proxy::relay`], header policy and
//!   graceful [`proxy::drain`].
//! - [`sse`]: the byte-level boundary tracker and the blocks the relay may inject.
//! - [`metrics`]: every metric name, help text and bucket.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//! - [`server`]: wires the above into a pingora `Server`.
//!
//! # How a request flows
//!
//! pingora accepts HTTP/1.1 or h2c on the listen port and calls
//! [`proxy::SidecarProxy`]'s `request_filter`. An *SSE candidate* (its `Accept` names
//! `text/event-stream`, or its path is under `sse.paths`) is taken over by the relay, which
//! connects to the app itself, forwards the request without `Accept-Encoding`, and — when the
//! answer is an event stream — runs one `select!` loop over the client, the app, a timer
//! (heartbeats, idle timeout, scheduled close) and the drain signal. Everything else goes down
//! pingora's normal proxy path, where an event-stream response still gets the header policy.

pub mod admin;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod sse;
