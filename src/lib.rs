//! sse-sidecar: a pingora reverse proxy that makes Server-Sent Events survive every buffering,
//! compressing and timing-out box between an app and a browser.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions only.
//! - [`config`]: layered (defaults < file < env < flags) and validated configuration.
//! - `proxy`: everything between the listener and the app; `docs/ARCHITECTURE.md` walks a
//!   chunk's path through it, for both relays.
//! - [`sse`]: the byte-level framer and the blocks the relay may inject.
//! - [`metrics`]: every metric name, help text and bucket.
//! - [`probe`]: the `probe` command, which finds the box on a path that breaks streams.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz` on their own listener.
//! - [`server`]: wires the above into a pingora `Server`.
//! - [`control`]: the pid file and `sse-sidecar drain`.
//! - `sys`: the system calls no safe wrapper covers — the one module allowed `unsafe`.
//! - `fuzzing` (hidden): the private byte parsers, wrapped for the fuzz targets in `tests/fuzz/`.
//!
//! # How a request flows
//!
//! pingora accepts connections on the listen port. The head guard reads each request head
//! first (under one deadline, at most 64 KiB, rejecting smuggling shapes) and routes it:
//!
//! - an *SSE candidate* (its `Accept` names `text/event-stream`, its path is under
//!   `sse.paths`, or its route was learned from an earlier event-stream answer, `sse.learn`)
//!   on plain-TCP HTTP/1 leaves pingora's connection task for the lean relay,
//!   which speaks HTTP/1.1 on raw sockets: each stream is set up on a thread-per-core tokio
//!   runtime, and once its head is written a per-core epoll loop relays its events and
//!   heartbeats;
//! - an SSE candidate over h2 or TLS is taken over in pingora's `request_filter` by the
//!   session relay, which uses pingora's sessions and connector;
//! - everything else goes down pingora's normal proxy path, where an event-stream response
//!   still gets the header policy, and teaches the sidecar its route.
//!
//! Both relays run the same stream code: one `select!` over the client leaving, the app's
//! next bytes, a timer (heartbeats, idle timeout, scheduled close) and the drain signal, with
//! the [`sse::Framer`] saying where a block may be injected. The lean relay's epoll loop does
//! only the common case itself (a chunk in, the same bytes framed out; a heartbeat at a
//! boundary), through the same steps, and hands the stream back for everything else.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub(crate) mod admin;
pub mod cli;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod metrics;
pub mod probe;
pub(crate) mod proxy;
mod random;
pub mod server;
pub mod sse;
mod sys;
