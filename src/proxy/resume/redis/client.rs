//! The connection to the shared store: configuration, health, the write queue, metrics,
//! and how a stream's head is stored.

use super::write::Write;
use crate::config;
use crate::metrics::Metrics;
use pingora_http::ResponseHeader;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Writes waiting for the writer, all streams together; past it a stream's write gives the
/// stream's keys up rather than wait.
const QUEUE: usize = 16_384;

pub(crate) struct Redis {
    pub(super) config: config::Redis,
    pub(super) grace: Duration,
    pub(super) max_bytes: usize,
    pub(super) client: redis::Client,
    /// Made by the service, in its runtime; `None` until then.
    pub(super) conn: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
    pub(super) queue: mpsc::Sender<Write>,
    /// The writer's end of the queue, until the service takes it.
    pub(super) receiver: Mutex<Option<mpsc::Receiver<Write>>>,
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

    /// Whether the store answered its last ping (and no command failed since).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(super) fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.up.set(up as i64);
            if up {
                tracing::info!(store = %self.config.redacted_url(), "resume store is up");
            }
        }
    }

    /// A failed operation: counted, logged at most every 10 s, and the store is down until
    /// its next good ping.
    pub(super) fn failed(&self, op: Op, err: &dyn std::fmt::Display) {
        self.metrics.errors[op as usize].inc();
        if !matches!(op, Op::Lookup | Op::Follow) {
            self.set_up(false);
        }
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                store = %self.config.redacted_url(),
                op = op.as_str(),
                error = %err,
                "resume store error: new streams go without resume while it is down"
            );
        }
    }

    pub(super) fn connection(&self) -> Option<ConnectionManager> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    pub(super) fn key(&self, token: &str, which: &str) -> String {
        format!("{}{{{token}}}:{which}", self.config.key_prefix)
    }

    /// A command on the shared connection, bounded by `resume.redis.timeout`.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        op: Op,
        cmd: &redis::Pipeline,
    ) -> Option<T> {
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
    pub(super) fn send(&self, w: Write) -> bool {
        match self.queue.try_send(w) {
            Ok(()) => true,
            Err(_) => {
                self.failed(Op::Write, &"write queue full");
                false
            }
        }
    }
}

/// The app's response head as stored: the status, then `name: value` lines.
pub(super) fn head_to_bytes(head: &ResponseHeader) -> Vec<u8> {
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
pub(super) fn head_from_bytes(bytes: &[u8]) -> Option<ResponseHeader> {
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
