//! A stream's state between wake-ups, and the decisions both stream loops take from it: what
//! a chunk from the app becomes, what a timer must do, when a scheduled close is due. Keeping
//! them here is what lets the lean relay's event loop and the tokio stream loop hand a stream
//! back and forth without either owning a rule of its own.

use crate::metrics::{ActiveStreamGuard, Outcome};
use crate::proxy::shared::Shared;
use crate::sse::Framer;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What one SSE stream did, logged when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StreamSummary {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) heartbeats: u64,
    pub(crate) outcome: Option<Outcome>,
}

impl StreamSummary {
    /// A stream that ended before its loop ran (the client left during the header, or the app
    /// could not be reached): counted with its outcome like any other stream.
    pub(crate) fn ended_early(shared: &Shared, outcome: Outcome, bytes: u64) -> StreamSummary {
        shared.metrics.stream_finished(outcome, Duration::ZERO);
        StreamSummary {
            bytes,
            outcome: Some(outcome),
            ..Default::default()
        }
    }
}

/// How a stream ended, for the caller's cleanup and log line.
pub(crate) struct Ended {
    pub(crate) summary: StreamSummary,
    pub(crate) error: Option<String>,
    /// The app's body ended cleanly: its connection may be reused.
    pub(crate) app_done: bool,
}

/// What a write to the client carried, to be recorded once it has fully left.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    /// Body bytes (framing excluded).
    pub(crate) len: u64,
    /// App events completed by these bytes.
    pub(crate) events: u32,
    /// When the bytes were read from the app (or the heartbeat was decided).
    pub(crate) at: Instant,
    pub(crate) heartbeat: bool,
}

/// Body bytes for the client and what they carry.
pub(crate) struct Outgoing {
    pub(crate) bytes: Bytes,
    pub(crate) sent: Sent,
}

/// Bytes already framed for the wire whose write was started elsewhere (by the lean relay's
/// event loop, when the client's socket filled up) and must go out before anything else.
pub(crate) struct Unsent {
    pub(crate) wire: Bytes,
    pub(crate) sent: Sent,
}

/// A stream's state between wake-ups: everything either loop keeps, so a stream can be handed
/// from one to the other without losing its place.
pub(crate) struct Progress {
    _active: ActiveStreamGuard,
    pub(crate) started: Instant,
    pub(crate) request_started: Instant,
    pub(crate) summary: StreamSummary,
    pub(crate) framer: Framer,
    pub(crate) last_read: Instant,
    pub(crate) last_write: Instant,
    pub(crate) first_event: bool,
    /// When set: close at the next event boundary after this instant, with this outcome.
    pub(crate) close_at: Option<(Instant, Outcome)>,
    pub(crate) unsent: Option<Unsent>,
}

/// What a stream's timer found (see [`Progress::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The app was silent for `timeouts.sse_idle`: close (at a boundary) or cut.
    Idle,
    /// The scheduled close is due and the stream is at a boundary.
    Close(Outcome),
    /// The scheduled close is a whole drain window overdue mid-event: cut the stream.
    Cut(Outcome),
    /// A heartbeat is due (decided at this instant).
    Heartbeat(Instant),
    /// Nothing yet: a deadline that moved later.
    Nothing,
}

