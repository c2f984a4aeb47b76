//! What every stream of the client shares, whatever its protocol: the failure kinds, the
//! counters all stream tasks add to, and the body parser (framing + SSE) that feeds them.

use crate::hist::Hist;
use crate::parse::{Chunked, Item, Sse};
use crate::sys::now_ns;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug)]
pub enum Fail {
    Connect,
    Status,
    Reset,
    Eof,
    Timeout,
    Io,
    Proto,
}

pub const FAIL_NAMES: [&str; 7] = [
    "connect", "status", "reset", "eof", "timeout", "io", "proto",
];
const MAX_SAMPLES: usize = 8;

pub type Failure = (Fail, String);

pub fn io_fail(what: &str, e: io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Fail::Reset,
        io::ErrorKind::BrokenPipe => Fail::Reset,
        io::ErrorKind::TimedOut => Fail::Timeout,
        _ => Fail::Io,
    };
    (kind, format!("{what}: {e}"))
}

/// Counters shared by all stream tasks; hot ones are added once per read, not per event.
pub struct Shared {
    pub hist: Hist,
    pub measuring: AtomicBool,
    pub events: AtomicU64,
    pub events_window: AtomicU64,
    pub comments: AtomicU64,
    pub comments_window: AtomicU64,
    pub bytes: AtomicU64,
    pub bytes_window: AtomicU64,
    pub bad_timestamps: AtomicU64,
    pub last_event_ns: AtomicU64,
    pub settled: AtomicUsize,
    pub open: AtomicUsize,
    pub failures: [AtomicU64; 7],
    pub samples: Mutex<Vec<String>>,
}

impl Shared {
    pub fn fail(&self, (kind, msg): Failure) {
        self.failures[kind as usize].fetch_add(1, Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < MAX_SAMPLES {
            s.push(format!("{}: {msg}", FAIL_NAMES[kind as usize]));
        }
    }

    /// A stream has its response head: it counts as open from now on.
    pub fn opened(&self, settled: &mut bool) {
        *settled = true;
        self.open.fetch_add(1, Relaxed);
        self.settled.fetch_add(1, Relaxed);
    }
}

pub enum Framing {
    Chunked(Chunked),
    Length(u64),
    Close,
}

/// Per-stream body state: framing decoder + SSE parser.
pub struct Body {
    framing: Framing,
    sse: Sse,
}

impl Body {
    pub fn new(framing: Framing) -> Body {
        Body {
            framing,
            sse: Sse::default(),
        }
    }

    /// Parses one read's bytes. Returns whether the body is complete.
    pub fn process(&mut self, data: &[u8], sh: &Shared) -> Result<bool, Failure> {
        let now = now_ns();
        let measuring = sh.measuring.load(Relaxed);
        let (mut events, mut comments, mut bytes, mut bad) = (0u64, 0u64, 0u64, 0u64);
        let sse = &mut self.sse;
        let mut on = |it: Item| match it {
            Item::Event { ts } => {
                events += 1;
                if let (true, Some(ts)) = (measuring, ts) {
                    // More than an hour off: the origin uses another clock.
                    if ts > now || now - ts > 3_600_000_000_000 {
                        bad += 1;
                    } else {
                        sh.hist.record(now - ts);
                    }
                }
            }
            Item::Comment => comments += 1,
        };
        let done = match &mut self.framing {
            Framing::Chunked(c) => {
                c.feed(data, |p| {
                    bytes += p.len() as u64;
                    sse.feed(p, &mut on);
                })
                .map_err(|e| (Fail::Proto, format!("chunked: {e}")))?;
                c.done()
            }
            Framing::Length(rem) => {
                let n = (*rem).min(data.len() as u64);
                bytes += n;
                sse.feed(&data[..n as usize], &mut on);
                *rem -= n;
                *rem == 0
            }
            Framing::Close => {
                bytes += data.len() as u64;
                sse.feed(data, &mut on);
                false
            }
        };
        if events > 0 {
            sh.events.fetch_add(events, Relaxed);
            sh.last_event_ns.store(now, Relaxed);
        }
        if comments > 0 {
            sh.comments.fetch_add(comments, Relaxed);
        }
        sh.bytes.fetch_add(bytes, Relaxed);
        if measuring {
            sh.events_window.fetch_add(events, Relaxed);
            sh.comments_window.fetch_add(comments, Relaxed);
            sh.bytes_window.fetch_add(bytes, Relaxed);
            if bad > 0 {
                sh.bad_timestamps.fetch_add(bad, Relaxed);
            }
        }
        Ok(done)
    }
}

/// How every stream task connects and reads.
pub struct TaskCfg {
    /// `https://`: the client's TLS settings.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    pub read_buf: usize,
    pub connect_timeout: std::time::Duration,
    pub idle_timeout: Option<std::time::Duration>,
}
