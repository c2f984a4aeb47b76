//! What the soak's clients counted: how each stream ended, resumes, what they hold now, and
//! every violation seen (kept as messages; the run fails at its end if there is one).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How one stream ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A clean end (terminating chunk, END_STREAM) after every event the app was asked for.
    Complete,
    /// A clean end before that, with a `retry:` hint: a drain (SIGQUIT upgrade).
    Drained,
    /// A clean end with the sidecar's `: upstream error` comment: the app was down.
    AppDown,
    /// Cut (no clean end: the app restarted, reset or cut its stream) right after an event,
    /// a heartbeat or the opening comment.
    CutAtBoundary,
    /// A slow reader's stream cut anywhere (the write timeout drops it wherever its writes
    /// stopped, possibly mid-event).
    SlowCut,
    /// The client left: FIN, RST, an h2 stream reset, its h2 connection reset.
    LeftFin,
    LeftRst,
    LeftH2Reset,
    LeftH2Conn,
    /// The run ended with the stream open (the last wave closes it).
    Open,
}

pub const OUTCOMES: [Outcome; 10] = [
    Outcome::Complete,
    Outcome::Drained,
    Outcome::AppDown,
    Outcome::CutAtBoundary,
    Outcome::SlowCut,
    Outcome::LeftFin,
    Outcome::LeftRst,
    Outcome::LeftH2Reset,
    Outcome::LeftH2Conn,
    Outcome::Open,
];

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Drained => "drained (retry hint)",
            Outcome::AppDown => "app down (error comment)",
            Outcome::CutAtBoundary => "cut at an event boundary",
            Outcome::SlowCut => "slow reader cut",
            Outcome::LeftFin => "client left: FIN",
            Outcome::LeftRst => "client left: RST",
            Outcome::LeftH2Reset => "client left: h2 RST_STREAM",
            Outcome::LeftH2Conn => "client left: h2 connection RST",
            Outcome::Open => "open at the end",
        }
    }
}

/// Counters shared by every client task and the driver.
#[derive(Default)]
pub struct Tally {
    pub opened_h1: AtomicU64,
    pub opened_h2: AtomicU64,
    outcomes: [AtomicU64; OUTCOMES.len()],
    /// Streams open now, as the clients hold them (head received, end not yet seen).
    pub held_h1: AtomicUsize,
    pub held_h2: AtomicUsize,
    pub events: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Reconnects with `Last-Event-ID` the sidecar answered from its buffer (same token), and
    /// those that became a fresh stream (grace over, another process, end delivered).
    pub resumed: AtomicU64,
    pub resumed_fresh: AtomicU64,
    /// h2 requests refused on a connection going away (a drain): the client reconnects.
    pub h2_retries: AtomicU64,
    pub app_resets_asked: AtomicU64,
    pub slow_stalls: AtomicU64,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicUsize,
}

impl Tally {
    pub fn ended(&self, o: Outcome) {
        let i = OUTCOMES.iter().position(|&x| x == o).unwrap();
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, o: Outcome) -> u64 {
        let i = OUTCOMES.iter().position(|&x| x == o).unwrap();
        self.outcomes[i].load(Ordering::Relaxed)
    }

    pub fn opened(&self) -> u64 {
        self.opened_h1.load(Ordering::Relaxed) + self.opened_h2.load(Ordering::Relaxed)
    }

    pub fn ended_total(&self) -> u64 {
        OUTCOMES.iter().map(|&o| self.count(o)).sum()
    }

    pub fn held(&self) -> usize {
        self.held_h1.load(Ordering::SeqCst) + self.held_h2.load(Ordering::SeqCst)
    }

    /// Records a violation (the first 50 are kept word for word).
    pub fn violation(&self, what: String) {
        let n = self.violation_count.fetch_add(1, Ordering::Relaxed);
        if n < 50 {
            eprintln!("soak: VIOLATION {what}");
            self.violations.lock().unwrap().push(what);
        }
    }

    pub fn violations(&self) -> (usize, Vec<String>) {
        (
            self.violation_count.load(Ordering::Relaxed),
            self.violations.lock().unwrap().clone(),
        )
    }
}