impl Progress {
    /// A stream whose response head is written, with `prefix` bytes of the sidecar's own
    /// after it (the opening block), which are counted here.
    pub(crate) fn new(shared: &Shared, request_started: Instant, prefix: u64) -> Progress {
        let started = Instant::now();
        let mut close_at = shared
            .config
            .limits
            .max_stream_duration
            .map(|d| (started + d, Outcome::MaxDuration));
        if shared.drain.is_draining() {
            close_at = Some((started, Outcome::Shutdown));
        }
        shared.metrics.stream_bytes_written(prefix);
        Progress {
            _active: shared.metrics.stream_started(),
            started,
            request_started,
            summary: StreamSummary {
                bytes: prefix,
                ..StreamSummary::default()
            },
            framer: Framer::new(prefix > 0),
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
    pub(crate) fn deadline(&self, shared: &Shared) -> Instant {
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

    /// What the stream's timer must do at `now`. Both loops act on this one judgement.
    pub(crate) fn due(&self, shared: &Shared, now: Instant) -> Due {
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

    /// Step 1 of a chunk, in either loop: the app's bytes arrived now; frame them for the
    /// client (the framer may hold back a partial BOM or drop a leading one).
    #[inline]
    pub(crate) fn chunk(&mut self, shared: &Shared, chunk: Bytes) -> Outgoing {
        let at = Instant::now();
        shared.metrics.observe_upstream_silence(at - self.last_read);
        self.last_read = at;
        let fwd = self.framer.forward(chunk);
        Outgoing {
            sent: Sent {
                len: fwd.bytes.len() as u64,
                events: fwd.events,
                at,
                heartbeat: false,
            },
            bytes: fwd.bytes,
        }
    }

    /// Step 1 of a heartbeat the timer found due at `now`.
    #[inline]
    pub(crate) fn heartbeat(&self, shared: &Shared, now: Instant) -> Outgoing {
        let bytes = shared.heartbeat_block.clone();
        Outgoing {
            sent: Sent {
                len: bytes.len() as u64,
                events: 0,
                at: now,
                heartbeat: true,
            },
            bytes,
        }
    }

    /// Step 2, once the bytes have fully left: records them (metrics, summary, heartbeat
    /// clock) and says whether the scheduled close is due at this boundary. Nothing written,
    /// nothing counted.
    #[inline]
    pub(crate) fn sent(&mut self, shared: &Shared, s: Sent) -> Option<Outcome> {
        if s.len == 0 && s.events == 0 && !s.heartbeat {
            return None;
        }
        let metrics = &shared.metrics;
        self.last_write = Instant::now();
        self.summary.bytes += s.len;
        metrics.stream_bytes_written(s.len);
        if s.heartbeat {
            self.framer.injected();
            self.summary.heartbeats += 1;
            metrics.heartbeat_sent();
            return None;
        }
        if s.events > 0 {
            let delay = self.last_write - s.at;
            for _ in 0..s.events {
                metrics.observe_event_delay(delay);
            }
            metrics.events_relayed(u64::from(s.events));
            self.summary.events += u64::from(s.events);
            if self.first_event {
                self.first_event = false;
                metrics.observe_time_to_first_event(self.request_started.elapsed());
            }
        }
        self.close_due(s.at)
    }

    /// Bytes the sidecar wrote itself (the opening block, the closing `retry:`): counted, not
    /// events, and no heartbeat clock.
    pub(crate) fn wrote_own(&mut self, shared: &Shared, len: u64) {
        self.summary.bytes += len;
        shared.metrics.stream_bytes_written(len);
    }

    /// After a chunk: the scheduled close is due at this boundary.
    #[inline]
    fn close_due(&self, read_at: Instant) -> Option<Outcome> {
        let (at, outcome) = self.close_at?;
        // The clock was just read for the write; no third read per chunk.
        (self.framer.at_boundary() && self.last_write.max(read_at) >= at).then_some(outcome)
    }

    /// The stream is over: counts it and says how it ended.
    pub(crate) fn end(self, shared: &Shared, outcome: Outcome, error: Option<String>) -> Ended {
        let mut summary = self.summary;
        summary.outcome = Some(outcome);
        shared
            .metrics
            .stream_finished(outcome, self.started.elapsed());
        Ended {
            summary,
            error,
            app_done: false,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The timer judgements with fixed instants: `t0` plus offsets, never the clock.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    /// Heartbeats every 100 ms, idle timeout 1 s, drain window 500 ms.
    fn shared() -> Shared {
        let yaml =
            "heartbeat_interval: 100ms\nsse_idle_timeout: 1s\nshutdown: {drain_window: 500ms}\n";
        let config = Config::from_yaml(yaml).unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        Shared::new(config, metrics, "127.0.0.1:9".parse().unwrap())
    }

    /// A stream whose last read and write were at `t0`, at an event boundary or not.
    fn at(shared: &Shared, t0: Instant, boundary: bool) -> Progress {
        let mut p = Progress::new(shared, t0, 0);
        p.last_read = t0;
        p.last_write = t0;
        if !boundary {
            let _ = p.framer.forward(Bytes::from_static(b"data: half"));
            assert!(!p.framer.at_boundary());
        }
        p
    }

    #[test]
    fn deadline_is_the_heartbeat_at_a_boundary_and_the_idle_timeout_mid_event() {
        let s = shared();
        let t0 = Instant::now();
        assert_eq!(at(&s, t0, true).deadline(&s), t0 + 100 * MS);
        assert_eq!(at(&s, t0, false).deadline(&s), t0 + 1000 * MS);
        let mut p = at(&s, t0, true);
        p.last_write = t0 + 950 * MS;
        assert_eq!(
            p.deadline(&s),
            t0 + 1000 * MS,
            "the idle timeout comes first"
        );
    }

    #[test]
    fn deadline_of_a_scheduled_close_waits_a_window_mid_event() {
        let s = shared();
        let t0 = Instant::now();
        let mut p = at(&s, t0, true);
        p.close_at = Some((t0 + 30 * MS, Outcome::Shutdown));
        assert_eq!(p.deadline(&s), t0 + 30 * MS);
        let mut p = at(&s, t0, false);
        p.close_at = Some((t0 + 30 * MS, Outcome::Shutdown));
        assert_eq!(p.deadline(&s), t0 + 530 * MS);
    }

    #[test]
    fn due_heartbeat_only_at_a_boundary_after_the_interval() {
        let s = shared();
        let t0 = Instant::now();
        let p = at(&s, t0, true);
        assert_eq!(p.due(&s, t0 + 99 * MS), Due::Nothing);
        assert_eq!(p.due(&s, t0 + 100 * MS), Due::Heartbeat(t0 + 100 * MS));
        assert_eq!(at(&s, t0, false).due(&s, t0 + 500 * MS), Due::Nothing);
    }

    #[test]
    fn due_idle_wins_over_everything() {
        let s = shared();
        let t0 = Instant::now();
        for boundary in [true, false] {
            let mut p = at(&s, t0, boundary);
            p.close_at = Some((t0, Outcome::MaxDuration));
            assert_eq!(p.due(&s, t0 + 1000 * MS), Due::Idle);
        }
    }

    #[test]
    fn due_close_at_a_boundary_cut_a_window_late_mid_event() {
        let s = shared();
        let t0 = Instant::now();
        let mut p = at(&s, t0, true);
        p.close_at = Some((t0 + 50 * MS, Outcome::Shutdown));
        assert_eq!(p.due(&s, t0 + 49 * MS), Due::Nothing);
        assert_eq!(p.due(&s, t0 + 50 * MS), Due::Close(Outcome::Shutdown));
        let mut p = at(&s, t0, false);
        p.close_at = Some((t0 + 50 * MS, Outcome::Shutdown));
        assert_eq!(p.due(&s, t0 + 60 * MS), Due::Nothing);
        assert_eq!(p.due(&s, t0 + 550 * MS), Due::Cut(Outcome::Shutdown));
    }

    #[test]
    fn a_chunk_is_framed_counted_once_sent_and_closes_at_the_boundary() {
        let s = shared();
        let t0 = Instant::now();
        let mut p = at(&s, t0, true);
        p.close_at = Some((t0, Outcome::Shutdown));
        let out = p.chunk(&s, Bytes::from_static(b"data: a\n"));
        assert_eq!((out.sent.len, out.sent.events), (8, 0));
        assert_eq!(p.sent(&s, out.sent), None, "mid-event: no close");
        let out = p.chunk(&s, Bytes::from_static(b"\n"));
        assert_eq!(out.sent.events, 1);
        assert_eq!(p.sent(&s, out.sent), Some(Outcome::Shutdown));
        assert_eq!((p.summary.events, p.summary.bytes), (1, 9));
        let beat = p.heartbeat(&s, t0);
        assert_eq!(p.sent(&s, beat.sent), None);
        assert_eq!(p.summary.heartbeats, 1);
    }
}
