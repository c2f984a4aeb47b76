//! The SSE stream loop, shared by both relay paths: pingora sessions (h2, TLS) and the lean
//! HTTP/1 path. One `select!` over the client, the app, a timer and the drain signal; the
//! [`Framer`] says where blocks may go.

use super::{Shared, StreamSummary};
use crate::metrics::{ActiveStreamGuard, Outcome, UpstreamErrorReason};
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
    /// Writes bytes already framed for the wire (see [`Unsent`]).
    fn send_raw(&mut self, wire: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
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

/// Bytes already framed for the wire whose write was started elsewhere (by the lean relay's
/// event loop, when the client's socket filled up) and must go out before anything else.
pub struct Unsent {
    pub wire: Bytes,
    /// Body bytes in the whole write, for the byte counters.
    pub bytes: u64,
    pub events: u32,
    pub read_at: Instant,
    pub heartbeat: bool,
}

/// A stream's state between wake-ups: everything [`run`] keeps, so a stream can be handed
/// from one loop to another (the lean relay's event loop and back) without losing its place.
pub struct Progress {
    _active: ActiveStreamGuard,
    pub started: Instant,
    pub request_started: Instant,
    pub summary: StreamSummary,
    pub framer: Framer,
    pub last_read: Instant,
    pub last_write: Instant,
    pub first_event: bool,
    /// When set: close at the next event boundary after this instant, with this outcome.
    pub close_at: Option<(Instant, Outcome)>,
    pub unsent: Option<Unsent>,
}

impl Progress {
    /// A stream whose response header (and opening block, if `wrote_prefix`) is written.
    pub fn new(shared: &Shared, request_started: Instant, wrote_prefix: bool) -> Progress {
        let started = Instant::now();
        let mut close_at = shared
            .config
            .limits
            .max_stream_duration
            .map(|d| (started + d, Outcome::MaxDuration));
        if shared.drain.is_draining() {
            close_at = Some((started, Outcome::Shutdown));
        }
        Progress {
            _active: shared.metrics.stream_started(),
            started,
            request_started,
            summary: StreamSummary::default(),
            framer: Framer::new(wrote_prefix),
            last_read: started,
            last_write: started,
            first_event: true,
            close_at,
            unsent: None,
        }
    }

    /// The earliest instant a timer must wake this stream: idle timeout, heartbeat (at an
    /// event boundary only), or a scheduled close.
    #[inline]
    pub fn deadline(&self, shared: &Shared) -> Instant {
        let cfg = &shared.config;
        let boundary = self.framer.at_boundary();
        let mut want = self.last_read + cfg.timeouts.sse_idle;
        if let (Some(every), true) = (cfg.sse.heartbeat_interval, boundary) {
            want = want.min(self.last_write + every);
        }
        if let Some((at, _)) = self.close_at {
            want = want.min(if boundary {
                at
            } else {
                at + cfg.shutdown.drain_window
            });
        }
        want
    }

    /// A chunk arrived from the app now; returns the read time.
    #[inline]
    pub fn read(&mut self, shared: &Shared) -> Instant {
        let read_at = Instant::now();
        shared
            .metrics
            .observe_upstream_silence(read_at - self.last_read);
        self.last_read = read_at;
        read_at
    }

    /// A write of `bytes` body bytes carrying `events` app events (read at `read_at`) or a
    /// heartbeat has fully left. Nothing written, nothing counted.
    #[inline]
    pub fn wrote(
        &mut self,
        shared: &Shared,
        bytes: u64,
        events: u32,
        read_at: Instant,
        heartbeat: bool,
    ) {
        if bytes == 0 && events == 0 && !heartbeat {
            return;
        }
        let metrics = &shared.metrics;
        if bytes > 0 || heartbeat {
            self.last_write = Instant::now();
        }
        self.summary.bytes += bytes;
        metrics.stream_bytes_written(bytes);
        if heartbeat {
            self.framer.injected();
            self.summary.heartbeats += 1;
            metrics.heartbeat_sent();
        }
        if events > 0 {
            let delay = self.last_write - read_at;
            for _ in 0..events {
                metrics.observe_event_delay(delay);
            }
            metrics.events_relayed(u64::from(events));
            self.summary.events += u64::from(events);
            if self.first_event {
                self.first_event = false;
                metrics.observe_time_to_first_event(self.request_started.elapsed());
            }
        }
    }

    /// After a chunk: the scheduled close is due at this boundary.
    #[inline]
    pub fn close_due(&self, read_at: Instant) -> Option<Outcome> {
        let (at, outcome) = self.close_at?;
        // The clock was just read for the write; no third read per chunk.
        (self.framer.at_boundary() && self.last_write.max(read_at) >= at).then_some(outcome)
    }

    /// The stream is over: counts it and says how it ended.
    pub fn end(self, shared: &Shared, outcome: Outcome, error: Option<String>) -> Ended {
        let mut summary = self.summary;
        summary.outcome = Some(outcome);
        shared
            .metrics
            .stream_finished(outcome, self.started.elapsed());
        Ended {
            summary,
            error,
            upstream_done: false,
        }
    }

    /// What the stream's timer must do at `now`. Both loops act on this one judgement.
    pub fn due(&self, shared: &Shared, now: Instant) -> Due {
        let cfg = &shared.config;
        let boundary = self.framer.at_boundary();
        if now >= self.last_read + cfg.timeouts.sse_idle {
            return Due::Idle;
        }
        if let Some((at, outcome)) = self.close_at {
            if now >= at && boundary {
                return Due::Close(outcome);
            }
            if now >= at + cfg.shutdown.drain_window {
                return Due::Cut(outcome);
            }
        }
        match cfg.sse.heartbeat_interval {
            Some(every) if boundary && now >= self.last_write + every => Due::Heartbeat(now),
            _ => Due::Nothing,
        }
    }
}

/// What a stream's timer found (see [`Progress::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The app was silent for `timeouts.sse_idle`: close (at a boundary) or cut.
    Idle,
    /// The scheduled close is due and the stream is at a boundary.
    Close(Outcome),
    /// The scheduled close is a whole drain window overdue mid-event: cut the stream.
    Cut(Outcome),
    /// A heartbeat is due (read at this instant).
    Heartbeat(Instant),
    /// Nothing yet: a deadline that moved later.
    Nothing,
}

