//! Hostile or broken HTTP/2 and TLS clients (issue 19), over real sockets with the `h2` crate
//! or raw frames ([`common::h2_raw`]), on h2c and on TLS+h2: one client's misbehaviour costs
//! only its own stream or connection. Each attack runs next to an ordinary SSE stream on
//! another connection ([`Neighbour`]) whose delivery is checked against its own baseline, and
//! the sidecar's RSS and CPU are read from /proc.
//!
//! Measured figures are printed (`--nocapture` shows them).
//!
//! Run: `cargo test --release --test h2_hostile`

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2_raw::{self, frame, repeated, request_block, BoxIo, RawH2, Seen};
use common::process::{fd_table, nofile, open_fds, rss, RssWatch};
use common::sse::{Item, Parser};
use common::tls::{make_cert, TestCert, TlsSidecar};
use common::{free_port, now_ns, Origin, Sidecar};
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A stream whose h2 window the client never opens stalls alone: the connection's other
/// stream keeps flowing, and after `sse.write_timeout` the stalled stream is reset
/// (RST_STREAM — a client cannot mistake it for a finished stream, as it would an
/// END_STREAM) and counted as `slow_consumer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_stream_is_reset_and_its_neighbour_flows() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  write_timeout: 1s\n")
        .start()
        .await;
    let tcp = TcpStream::connect(sc.addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(2048)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = |target: &str| {
        http::Request::builder()
            .uri(format!("http://{}{target}", sc.addr))
            .header("accept", "text/event-stream")
            .body(())
            .unwrap()
    };
    let mut send = send.ready().await.unwrap();
    let (slow, _) = send
        .send_request(request("/sse?events=2000&interval_ms=5&pad=1000"), true)
        .unwrap();
    let mut send = send.ready().await.unwrap();
    let (fast, _) = send
        .send_request(request("/sse?events=1000&interval_ms=10&n=2"), true)
        .unwrap();
    let mut slow = slow.await.expect("slow head").into_body();
    let mut fast = fast.await.expect("fast head").into_body();

    // The neighbour is read (and its window released) for 3 s: it must keep flowing.
    let started = Instant::now();
    let mut fast_bytes = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(1), fast.data()).await {
            Ok(Some(Ok(d))) => {
                fast_bytes += d.len();
                let _ = fast.flow_control().release_capacity(d.len());
            }
            other => panic!("the neighbour stream stopped: {other:?}"),
        }
    }
    assert!(
        fast_bytes > 5_000,
        "the neighbour got only {fast_bytes} bytes"
    );

    // The stalled stream: whatever its window let through, then a reset — not a clean end.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.data()).await {
            Ok(Some(Ok(_))) => continue, // read, never released
            Ok(Some(Err(e))) => break format!("error: {e} (reset: {})", e.is_reset()),
            Ok(None) => break "END_STREAM".to_string(),
            Err(_) => break "nothing within 10 s".to_string(),
        }
    };
    assert!(
        ended.contains("reset: true"),
        "the stalled stream ended with {ended}"
    );
    let slow_consumers = common::sidecar::metric_at(
        sc.metrics_addr.unwrap(),
        "sse_sidecar_streams_total{outcome=\"slow_consumer\"}",
    )
    .await;
    assert_eq!(slow_consumers, 1.0);
}

// ---------------------------------------------------------------------------------------------
// A sidecar on h2c or TLS, a neighbour stream, /proc readings
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    H2c,
    Tls,
}

/// The sidecar under attack, reached over h2c or over TLS (ALPN h2).
struct Target {
    via: Via,
    addr: SocketAddr,
    /// The admin listener, for `sse_sidecar_h2_abuse_total`.
    metrics: SocketAddr,
    pid: i32,
    cert: Option<TestCert>,
    _plain: Option<Sidecar>,
    _tls: Option<TlsSidecar>,
}

