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
//! replica is served by [`lookup`] and [`follow::Follow`], which feed an ordinary local
//! entry of the memory store, so the consumers are the same code as for a local resume.
//!
//! Redis failing never takes a stream down: writes that cannot be queued or fail give the
//! stream's keys up (a resume then goes to the app), new streams go without resume while
//! the store is down ([`Redis::is_up`]: a ping every second), and lookups are bounded by
//! `resume.redis.timeout`.

mod follow;
mod writer;

pub(crate) use follow::lookup;

use super::relay::{Framed, Over};
use super::store::{Credentials, Entry};
use crate::config;
use crate::metrics::Metrics;
use crate::proxy::upstream_error::UpstreamError;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use writer::Write;

/// Writes waiting for the writer, all streams together; past it a stream's write gives the
/// stream's keys up rather than wait.
const QUEUE: usize = 16_384;

pub(crate) struct Redis {
    config: config::Redis,
    grace: Duration,
    max_bytes: usize,
    client: redis::Client,
    /// Made by the service, in its runtime; `None` until then.
    conn: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
    queue: mpsc::Sender<Write>,
    /// The writer's end of the queue, until the service takes it.
    receiver: Mutex<Option<mpsc::Receiver<Write>>>,
    metrics: StoreMetrics,
    /// When a store error was last logged (one line per 10 s at most).
    last_log: Mutex<Option<Instant>>,
}

/// `sse_sidecar_resume_store_up` and `sse_sidecar_resume_store_errors_total{op}`.
struct StoreMetrics {
    up: IntGauge,
    errors: [IntCounter; Op::ALL.len()],
}

/// The `op` label of `sse_sidecar_resume_store_errors_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// A pipelined write failed or timed out, or the queue was full.
    Write = 0,
    /// Looking a resumed stream up.
    Lookup = 1,
    /// Following a stream for a client resumed on this replica.
    Follow = 2,
    /// The health check.
    Ping = 3,
}

impl Op {
    const ALL: [Op; 4] = [Op::Write, Op::Lookup, Op::Follow, Op::Ping];

    fn as_str(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Lookup => "lookup",
            Op::Follow => "follow",
            Op::Ping => "ping",
        }
    }
}

impl StoreMetrics {
    fn new(registry: &prometheus::Registry) -> StoreMetrics {
        let up = IntGauge::new(
            "sse_sidecar_resume_store_up",
            "1 while the shared resume store (Redis) answers, 0 while new streams go without \
             resume because it does not.",
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "sse_sidecar_resume_store_errors_total",
                "Failed operations on the shared resume store, by op.",
            ),
            &["op"],
        )
        .expect("valid metric");
        // One store per process; a second registration (tests building several) is harmless.
        let _ = registry.register(Box::new(up.clone()));
        let _ = registry.register(Box::new(errors.clone()));
        StoreMetrics {
            up,
            errors: Op::ALL.map(|op| errors.with_label_values(&[op.as_str()])),
        }
    }
}

impl Redis {
    /// The store named by a validated `resume.store`; connects later, from its service.
    pub(crate) fn new(
        config: config::Redis,
        all: &config::Resume,
        metrics: Arc<Metrics>,
    ) -> Arc<Redis> {
        // rediss:// uses rustls' process-wide provider: the ring one, as pingora installs it.
        pingora_core::tls::install_default_crypto_provider();
        let client = redis::Client::open(config.url.as_str()).expect("validated resume.store URL");
        let (queue, receiver) = mpsc::channel(QUEUE);
        Arc::new(Redis {
            grace: all.grace,
            max_bytes: all.max_bytes,
            client,
            conn: Mutex::new(None),
            up: AtomicBool::new(false),
            queue,
            receiver: Mutex::new(Some(receiver)),
            metrics: StoreMetrics::new(&metrics.registry),
            last_log: Mutex::new(None),
            config,
        })
    }

    /// The background service that connects, checks health and writes.
    pub(crate) fn service(self: &Arc<Self>) -> writer::Service {
        writer::Service(self.clone())
    }

