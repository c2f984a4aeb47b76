//! Faults over real sockets (issue 5 §2, §3, §5): many clients leaving at once, a client that
//! stops reading, the app dying or unreachable, huge events and arbitrary bytes in events.
//!
//! The sidecar is the real binary; apps are the in-process origin or, where its scripts do not
//! reach, the raw origin of tests/common/raw_origin.rs. Memory and fd figures come from
//! `/proc/<sidecar pid>/status` (VmRSS) and `/proc/<sidecar pid>/fd`. Timing assertions assume a
//! release build: `cargo test --release --test faults` (the load tests take a lock and run one at
//! a time; ~15 s).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{self, End};
use common::process::{open_fds as fds, raise_nofile, rss, RssWatch};
use common::raw_origin::{chunk, RawOrigin, SSE_HEAD};
use common::sse::{Item, SseStream};
use common::{ms, now_ns, show, Origin, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ES: (&str, &str) = ("Accept", "text/event-stream");
const T: Duration = Duration::from_secs(5);
const MIB: u64 = 1 << 20;
/// The load and timing tests run one at a time even when cargo runs tests in parallel, so that
/// one test's load does not skew another's memory or latency figures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// Helpers: process figures, metrics, raw-origin handlers
// ---------------------------------------------------------------------------------------------

async fn open_sse(addr: SocketAddr, target: &str) -> SseStream {
    SseStream::new(client::send(addr, &client::request("GET", target, &[ES], None), "GET").await)
}

/// Writes `{"seq":N,"t_ns":T}` events every `every` until the peer goes away or `n` are sent.
async fn tick(mut s: TcpStream, every: Duration, n: u64) {
    if s.write_all(SSE_HEAD).await.is_err() {
        return;
    }
    for seq in 1..=n {
        let ev = format!("data: {{\"seq\":{seq},\"t_ns\":{}}}\n\n", now_ns());
        if s.write_all(&chunk(ev.as_bytes())).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
}

/// Deterministic bytes with every value but CR and LF (so they stay on one `data:` line),
/// NUL and invalid UTF-8 included.
fn line_bytes(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match (x >> 8) as u8 {
                b'\r' | b'\n' => 0,
                b => b,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Many clients leaving
// ---------------------------------------------------------------------------------------------

/// What one round of "open N streams, then every client leaves at once" measured.
struct Round {
    fd_peak: usize,
    rss_peak: u64,
    /// Upstream connections still open 3 s after the clients left.
    open_left: usize,
    /// From the clients leaving to the last upstream connection closing.
    last_close_ns: u64,
}

/// Opens `n` streams (`/sse?events=1&end=hold&<tag>=i`, 200 opening at a time, each waiting
/// for its event), then closes every client at once, half with FIN and half with RST, and
/// waits (3 s at most) for the origin to see every upstream connection closed.
async fn open_then_leave(origin: &Origin, sc: &Sidecar, n: usize, tag: &str) -> Round {
    let pid = sc.pid();
    let mut set = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..n {
        let (sem, addr) = (sem.clone(), sc.addr);
        let target = format!("/sse?events=1&end=hold&{tag}={i}");
        set.spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let mut s = open_sse(addr, &target).await;
            assert!(
                s.next_event(Duration::from_secs(10)).await.is_some(),
                "{target}: no event; {}",
                show(&s.bytes)
            );
            drop(permit);
            s
        });
    }
    let mut streams = Vec::with_capacity(n);
    while let Some(s) = set.join_next().await {
        streams.push(s.expect("open stream"));
    }
    common::eventually(T, "origin sees every stream's connection", || {
        origin.open_connections() >= n
    })
    .await;
    let (fd_peak, rss_peak) = (fds(pid), rss(pid));
    let t0 = now_ns();
    for (i, s) in streams.into_iter().enumerate() {
        if i % 2 == 0 {
            s.resp.conn.close_fin();
        } else {
            s.resp.conn.close_rst();
        }
    }
    let mine = |r: &common::origin::RequestRecord| r.param(tag).is_some();
    common::try_eventually(Duration::from_secs(3), || {
        origin
            .requests()
            .iter()
            .filter(|r| mine(r))
            .all(|r| r.closed_ns.is_some())
    })
    .await;
    let reqs: Vec<_> = origin.requests().into_iter().filter(mine).collect();
    assert_eq!(reqs.len(), n, "requests the origin saw");
    Round {
        fd_peak,
        rss_peak,
        open_left: reqs.iter().filter(|r| r.closed_ns.is_none()).count(),
        last_close_ns: reqs
            .iter()
            .filter_map(|r| r.closed_ns)
            .max()
            .unwrap_or(t0)
            .saturating_sub(t0),
    }
}

/// 2,000 open streams whose clients all leave at once (half FIN, half RST): every upstream
/// connection is closed within 1 s, and within 5 s the sidecar's open fds are back to the
/// baseline taken with no stream open (± 4), and its RSS to that baseline + 10 % of the peak
/// growth (+ 4 MiB floor), allocator retention being the only allowance. (~10 s)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_leave_at_once() {
    let _serial = SERIAL.lock().await;
    const N: usize = 2000;
    // Client and origin sockets here, client and upstream sockets in the sidecar.
    raise_nofile(2 * N as u64 + 512);
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .arg("--threads")
        .arg("2")
        .start()
        .await;
    let pid = sc.pid();
    // Warm up lazily-built state (pools, metrics, thread-local buffers) with a few streams.
    for i in 0..20 {
        let mut s = open_sse(sc.addr, &format!("/sse?events=2&interval_ms=1&warm={i}")).await;
        assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fd0, rss0) = (fds(pid), rss(pid));
    let round = open_then_leave(&origin, &sc, N, "c").await;
    eprintln!(
        "baseline fds {fd0} rss {:.1} MiB; with {N} streams fds {} rss {:.1} MiB; \
         last upstream closed {:.0} ms after the clients left",
        rss0 as f64 / MIB as f64,
        round.fd_peak,
        round.rss_peak as f64 / MIB as f64,
        ms(round.last_close_ns)
    );
    assert_eq!(
        round.open_left, 0,
        "upstream connections still open 3 s after the clients left"
    );
    assert!(
        round.last_close_ns <= 1_000_000_000,
        "last upstream connection closed {:.0} ms after the clients left (want ≤ 1 s)",
        ms(round.last_close_ns)
    );
    let rss_allow = rss0 + (round.rss_peak.saturating_sub(rss0) / 10).max(4 * MIB);
    let back = common::try_eventually(Duration::from_secs(5), || {
        fds(pid) <= fd0 + 4 && rss(pid) <= rss_allow
    })
    .await;
    let (fd1, rss1) = (fds(pid), rss(pid));
    eprintln!(
        "5 s later: fds {fd1}, rss {:.1} MiB (allowed {:.1})",
        rss1 as f64 / MIB as f64,
        rss_allow as f64 / MIB as f64
    );
    assert!(
        back,
        "not back to baseline within 5 s: fds {fd1} (baseline {fd0}, peak {}), rss {:.1} \
         MiB (baseline {:.1}, peak {:.1}, allowed {:.1})",
        round.fd_peak,
        rss1 as f64 / MIB as f64,
        rss0 as f64 / MIB as f64,
        round.rss_peak as f64 / MIB as f64,
        rss_allow as f64 / MIB as f64
    );
    assert_eq!(
        sc.metric("sse_sidecar_streams_total{outcome=\"client_closed\"}")
            .await,
        N as f64,
        "streams counted client_closed"
    );
}

// ---------------------------------------------------------------------------------------------
// A client that stops reading
// ---------------------------------------------------------------------------------------------

/// What the 50 MiB sender saw.
#[derive(Default)]
struct Flood {
    sent: AtomicU64,
    last_progress_ns: AtomicU64,
    closed_ns: AtomicU64,
}

/// A client that never reads while the app tries to send 50 MiB of 64 KiB events
/// (`sse.write_timeout: 2s`): the sidecar's RSS stays under its baseline + 16 MiB, the app is
/// held back (it cannot push the 50 MiB), the client is dropped and the app's connection
/// closed 1.5–3.5 s after the app's last progress, the stream is counted `slow_consumer`, and
/// meanwhile another stream's events (every 20 ms) keep a delivery latency p99 < 50 ms. (~6 s)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_dropped_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let flood = Arc::new(Flood::default());
    let f2 = flood.clone();
    let origin = RawOrigin::start(move |s, target| {
        let flood = f2.clone();
        async move {
            if target.starts_with("/tick") {
                return tick(s, Duration::from_millis(20), 500).await;
            }
            let (mut rd, mut wr) = s.into_split();
            let mut ev = b"data: ".to_vec();
            ev.extend(std::iter::repeat_n(b'x', 64 * 1024 - 8));
            ev.extend_from_slice(b"\n\n");
            let ev = chunk(&ev);
            let send = async {
                wr.write_all(SSE_HEAD).await?;
                while flood.sent.load(Ordering::SeqCst) < 50 * MIB {
                    wr.write_all(&ev).await?;
                    flood.sent.fetch_add(ev.len() as u64, Ordering::SeqCst);
                    flood.last_progress_ns.store(now_ns(), Ordering::SeqCst);
                }
                wr.write_all(b"0\r\n\r\n").await
            };
            let mut b = [0u8; 64];
            tokio::select! {
                _ = send => {}
                _ = rd.read(&mut b) => {}
            }
            flood.closed_ns.store(now_ns(), Ordering::SeqCst);
        }
    })
    .await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  write_timeout: 2s\n")
        .start()
        .await;
    let pid = sc.pid();
    let mut warm = open_sse(sc.addr, "/tick?warm").await;
    assert!(warm.next_event(T).await.is_some());
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss(pid);
    let watch = RssWatch::start(pid);

    let mut ticks = open_sse(sc.addr, "/tick").await;
    assert!(ticks.next_event(T).await.is_some());
    let t_start = now_ns();
    let mut slow = client::Conn::connect(sc.addr).await;
    slow.send(&client::request("GET", "/flood", &[ES], None))
        .await;
    // Never read from `slow` again.

    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while flood.closed_ns.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        if let Some((e, at)) = ticks.next_event(Duration::from_millis(200)).await {
            lat.push(at.saturating_sub(e.t_ns().unwrap()));
        }
    }
    let closed = flood.closed_ns.load(Ordering::SeqCst);
    let stall = flood.last_progress_ns.load(Ordering::SeqCst);
    let sent = flood.sent.load(Ordering::SeqCst);
    // Keep measuring the other stream a little past the drop.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        if let Some((e, at)) = ticks.next_event(Duration::from_millis(100)).await {
            lat.push(at.saturating_sub(e.t_ns().unwrap()));
        }
    }
    let peak = watch.max();
    lat.sort_unstable();
    let p = |q: usize| ms(lat[(lat.len() - 1) * q / 100]);
    eprintln!(
        "app sent {:.1} MiB; stalled at {:.0} ms, closed at {:.0} ms; rss baseline {:.1} MiB, \
         peak {:.1} MiB; other stream {} events p50 {:.2} p99 {:.2} max {:.2} ms",
        sent as f64 / MIB as f64,
        ms(stall.saturating_sub(t_start)),
        ms(closed.saturating_sub(t_start)),
        rss0 as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        lat.len(),
        p(50),
        p(99),
        p(100)
    );
    assert!(closed > 0, "the app's connection was never closed (8 s)");
    assert!(
        sent < 50 * MIB,
        "the app pushed all 50 MiB to a client that reads nothing: nothing held it back"
    );
    let gap = ms(closed - stall);
    assert!(
        (1500.0..=3500.0).contains(&gap),
        "app connection closed {gap:.0} ms after its last progress (write_timeout 2 s)"
    );
    assert!(
        peak <= rss0 + 16 * MIB,
        "sidecar RSS peaked at {:.1} MiB, baseline {:.1} MiB (+16 MiB allowed)",
        peak as f64 / MIB as f64,
        rss0 as f64 / MIB as f64
    );
    assert!(
        lat.len() >= 50,
        "other stream got only {} events",
        lat.len()
    );
    assert!(
        p(99) < 50.0,
        "other stream's delivery latency p99 {:.1} ms (want < 50)",
        p(99)
    );
    let series = "sse_sidecar_streams_total{outcome=\"slow_consumer\"}";
    let mut n = sc.metric(series).await;
    let end = Instant::now() + Duration::from_secs(2);
    while n != 1.0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        n = sc.metric(series).await;
    }
    assert_eq!(n, 1.0, "streams counted slow_consumer");
    // The client, reading now, finds its stream cut (no terminating chunk).
    let mut r = client::Response::read(slow, "GET", T).await.expect("head");
    assert_eq!(r.status(), 200);
    let end = r.read_to_end(T).await;
    assert!(
        matches!(end, Some(End::Truncated) | Some(End::Error(_))),
        "slow client's stream end: {end:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The app failing
// ---------------------------------------------------------------------------------------------

/// The app is killed (its tasks aborted, listener and connections dropped) while 100 streams
/// are open: every client's stream ends within 1 s, without a terminating chunk (so clients
/// reconnect), each counted `upstream_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_killed_with_100_streams_open() {
    let _serial = SERIAL.lock().await;
    const N: usize = 100;
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let mut streams = Vec::new();
    for i in 0..N {
        let target = format!("/sse?events=100000&interval_ms=100&c={i}");
        streams.push((target.clone(), open_sse(sc.addr, &target).await));
    }
    for (target, s) in &mut streams {
        assert!(s.next_event(T).await.is_some(), "{target}: no event");
    }
    let t_kill = now_ns();
    drop(origin);
    let mut set = tokio::task::JoinSet::new();
    for (target, mut s) in streams {
        set.spawn(async move {
            let end = s.read_to_end(Duration::from_secs(3)).await;
            (target, s, end, now_ns())
        });
    }
    let mut worst = 0;
    while let Some(r) = set.join_next().await {
        let (target, s, end, at) = r.unwrap();
        assert!(
            end.is_some(),
            "{target}: stream still open 3 s after the app died"
        );
        assert!(
            matches!(end, Some(End::Truncated) | Some(End::Error(_))),
            "{target}: ended {end:?}; a dead app must not look like a completed stream: {}",
            show(&s.bytes[s.bytes.len().saturating_sub(100)..])
        );
        worst = worst.max(at - t_kill);
    }
    eprintln!("last stream ended {:.0} ms after the app died", ms(worst));
    assert!(
        worst <= 1_000_000_000,
        "a stream ended {:.0} ms after the app died (want ≤ 1 s)",
        ms(worst)
    );
    let n = sc
        .metric("sse_sidecar_streams_total{outcome=\"upstream_error\"}")
        .await;
    assert_eq!(n, N as f64, "streams counted upstream_error");
}

