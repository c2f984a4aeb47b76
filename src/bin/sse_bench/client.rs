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

use crate::h2c::{self, Frame};
use crate::hist::{Hist, Summary};
use crate::parse::{Chunked, Item, Sse};
use crate::sys::{now_ns, sample_group};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout, Instant};

pub struct ClientOpts {
    pub url: String,
    pub h2c: bool,
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

#[derive(Clone, Copy, Debug)]
enum Fail {
    Connect,
    Status,
    Reset,
    Eof,
    Timeout,
    Io,
    Proto,
}

const FAIL_NAMES: [&str; 7] = [
    "connect", "status", "reset", "eof", "timeout", "io", "proto",
];
const MAX_SAMPLES: usize = 8;

type Failure = (Fail, String);

fn io_fail(what: &str, e: io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Fail::Reset,
        io::ErrorKind::BrokenPipe => Fail::Reset,
        io::ErrorKind::TimedOut => Fail::Timeout,
        _ => Fail::Io,
    };
    (kind, format!("{what}: {e}"))
}

/// Counters shared by all stream tasks; hot ones are added once per read, not per event.
struct Shared {
    hist: Hist,
    measuring: AtomicBool,
    events: AtomicU64,
    events_window: AtomicU64,
    comments: AtomicU64,
    comments_window: AtomicU64,
    bytes: AtomicU64,
    bytes_window: AtomicU64,
    bad_timestamps: AtomicU64,
    last_event_ns: AtomicU64,
    settled: AtomicUsize,
    open: AtomicUsize,
    failures: [AtomicU64; 7],
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, (kind, msg): Failure) {
        self.failures[kind as usize].fetch_add(1, Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < MAX_SAMPLES {
            s.push(format!("{}: {msg}", FAIL_NAMES[kind as usize]));
        }
    }
}

struct Target {
    addr: SocketAddr,
    /// The HTTP/1.1 request.
    request: Vec<u8>,
    /// The h2c preface, settings and request.
    h2_request: Vec<u8>,
}

fn parse_url(url: &str, headers: &[String]) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: host has no address"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n"
    );
    let mut h2_extra = vec![];
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected `Name: value`"))?;
        let _ = write!(request, "{name}:{value}\r\n");
        h2_extra.push((name.trim().to_string(), value.trim().to_string()));
    }
    request.push_str("\r\n");
    Ok(Target {
        addr,
        request: request.into_bytes(),
        h2_request: h2c::request(authority, path, &h2_extra),
    })
}

enum Framing {
    Chunked(Chunked),
    Length(u64),
    Close,
}

struct Head {
    status: u16,
    status_line: String,
    event_stream: bool,
    framing: Framing,
}

fn parse_head(head: &[u8]) -> Result<Head, Failure> {
    let text = std::str::from_utf8(head)
        .map_err(|_| (Fail::Proto, "non-UTF-8 response head".to_string()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| (Fail::Proto, format!("bad status line {status_line:?}")))?;
    let mut event_stream = false;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        }
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked(Chunked::default()),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    Ok(Head {
        status,
        status_line,
        event_stream,
        framing,
    })
}

/// Per-stream body state: framing decoder + SSE parser.
struct Body {
    framing: Framing,
    sse: Sse,
}