/// Why the loop woke up.
enum Wake {
    ClientGone,
    Chunk(Result<Option<Bytes>, UpstreamError>),
    Timer,
    Drain,
}

/// Runs one event stream after its response header has been written, from wherever
/// `p` left off.
///
/// `open` is the opening block still to be written (`None` if the caller already wrote it
/// together with the header).
pub async fn run<D: Downstream + Send, U: UpstreamBody + Send>(
    shared: &Shared,
    down: &mut D,
    up: &mut U,
    mut p: Progress,
    open: Option<Bytes>,
) -> Ended {
    let cfg = &shared.config;
    let metrics = &shared.metrics;
    let mut error = None;
    let mut upstream_done = false;

    let outcome = 'relay: {
        if let Some(u) = p.unsent.take() {
            if let Err(e) = down.send_raw(u.wire).await {
                break 'relay e.outcome();
            }
            p.wrote(shared, u.bytes, u.events, u.read_at, u.heartbeat);
            if let Some(outcome) = p.close_due(u.read_at) {
                break 'relay close(shared, down, &mut p.summary, outcome).await;
            }
        }
        if let Some(open) = open {
            let n = open.len() as u64;
            if let Err(e) = down.send(open).await {
                break 'relay e.outcome();
            }
            p.summary.bytes += n;
            metrics.stream_bytes_written(n);
        }

        // Pinned once: it registers with the process-wide drain state on its first poll only.
        let drain_signal = shared.drain.signal();
        tokio::pin!(drain_signal);
        let mut drain_pending = true;

        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut timer_at = Instant::now() + Duration::from_secs(3600);

        loop {
            // The earliest thing the timer must wake for. It is only ever moved earlier here;
            // a deadline that moved later (a chunk was written) is noticed when it fires, so
            // a busy stream costs no timer updates.
            let want = p.deadline(shared);
            if want < timer_at || timer.is_elapsed() {
                timer_at = want;
                timer.as_mut().reset(TokioInstant::from_std(want));
            }
            let drain_armed =
                drain_pending && p.close_at.is_none_or(|(_, o)| o != Outcome::Shutdown);

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
                    if p.close_at.is_none_or(|(t, _)| at < t) {
                        p.close_at = Some((at, Outcome::Shutdown));
                    }
                }
                Wake::Chunk(Ok(Some(chunk))) => {
                    let read_at = p.read(shared);
                    let fwd = p.framer.forward(chunk);
                    let n = fwd.bytes.len() as u64;
                    if n > 0 {
                        if let Err(e) = down.send(fwd.bytes).await {
                            break 'relay e.outcome();
                        }
                    }
                    p.wrote(shared, n, fwd.events, read_at, false);
                    if let Some(outcome) = p.close_due(read_at) {
                        break 'relay close(shared, down, &mut p.summary, outcome).await;
                    }
                }
                Wake::Chunk(Ok(None)) => {
                    let rest = p.framer.finish();
                    let rest = (!rest.is_empty()).then_some(rest);
                    let n = rest.as_ref().map_or(0, |r| r.len() as u64);
                    if let Err(e) = down.finish(rest).await {
                        break 'relay e.outcome();
                    }
                    p.summary.bytes += n;
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
                Wake::Timer => match p.due(shared, Instant::now()) {
                    Due::Nothing => {}
                    Due::Idle => {
                        error = Some(format!(
                            "app silent for the SSE idle timeout ({:?})",
                            cfg.timeouts.sse_idle
                        ));
                        if p.framer.at_boundary() {
                            break 'relay close(shared, down, &mut p.summary, Outcome::IdleTimeout)
                                .await;
                        }
                        down.abort().await;
                        break 'relay Outcome::IdleTimeout;
                    }
                    Due::Close(outcome) => {
                        break 'relay close(shared, down, &mut p.summary, outcome).await;
                    }
                    Due::Cut(outcome) => {
                        // The app never finished its event: cut it (the client discards the
                        // partial event) rather than hold shutdown forever.
                        down.abort().await;
                        break 'relay outcome;
                    }
                    Due::Heartbeat(now) => {
                        let block = shared.heartbeat_block.clone();
                        let n = block.len() as u64;
                        if let Err(e) = down.send(block).await {
                            break 'relay e.outcome();
                        }
                        p.wrote(shared, n, 0, now, true);
                    }
                },
            }
        }
    };

    let mut ended = p.end(shared, outcome, error);
    ended.upstream_done = upstream_done;
    ended
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
