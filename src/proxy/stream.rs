//! The SSE stream loop, shared by both relay paths: pingora sessions (h2, TLS) and the lean
//! HTTP/1 path. One `select!` over the client, the app, a timer and the drain signal; the
//! [`Framer`] says where blocks may go.

use super::{Shared, StreamSummary};
use crate::metrics::{Outcome, UpstreamErrorReason};
use crate::sse::Framer;
use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// Why a downstream write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// No progress for `sse.write_timeout`: the client stopped reading.
    Timeout,
    /// The client is gone.
    Closed,
}

impl WriteError {
    pub fn outcome(self) -> Outcome {
        match self {
            WriteError::Timeout => Outcome::SlowConsumer,
            WriteError::Closed => Outcome::ClientClosed,
        }
    }
}

/// A failure reading the app's body.
#[derive(Debug)]
pub struct UpstreamError {
    pub reason: UpstreamErrorReason,
    pub what: &'static str,
    pub detail: String,
}

/// The client side of a stream. Futures must be `Send` (pingora runs us in `async_trait`).
pub trait Downstream {
    /// Writes `data` as body bytes and flushes it.
    fn send(&mut self, data: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Ends the response cleanly (terminating chunk, END_STREAM), writing `last` first.
    fn finish(
        &mut self,
        last: Option<Bytes>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Resolves when the client has closed or reset. Cancel-safe.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;
    /// Cuts the response without a clean end, so the client knows it is incomplete.
    fn abort(&mut self) -> impl Future<Output = ()> + Send;
}

/// The app side of a stream.
pub trait UpstreamBody {
    /// The next body bytes, `None` at a clean end. Cancel-safe: no byte is lost when the
    /// future is dropped before it resolves.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, UpstreamError>> + Send;
}

/// How the stream loop ended, for the caller's cleanup and log line.
pub struct Ended {
    pub summary: StreamSummary,
    pub error: Option<String>,
    /// The app's body ended cleanly: its connection may be reused.
    pub upstream_done: bool,
}

/// Why the loop woke up.
enum Wake {
    ClientGone,
    Chunk(Result<Option<Bytes>, UpstreamError>),
    Timer,
    Drain,
}

/// Runs one event stream after its response header has been written.
///
/// `open` is the opening block still to be written (`None` if the caller already wrote it
/// together with the header); `wrote_prefix` says whether anything precedes the app's bytes.
pub async fn run<D: Downstream + Send, U: UpstreamBody + Send>(
    shared: &Shared,
    down: &mut D,
    up: &mut U,
    request_started: Instant,
    open: Option<Bytes>,
    wrote_prefix: bool,
) -> Ended {
    let cfg = &shared.config;
    let metrics = &shared.metrics;
    let _active = metrics.stream_started();
    let started = Instant::now();
    let mut summary = StreamSummary::default();
    let mut error = None;
    let mut upstream_done = false;

    let outcome = 'relay: {
        let mut framer = Framer::new(wrote_prefix);
        if let Some(open) = open {
            let n = open.len() as u64;
            if let Err(e) = down.send(open).await {
                break 'relay e.outcome();
            }
            summary.bytes += n;
            metrics.stream_bytes_written(n);
        }

        let heartbeat = cfg.sse.heartbeat_interval;
        let mut last_read = Instant::now();
        let mut last_write = last_read;
        let mut first_event = true;
        // Pinned once: it registers with the process-wide drain state on its first poll only.
        let drain_signal = shared.drain.signal();
        tokio::pin!(drain_signal);
        let mut drain_pending = true;
        // When set: close at the next event boundary after this instant, with this outcome.
        let mut close_at: Option<(Instant, Outcome)> = cfg
            .limits
            .max_stream_duration
            .map(|d| (started + d, Outcome::MaxDuration));
        if shared.drain.is_draining() {
            close_at = Some((Instant::now(), Outcome::Shutdown));
        }
        let hard_close_after = cfg.shutdown.drain_window;

        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut timer_at = Instant::now() + Duration::from_secs(3600);

        loop {
            // The earliest thing the timer must wake for. It is only ever moved earlier here;
            // a deadline that moved later (a chunk was written) is noticed when it fires, so
            // a busy stream costs no timer updates.
            let boundary = framer.at_boundary();
            let mut want = last_read + cfg.timeouts.sse_idle;
            if let (Some(every), true) = (heartbeat, boundary) {
                want = want.min(last_write + every);
            }
            if let Some((at, _)) = close_at {
                want = want.min(if boundary { at } else { at + hard_close_after });
            }
            if want < timer_at || timer.is_elapsed() {
                timer_at = want;
                timer.as_mut().reset(TokioInstant::from_std(want));
            }
            let drain_armed = drain_pending && close_at.is_none_or(|(_, o)| o != Outcome::Shutdown);

            let wake = tokio::select! {
                biased;
                // The client closed or reset its connection (or its h2 stream).
                _ = down.gone() => Wake::ClientGone,
                // The app sent bytes, ended the body, or failed.
                chunk = up.next() => Wake::Chunk(chunk),
                // Heartbeat due, idle timeout, or a scheduled close.
                _ = &mut timer => Wake::Timer,
                // SIGTERM: schedule this stream's close somewhere in the drain window.
                () = &mut drain_signal, if drain_armed => {
                    drain_pending = false;
                    Wake::Drain
                }
            };

            match wake {
                Wake::ClientGone => break 'relay Outcome::ClientClosed,
                Wake::Drain => {
                    let at = Instant::now() + shared.drain.close_offset();
                    if close_at.is_none_or(|(t, _)| at < t) {
                        close_at = Some((at, Outcome::Shutdown));
                    }
                }
                Wake::Chunk(Ok(Some(chunk))) => {
                    let read_at = Instant::now();
                    metrics.observe_upstream_silence(read_at - last_read);
                    last_read = read_at;
                    let fwd = framer.forward(chunk);
                    if !fwd.bytes.is_empty() {
                        let n = fwd.bytes.len() as u64;
                        if let Err(e) = down.send(fwd.bytes).await {
                            break 'relay e.outcome();
                        }
                        last_write = Instant::now();
                        summary.bytes += n;
                        metrics.stream_bytes_written(n);
                    }
                    if fwd.events > 0 {
                        let delay = last_write - read_at;
                        for _ in 0..fwd.events {
                            metrics.observe_event_delay(delay);
                        }
                        metrics.events_relayed(u64::from(fwd.events));
                        summary.events += u64::from(fwd.events);
                        if first_event {
                            first_event = false;
                            metrics.observe_time_to_first_event(request_started.elapsed());
                        }
                    }
                    if let Some((at, outcome)) = close_at {
                        // The clock was just read for the write; no third read per chunk.
                        if framer.at_boundary() && last_write.max(read_at) >= at {
                            break 'relay close(shared, down, &mut summary, outcome).await;
                        }
                    }
                }
                Wake::Chunk(Ok(None)) => {
                    let rest = framer.finish();
                    let rest = (!rest.is_empty()).then_some(rest);
                    let n = rest.as_ref().map_or(0, |r| r.len() as u64);
                    if let Err(e) = down.finish(rest).await {
                        break 'relay e.outcome();
                    }
                    summary.bytes += n;
                    metrics.stream_bytes_written(n);
                    upstream_done = true;
                    break 'relay Outcome::Completed;
                }
                Wake::Chunk(Err(e)) => {
                    metrics.upstream_error(e.reason);
                    error = Some(format!("{}: {}", e.what, e.detail));
                    // No clean end: the client sees the stream break and reconnects.
                    down.abort().await;
                    break 'relay Outcome::UpstreamError;
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if now >= last_read + cfg.timeouts.sse_idle {
                        error = Some(format!(
                            "app silent for the SSE idle timeout ({:?})",
                            cfg.timeouts.sse_idle
                        ));
                        if framer.at_boundary() {
                            break 'relay close(shared, down, &mut summary, Outcome::IdleTimeout)
                                .await;
                        }
                        down.abort().await;
                        break 'relay Outcome::IdleTimeout;
                    }
                    if let Some((at, outcome)) = close_at {
                        if now >= at && framer.at_boundary() {
                            break 'relay close(shared, down, &mut summary, outcome).await;
                        }
                        if now >= at + hard_close_after {
                            // The app never finished its event: cut it (the client discards the
                            // partial event) rather than hold shutdown forever.
                            down.abort().await;
                            break 'relay outcome;
                        }
                    }
                    if let Some(every) = heartbeat {
                        if framer.at_boundary() && now >= last_write + every {
                            let block = shared.heartbeat_block.clone();
                            let n = block.len() as u64;
                            if let Err(e) = down.send(block).await {
                                break 'relay e.outcome();
                            }
                            framer.injected();
                            last_write = Instant::now();
                            summary.heartbeats += 1;
                            summary.bytes += n;
                            metrics.heartbeat_sent();
                            metrics.stream_bytes_written(n);
                        }
                    }
                }
            }
        }
    };

    summary.outcome = Some(outcome);
    metrics.stream_finished(outcome, started.elapsed());
    Ended {
        summary,
        error,
        upstream_done,
    }
}

/// Ends a stream cleanly at an event boundary with a jittered `retry:` hint.
async fn close<D: Downstream>(
    shared: &Shared,
    down: &mut D,
    summary: &mut StreamSummary,
    outcome: Outcome,
) -> Outcome {
    let base = match outcome {
        Outcome::Shutdown => shared.config.shutdown.retry,
        _ => shared
            .config
            .sse
            .retry
            .unwrap_or(shared.config.shutdown.retry),
    };
    let block = crate::sse::retry_block(shared.drain.retry_ms(base));
    let n = block.len() as u64;
    if let Err(e) = down.finish(Some(block)).await {
        return e.outcome();
    }
    summary.bytes += n;
    shared.metrics.stream_bytes_written(n);
    outcome
}
