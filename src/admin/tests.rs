//! The admin listener over real sockets: each test binds it on 127.0.0.1:0, speaks raw bytes
//! to it and asserts on the bytes it answers.

use super::connection::MAX_HEAD_BYTES;
use super::*;
use crate::metrics::Metrics;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

/// Patience for conditions the tests wait on.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running admin service on 127.0.0.1:0.
struct Harness {
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    /// `None` once dropped, as when the pingora server goes away.
    shutdown: Option<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(upstream: SocketAddr, options: AdminOptions) -> Harness {
    let registry = Registry::new();
    // The registry keeps the registered collectors alive.
    let _metrics = Metrics::new(&registry).unwrap();
    let listener = AdminService::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let readiness = Arc::new(Readiness::new());
    let addr = listener.local_addr().unwrap();
    let svc = AdminService::with_options(listener, registry, upstream, readiness.clone(), options);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { svc.start(rx).await });
    Harness {
        addr,
        readiness,
        shutdown: Some(tx),
        task,
    }
}

fn fast_checks() -> AdminOptions {
    AdminOptions {
        upstream_check_interval: Duration::from_millis(20),
        ..AdminOptions::default()
    }
}

/// A parsed response: status, lower-cased head, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Sends raw bytes on a fresh connection and reads until the server closes.
async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    out
}

fn parse_reply(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("no response head");
    let status = head[9..12].parse().unwrap();
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    parse_reply(&raw(addr, req.as_bytes()).await)
}