/// A port nothing listens on (bound then released).
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", common::free_port())
}

/// Checks the `retry` answer: 200 `text/event-stream`, a comment naming the error (containing
/// `needle`), a `retry:` in [1000, 1500] ms, then the terminating chunk.
async fn assert_retry_answer(sc: &Sidecar, target: &str, needle: &str) {
    let mut s = open_sse(sc.addr, target).await;
    let end = s.read_to_end(T).await;
    let head = String::from_utf8_lossy(&s.resp.head.raw).into_owned();
    assert_eq!(s.resp.status(), 200, "head:\n{head}");
    assert!(
        s.resp
            .head
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "head:\n{head}"
    );
    assert_eq!(end, Some(End::Complete), "body: {}", show(&s.bytes));
    let comments: Vec<String> = s.comments().into_iter().map(|(c, _)| c).collect();
    assert!(
        comments.iter().any(|c| c.contains(needle)),
        "no comment naming the error ({needle:?}): {}",
        show(&s.bytes)
    );
    let retries: Vec<u64> = s
        .items
        .iter()
        .filter_map(|t| match t.item {
            Item::Retry(n) => Some(n),
            _ => None,
        })
        .collect();
    assert!(
        retries.len() == 1 && (1000..=1500).contains(&retries[0]),
        "retry fields {retries:?} (want one in [1000, 1500]): {}",
        show(&s.bytes)
    );
    assert!(s.events().is_empty(), "events in an error answer");
}

