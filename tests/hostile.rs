//! Hostile or broken input over real sockets (issue 5 §4): malformed request lines, oversized
//! headers, request smuggling, slowloris, and invalid response bytes from the app. Each case
//! must get a clear 4xx/5xx (or a cut stream), never reach the app when it is rejected, and
//! leave everything else alone: after each case a stream that was open all along (the
//! "bystander") has lost no event, the process is alive, and a new stream on a fresh
//! connection works.
//!
//! `cargo test --release --test hostile` (about 6 s).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::client::{self, End};
use common::raw_origin::{chunk, RawOrigin, SSE_HEAD};
use common::sse::SseStream;
use common::{now_ns, show, Origin, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ES: (&str, &str) = ("Accept", "text/event-stream");
const T: Duration = Duration::from_secs(5);

async fn open_sse(addr: SocketAddr, target: &str) -> SseStream {
    SseStream::new(client::send(addr, &client::request("GET", target, &[ES], None), "GET").await)
}

/// What came back for raw request bytes.
struct Reply {
    /// Everything the server wrote before closing (or before the deadline).
    bytes: Vec<u8>,
    /// How the connection ended: `eof`, `reset: ...`, or `open` at the deadline.
    end: String,
    /// From connect to the end.
    took: Duration,
}

impl Reply {
    /// The status code of the first response, if one came.
    fn status(&self) -> Option<u16> {
        let line = self.bytes.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
    }

    fn describe(&self) -> String {
        format!(
            "status {:?}, connection {} after {:?}, bytes: {}",
            self.status(),
            self.end,
            self.took,
            show(&self.bytes)
        )
    }
}

/// Connects, writes `req` (write errors ignored: the server may close early), then reads until
/// the server closes or `deadline` passes.
async fn raw(addr: SocketAddr, req: &[u8], deadline: Duration) -> Reply {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(req).await;
    read_all(&mut s, t0, deadline).await
}

async fn read_all(s: &mut TcpStream, t0: Instant, deadline: Duration) -> Reply {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        let left = deadline.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break "open".to_string(),
            Ok(Ok(0)) => break "eof".to_string(),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break format!("reset: {e}"),
        }
    };
    Reply {
        bytes,
        end,
        took: t0.elapsed(),
    }
}

/// A stream open through the whole test; it must never lose an event or end.
struct Bystander {
    s: SseStream,
    what: &'static str,
}

impl Bystander {
    async fn open(addr: SocketAddr, target: &'static str) -> Bystander {
        let mut s = open_sse(addr, target).await;
        assert!(s.next_event(T).await.is_some(), "bystander: no first event");
        Bystander { s, what: target }
    }

    /// Reads two more events; every event so far has seq 1, 2, 3, ... with no gap.
    async fn check(&mut self, after: &str) {
        for _ in 0..2 {
            assert!(
                self.s.next_event(Duration::from_secs(2)).await.is_some(),
                "after {after}: bystander {} stopped (end {:?})",
                self.what,
                self.s.ended()
            );
        }
        let seqs: Vec<u64> = self
            .s
            .events()
            .iter()
            .filter_map(|(e, _)| e.seq())
            .collect();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "after {after}: bystander events");
    }
}

/// After a hostile case: the process is alive, the bystander lost nothing, and a new stream on
/// a fresh connection works (`target` must end by itself with 3 events).
async fn assert_unaffected(sc: &mut Sidecar, by: &mut Bystander, target: &str, after: &str) {
    assert!(
        sc.try_exit().is_none(),
        "after {after}: the sidecar exited: {:?}",
        sc.try_exit()
    );
    by.check(after).await;
    let mut s = open_sse(sc.addr, target).await;
    let end = s.read_to_end(T).await;
    assert_eq!(s.resp.status(), 200, "after {after}: fresh stream status");
    assert_eq!(end, Some(End::Complete), "after {after}: fresh stream end");
    assert_eq!(
        s.events().len(),
        3,
        "after {after}: fresh stream events: {}",
        show(&s.bytes)
    );
}

async fn setup(yaml: &str) -> (Origin, Sidecar, Bystander) {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(yaml).start().await;
    let by = Bystander::open(sc.addr, "/sse?events=100000&interval_ms=50&bystander=1").await;
    (origin, sc, by)
}