/// Polls `/readyz` until its status is `want`; returns the last reply.
async fn wait_readyz(addr: SocketAddr, want: u16) -> Reply {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = get(addr, "GET", "/readyz").await;
        if r.status == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {} ({:?}), wanted {want}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `/metrics` serves every sidecar metric, each with HELP and TYPE lines,
/// plus the process collector, in the Prometheus text format.
#[tokio::test]
async fn metrics_lists_every_metric() {
    let h = start(dead_addr(), AdminOptions::default());
    let r = get(h.addr, "GET", "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.head.contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let families = [
        ("sse_sidecar_streams_active", "gauge"),
        ("sse_sidecar_streams_total", "counter"),
        ("sse_sidecar_events_total", "counter"),
        ("sse_sidecar_stream_bytes_total", "counter"),
        ("sse_sidecar_heartbeats_total", "counter"),
        ("sse_sidecar_event_delay_seconds", "histogram"),
        ("sse_sidecar_time_to_first_event_seconds", "histogram"),
        ("sse_sidecar_upstream_silence_seconds", "histogram"),
        ("sse_sidecar_stream_duration_seconds", "histogram"),
        ("sse_sidecar_requests_total", "counter"),
        ("sse_sidecar_upstream_errors_total", "counter"),
        ("sse_sidecar_build_info", "gauge"),
    ];
    let body = format!("\n{}", r.body);
    for (name, kind) in families {
        assert!(
            body.contains(&format!("\n# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}"
        );
    }
    assert!(r
        .body
        .contains("sse_sidecar_streams_total{outcome=\"slow_consumer\"} 0\n"));
    assert!(r
        .body
        .contains("sse_sidecar_requests_total{code=\"5xx\",kind=\"sse\"} 0\n"));
    assert!(r
        .body
        .contains("sse_sidecar_upstream_errors_total{reason=\"protocol\"} 0\n"));
    #[cfg(target_os = "linux")]
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(r.body.contains(&format!("# TYPE {name} ")), "no {name}");
    }
    let len: usize = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, r.body.len());
}

/// `/healthz` is 200 `ok`; HEAD gets the same head and no body.
#[tokio::test]
async fn healthz_and_head() {
    let h = start(dead_addr(), AdminOptions::default());
    let r = get(h.addr, "GET", "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = get(h.addr, "HEAD", "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert!(r.head.contains("content-length: 2\r\n"), "{}", r.head);
    let r = get(h.addr, "HEAD", "/metrics").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
}

/// `/readyz` waits for the listeners, follows the app's listener going
/// away and coming back, and names the reason in 503 bodies.
#[tokio::test]
async fn readyz_follows_upstream() {
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = app.local_addr().unwrap();
    let h = start(app_addr, fast_checks());

    let r = get(h.addr, "GET", "/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("listeners not bound"), "{}", r.body);

    h.readiness.set_listeners_bound();
    let r = wait_readyz(h.addr, 200).await;
    assert_eq!(r.body, "ok");

    drop(app);
    let r = wait_readyz(h.addr, 503).await;
    assert_eq!(r.body, format!("upstream {app_addr} refused connection"));

    // The app restarts on the same port.
    let _app = std::net::TcpListener::bind(app_addr).unwrap();
    wait_readyz(h.addr, 200).await;
}

/// With the default 1 s interval, a burst of probes connects to the app
/// once, not once per probe.
#[tokio::test]
async fn readyz_upstream_check_is_cached() {
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = start(app.local_addr().unwrap(), AdminOptions::default());
    h.readiness.set_listeners_bound();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get(h.addr, "GET", "/readyz").await.status, 200);
    }
    let elapsed = started.elapsed();
    // Count the connections the probes made (they sit in the backlog).
    let mut accepted = 0u64;
    while let Ok(Ok(_)) = timeout(Duration::from_millis(200), app.accept()).await {
        accepted += 1;
    }
    assert!(accepted >= 1);
    assert!(
        accepted <= elapsed.as_secs() + 1,
        "{accepted} upstream connects in {elapsed:?}"
    );
}

/// `set_draining()` and the pingora shutdown watch both turn `/readyz`
/// into 503 `draining`, while everything else keeps being served.
#[tokio::test]
async fn draining_is_not_ready_but_keeps_serving() {
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let h = start(app.local_addr().unwrap(), fast_checks());
    h.readiness.set_listeners_bound();
    wait_readyz(h.addr, 200).await;
    h.readiness.set_draining();
    let r = get(h.addr, "GET", "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (503, "draining"));

    let h2 = start(app.local_addr().unwrap(), fast_checks());
    h2.readiness.set_listeners_bound();
    wait_readyz(h2.addr, 200).await;
    h2.shutdown.as_ref().unwrap().send(true).unwrap();
    let r = wait_readyz(h2.addr, 503).await;
    assert_eq!(r.body, "draining");
    assert!(h2.readiness.is_draining());
    assert_eq!(get(h2.addr, "GET", "/healthz").await.status, 200);
    assert_eq!(get(h2.addr, "GET", "/metrics").await.status, 200);
    // The pingora server dropping its sender must not stop the service.
    let mut h2 = h2;
    drop(h2.shutdown.take());
    assert_eq!(get(h2.addr, "GET", "/healthz").await.status, 200);
    assert_eq!(wait_readyz(h2.addr, 503).await.body, "draining");
}

/// Unknown paths are 404, other methods on known paths 405.
#[tokio::test]
async fn unknown_path_and_method() {
    let h = start(dead_addr(), AdminOptions::default());
    let r = get(h.addr, "GET", "/nope").await;
    assert_eq!(r.status, 404);
    let r = get(h.addr, "GET", "/metrics/extra").await;
    assert_eq!(r.status, 404);
    let r = get(h.addr, "POST", "/metrics").await;
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: get, head"), "{}", r.head);
    // A query string does not change the route.
    assert_eq!(get(h.addr, "GET", "/healthz?verbose=1").await.status, 200);
}

/// Garbage gets a 400 and a closed connection; the server keeps serving.
#[tokio::test]
async fn garbage_gets_400_and_server_survives() {
    let h = start(dead_addr(), AdminOptions::default());
    for garbage in [
        // A TLS ClientHello start: rejected at the first byte, not after the read timeout.
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
        b"get /healthz HTTP/1.1\r\n\r\n",
    ] {
        let r = parse_reply(&raw(h.addr, garbage).await);
        assert_eq!(r.status, 400, "for {garbage:?}");
        assert!(r.head.contains("connection: close"));
    }
    // Oversized heads are refused without reading them forever.
    let mut big = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(MAX_HEAD_BYTES + 100, b'a');
    let r = parse_reply(&raw(h.addr, &big).await);
    assert_eq!(r.status, 431);
    assert_eq!(get(h.addr, "GET", "/healthz").await.status, 200);
}

/// Keep-alive and pipelining: several requests on one connection, each
/// answered in order; HTTP/1.0 closes by default.
#[tokio::test]
async fn keep_alive_and_pipelining() {
    let h = start(dead_addr(), AdminOptions::default());
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nHEAD /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{text}");
    assert_eq!(text.matches("keep-alive").count(), 2);

    // HTTP/1.0 without keep-alive: one answer, then close (read_to_end returns).
    let r = parse_reply(&raw(h.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

/// A client that never finishes its head is disconnected after the read timeout.
#[tokio::test]
async fn stalled_client_is_cut_off() {
    let options = AdminOptions {
        io_timeout: Duration::from_millis(200),
        ..AdminOptions::default()
    };
    let h = start(dead_addr(), options);
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut out = Vec::new();
    let n = timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("stalled connection was never closed");
    assert!(n.is_ok() && out.is_empty(), "{out:?}");
}

/// Binding a busy address fails with the address in the message.
#[test]
fn bind_error_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = AdminService::bind(addr).unwrap_err();
    assert_eq!(err.io.kind(), io::ErrorKind::AddrInUse);
    let msg = err.to_string();
    assert!(msg.contains(&addr.to_string()), "{msg}");
}

/// The statuses of every answer on one connection that is sent `first` and then a
/// `GET /healthz` asking to close: a second status means `first` left the connection open.
async fn answers_after(addr: SocketAddr, first: &[u8]) -> Vec<u16> {
    let mut request = first.to_vec();
    request.extend_from_slice(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    let out = raw(addr, &request).await;
    let text = String::from_utf8_lossy(&out);
    text.match_indices("HTTP/1.")
        .map(|(i, _)| text[i + 9..i + 12].parse().unwrap())
        .collect()
}

/// Keep-alive follows the request: HTTP/1.1 stays open unless `Connection: close` (in any
/// case), HTTP/1.0 only with `Connection: keep-alive`, a 404 or 405 keeps it open, and a
/// request with a body (never read) closes it after the answer.
#[tokio::test]
async fn keep_alive_rules() {
    let h = start(dead_addr(), AdminOptions::default());
    let cases: [(&[u8], &[u16]); 8] = [
        (b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &[200, 200]),
        (
            b"GET /healthz HTTP/1.1\r\nConnection: Close\r\n\r\n",
            &[200],
        ),
        (b"GET /healthz HTTP/1.0\r\n\r\n", &[200]),
        (
            b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            &[200, 200],
        ),
        (
            b"GET /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            &[200],
        ),
        (
            b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            &[200],
        ),
        (b"GET /nope HTTP/1.1\r\n\r\n", &[404, 200]),
        (b"POST /healthz HTTP/1.1\r\n\r\n", &[405, 200]),
    ];
    for (first, want) in cases {
        let got = answers_after(h.addr, first).await;
        assert_eq!(got, want, "for {:?}", String::from_utf8_lossy(first));
    }
}

/// Blank lines before the request line and bare `\n` line ends are accepted; a doubled space
/// in the request line or a folded header line is a 400 that closes the connection.
#[tokio::test]
async fn request_framing_leniency() {
    let h = start(dead_addr(), AdminOptions::default());
    let leading_blank = answers_after(h.addr, b"\r\nGET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(leading_blank, [200, 200]);
    let bare_lf = answers_after(h.addr, b"GET /healthz HTTP/1.1\n\n").await;
    assert_eq!(bare_lf, [200, 200]);
    for bad in [
        &b"GET  /healthz HTTP/1.1\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\n bad: x\r\n\r\n",
    ] {
        let r = parse_reply(&raw(h.addr, bad).await);
        assert_eq!(r.status, 400, "for {bad:?}");
        assert!(r.head.contains("connection: close"), "{}", r.head);
    }
}

/// A client that stops reading its answers holds its connection slot only until a write has
/// stalled for the io timeout; meanwhile connections over the cap are closed at accept.
#[tokio::test]
async fn stalled_reader_loses_its_slot() {
    let io_timeout = Duration::from_millis(500);
    let options = AdminOptions {
        io_timeout,
        max_connections: 1,
        ..AdminOptions::default()
    };
    let h = start(dead_addr(), options);
    let started = Instant::now();
    let hog = TcpStream::connect(h.addr).await.unwrap();
    let (_unread, mut requests) = hog.into_split();
    // Far more answer bytes than the socket buffers on both ends hold.
    let pipelined = b"GET /metrics HTTP/1.1\r\n\r\n".repeat(4000);
    let writer = tokio::spawn(async move {
        let _ = requests.write_all(&pipelined).await;
        // Keep the write half open: the client is stuck, not gone.
        std::future::pending::<()>().await;
    });

    let probe = b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    let over_cap = try_raw(h.addr, probe).await;
    assert!(over_cap.is_empty(), "served over the cap: {over_cap:?}");

    let deadline = started + PATIENCE;
    loop {
        let answer = try_raw(h.addr, probe).await;
        if !answer.is_empty() {
            assert_eq!(parse_reply(&answer).status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled reader kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= io_timeout, "{:?}", started.elapsed());
    writer.abort();
}

/// A client still sending a request body when the server answers and closes can finish
/// sending and then read the answer: the server discards input for a while after its FIN
/// instead of closing over it, which would reset the connection and fail the client's writes.
#[tokio::test]
async fn closing_answer_lets_the_client_finish_sending() {
    let h = start(dead_addr(), AdminOptions::default());
    let chunk = [b'x'; 8 * 1024];
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST /healthz HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        4 * chunk.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        // By the first pause the server has answered and sent its FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(&chunk)
            .await
            .expect("the server reset the connection");
    }
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    let r = parse_reply(&out);
    assert_eq!(r.status, 405);
    assert!(r.head.contains("connection: close"), "{}", r.head);
}

/// Like [`raw`], but a connection the server resets counts as no answer.
async fn try_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    if s.write_all(request).await.is_ok() {
        let read = timeout(PATIENCE, s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "server did not close the connection");
    }
    out
}