impl Body {
    /// Parses one read's bytes. Returns whether the body is complete.
    fn process(&mut self, data: &[u8], sh: &Shared) -> Result<bool, Failure> {
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

struct TaskCfg {
    h2c: bool,
    read_buf: usize,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
}

/// One stream, from its start time to the end of the run. Returns whether it was
/// still open, without failure, when the run ended.
async fn stream_task(
    t: Arc<Target>,
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
    let r = run_stream(&t, &cfg, &sh, &mut stop, &mut settled).await;
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

async fn run_stream(
    t: &Target,
    cfg: &TaskCfg,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    settled: &mut bool,
) -> Result<(), Failure> {
    let mut s = match timeout(cfg.connect_timeout, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err((Fail::Connect, e.to_string())),
        Err(_) => {
            return Err((
                Fail::Connect,
                format!("no connection within {:?}", cfg.connect_timeout),
            ))
        }
    };
    let _ = s.set_nodelay(true);
    if cfg.h2c {
        return run_h2c(s, t, cfg, sh, stop, settled).await;
    }
    s.write_all(&t.request)
        .await
        .map_err(|e| io_fail("writing request", e))?;

    let mut buf = vec![0u8; cfg.read_buf];
    let mut have = 0;
    let head_end = loop {
        if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if have == buf.len() {
            return Err((Fail::Proto, "response head larger than --read-buf".into()));
        }
        let n = tokio::select! {
            r = s.read(&mut buf[have..]) => r.map_err(|e| io_fail("reading head", e))?,
            _ = stop.changed() => return Err((Fail::Timeout, "no response head before the run ended".into())),
        };
        if n == 0 {
            return Err((Fail::Eof, "closed before the response head".into()));
        }
        have += n;
    };
    let head = parse_head(&buf[..head_end])?;
    if head.status != 200 || !head.event_stream {
        return Err((
            Fail::Status,
            format!("{} (event-stream: {})", head.status_line, head.event_stream),
        ));
    }
    *settled = true;
    sh.open.fetch_add(1, Relaxed);
    sh.settled.fetch_add(1, Relaxed);

    let mut body = Body {
        framing: head.framing,
        sse: Sse::default(),
    };
    if body.process(&buf[head_end..have], sh)? {
        return Err((Fail::Eof, "response ended".into()));
    }
    let idle = sleep(cfg.idle_timeout.unwrap_or(Duration::from_secs(86400)));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            // End of the run: the stream was held.
            _ = stop.changed() => return Ok(()),
            // Nothing at all (not even a heartbeat) for --idle-timeout.
            _ = &mut idle, if cfg.idle_timeout.is_some() => {
                return Err((Fail::Timeout, format!("no bytes for {:?}", cfg.idle_timeout.unwrap())));
            }
            r = s.read(&mut buf) => match r {
                Ok(0) => return Err((Fail::Eof, "connection closed mid-stream".into())),
                Ok(n) => {
                    if body.process(&buf[..n], sh)? {
                        return Err((Fail::Eof, "response ended".into()));
                    }
                    if let Some(d) = cfg.idle_timeout {
                        idle.as_mut().reset(Instant::now() + d);
                    }
                }
                Err(e) => return Err(io_fail("reading body", e)),
            }
        }
    }
}

/// The h2c variant of the stream: one HTTP/2 stream on its own connection.
async fn run_h2c(
    mut s: TcpStream,
    t: &Target,
    cfg: &TaskCfg,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    settled: &mut bool,
) -> Result<(), Failure> {
    s.write_all(&t.h2_request)
        .await
        .map_err(|e| io_fail("writing h2c preface and request", e))?;
    // Room for two whole frames, so a frame never has to wait for compaction.
    let mut buf = vec![0u8; cfg.read_buf.max(2 * (h2c::MAX_FRAME + 9))];
    let (mut start, mut end) = (0, 0);
    let mut body = Body {
        framing: Framing::Close,
        sse: Sse::default(),
    };
    let mut consumed = 0u64;
    let idle = sleep(cfg.idle_timeout.unwrap_or(Duration::from_secs(86400)));
    tokio::pin!(idle);
    loop {
        if !*settled && buf[start..end].starts_with(b"HTTP/1.") {
            return Err((Fail::Proto, "the server answered HTTP/1.x, not h2c".into()));
        }
        // Handle every complete frame in the buffer.
        while let Some((frame, used)) =
            h2c::parse_frame(&buf[start..end]).map_err(|e| (Fail::Proto, e.to_string()))?
        {
            match frame {
                Frame::Headers { block, end_stream } if !*settled => {
                    match h2c::status_of(block) {
                        Some(200) => {}
                        other => {
                            return Err((Fail::Status, format!("h2 :status {other:?}")));
                        }
                    }
                    if end_stream {
                        return Err((Fail::Eof, "h2 response without a body".into()));
                    }
                    *settled = true;
                    sh.open.fetch_add(1, Relaxed);
                    sh.settled.fetch_add(1, Relaxed);
                }
                Frame::Headers { end_stream, .. } => {
                    if end_stream {
                        return Err((Fail::Eof, "h2 stream ended (trailers)".into()));
                    }
                }
                Frame::Data {
                    payload,
                    flow_len,
                    end_stream,
                } => {
                    body.process(payload, sh)?;
                    if end_stream {
                        return Err((Fail::Eof, "h2 stream ended".into()));
                    }
                    consumed += flow_len as u64;
                    if consumed >= h2c::CREDIT_EVERY {
                        let mut wu = h2c::window_update(0, consumed as u32).to_vec();
                        wu.extend_from_slice(&h2c::window_update(h2c::STREAM, consumed as u32));
                        s.write_all(&wu)
                            .await
                            .map_err(|e| io_fail("writing WINDOW_UPDATE", e))?;
                        consumed = 0;
                    }
                }
                Frame::Settings => {
                    s.write_all(&h2c::settings_ack())
                        .await
                        .map_err(|e| io_fail("acking SETTINGS", e))?;
                }
                Frame::Ping(data) => {
                    s.write_all(&h2c::ping_ack(data))
                        .await
                        .map_err(|e| io_fail("answering PING", e))?;
                }
                Frame::RstStream(code) => {
                    return Err((Fail::Reset, format!("h2 RST_STREAM, error code {code}")));
                }
                Frame::GoAway(code) => {
                    return Err((Fail::Eof, format!("h2 GOAWAY, error code {code}")));
                }
                Frame::Other => {}
            }
            start += used;
        }
        if start == end {
            (start, end) = (0, 0);
        } else if buf.len() - end < h2c::MAX_FRAME + 9 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        tokio::select! {
            biased;
            // End of the run: held if the response had started.
            _ = stop.changed() => {
                return if *settled {
                    Ok(())
                } else {
                    Err((Fail::Timeout, "no response head before the run ended".into()))
                };
            }
            _ = &mut idle, if cfg.idle_timeout.is_some() => {
                return Err((Fail::Timeout, format!("no bytes for {:?}", cfg.idle_timeout.unwrap())));
            }
            r = s.read(&mut buf[end..]) => match r {
                Ok(0) => return Err((Fail::Eof, "connection closed".into())),
                Ok(n) => {
                    end += n;
                    if let Some(d) = cfg.idle_timeout {
                        idle.as_mut().reset(Instant::now() + d);
                    }
                }
                Err(e) => return Err(io_fail("reading h2c", e)),
            }
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
    let target = Arc::new(parse_url(&o.url, &o.headers)?);
    let cfg = Arc::new(TaskCfg {
        h2c: o.h2c,
        read_buf: o.read_buf.max(1024),
        connect_timeout: o.connect_timeout,
        idle_timeout: o.idle_timeout,
    });
    let sh = Arc::new(Shared {
        hist: Hist::new(),
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
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let start_at = t0
            + o.ramp
                .mul_f64((i as f64 + unit_jitter(i as u64)) / n as f64);
        tasks.push(tokio::spawn(stream_task(
            target.clone(),
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
            "{{\"url\":{},\"streams\":{},\"ramp_s\":{:.3},\"window_s\":{:.3},\"ready\":{},\
             \"open_at_ready\":{},\"held\":{},\"failures_total\":{},\"failures\":{{",
            json_str(&self.url),
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
            "sse-bench client: {} streams to {} (ramp {:.1}s, window {:.1}s, ready: {}, open at ready: {})",
            self.streams, self.url, self.ramp_s, self.window_s, self.ready, self.open_at_ready
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

    #[test]
    fn url_and_request() {
        let t = parse_url("http://127.0.0.1:8080/stream?rate=10", &["X-A: 1".into()]).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        let req = String::from_utf8(t.request).unwrap();
        assert!(req.starts_with("GET /stream?rate=10 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(req.ends_with("X-A: 1\r\n\r\n"));
        assert!(parse_url("https://x/", &[]).is_err());
    }

    #[test]
    fn head_parsing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert!(h.event_stream);
        assert!(matches!(h.framing, Framing::Chunked(_)));
        let h = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.status, 502);
        assert!(!h.event_stream);
        assert!(matches!(h.framing, Framing::Length(3)));
    }
}