/// Requests the origin saw other than the bystander's and the fresh streams'.
fn unexpected(origin: &Origin) -> Vec<String> {
    origin
        .requests()
        .iter()
        .filter(|r| r.param("bystander").is_none() && r.param("fresh").is_none())
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Malformed request lines each get a 400 and a closed connection, never reach the app, and
/// leave other streams alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_get_400() {
    let (origin, mut sc, mut by) = setup("").await;
    let cases: &[(&str, &[u8])] = &[
        ("no target or version", b"GARBAGE\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("unknown protocol", b"GET / FOO/1.1\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("trailing junk", b"GET / HTTP/1.1 junk\r\nHost: x\r\n\r\n"),
        ("NUL in target", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "control byte in method",
            b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "SSE candidate with a bad header line",
            b"GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\nno colon here\r\n\r\n",
        ),
    ];
    for (i, (what, req)) in cases.iter().enumerate() {
        let r = raw(sc.addr, req, Duration::from_secs(3)).await;
        assert_eq!(r.status(), Some(400), "{what}: {}", r.describe());
        assert_ne!(
            r.end,
            "open",
            "{what}: connection left open: {}",
            r.describe()
        );
        assert_unaffected(
            &mut sc,
            &mut by,
            &format!("/sse?events=3&interval_ms=5&fresh={i}"),
            what,
        )
        .await;
    }
    assert_eq!(unexpected(&origin), Vec::<String>::new(), "reached the app");
}

/// A TLS ClientHello sent to the plain-HTTP port (no line end ever comes) gets a 4xx (400 at
/// once would be best; 408 at `limits.header_read_timeout`, here 1 s, is acceptable) and a
/// closed connection within 2 s; it never reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_hello_on_plain_port_gets_4xx() {
    let (origin, mut sc, mut by) = setup("limits:\n  header_read_timeout: 1s\n").await;
    // Record header, handshake header (ClientHello), then 0x1c0 bytes of body: a realistic size.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x01, 0xc4, 0x01, 0x00, 0x01, 0xc0, 0x03, 0x03,
    ];
    hello.extend((0..0x1c0).map(|i| (i * 7 % 251) as u8));
    let r = raw(sc.addr, &hello, Duration::from_secs(3)).await;
    eprintln!("TLS hello: {}", r.describe());
    assert!(
        r.status().is_some_and(|s| (400..500).contains(&s)),
        "want a 4xx: {}",
        r.describe()
    );
    assert_ne!(r.end, "open", "connection left open: {}", r.describe());
    assert!(
        r.took <= Duration::from_secs(2),
        "answered after {:?}",
        r.took
    );
    assert_unaffected(
        &mut sc,
        &mut by,
        "/sse?events=3&interval_ms=5&fresh=1",
        "TLS hello",
    )
    .await;
    assert_eq!(unexpected(&origin), Vec::<String>::new(), "reached the app");
}

/// Request headers over 64 KiB (one 70 KiB field; 100 fields of 700 bytes; the same on an SSE
/// candidate) get a 4xx (431 expected) and never reach the app; a 32 KiB field still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (origin, mut sc, mut by) = setup("").await;
    let big = "a".repeat(70 * 1024);
    let many: Vec<(String, String)> = (0..100)
        .map(|i| (format!("X-Pad-{i}"), "b".repeat(700)))
        .collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&**k, &**v)).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "one 70 KiB field",
            client::request("GET", "/json?big=1", &[("X-Big", &big)], None),
        ),
        (
            "100 fields of 700 bytes",
            client::request("GET", "/json?many=1", &many_ref, None),
        ),
        (
            "70 KiB field on an SSE candidate",
            client::request("GET", "/sse?big=2", &[ES, ("X-Big", &big)], None),
        ),
    ];
    let mut statuses = Vec::new();
    for (i, (what, req)) in cases.iter().enumerate() {
        let r = raw(sc.addr, req, Duration::from_secs(3)).await;
        statuses.push((what.to_string(), r.status()));
        assert!(
            r.status().is_some_and(|s| (400..500).contains(&s)),
            "{what}: want a 4xx (431): {}",
            r.describe()
        );
        assert_unaffected(
            &mut sc,
            &mut by,
            &format!("/sse?events=3&interval_ms=5&fresh={i}"),
            what,
        )
        .await;
    }
    eprintln!("statuses: {statuses:?}");
    assert_eq!(unexpected(&origin), Vec::<String>::new(), "reached the app");
    // Below the limit still works.
    let ok = "c".repeat(32 * 1024);
    let r = client::get(sc.addr, "/json?ok=1", &[("X-Ok", &ok)]).await;
    assert_eq!(r.status(), 200, "32 KiB field");
    let rec = origin.wait_request("/json?ok=1", T).await;
    assert_eq!(rec.header("x-ok").map(str::len), Some(32 * 1024));
}