    /// Whether the store answered its last ping (and no command failed since).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.up.set(up as i64);
            if up {
                tracing::info!(store = %self.redacted_url(), "resume store is up");
            }
        }
    }

    /// A failed operation: counted, logged at most every 10 s, and the store is down until
    /// its next good ping.
    fn failed(&self, op: Op, err: &dyn std::fmt::Display) {
        self.metrics.errors[op as usize].inc();
        if !matches!(op, Op::Lookup | Op::Follow) {
            self.set_up(false);
        }
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                store = %self.redacted_url(),
                op = op.as_str(),
                error = %err,
                "resume store error: new streams go without resume while it is down"
            );
        }
    }

    /// The URL without its password, for logs.
    fn redacted_url(&self) -> String {
        match redis::parse_redis_url(&self.config.url) {
            Some(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.config.url.clone(),
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    fn key(&self, token: &str, which: &str) -> String {
        format!("{}{{{token}}}:{which}", self.config.key_prefix)
    }

    /// A command on the shared connection, bounded by `resume.redis.timeout`.
    async fn query<T: redis::FromRedisValue>(&self, op: Op, cmd: &redis::Pipeline) -> Option<T> {
        let Some(mut conn) = self.connection() else {
            self.failed(op, &"not connected yet");
            return None;
        };
        match tokio::time::timeout(self.config.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(op, &e);
                None
            }
            Err(_) => {
                self.failed(op, &"timed out");
                None
            }
        }
    }

    /// Queues a write; `false` when the queue is full.
    fn send(&self, w: Write) -> bool {
        match self.queue.try_send(w) {
            Ok(()) => true,
            Err(_) => {
                self.failed(Op::Write, &"write queue full");
                false
            }
        }
    }

    /// The writer of the stream `entry`, opened on this replica.
    pub(crate) fn mirror(self: &Arc<Self>, entry: &Entry) -> Mirror {
        let token: Arc<str> = entry.token.as_str().into();
        let meta = Meta {
            credentials: entry.credentials,
            target: entry.target.clone(),
            head: head_to_bytes(&entry.head),
        };
        let broken = !self.send(Write::Open {
            token: token.clone(),
            meta,
        });
        Mirror {
            redis: self.clone(),
            token,
            pending: BytesMut::new(),
            broken,
            last_seq: 0,
            ended: false,
        }
    }
}

/// What a resume on another replica needs to know of a stream.
pub(super) struct Meta {
    pub credentials: Credentials,
    pub target: Vec<u8>,
    pub head: Vec<u8>,
}

/// Feeds one stream of this replica into the store, event by event.
pub(crate) struct Mirror {
    redis: Arc<Redis>,
    token: Arc<str>,
    /// Bytes since the last complete event.
    pending: BytesMut,
    /// A write was lost: the stream's keys are given up, nothing more is written.
    broken: bool,
    /// The last event written.
    last_seq: u64,
    /// The end marker was written.
    ended: bool,
}

impl Mirror {
    fn send(&mut self, w: Write) {
        if self.broken {
            return;
        }
        if !self.redis.send(w) {
            self.broken = true;
            // Best effort: a stream with a hole must not be resumed from the store.
            let _ = self.redis.queue.try_send(Write::Forget {
                token: self.token.clone(),
            });
        }
    }

    /// The bytes a producer put into the log: one write per event they complete.
    pub(crate) fn push(&mut self, framed: &Framed) {
        if self.broken {
            return;
        }
        let mut from = 0;
        for &(seq, at) in &framed.ends {
            let bytes = if self.pending.is_empty() {
                framed.bytes.slice(from..at)
            } else {
                self.pending.extend_from_slice(&framed.bytes[from..at]);
                self.pending.split().freeze()
            };
            from = at;
            self.last_seq = seq;
            let token = self.token.clone();
            self.send(Write::Event { token, seq, bytes });
        }
        self.pending.extend_from_slice(&framed.bytes[from..]);
    }

    /// The app's body ended (failed: `error`), `rest` after its last event.
    pub(crate) fn end(&mut self, rest: Bytes, error: Option<&UpstreamError>) {
        self.ended = true;
        self.pending.extend_from_slice(&rest);
        let bytes = self.pending.split().freeze();
        let (end, why) = match error {
            None => ("clean", String::new()),
            Some(e) => ("failed", e.to_string()),
        };
        let (token, seq) = (self.token.clone(), self.last_seq);
        self.send(Write::End {
            token,
            seq,
            bytes,
            end,
            why,
        });
    }

    /// Whether a client on another replica follows the stream now.
    pub(crate) async fn followed_elsewhere(&self) -> bool {
        let mut cmd = redis::pipe();
        cmd.exists(self.redis.key(&self.token, "reader"));
        matches!(
            self.redis.query::<(bool,)>(Op::Lookup, &cmd).await,
            Some((true,))
        )
    }

    /// The stream is over on this replica. Draining (`HandedOff`), waits (bounded) until its
    /// last writes are in the store, so the process does not exit before them.
    pub(crate) async fn over(mut self, how: Over) {
        let token = self.token.clone();
        match how {
            Over::Cancelled => self.send(Write::Forget { token }),
            // Given up before the app's end: followers elsewhere are told (after its end, the
            // keys just expire).
            Over::GivenUp if !self.ended => {
                let seq = self.last_seq;
                self.send(Write::End {
                    token,
                    seq,
                    bytes: Bytes::new(),
                    end: "given_up",
                    why: String::new(),
                });
            }
            Over::GivenUp => {}
            Over::Delivered => self.send(Write::Delivered { token }),
            Over::HandedOff => self.flushed().await,
        }
    }

    /// Resolves once every write queued so far for any stream is done (or failed), bounded by
    /// twice `resume.redis.timeout`.
    async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.redis.queue.try_send(Write::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(self.redis.config.timeout * 2, rx).await;
        }
    }
}

/// The app's response head as stored: the status, then `name: value` lines.
fn head_to_bytes(head: &ResponseHeader) -> Vec<u8> {
    let mut out = head.status.as_u16().to_string().into_bytes();
    for (name, value) in head.headers.iter() {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The head [`head_to_bytes`] stored; `None` when it is not one.
fn head_from_bytes(bytes: &[u8]) -> Option<ResponseHeader> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.parse().ok()?;
    let mut head = ResponseHeader::build(status, None).ok()?;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        head.append_header(name.to_string(), value).ok()?;
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_survives_the_store() {
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.append_header("content-type", "text/event-stream")
            .unwrap();
        head.append_header("set-cookie", "a=1").unwrap();
        head.append_header("set-cookie", "b=2").unwrap();
        let back = head_from_bytes(&head_to_bytes(&head)).unwrap();
        assert_eq!(back.status, 200);
        assert_eq!(back.headers, head.headers);
        assert!(head_from_bytes(b"nope").is_none());
        assert!(head_from_bytes(b"200\r\nno colon").is_none());
    }
}
