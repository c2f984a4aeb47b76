//! An event stream once its head is written, for both relays: the tokio stream loop
//! ([`run`]), the state and decisions it shares with the lean relay's event loop
//! ([`progress`]), the sides it talks to ([`io`]), and the answers that are not streams
//! ([`respond`]).
//!
//! [`run`] only dispatches: each wake-up is turned into a step of [`Progress`] (frame a chunk,
//! judge a timer, record a write) and a write to the client.

pub(crate) mod io;
pub(crate) mod progress;
pub(crate) mod respond;

pub(crate) use io::{AppBody, Body, Client, WriteError};
pub(crate) use progress::{Due, Ended, Progress, StreamSummary, Unsent};

use crate::metrics::Outcome;
use crate::proxy::shared::Shared;
use crate::proxy::upstream_error::UpstreamError;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;

/// Why the loop woke up.
enum Wake {
    ClientGone,
    Chunk(Result<Option<Bytes>, UpstreamError>),
    Timer,
    Drain,
}

/// Runs one event stream after its head (and opening block) has been written, from wherever
/// `p` left off.
///
/// Not an `async fn`: one copies its arguments into locals and keeps both, and a stream holds
/// this future for its whole life; the block below uses the captured `p` in place.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<'a, C: Client + Send, A: AppBody + Send>(
    shared: &'a Shared,
    client: &'a mut C,
    app: &'a mut A,
    mut p: Progress,
) -> impl std::future::Future<Output = Ended> + Send + 'a {
    async move {
        let mut error = None;
        let mut app_done = false;

        // A write error leaves the block as `Err`, handled once after it (one await of the
        // abort, not one per write: every await adds to this future, which a stream holds for
        // its whole life).
        let result: Result<Outcome, WriteError> = 'relay: {
            if p.unsent.is_some() {
                if let Some(ended) = Box::pin(send_unsent(shared, client, &mut p)).await {
                    break 'relay ended;
                }
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
                    _ = client.gone() => Wake::ClientGone,
                    // The app sent bytes, ended the body, or failed.
                    chunk = app.next() => Wake::Chunk(chunk),
                    // Heartbeat due, idle timeout, or a scheduled close.
                    _ = &mut timer => Wake::Timer,
                    // SIGTERM: schedule this stream's close somewhere in the drain window.
                    () = &mut drain_signal, if drain_armed => {
                        drain_pending = false;
                        Wake::Drain
                    }
                };

                match wake {
                    Wake::ClientGone => break 'relay Ok(Outcome::ClientClosed),
                    Wake::Drain => {
                        let at = Instant::now() + shared.drain.close_offset();
                        if p.close_at.is_none_or(|(t, _)| at < t) {
                            p.close_at = Some((at, Outcome::Shutdown));
                        }
                    }
                    Wake::Chunk(Ok(Some(chunk))) => {
                        let out = p.chunk(shared, chunk);
                        if !out.bytes.is_empty() {
                            if let Err(e) = client.send(out.bytes).await {
                                break 'relay Err(e);
                            }
                        }
                        if let Some(outcome) = p.sent(shared, out.sent) {
                            break 'relay Box::pin(close(shared, client, &mut p, outcome)).await;
                        }
                    }
                    Wake::Chunk(Ok(None)) => {
                        let rest = p.framer.finish();
                        let n = rest.len() as u64;
                        let last = (!rest.is_empty()).then_some(rest);
                        if let Err(e) = Box::pin(client.finish(last)).await {
                            break 'relay Err(e);
                        }
                        p.wrote_own(shared, n);
                        app_done = true;
                        break 'relay Ok(Outcome::Completed);
                    }
                    Wake::Chunk(Err(e)) => {
                        shared.metrics.upstream_error(e.failure.reason());
                        error = Some(e.to_string());
                        // No clean end: the client sees the stream break and reconnects.
                        Box::pin(client.abort()).await;
                        break 'relay Ok(Outcome::UpstreamError);
                    }
                    Wake::Timer => match p.due(shared, Instant::now()) {
                        Due::Nothing => {}
                        Due::Idle => {
                            error = Some(format!(
                                "app silent for the SSE idle timeout ({:?})",
                                shared.config.timeouts.sse_idle
                            ));
                            if p.framer.at_boundary() {
                                let closing = close(shared, client, &mut p, Outcome::IdleTimeout);
                                break 'relay Box::pin(closing).await;
                            }
                            Box::pin(client.abort()).await;
                            break 'relay Ok(Outcome::IdleTimeout);
                        }
                        Due::Close(outcome) => {
                            break 'relay Box::pin(close(shared, client, &mut p, outcome)).await;
                        }
                        Due::Cut(outcome) => {
                            // The app never finished its event: cut it (the client discards the
                            // partial event) rather than hold shutdown forever.
                            Box::pin(client.abort()).await;
                            break 'relay Ok(outcome);
                        }
                        Due::Heartbeat(now) => {
                            let out = p.heartbeat(shared, now);
                            if let Err(e) = client.send(out.bytes).await {
                                break 'relay Err(e);
                            }
                            p.sent(shared, out.sent);
                        }
                    },
                }
            }
        };

        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => Box::pin(write_failed(client, e)).await,
        };
        let mut ended = p.end(shared, outcome, error);
        ended.app_done = app_done;
        ended
    }
}

/// What the event loop could not write (the client's socket was full) goes first; `Some`
/// when the stream ends with it. Boxed by its caller: the bytes it holds across the write
/// would otherwise take room in the stream loop's future for the stream's whole life.
async fn send_unsent<C: Client>(
    shared: &Shared,
    client: &mut C,
    p: &mut Progress,
) -> Option<Result<Outcome, WriteError>> {
    let u = p.unsent.take()?;
    if let Err(e) = client.send_raw(u.wire).await {
        return Some(Err(e));
    }
    let outcome = p.sent(shared, u.sent)?;
    Some(close(shared, client, p, outcome).await)
}

/// A write to the client failed. A client that stopped reading is cut off without a clean end
/// (RST_STREAM on h2), so that it cannot mistake the stream for a finished one; a client that
/// is gone needs nothing more.
async fn write_failed<C: Client>(client: &mut C, e: WriteError) -> Outcome {
    if e == WriteError::Timeout {
        client.abort().await;
    }
    e.outcome()
}

/// Ends a stream cleanly at an event boundary with a jittered `retry:` hint.
async fn close<C: Client>(
    shared: &Shared,
    client: &mut C,
    p: &mut Progress,
    outcome: Outcome,
) -> Result<Outcome, WriteError> {
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
    client.finish(Some(block)).await?;
    p.wrote_own(shared, n);
    Ok(outcome)
}