/// Request smuggling attempts (Content-Length with Transfer-Encoding both ways round, two
/// different Content-Lengths, a Transfer-Encoding that does not end in chunked, whitespace
/// before the colon), on the normal path and on the SSE relay path: each gets a 400 and the
/// smuggled request never reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_rejected() {
    let (origin, mut sc, mut by) = setup("").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cl_te_body = format!("0\r\n\r\n{smuggled}");
    let te_cl_body = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let two_cl_body = format!("hello{smuggled}");
    let cases: Vec<(&str, String, String)> = vec![
        (
            "CL.TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_te_body.len()
            ),
            cl_te_body.clone(),
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n".to_string(),
            te_cl_body.clone(),
        ),
        (
            "two different Content-Lengths",
            format!(
                "Content-Length: 5\r\nContent-Length: {}\r\n",
                two_cl_body.len()
            ),
            two_cl_body.clone(),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            format!(
                "Transfer-Encoding: chunked, identity\r\nContent-Length: {}\r\n",
                cl_te_body.len()
            ),
            cl_te_body.clone(),
        ),
        (
            "space before the colon",
            format!(
                "Transfer-Encoding : chunked\r\nContent-Length: {}\r\n",
                cl_te_body.len()
            ),
            cl_te_body.clone(),
        ),
    ];
    let mut n = 0;
    for (what, framing, body) in &cases {
        for (path, extra) in [
            ("normal path", ""),
            ("relay path", "Accept: text/event-stream\r\n"),
        ] {
            n += 1;
            let req =
                format!("POST /echo?smuggle={n} HTTP/1.1\r\nHost: x\r\n{extra}{framing}\r\n{body}");
            let r = raw(sc.addr, req.as_bytes(), Duration::from_secs(3)).await;
            let what = format!("{what} ({path})");
            assert_eq!(r.status(), Some(400), "{what}: {}", r.describe());
            assert_eq!(
                r.bytes.windows(9).filter(|w| w == b"HTTP/1.1 ").count(),
                1,
                "{what}: more than one response: {}",
                r.describe()
            );
            assert_unaffected(
                &mut sc,
                &mut by,
                &format!("/sse?events=3&interval_ms=5&fresh={n}"),
                &what,
            )
            .await;
        }
    }
    // A smuggled request would have reached the app by now (the fresh streams went after it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(unexpected(&origin), Vec::<String>::new(), "reached the app");
}

/// A slowloris client that trickles header lines (one every 100 ms, forever) is closed within
/// `limits.header_read_timeout` (1 s) + 1 s, not before 0.9 s; a 408 is the expected answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_after_header_read_timeout() {
    let (origin, mut sc, mut by) = setup("limits:\n  header_read_timeout: 1s\n").await;
    let mut results = Vec::new();
    for (i, first) in [
        "GET /json HTTP/1.1\r\nHost: x\r\n",
        "GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let t0 = Instant::now();
        let s = TcpStream::connect(sc.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let trickle = tokio::spawn(async move {
            let _ = wr.write_all(first.as_bytes()).await;
            for k in 0..60 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr
                    .write_all(format!("X-Slow-{k}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            wr
        });
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            let left = Duration::from_secs(4).saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, rd.read(&mut buf)).await {
                Err(_) => break "open".to_string(),
                Ok(Ok(0)) => break "eof".to_string(),
                Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => break format!("reset: {e}"),
            }
        };
        let r = Reply {
            bytes,
            end,
            took: t0.elapsed(),
        };
        trickle.abort();
        results.push(r.describe());
        assert_ne!(
            r.end,
            "open",
            "slowloris {i}: still connected after 4 s: {}",
            r.describe()
        );
        assert!(
            r.took >= Duration::from_millis(900) && r.took <= Duration::from_secs(2),
            "slowloris {i}: closed after {:?} (header_read_timeout 1 s): {}",
            r.took,
            r.describe()
        );
        assert_unaffected(
            &mut sc,
            &mut by,
            &format!("/sse?events=3&interval_ms=5&fresh={i}"),
            "slowloris",
        )
        .await;
    }
    eprintln!("slowloris: {results:?}");
    assert_eq!(unexpected(&origin), Vec::<String>::new(), "reached the app");
}