impl Target {
    /// A sidecar in front of `origin` with `yaml` as (the rest of) its config.
    async fn start(via: Via, origin: &Origin, yaml: &str) -> Target {
        match via {
            Via::H2c => {
                let sc = Sidecar::builder(&origin.url()).config(yaml).start().await;
                Target {
                    via,
                    addr: sc.addr,
                    metrics: sc.metrics_addr.expect("admin listener"),
                    pid: sc.pid(),
                    cert: None,
                    _plain: Some(sc),
                    _tls: None,
                }
            }
            Via::Tls => {
                let cert = make_cert();
                let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
                let listen = metrics.to_string();
                let args = ["--metrics-listen", listen.as_str()];
                let sc = TlsSidecar::start(origin, &cert, yaml, &args).await;
                Target {
                    via,
                    addr: sc.addr,
                    metrics,
                    pid: sc.proc.pid(),
                    cert: Some(cert),
                    _plain: None,
                    _tls: Some(sc),
                }
            }
        }
    }

    fn tls(&self) -> bool {
        self.via == Via::Tls
    }

    /// How to reach it, for a task of its own.
    fn dial(&self) -> Dial {
        Dial {
            addr: self.addr,
            der: self.cert.as_ref().map(|c| c.der.clone()),
        }
    }

    async fn raw(&self) -> RawH2 {
        RawH2::start(self.dial().connect().await).await
    }
}

/// Where the sidecar listens and, over TLS, the one certificate to trust.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    der: Option<CertificateDer<'static>>,
}

impl Dial {
    /// A connection ready for h2's bytes: TCP, or TLS that chose h2.
    async fn connect(&self) -> BoxIo {
        self.try_connect().await.expect("connect")
    }

    async fn try_connect(&self) -> std::io::Result<BoxIo> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let Some(der) = &self.der else {
            return Ok(Box::new(tcp));
        };
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).expect("trust the test certificate");
        let mut cfg = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        Ok(Box::new(tls))
    }

    /// An `h2` client connection; the task's result is how the connection ended.
    async fn h2(&self) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
        let io = self.connect().await;
        let (send, conn) = tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(io))
            .await
            .expect("h2 handshake timed out")
            .expect("h2 handshake");
        (send, tokio::spawn(conn))
    }

    fn request(&self, target: &str) -> http::Request<()> {
        let scheme = if self.der.is_some() { "https" } else { "http" };
        http::Request::builder()
            .uri(format!("{scheme}://localhost:{}{target}", self.addr.port()))
            .header("accept", "text/event-stream")
            .body(())
            .unwrap()
    }
}

/// Runs `attack` on a runtime of its own thread, so that the attacking client's work does not
/// delay the test's own reading of the neighbour stream.
async fn apart<F, T>(attack: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("attack runtime")
            .block_on(attack)
    })
    .await
    .expect("attack thread")
}

/// An ordinary SSE stream (an event every 10 ms) on its own connection, read in a task that
/// keeps each event's arrival time and delay from the origin's stamp.
struct Neighbour {
    /// (arrival ns, delay ns) per event.
    events: Arc<Mutex<Vec<(u64, u64)>>>,
    task: JoinHandle<()>,
    /// The baseline window, set by [`Neighbour::start`].
    baseline: (u64, u64),
}

impl Neighbour {
    /// Opens the stream and reads it for 0.5 s: the baseline.
    async fn start(t: &Target) -> Neighbour {
        let t = t.dial();
        let (send, conn) = t.h2().await;
        let mut ready = send.clone().ready().await.expect("h2 ready");
        let (resp, _) = ready
            .send_request(
                t.request("/sse?events=100000&interval_ms=10&n=neighbour"),
                true,
            )
            .expect("send");
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("neighbour head timed out")
            .expect("neighbour head");
        let mut body = resp.into_body();
        let events = Arc::new(Mutex::new(Vec::new()));
        let into = events.clone();
        let task = tokio::spawn(async move {
            let _keep = (send, conn);
            let mut parser = Parser::new();
            while let Some(Ok(d)) = body.data().await {
                let _ = body.flow_control().release_capacity(d.len());
                let at = now_ns();
                for item in parser.feed(&d, at) {
                    if let Item::Event(e) = item.item {
                        if let Some(t0) = e.t_ns() {
                            into.lock().unwrap().push((at, at.saturating_sub(t0)));
                        }
                    }
                }
            }
        });
        let from = now_ns();
        tokio::time::sleep(Duration::from_millis(500)).await;
        Neighbour {
            events,
            task,
            baseline: (from, now_ns()),
        }
    }

