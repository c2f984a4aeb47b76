//! The lean relay: SSE candidates over HTTP/1 on connections of our own ([`conn`]: plain TCP or
//! TLS), on thread-per-core runtimes ([`workers`]), each stream set up in [`serve`]; a plain
//! one is carried by a per-core epoll loop ([`event_loop`]) while it only relays events and
//! heartbeats, a TLS one stays in its task.

pub(crate) mod app;
pub(crate) mod client;
pub(crate) mod conn;
pub(crate) mod event_loop;
pub(crate) mod exchange;
pub(crate) mod serve;
pub(crate) mod workers;