/// A connection that sends nothing at all is closed within `limits.header_read_timeout` (1 s)
/// + 1 s: an idle socket is the cheapest slowloris.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let (_origin, mut sc, mut by) = setup("limits:\n  header_read_timeout: 1s\n").await;
    let r = raw(sc.addr, b"", Duration::from_secs(4)).await;
    eprintln!("silent connection: {}", r.describe());
    assert_ne!(r.end, "open", "still connected after 4 s: {}", r.describe());
    assert!(
        r.took <= Duration::from_secs(2),
        "closed after {:?} (header_read_timeout 1 s)",
        r.took
    );
    assert_unaffected(
        &mut sc,
        &mut by,
        "/sse?events=3&interval_ms=5&fresh=1",
        "silent connection",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn event(seq: u64) -> Vec<u8> {
    format!("data: {{\"seq\":{seq},\"t_ns\":{}}}\n\n", now_ns()).into_bytes()
}

/// The misbehaving app: `/tick?n=N` is a good stream (N events 50 ms apart, then the end);
/// the other paths answer broken bytes.
async fn broken_app(mut s: TcpStream, target: String) {
    let path = target.split('?').next().unwrap_or("").to_string();
    let reply: Vec<u8> = match path.as_str() {
        "/tick" => {
            let n: u64 = target
                .split("n=")
                .nth(1)
                .and_then(|v| v.split('&').next()?.parse().ok())
                .unwrap_or(100_000);
            if s.write_all(SSE_HEAD).await.is_err() {
                return;
            }
            for seq in 1..=n {
                if s.write_all(&chunk(&event(seq))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(if n <= 3 { 2 } else { 50 })).await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            return;
        }
        "/garbage-status" => b"HTPT/1.1 2x0 Garbage\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        "/binary" => b"\x00\x01\x02\xff binary garbage\r\n\r\n".to_vec(),
        "/bad-header" => {
            b"HTTP/1.1 200 OK\r\nContent-Type text/event-stream\r\n\r\ndata: x\n\n".to_vec()
        }
        "/bad-chunk" => {
            let mut b = SSE_HEAD.to_vec();
            b.extend(chunk(&event(1)));
            if s.write_all(&b).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            b"zz\r\ndata: 2\n\n\r\n".to_vec()
        }
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    };
    let _ = s.write_all(&reply).await;
    // Hold the connection so the sidecar judges the bytes, not the close.
    let mut b = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
}

/// An app answering bytes that are not HTTP (bad status line, binary, a header line without a
/// colon): a plain request gets 502; an SSE request gets 502 with `on_upstream_error: status`
/// and, in the default retry mode, a 200 event stream with an error comment, a `retry:` and a
/// clean end; other streams are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_response_head_from_app_gives_502() {
    let app = RawOrigin::start(broken_app).await;
    let mut status = Sidecar::builder(&app.url())
        .config("sse:\n  on_upstream_error: status\n")
        .start()
        .await;
    let mut retry = Sidecar::start(&app.url()).await;
    let mut by_status = Bystander::open(status.addr, "/tick?bystander=1").await;
    let mut by_retry = Bystander::open(retry.addr, "/tick?bystander=2").await;
    for path in ["/garbage-status", "/binary", "/bad-header"] {
        let r = raw(
            status.addr,
            &client::request("GET", path, &[], None),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(r.status(), Some(502), "{path} (plain): {}", r.describe());
        let r = raw(
            status.addr,
            &client::request("GET", path, &[ES], None),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            r.status(),
            Some(502),
            "{path} (SSE, status mode): {}",
            r.describe()
        );
        assert_unaffected(&mut status, &mut by_status, "/tick?n=3", path).await;

        let mut s = open_sse(retry.addr, path).await;
        let end = s.read_to_end(T).await;
        assert_eq!(s.resp.status(), 200, "{path} (SSE, retry mode)");
        assert_eq!(end, Some(End::Complete), "{path}: {}", show(&s.bytes));
        assert!(
            !s.comments().is_empty() && s.events().is_empty(),
            "{path} (retry mode): want an error comment and no events: {}",
            show(&s.bytes)
        );
        assert!(
            s.bytes.windows(7).any(|w| w == b"retry: "),
            "{path} (retry mode): no retry field: {}",
            show(&s.bytes)
        );
        assert_unaffected(&mut retry, &mut by_retry, "/tick?n=3", path).await;
    }
}

/// An invalid chunk size in the middle of an event stream cuts the client's stream (no
/// terminating chunk) after the whole events before it, within 1 s; other streams are
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_mid_stream_cuts_the_stream() {
    let app = RawOrigin::start(broken_app).await;
    let mut sc = Sidecar::start(&app.url()).await;
    let mut by = Bystander::open(sc.addr, "/tick?bystander=1").await;
    let t0 = Instant::now();
    let mut s = open_sse(sc.addr, "/bad-chunk").await;
    let end = s.read_to_end(T).await;
    assert!(
        matches!(end, Some(End::Truncated) | Some(End::Error(_))),
        "stream end {end:?} after {:?}: {}",
        t0.elapsed(),
        show(&s.bytes)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "cut after {:?}",
        t0.elapsed()
    );
    let seqs: Vec<u64> = s.events().iter().filter_map(|(e, _)| e.seq()).collect();
    assert_eq!(
        seqs,
        vec![1],
        "events before the bad chunk: {}",
        show(&s.bytes)
    );
    assert!(
        !s.bytes.windows(7).any(|w| w == b"data: 2"),
        "bytes after the bad chunk size reached the client: {}",
        show(&s.bytes)
    );
    assert_unaffected(&mut sc, &mut by, "/tick?n=3", "invalid chunk size").await;
}