    /// Events that arrived in `[from, to)` and the 99th percentile of their delay.
    fn p99(&self, (from, to): (u64, u64)) -> (usize, u64) {
        let mut d: Vec<u64> = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, d)| *d)
            .collect();
        d.sort_unstable();
        let p99 = d.get((d.len() * 99 / 100).min(d.len().saturating_sub(1)));
        (d.len(), p99.copied().unwrap_or(u64::MAX))
    }

    /// From `from` (when the attack started) until now, and at least 500 ms, the stream
    /// kept its pace (an event per 10 ms, 70 % of them at least) and its p99 delay stayed
    /// within 2× the baseline's, or 25 ms: the baseline is a fraction of a millisecond, and on
    /// a shared 2-core machine where the attacking client, the origin, the sidecar and other
    /// tests share the cores, the kernel's scheduling alone adds milliseconds (1,000 TLS
    /// handshakes: 0.4–8.5 ms here; 2–31 ms while the sidecar's descriptor table still grew
    /// under the burst, 50 ms with the handshakes on the proxy's runtime).
    async fn assert_delivery(&self, from: u64, what: &str) {
        let min_end = from + 500_000_000;
        let now = now_ns();
        if now < min_end {
            tokio::time::sleep(Duration::from_nanos(min_end - now)).await;
        }
        let during = (from, now_ns());
        let (nb, base) = self.p99(self.baseline);
        let (nd, p99) = self.p99(during);
        let expected = ((during.1 - during.0) / 10_000_000) as usize;
        println!(
            "{what}: neighbour p99 {:.2} ms over {nd} events (baseline {:.2} ms over {nb})",
            p99 as f64 / 1e6,
            base as f64 / 1e6
        );
        assert!(
            nd * 10 >= expected * 7,
            "{what}: the neighbour got {nd} events in {} ms",
            (during.1 - during.0) / 1_000_000
        );
        assert!(
            p99 <= (2 * base).max(25_000_000),
            "{what}: the neighbour's p99 delay rose to {:.2} ms (baseline {:.2} ms)",
            p99 as f64 / 1e6,
            base as f64 / 1e6
        );
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the comm.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The sidecar's RSS peak over a run and CPU used, and its CPU over the next 0.5 s (idle
/// again: nothing keeps working for a closed connection).
struct Cost {
    pid: i32,
    rss0: u64,
    cpu0: f64,
    watch: RssWatch,
}

impl Cost {
    fn start(pid: i32) -> Cost {
        Cost {
            pid,
            rss0: rss(pid),
            cpu0: cpu_secs(pid),
            watch: RssWatch::start(pid),
        }
    }

    /// Asserts RSS grew by less than `max_rss_growth` and the process is idle afterwards.
    async fn check(self, what: &str, max_rss_growth: u64) {
        let cpu = cpu_secs(self.pid) - self.cpu0;
        let growth = self.watch.max().saturating_sub(self.rss0);
        let before = cpu_secs(self.pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = cpu_secs(self.pid) - before;
        println!(
            "{what}: sidecar CPU {cpu:.2} s, RSS peak +{:.1} MiB, CPU in the next 0.5 s {after:.2} s",
            growth as f64 / (1 << 20) as f64
        );
        assert!(
            growth < max_rss_growth,
            "{what}: RSS grew by {growth} bytes"
        );
        assert!(
            after <= 0.1,
            "{what}: still busy afterwards ({after} s CPU)"
        );
    }
}

/// How many requests with `n=<tag>` the app received.
/// `sse_sidecar_h2_abuse_total{reason}` on `t`.
async fn abuse_count(t: &Target, reason: &str) -> f64 {
    let series = format!("sse_sidecar_h2_abuse_total{{reason=\"{reason}\"}}");
    common::sidecar::metric_at(t.metrics, &series).await
}

fn app_saw(origin: &Origin, tag: &str) -> usize {
    origin.inspect(|r| r.iter().filter(|q| q.param("n") == Some(tag)).count())
}

// ---------------------------------------------------------------------------------------------
// Rapid reset
// ---------------------------------------------------------------------------------------------

/// Streams reset after their answer's head (the rapid-reset variant h2 itself does not bound):
/// 10,000 tried, 50 at a time. The connection is closed with GOAWAY ENHANCE_YOUR_CALM after
/// 500 resets, so the app sees at most 2,000 of them (measured: about 550); the neighbour
/// keeps its pace.
async fn rapid_reset_after_the_answer(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "").await;
    let n = Neighbour::start(&t).await;
    let cost = Cost::start(t.pid);
    let from = now_ns();
    let dial = t.dial();
    let (answered, ended) = apart(async move {
        let (send, conn) = dial.h2().await;
        let tries = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (send, tries, answered) = (send.clone(), tries.clone(), answered.clone());
            let req = dial.request("/sse?events=1&end=hold&n=rr");
            workers.spawn(async move {
                while tries.fetch_add(1, Ordering::Relaxed) < 10_000 {
                    let Ok(mut ready) = send.clone().ready().await else {
                        return;
                    };
                    let Ok((resp, mut stream)) = ready.send_request(req.clone(), true) else {
                        return;
                    };
                    match tokio::time::timeout(Duration::from_secs(5), resp).await {
                        Ok(Ok(_head)) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            stream.send_reset(h2::Reason::CANCEL);
                        }
                        _ => return,
                    }
                }
            });
        }
        drop(send);
        let all = async { while workers.join_next().await.is_some() {} };
        assert!(
            tokio::time::timeout(Duration::from_secs(30), all)
                .await
                .is_ok(),
            "the rapid-reset client did not end within 30 s"
        );
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection did not end")
            .expect("connection task");
        (answered.load(Ordering::Relaxed), ended)
    })
    .await;
    let to = now_ns();
    let saw = app_saw(&origin, "rr");
    println!(
        "rapid reset ({via:?}): {answered} answered and reset, the app saw {saw}, in {} ms; connection: {ended:?}",
        (to - from) / 1_000_000
    );
    let err = ended.expect_err("the connection must end with an error (GOAWAY)");
    assert_eq!(
        err.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "the connection ended with {err:?}"
    );
    assert!(err.is_go_away(), "not a GOAWAY: {err:?}");
    assert!(saw <= 2_000, "the app saw {saw} requests");
    assert_eq!(abuse_count(&t, "rst_stream_flood").await, 1.0);
    n.assert_delivery(from, &format!("rapid reset ({via:?})"))
        .await;
    cost.check(&format!("rapid reset ({via:?})"), 64 << 20)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_after_the_answer_is_closed_with_goaway_h2c() {
    rapid_reset_after_the_answer(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_after_the_answer_is_closed_with_goaway_tls() {
    rapid_reset_after_the_answer(Via::Tls).await;
}

// ---------------------------------------------------------------------------------------------
// Floods of frames
// ---------------------------------------------------------------------------------------------

/// 50,000 SETTINGS, PING, WINDOW_UPDATE or empty DATA frames, each kind on its own
/// connection: each connection is closed with GOAWAY ENHANCE_YOUR_CALM after at most its
/// kind's limit (100 SETTINGS, 1,000 PINGs, 10,000 WINDOW_UPDATEs, 1,000 empty DATA per 10 s)
/// — the acknowledgements the client got show how many were processed — and within 3 s.
async fn control_frame_floods(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "").await;
    let n = Neighbour::start(&t).await;
    let cost = Cost::start(t.pid);
    let from = now_ns();
    let cases: [(&str, Vec<u8>, u64, &str); 4] = [
        (
            "SETTINGS",
            frame(h2_raw::SETTINGS, 0, 0, &[]),
            100,
            "settings_flood",
        ),
        (
            "PING",
            frame(h2_raw::PING, 0, 0, &[7; 8]),
            1_000,
            "ping_flood",
        ),
        (
            "WINDOW_UPDATE",
            frame(h2_raw::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1]),
            10_000,
            "window_update_flood",
        ),
        (
            "empty DATA",
            frame(h2_raw::DATA, 0, 1, &[]),
            1_000,
            "empty_data_flood",
        ),
    ];
    for (name, one, limit, reason) in cases {
        let mut c = t.raw().await;
        if name == "empty DATA" {
            let open = request_block("POST", "/echo?n=flood", t.tls());
            c.send(&frame(h2_raw::HEADERS, h2_raw::END_HEADERS, 1, &open))
                .await
                .unwrap();
        }
        let batches = c.flood(&repeated(&one, 1_000), 50).await;
        let seen = c.wait_closed(Duration::from_secs(3)).await;
        let acks = match name {
            // The server's own SETTINGS is not an acknowledgement.
            "SETTINGS" => seen.counts[h2_raw::SETTINGS as usize].saturating_sub(1),
            "PING" => seen.counts[h2_raw::PING as usize],
            _ => 0,
        };
        println!(
            "{name} flood ({via:?}): {} frames written whole, {acks} acknowledged, closed after {:?} ({:?}), GOAWAY {:?}",
            batches * 1_000,
            seen.closed_after,
            seen.end,
            seen.goaway
        );
        assert_goaway_calm(&seen, &format!("{name} flood ({via:?})"));
        assert!(acks <= limit, "{name}: {acks} acknowledged, limit {limit}");
        // Counted once, by its kind; an empty DATA flood may meet h2's own limit first (the
        // GOAWAY printed above then says `too_many_data_frames`), which is not ours to count.
        let counted = abuse_count(&t, reason).await;
        if !(name == "empty DATA" && counted == 0.0) {
            assert_eq!(counted, 1.0, "{name} flood ({via:?}): {reason}");
        }
    }
    n.assert_delivery(from, &format!("floods ({via:?})")).await;
    cost.check(&format!("floods ({via:?})"), 64 << 20).await;
}