/// App down, `on_upstream_error: retry` (the default): an SSE request gets 200
/// `text/event-stream` with a comment naming the error, a jittered `retry:` and a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_retry_mode_answers_200_with_retry() {
    let sc = Sidecar::start(&dead_url()).await;
    assert_retry_answer(&sc, "/events", "refused").await;
    // Another request after the failure works the same (nothing stuck).
    assert_retry_answer(&sc, "/events?again", "refused").await;
}

/// App down, `on_upstream_error: status`: an SSE request gets a plain 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_status_mode_answers_502() {
    let sc = Sidecar::builder(&dead_url())
        .config("sse:\n  on_upstream_error: status\n")
        .start()
        .await;
    let r = client::get(sc.addr, "/events", &[ES]).await;
    assert_eq!(r.status(), 502, "{}", show(&r.head.raw));
    assert_eq!(r.end, Some(End::Complete));
}

/// A listening socket with a full accept queue (backlog 0, filled by the test, never
/// accepted): new SYNs are dropped, so connects hang. Returns it and the filler connections.
async fn blackhole() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fill.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            // The queue is full: connects now hang.
            Err(_) => return (l, fill, addr),
        }
    }
    panic!("could not fill the accept queue of a backlog-0 listener");
}

/// The app never accepts the TCP connection (full accept queue), `connect_timeout: 300ms`:
/// status mode answers 504 in 0.3–2 s; retry mode answers a 200 stream whose comment says the
/// connect timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_answers_504() {
    let (_l, _fill, addr) = blackhole().await;
    let url = format!("http://{addr}");
    let sc = Sidecar::builder(&url)
        .config("sse:\n  on_upstream_error: status\n")
        .arg("--connect-timeout")
        .arg("300ms")
        .start()
        .await;
    let t0 = Instant::now();
    let r = client::get(sc.addr, "/events", &[ES]).await;
    let took = t0.elapsed();
    assert_eq!(r.status(), 504, "{}", show(&r.head.raw));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "504 after {took:?}"
    );
    let r = client::get(sc.addr, "/plain", &[]).await;
    assert_eq!(r.status(), 504, "non-SSE: {}", show(&r.head.raw));
    let sc2 = Sidecar::builder(&url)
        .arg("--connect-timeout")
        .arg("300ms")
        .start()
        .await;
    assert_retry_answer(&sc2, "/events", "timed out").await;
}

