//! The end of every request: its access-log line (one per request; an SSE stream's line comes
//! when it ends, with its counters) and its count in `sse_sidecar_requests_total`.

use crate::metrics::{Kind, Outcome};
use crate::proxy::shared::Shared;
use crate::proxy::stream::StreamSummary;
use std::time::Instant;
use tracing::{info, warn};

/// What one request's line says.
pub(crate) struct Entry<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// 0: no answer was written (the client left first); not counted.
    pub(crate) status: u16,
    pub(crate) kind: Kind,
    pub(crate) started: Instant,
    pub(crate) stream: Option<&'a StreamSummary>,
    pub(crate) error: Option<&'a str>,
    /// A resumed stream: the events replayed from its buffer.
    pub(crate) replayed: Option<u64>,
}

impl Entry<'_> {
    /// Counts the request and writes its line.
    pub(crate) fn record(&self, shared: &Shared) {
        if self.status > 0 {
            shared.metrics.request(self.kind, self.status);
        }
        let (method, path, status) = (self.method, self.path, self.status);
        let kind = self.kind.as_str();
        // Microsecond precision, printed without float noise.
        let duration_ms = self.started.elapsed().as_micros() as f64 / 1000.0;
        let upstream = shared.upstream_addr;
        let error = self.error.unwrap_or("");
        match self.stream {
            Some(s) => info!(
                target: "access",
                method = %method,
                path = %path,
                status,
                kind = %kind,
                duration_ms,
                events = s.events,
                bytes = s.bytes,
                heartbeats = s.heartbeats,
                outcome = %s.outcome.map_or("unknown", Outcome::as_str),
                resumed = self.replayed.is_some(),
                replayed = self.replayed.unwrap_or(0),
                upstream = %upstream,
                error,
                "stream ended"
            ),
            None => info!(
                target: "access",
                method = %method,
                path = %path,
                status,
                kind = %kind,
                duration_ms,
                upstream = %upstream,
                error,
                "request"
            ),
        }
        if let Some(err) = self.error.filter(|_| status >= 500) {
            warn!(status, upstream = %upstream, "upstream failure: {err}");
        }
    }
}