fn assert_goaway_calm(seen: &Seen, what: &str) {
    assert!(
        seen.closed_after
            .is_some_and(|d| d < Duration::from_secs(5)),
        "{what}: the connection is still open: {seen:?}"
    );
    let code = seen.goaway.as_ref().map(|g| g.1);
    assert_eq!(
        code,
        Some(h2_raw::ENHANCE_YOUR_CALM),
        "{what}: GOAWAY {:?}",
        seen.goaway
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_floods_are_closed_with_goaway_h2c() {
    control_frame_floods(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_floods_are_closed_with_goaway_tls() {
    control_frame_floods(Via::Tls).await;
}

// ---------------------------------------------------------------------------------------------
// Header blocks: CONTINUATION flood, HPACK bomb
// ---------------------------------------------------------------------------------------------

/// A header block that never ends (HEADERS without END_HEADERS, then up to 10,000
/// CONTINUATION frames): h2 closes the connection with a GOAWAY after a handful of frames,
/// nothing reaches the app, and memory stays flat.
async fn continuation_flood(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "").await;
    let n = Neighbour::start(&t).await;
    let cost = Cost::start(t.pid);
    let from = now_ns();
    let mut c = t.raw().await;
    let open = request_block("GET", "/sse?n=cont", t.tls());
    c.send(&frame(h2_raw::HEADERS, 0, 1, &open)).await.unwrap();
    // Each CONTINUATION carries one more (valid) header: `x-filler: aaa…`.
    let mut filler = vec![0x00, 8];
    filler.extend_from_slice(b"x-filler");
    filler.push(100);
    filler.extend_from_slice(&[b'a'; 100]);
    let one = frame(h2_raw::CONTINUATION, 0, 1, &filler);
    let batches = c.flood(&repeated(&one, 100), 100).await;
    let seen = c.wait_closed(Duration::from_secs(3)).await;
    println!(
        "CONTINUATION flood ({via:?}): {} frames written whole, closed after {:?}, GOAWAY {:?}",
        batches * 100,
        seen.closed_after,
        seen.goaway
    );
    assert!(
        seen.closed_after.is_some() && seen.goaway.is_some(),
        "the connection must be closed with a GOAWAY: {seen:?}"
    );
    assert_eq!(app_saw(&origin, "cont"), 0);
    n.assert_delivery(from, &format!("CONTINUATION flood ({via:?})"))
        .await;
    cost.check(&format!("CONTINUATION flood ({via:?})"), 32 << 20)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_closed_h2c() {
    continuation_flood(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_closed_tls() {
    continuation_flood(Via::Tls).await;
}

/// Headers that expand past 64 KiB (one 4,000-byte header put in the HPACK table, then named
/// 100 times by its one-byte index: 400 KiB from 4 KiB on the wire) get a 431, RST_STREAM or
/// GOAWAY; the app never sees the request.
async fn hpack_bomb(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "").await;
    let cost = Cost::start(t.pid);
    let mut c = t.raw().await;
    let mut block = request_block("GET", "/json?n=bomb", t.tls());
    // Literal with incremental indexing, new name; the value's length 4000 = 127 + 3873.
    block.extend_from_slice(&[0x40, 6]);
    block.extend_from_slice(b"x-bomb");
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
    block.extend_from_slice(&[b'b'; 4000]);
    // The new entry is index 62; named 100 times.
    block.extend_from_slice(&[0x80 | 62; 100]);
    let flags = h2_raw::END_HEADERS | h2_raw::END_STREAM;
    c.send(&frame(h2_raw::HEADERS, flags, 1, &block))
        .await
        .unwrap();
    let refused = |s: &Seen| {
        s.goaway.is_some()
            || s.resets.iter().any(|r| r.0 == 1)
            || s.answered
                .iter()
                .any(|(id, b)| *id == 1 && b.windows(3).any(|w| w == b"431"))
    };
    let seen = c.wait_for(Duration::from_secs(3), refused).await;
    println!(
        "HPACK bomb ({via:?}): GOAWAY {:?}, resets {:?}, answers {}",
        seen.goaway,
        seen.resets,
        seen.answered.len()
    );
    assert!(refused(&seen), "not refused: {seen:?}");
    assert_eq!(app_saw(&origin, "bomb"), 0);
    cost.check(&format!("HPACK bomb ({via:?})"), 16 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused_h2c() {
    hpack_bomb(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused_tls() {
    hpack_bomb(Via::Tls).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent streams
// ---------------------------------------------------------------------------------------------

/// With `limits.h2_max_concurrent_streams: 5` the server announces 5, and a sixth stream
/// opened at once gets RST_STREAM REFUSED_STREAM while the five are answered.
async fn streams_past_the_limit(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "limits:\n  h2_max_concurrent_streams: 5\n").await;
    let mut c = t.raw().await;
    let open = request_block("GET", "/sse?events=1&end=hold&n=cap", t.tls());
    let flags = h2_raw::END_HEADERS | h2_raw::END_STREAM;
    for i in 0..6u32 {
        c.send(&frame(h2_raw::HEADERS, flags, 2 * i + 1, &open))
            .await
            .unwrap();
    }
    let seen = c
        .wait_for(Duration::from_secs(5), |s| {
            s.answered.len() >= 5 && !s.resets.is_empty()
        })
        .await;
    println!(
        "streams past the limit ({via:?}): settings {:?}, resets {:?}, answered {}",
        seen.settings,
        seen.resets,
        seen.answered.len()
    );
    assert!(
        seen.settings.contains(&(0x3, 5)),
        "SETTINGS_MAX_CONCURRENT_STREAMS 5 not announced: {:?}",
        seen.settings
    );
    assert_eq!(seen.resets, vec![(11, h2_raw::REFUSED_STREAM)]);
    assert_eq!(seen.answered.len(), 5);
    assert_eq!(app_saw(&origin, "cap"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused_h2c() {
    streams_past_the_limit(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused_tls() {
    streams_past_the_limit(Via::Tls).await;
}

/// Malformed requests (a Host that is not the :authority, answered 400 before any app sees
/// them) cost a connection nothing until its 32nd: the connection still serves a stream after 31,
/// and is closed at the 32nd. The sidecar runs each h2 connection's accept loop itself
/// (proxy/h2_conn.rs); without the per-connection count a client could send them forever.
async fn malformed_requests_past_the_budget(via: Via) {
    let origin = Origin::start().await;
    let t = Target::start(via, &origin, "").await;
    let mut c = t.raw().await;
    // A Host that is not the :authority (h2 itself lets it through): pingora answers 400
    // before any app sees it.
    let mut bad = request_block("GET", "/sse?n=malformed", t.tls());
    // host (static index 38), a literal without indexing.
    bad.extend_from_slice(&[0x0f, 38 - 15, 12]);
    bad.extend_from_slice(b"evil.example");
    let good = request_block("GET", "/sse?events=1&end=hold&n=budget", t.tls());
    let flags = h2_raw::END_HEADERS | h2_raw::END_STREAM;
    let mut id = 1u32;
    for i in 1..=31 {
        c.send(&frame(h2_raw::HEADERS, flags, id, &bad))
            .await
            .unwrap();
        id += 2;
        let seen = c
            .wait_for(Duration::from_secs(5), |s| s.answered.len() >= i)
            .await;
        assert_eq!(
            seen.answered.len(),
            i,
            "malformed request {i} not refused: {seen:?}"
        );
        assert_eq!(&seen.answered[i - 1].1[..1], &[0x8c], "not a 400: {seen:?}");
    }
    c.send(&frame(h2_raw::HEADERS, flags, id, &good))
        .await
        .unwrap();
    let seen = c
        .wait_for(Duration::from_secs(5), |s| s.answered.len() >= 32)
        .await;
    assert_eq!(
        seen.answered.last().map(|a| a.0),
        Some(id),
        "a good stream after 31 malformed: {seen:?}"
    );
    assert!(
        seen.closed_after.is_none(),
        "closed before the budget: {seen:?}"
    );
    assert_eq!(app_saw(&origin, "budget"), 1);
    id += 2;
    c.send(&frame(h2_raw::HEADERS, flags, id, &bad))
        .await
        .unwrap();
    let seen = c.wait_closed(Duration::from_secs(5)).await;
    println!(
        "malformed requests ({via:?}): 31 refused, then a stream, closed {:?} after the 32nd ({:?})",
        seen.closed_after, seen.end
    );
    assert!(
        seen.closed_after.is_some(),
        "the 32nd malformed request left the connection open: {seen:?}"
    );
    assert_eq!(abuse_count(&t, "malformed_requests").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_past_the_budget_close_the_connection_h2c() {
    malformed_requests_past_the_budget(Via::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_past_the_budget_close_the_connection_tls() {
    malformed_requests_past_the_budget(Via::Tls).await;
}

// ---------------------------------------------------------------------------------------------
// TLS handshakes
// ---------------------------------------------------------------------------------------------

/// The first half of a real ClientHello, as rustls writes it.
fn half_a_client_hello() -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore};
    let cfg = ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::new(cfg), name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    hello.truncate(hello.len() / 2);
    hello
}

/// 200 connections that send half a ClientHello and stall are all closed at
/// `limits.header_read_timeout` (1 s here; pingora alone waits 60 s), not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_after_header_read_timeout() {
    let origin = Origin::start().await;
    let t = Target::start(Via::Tls, &origin, "limits:\n  header_read_timeout: 1s\n").await;
    let hello = half_a_client_hello();
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(t.addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &hello)
            .await
            .expect("half a ClientHello");
        conns.push(tcp);
    }
    let started = Instant::now();
    let mut waits = tokio::task::JoinSet::new();
    for mut tcp in conns {
        waits.spawn(async move {
            let mut buf = [0u8; 1024];
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match tokio::io::AsyncReadExt::read(&mut tcp, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            end.is_ok().then(|| started.elapsed())
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = waits.join_next().await {
        closed.push(r.unwrap());
    }
    let open = closed.iter().filter(|c| c.is_none()).count();
    let times: Vec<Duration> = closed.into_iter().flatten().collect();
    let (first, last) = (
        times.iter().min().copied().unwrap_or_default(),
        times.iter().max().copied().unwrap_or_default(),
    );
    println!("stalled handshakes: {open} of 200 still open after 5 s; closed between {first:?} and {last:?}");
    assert_eq!(open, 0, "{open} stalled handshakes still open after 5 s");
    assert!(
        first >= Duration::from_millis(800) && last <= Duration::from_millis(2500),
        "closed between {first:?} and {last:?} (header_read_timeout 1 s)"
    );
}

/// 1,000 TLS handshakes started at once from loopback all complete, an established h2
/// stream keeps its pace meanwhile, and the sidecar's descriptors go back to where they were
/// once the clients leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handshakes_at_once_starve_nobody() {
    let origin = Origin::start().await;
    let t = Target::start(Via::Tls, &origin, "").await;
    // Grown at startup: each growth under load would stall the accepting thread, and every
    // stream it serves, for an RCU grace period (10–20 ms, five times for 1,000 connections).
    let table = fd_table(t.pid);
    let want = nofile().rlim_cur.min(65_536);
    println!(
        "descriptor table: {table} slots (RLIMIT_NOFILE {})",
        nofile().rlim_cur
    );
    assert!(
        table >= want,
        "descriptor table of {table} slots at startup, want {want}"
    );
    let n = Neighbour::start(&t).await;
    let fd0 = open_fds(t.pid);
    let cost = Cost::start(t.pid);
    let from = now_ns();
    let (dial, pid) = (t.dial(), t.pid);
    let (held, peak_fds, in_time) = apart(async move {
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..1_000 {
            let dial = dial.clone();
            clients.spawn(async move { dial.try_connect().await.ok() });
        }
        let mut held = Vec::new();
        let mut peak_fds = 0;
        let all = async {
            while let Some(r) = clients.join_next().await {
                held.push(r.unwrap());
                peak_fds = peak_fds.max(open_fds(pid));
            }
        };
        let in_time = tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .is_ok();
        (held, peak_fds, in_time)
    })
    .await;
    let to = now_ns();
    let ok = held.iter().filter(|c| c.is_some()).count();
    println!(
        "1,000 handshakes: {ok} done in {} ms; sidecar fds {fd0} before, {peak_fds} at most",
        (to - from) / 1_000_000
    );
    assert!(in_time && ok == 1_000, "{ok} of 1,000 handshakes done");
    n.assert_delivery(from, "1,000 handshakes").await;
    drop(held);
    let settled =
        common::try_eventually(Duration::from_secs(3), || open_fds(t.pid) <= fd0 + 5).await;
    assert!(
        settled,
        "fds {} after the clients left, {fd0} before",
        open_fds(t.pid)
    );
    cost.check("1,000 handshakes", 128 << 20).await;
}
