//! `sse-bench client`: opens N concurrent SSE streams over HTTP/1.1 and
//! measures them.
//!
//! Phases: streams start spread evenly over `--ramp`, each at a random point of its
//! slot (same seed every run, so every target sees the same schedule). Without the
//! jitter, starts a round number apart lock streams into phase: 1,000 streams over
//! 5 s start 5 ms apart, and with a 100 ms event period every 20th stream shares a
//! phase, so the app emits 20 bursts of 50 events instead of 1,000 independent
//! streams. Once every stream has its
//! response head (or has failed) the run is *ready*; the measurement window
//! then opens at the next quiet gap (so a 1 s fan-out burst is never cut in
//! half; `--align` bounds the wait), lasts `--duration`, and closes at a quiet
//! gap again. Latency, the
//! `*_window` counters and the watched process group's CPU cover the window
//! only; RSS "idle" is sampled before the first connection and "loaded" at the
//! end of the window, with every stream still open.

use crate::conn::{self, H2Slot, Target};
use crate::hist::Summary;
use crate::stream::{Fail, Shared, TaskCfg, FAIL_NAMES};
use crate::sys::{now_ns, sample_group};
use crate::{h1, h2};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

pub struct ClientOpts {
    pub url: String,
    /// HTTP/2 (h2c with prior knowledge on `http://`, ALPN on `https://`).
    pub h2: bool,
    /// h2: the streams are spread over this many connections (stream i on connection
    /// i mod N); HTTP/1.1 always has one stream per connection.
    pub connections: usize,
    /// `https://`: the CA to trust (PEM).
    pub cacert: Option<PathBuf>,
    pub streams: usize,
    pub ramp: Duration,
    pub duration: Duration,
    pub read_buf: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub ready_timeout: Duration,
    pub align: Duration,
    pub watch_pgid: Option<i32>,
    pub ready_file: Option<PathBuf>,
    pub headers: Vec<String>,
}

/// A fixed pseudo-random number in [0, 1) for stream `i` (splitmix64).
fn unit_jitter(i: u64) -> f64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// One stream, from its start time to the end of the run. Returns whether it was
/// still open, without failure, when the run ended.
async fn stream_task(
    t: Arc<Target>,
    slot: Option<Arc<H2Slot>>,
    cfg: Arc<TaskCfg>,
    sh: Arc<Shared>,
    start_at: Instant,
    mut stop: watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = sleep_until(start_at) => {}
        _ = stop.changed() => {
            sh.settled.fetch_add(1, Relaxed);
            sh.fail((Fail::Timeout, "run ended before this stream started".into()));
            return false;
        }
    }
    let mut settled = false;
    let r = run_stream(&t, slot.as_deref(), &cfg, &sh, &mut stop, &mut settled).await;
    if settled {
        sh.open.fetch_sub(1, Relaxed);
    } else {
        sh.settled.fetch_add(1, Relaxed);
    }
    match r {
        Ok(()) => true,
        Err(f) => {
            sh.fail(f);
            false
        }
    }
}

/// The stream's protocol: HTTP/1.1 on a connection of its own (plain or TLS), or h2 on the
/// shared connection `slot`.
async fn run_stream(
    t: &Target,
    slot: Option<&H2Slot>,
    cfg: &TaskCfg,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    settled: &mut bool,
) -> Result<(), crate::stream::Failure> {
    if let Some(slot) = slot {
        return h2::run(t, slot, cfg, sh, stop, settled).await;
    }
    let s = conn::tcp(t, cfg.connect_timeout).await?;
    match &cfg.tls {
        None => h1::run(s, &t.request, cfg, sh, stop, settled).await,
        Some(tls) => {
            let s = conn::tls(s, t, tls, cfg.connect_timeout).await?;
            h1::run(s, &t.request, cfg, sh, stop, settled).await
        }
    }
}

