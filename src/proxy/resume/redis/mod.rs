//! The shared resume store on Redis Streams (`resume.store: redis://…`): a stream outlives
//! its replica.
//!
//! Keys, for a stream with token `T` (the `{T}` hash tag keeps them in one cluster slot):
//! - `<prefix>{T}:events`, a Redis stream: entry `<seq>-0` holds event `seq`'s bytes as
//!   clients were sent them (the sidecar's id stamped in), with whatever came between it and
//!   the event before; entry `<last seq>-1` is the end marker (`end` = `clean`, `failed` or
//!   `given_up`, and the bytes after the last event). Trimmed to about `resume.max_bytes`.
//! - `<prefix>{T}:meta`, a hash: the credentials' HMAC, the request target, the app's
//!   response head, and `delivered` once a client received the end.
//! - `<prefix>{T}:reader`: present while a client on some replica follows the stream.
//!
//! Every key has a TTL of `resume.grace`, refreshed while the stream is live, so a replica
//! killed mid-stream leaves nothing behind for longer than that.
//!
//! The replica holding the app's connection writes ([`Mirror`] → [`writer`]): never on the
//! relay's path, through a bounded queue drained in pipelines. A client resuming on another
//! replica is served by [`find`] and [`Follow`], which feed an ordinary local
//! entry of the memory store, so the consumers are the same code as for a local resume.
//!
//! Redis failing never takes a stream down: writes that cannot be queued or fail give the
//! stream's keys up (a resume then goes to the app), new streams go without resume while
//! the store is down ([`Redis::is_up`]: a ping every second), and lookups are bounded by
//! `resume.redis.timeout`.

mod client;
mod follow;
mod mirror;
mod write;
mod writer;

pub(crate) use client::Redis;
pub(crate) use follow::{find, Follow};
pub(crate) use mirror::Mirror;
pub(crate) use writer::Service;