/// An app that accepts but never sends response headers: with `read_timeout: 500ms` an SSE
/// request (status mode) and a plain request both get 504, after 0.5–2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headerless_app_answers_504_after_read_timeout() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  on_upstream_error: status\n")
        .arg("--read-timeout")
        .arg("500ms")
        .start()
        .await;
    for (target, h) in [
        ("/slow_headers?ms=4000&sse=1", vec![ES]),
        ("/slow_headers?ms=4000", vec![]),
    ] {
        let t0 = Instant::now();
        let r = client::get(sc.addr, target, &h).await;
        let took = t0.elapsed();
        assert_eq!(r.status(), 504, "{target}: {}", show(&r.head.raw));
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(2),
            "{target}: 504 after {took:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Huge and arbitrary event bytes
// ---------------------------------------------------------------------------------------------

/// A single 16 MiB `data:` line (every byte value but CR/LF, NUL and invalid UTF-8 included)
/// streams through byte-exact, and the sidecar's RSS grows by less than 16 MiB meanwhile (it
/// is not buffered whole). (~2 s)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_data_line_streams_through_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let payload = Arc::new(line_bytes(16 << 20));
    let p2 = payload.clone();
    let origin = RawOrigin::start(move |mut s, target| {
        let payload = p2.clone();
        async move {
            if target.starts_with("/tick") {
                return tick(s, Duration::from_millis(1), 2).await;
            }
            let mut all = b"data: ".to_vec();
            all.extend_from_slice(&payload);
            all.extend_from_slice(b"\n\n");
            if s.write_all(SSE_HEAD).await.is_err() {
                return;
            }
            for piece in all.chunks(64 * 1024) {
                if s.write_all(&chunk(piece)).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    })
    .await;
    let sc = Sidecar::start(&origin.url()).await;
    let pid = sc.pid();
    let mut warm = open_sse(sc.addr, "/tick").await;
    assert_eq!(warm.read_to_end(T).await, Some(End::Complete));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss(pid);
    let watch = RssWatch::start(pid);
    let mut r = client::send(sc.addr, &client::request("GET", "/big", &[ES], None), "GET").await;
    let end = r.read_to_end(Duration::from_secs(20)).await;
    let peak = watch.max();
    eprintln!(
        "16 MiB line: rss baseline {:.1} MiB, peak {:.1} MiB",
        rss0 as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert_eq!(end, Some(End::Complete));
    let mut want = b": ok\n\ndata: ".to_vec();
    want.extend_from_slice(&payload);
    want.extend_from_slice(b"\n\n");
    assert!(
        r.body == want,
        "16 MiB line not byte-exact: got {} bytes, want {}; first difference at {:?}",
        r.body.len(),
        want.len(),
        r.body.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert!(
        peak < rss0 + 16 * MIB,
        "sidecar RSS grew by {:.1} MiB while relaying a 16 MiB line (want < 16 MiB)",
        (peak - rss0) as f64 / MIB as f64
    );
}

/// NUL bytes and invalid UTF-8 in `data`, `id`, `event` and comment lines, split across
/// writes at awkward places, pass through untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_and_invalid_utf8_pass_untouched() {
    const APP: &[u8] = b"data: a\x00b\xff\xfe\xc3\x28\n\n\
        id: x\x00y\nevent: \xe2\x82\nDATA\x00: z\ndata: \xf0\x9f\x98\n\n\
        : comment \x00\xff\n\ndata: \xed\xa0\x80 surrogate\n\n";
    let origin = RawOrigin::start(|mut s, _| async move {
        if s.write_all(SSE_HEAD).await.is_err() {
            return;
        }
        for piece in [&APP[..8], &APP[8..9], &APP[9..30], &APP[30..]] {
            if s.write_all(&chunk(piece)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let sc = Sidecar::start(&origin.url()).await;
    let mut r = client::send(
        sc.addr,
        &client::request("GET", "/bytes", &[ES], None),
        "GET",
    )
    .await;
    assert_eq!(r.read_to_end(T).await, Some(End::Complete));
    let mut want = b": ok\n\n".to_vec();
    want.extend_from_slice(APP);
    assert_eq!(show(&r.body), show(&want), "bytes changed on the way");
}