/// Waits until no event arrived for `quiet`, at most `max`.
async fn wait_quiet(sh: &Shared, quiet: Duration, max: Duration) {
    let until = Instant::now() + max;
    while Instant::now() < until {
        let last = sh.last_event_ns.load(Relaxed);
        if last == 0 || now_ns().saturating_sub(last) >= quiet.as_nanos() as u64 {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

pub struct Report {
    url: String,
    h2: bool,
    /// Connections the streams were spread over.
    connections: usize,
    streams: usize,
    ramp_s: f64,
    window_s: f64,
    ready: bool,
    open_at_ready: usize,
    held: usize,
    failures: [u64; 7],
    samples: Vec<String>,
    events: u64,
    events_window: u64,
    comments: u64,
    comments_window: u64,
    bytes: u64,
    bytes_window: u64,
    bad_timestamps: u64,
    latency: Summary,
    proxy: Option<ProxyUse>,
}

struct ProxyUse {
    pgid: i32,
    procs: u32,
    rss_idle: u64,
    rss_loaded: u64,
    rss_peak: u64,
    cpu_s_window: f64,
}

pub async fn run(o: ClientOpts) -> Result<Report, String> {
    let target = Arc::new(conn::parse_url(&o.url, &o.headers)?);
    let tls = match target.tls {
        true => Some(conn::tls_config(o.cacert.as_deref(), o.h2)?),
        false => None,
    };
    let cfg = Arc::new(TaskCfg {
        tls,
        read_buf: o.read_buf.max(1024),
        connect_timeout: o.connect_timeout,
        idle_timeout: o.idle_timeout,
    });
    let sh = Arc::new(Shared {
        hist: crate::hist::Hist::new(),
        measuring: AtomicBool::new(false),
        events: AtomicU64::new(0),
        events_window: AtomicU64::new(0),
        comments: AtomicU64::new(0),
        comments_window: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        bytes_window: AtomicU64::new(0),
        bad_timestamps: AtomicU64::new(0),
        last_event_ns: AtomicU64::new(0),
        settled: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        failures: Default::default(),
        samples: Mutex::new(Vec::new()),
    });
    let sample = |pgid: Option<i32>| pgid.map(sample_group);
    let idle = sample(o.watch_pgid);

    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let n = o.streams;
    let slots: Vec<Arc<H2Slot>> = match o.h2 {
        true => (0..o.connections.clamp(1, n.max(1)))
            .map(|_| Arc::new(H2Slot::new()))
            .collect(),
        false => vec![],
    };
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let start_at = t0
            + o.ramp
                .mul_f64((i as f64 + unit_jitter(i as u64)) / n as f64);
        tasks.push(tokio::spawn(stream_task(
            target.clone(),
            (!slots.is_empty()).then(|| slots[i % slots.len()].clone()),
            cfg.clone(),
            sh.clone(),
            start_at,
            stop_rx.clone(),
        )));
    }

    // Ready: every stream has its response head or has failed.
    let ready_by = t0 + o.ramp + o.ready_timeout;
    while sh.settled.load(Relaxed) < n && Instant::now() < ready_by {
        sleep(Duration::from_millis(10)).await;
    }
    let ready = sh.settled.load(Relaxed) >= n;
    let open_at_ready = sh.open.load(Relaxed);
    if let Some(f) = &o.ready_file {
        let _ = std::fs::write(f, format!("{open_at_ready}\n"));
    }

    // The window opens and closes in a quiet gap between bursts (at most `align` late).
    let quiet = Duration::from_millis(100);
    let align = o.align;
    wait_quiet(&sh, quiet, align).await;
    let cpu0 = sample(o.watch_pgid);
    let w0 = Instant::now();
    sh.measuring.store(true, Relaxed);
    let end = w0 + o.duration;
    let mut peak = idle.map_or(0, |s| s.rss_bytes);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        sleep((end - now).min(Duration::from_secs(1))).await;
        if let Some(s) = sample(o.watch_pgid) {
            peak = peak.max(s.rss_bytes);
        }
    }
    wait_quiet(&sh, quiet, align).await;
    sh.measuring.store(false, Relaxed);
    let window_s = w0.elapsed().as_secs_f64();
    let loaded = sample(o.watch_pgid);

    let _ = stop_tx.send(true);
    let mut held = 0;
    let join_by = Instant::now() + Duration::from_secs(10);
    for t in tasks {
        match timeout(join_by.saturating_duration_since(Instant::now()), t).await {
            Ok(Ok(true)) => held += 1,
            Ok(_) => {}
            Err(_) => break, // stuck tasks are abandoned; the runtime is dropped on exit
        }
    }

    let proxy = match (o.watch_pgid, idle, cpu0, loaded) {
        (Some(pgid), Some(idle), Some(c0), Some(l)) => Some(ProxyUse {
            pgid,
            procs: l.procs,
            rss_idle: idle.rss_bytes,
            rss_loaded: l.rss_bytes,
            rss_peak: peak.max(l.rss_bytes),
            cpu_s_window: l.cpu_s - c0.cpu_s,
        }),
        _ => None,
    };
    let samples = sh.samples.lock().unwrap().clone();
    Ok(Report {
        url: o.url,
        h2: o.h2,
        connections: if o.h2 { slots.len() } else { n },
        streams: n,
        ramp_s: o.ramp.as_secs_f64(),
        window_s,
        ready,
        open_at_ready,
        held,
        failures: std::array::from_fn(|i| sh.failures[i].load(Relaxed)),
        samples,
        events: sh.events.load(Relaxed),
        events_window: sh.events_window.load(Relaxed),
        comments: sh.comments.load(Relaxed),
        comments_window: sh.comments_window.load(Relaxed),
        bytes: sh.bytes.load(Relaxed),
        bytes_window: sh.bytes_window.load(Relaxed),
        bad_timestamps: sh.bad_timestamps.load(Relaxed),
        latency: sh.hist.summary(),
        proxy,
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().sum()
    }

    fn events_per_s(&self) -> f64 {
        self.events_window as f64 / self.window_s.max(1e-9)
    }

    fn mib_per_s(&self) -> f64 {
        self.bytes_window as f64 / self.window_s.max(1e-9) / (1024.0 * 1024.0)
    }

    pub fn to_json(&self) -> String {
        let l = &self.latency;
        let mut j = String::new();
        let _ = write!(
            j,
            "{{\"url\":{},\"h2\":{},\"connections\":{},\"streams\":{},\"ramp_s\":{:.3},\"window_s\":{:.3},\"ready\":{},\
             \"open_at_ready\":{},\"held\":{},\"failures_total\":{},\"failures\":{{",
            json_str(&self.url),
            self.h2,
            self.connections,
            self.streams,
            self.ramp_s,
            self.window_s,
            self.ready,
            self.open_at_ready,
            self.held,
            self.failures_total()
        );
        for (i, name) in FAIL_NAMES.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(j, "{sep}\"{name}\":{}", self.failures[i]);
        }
        let samples: Vec<String> = self.samples.iter().map(|s| json_str(s)).collect();
        let _ = write!(
            j,
            "}},\"failure_samples\":[{}],\"events\":{},\"events_window\":{},\"events_per_s\":{:.1},\
             \"comments\":{},\"comments_window\":{},\"bytes\":{},\"bytes_window\":{},\"mib_per_s\":{:.2},\
             \"bad_timestamps\":{},\"latency_us\":{{\"count\":{},\"mean\":{:.1},\"p50\":{:.1},\
             \"p90\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\"proxy\":",
            samples.join(","),
            self.events,
            self.events_window,
            self.events_per_s(),
            self.comments,
            self.comments_window,
            self.bytes,
            self.bytes_window,
            self.mib_per_s(),
            self.bad_timestamps,
            l.count,
            l.mean / 1000.0,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max)
        );
        match &self.proxy {
            None => j.push_str("null"),
            Some(p) => {
                let per_event = if self.events_window > 0 {
                    format!("{:.3}", p.cpu_s_window * 1e6 / self.events_window as f64)
                } else {
                    "null".into()
                };
                let _ = write!(
                    j,
                    "{{\"pgid\":{},\"procs\":{},\"rss_idle_kib\":{},\"rss_loaded_kib\":{},\
                     \"rss_peak_kib\":{},\"cpu_s_window\":{:.3},\"cpu_us_per_event\":{}}}",
                    p.pgid,
                    p.procs,
                    p.rss_idle / 1024,
                    p.rss_loaded / 1024,
                    p.rss_peak / 1024,
                    p.cpu_s_window,
                    per_event
                );
            }
        }
        j.push('}');
        j
    }

    pub fn to_text(&self) -> String {
        let l = &self.latency;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sse-bench client: {} streams over {} {} connections to {} (ramp {:.1}s, window {:.1}s, ready: {}, open at ready: {})",
            self.streams,
            self.connections,
            if self.h2 { "h2" } else { "HTTP/1.1" },
            self.url,
            self.ramp_s, self.window_s, self.ready, self.open_at_ready
        );
        let fails: Vec<String> = FAIL_NAMES
            .iter()
            .zip(self.failures)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        let _ = writeln!(
            t,
            "  streams: {} held, {} failed ({})",
            self.held,
            self.failures_total(),
            fails.join(", ")
        );
        let _ = writeln!(
            t,
            "  events: {} ({} in window, {:.1}/s), comments: {} ({} in window), bytes: {} ({:.2} MiB/s)",
            self.events,
            self.events_window,
            self.events_per_s(),
            self.comments,
            self.comments_window,
            self.bytes,
            self.mib_per_s()
        );
        let _ = writeln!(
            t,
            "  latency µs (n={}): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.count,
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            l.mean / 1000.0
        );
        if self.bad_timestamps > 0 {
            let _ = writeln!(
                t,
                "  {} events had implausible timestamps (origin on another clock?)",
                self.bad_timestamps
            );
        }
        if let Some(p) = &self.proxy {
            let per_stream =
                (p.rss_loaded as f64 - p.rss_idle as f64) / self.streams.max(1) as f64 / 1024.0;
            let _ = writeln!(
                t,
                "  pgid {} ({} procs): RSS idle {} KiB, loaded {} KiB ({:.1} KiB/stream), peak {} KiB; \
                 CPU {:.3}s in window ({:.2} µs/event)",
                p.pgid,
                p.procs,
                p.rss_idle / 1024,
                p.rss_loaded / 1024,
                per_stream,
                p.rss_peak / 1024,
                p.cpu_s_window,
                p.cpu_s_window * 1e6 / self.events_window.max(1) as f64
            );
        }
        for s in &self.samples {
            let _ = writeln!(t, "  failure: {s}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 starts over 5 s with a 100 ms event period: no 1 ms phase bucket may hold
    /// more than a handful of streams (lockstep starts put 50 in each of 20 buckets).
    #[test]
    fn ramp_jitter_spreads_phases() {
        let mut buckets = [0u32; 100];
        for i in 0..1000u64 {
            let j = unit_jitter(i);
            assert!((0.0..1.0).contains(&j));
            let start_ms = 5000.0 * (i as f64 + j) / 1000.0;
            buckets[(start_ms % 100.0) as usize] += 1;
        }
        let max = buckets.iter().max().unwrap();
        assert!(*max <= 25, "a 1 ms phase holds {max} streams: {buckets:?}");
        assert!(buckets.iter().all(|&b| b > 0), "{buckets:?}");
    }
}
