//! The lean relay: SSE candidates over plain-TCP HTTP/1 on raw sockets, on thread-per-core
//! runtimes ([`workers`]), each stream set up in [`serve`] and carried by a per-core epoll loop
//! ([`event_loop`]) while it only relays events and heartbeats.

pub(crate) mod app;
pub(crate) mod client;
pub(crate) mod event_loop;
pub(crate) mod exchange;
pub(crate) mod serve;
pub(crate) mod workers;
