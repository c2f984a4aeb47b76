//! An intermediary's duties that the app behind it relies on (issue 13), over real sockets on
//! every path: the lean HTTP/1 relay (SSE candidates over plain HTTP/1.1), the session relay
//! (SSE candidates over h2c) and pingora's normal path (everything else).
//!
//! - cookies split over HTTP/2 reach the app as one `Cookie` field (RFC 9113 §8.2.3);
//! - a bodiless answer (`HEAD`, 204, 205, 304) and a non-2xx answer are passed through, never
//!   turned into a stream, and the connection stays usable;
//! - absolute-form targets reach the app in origin-form, with `Host` from the target;
//! - `Max-Forwards` on `TRACE`/`OPTIONS`, `TE` (only `trailers` passes), `Upgrade`;
//! - request bodies reach the app on the session relay, re-framed.
//!
//! Run: `cargo test --release --test http_correctness`

mod common;

use std::time::Duration;

use common::client::{self, Conn, Response};
use common::h2c::H2Conn;
use common::raw_origin::RawOrigin;
use common::{Origin, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);
const ES: (&str, &str) = ("Accept", "text/event-stream");

/// The one request the origin saw for `path`.
fn one(origin: &Origin, path: &str) -> common::origin::RequestRecord {
    let reqs = origin.requests_to(path);
    assert_eq!(reqs.len(), 1, "requests for {path}: {reqs:#?}");
    reqs.into_iter().next().unwrap()
}

/// h2c: a browser's split `cookie` fields reach the app joined with "; ", on the session relay
/// (an SSE candidate) and on pingora's normal path (a plain GET).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_split_cookies_reach_the_app_joined() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let mut h2 = H2Conn::connect(sc.addr).await;
    let cookies = [("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")];

    let mut sse_headers = vec![ES];
    sse_headers.extend(cookies);
    let mut r = h2
        .request("GET", "/sse?events=1&interval_ms=0", &sse_headers, None)
        .await;
    assert_eq!(r.status(), 200);
    while r.next_data(T).await.is_some() {}
    let rec = one(&origin, "/sse");
    assert_eq!(rec.header_all("cookie"), vec!["a=1; b=2; c=3"], "{rec:#?}");

    let mut r = h2.request("GET", "/json?size=10", &cookies, None).await;
    assert_eq!(r.status(), 200);
    while r.next_data(T).await.is_some() {}
    let rec = one(&origin, "/json");
    assert_eq!(rec.header_all("cookie"), vec!["a=1; b=2; c=3"], "{rec:#?}");
}

/// HTTP/1.1: a client that sends several `Cookie` lines is forwarded one, on the lean relay and
/// on the normal path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_cookie_lines_reach_the_app_joined() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let cookies = [("Cookie", "a=1"), ("Cookie", "b=2")];
    let mut h = vec![ES];
    h.extend(cookies);
    client::get(sc.addr, "/sse?events=1&interval_ms=0", &h).await;
    assert_eq!(one(&origin, "/sse").header_all("cookie"), vec!["a=1; b=2"]);
    client::get(sc.addr, "/json?size=10", &cookies).await;
    assert_eq!(one(&origin, "/json").header_all("cookie"), vec!["a=1; b=2"]);
}

/// The requests of the bodiless cases: method, target, the app's status and body.
const BODILESS: [(&str, &str, u16, &[u8]); 6] = [
    ("HEAD", "/head", 200, b""),
    ("GET", "/204", 204, b""),
    ("GET", "/205", 205, b""),
    ("GET", "/304", 304, b""),
    ("GET", "/404", 404, b"not found\n"),
    ("GET", "/503", 503, b"later\n"),
];

/// The app's answers for the bodiless cases, by request target.
async fn bodiless_app() -> RawOrigin {
    RawOrigin::start(|mut s, target| async move {
        let resp: &[u8] = match target.as_str() {
            // What an app answers to HEAD on its stream endpoint: the head a GET would get.
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1234\r\nConnection: close\r\n\r\n",
            "/204" => b"HTTP/1.1 204 No Content\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            "/205" => b"HTTP/1.1 205 Reset Content\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            "/404" => b"HTTP/1.1 404 Not Found\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
            "/503" => b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nlater\n\r\n0\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        };
        let _ = s.write_all(resp).await;
        // Drain the rest so the close is a FIN, not a reset over unread bytes.
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
    })
    .await
}

/// Sends `method target` on `conn` and reads the whole answer.
async fn on_conn(conn: Conn, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut conn = conn;
    conn.send(&client::request(method, target, headers, None))
        .await;
    let mut r = Response::read(conn, method, T)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    assert!(
        r.read_to_end(T).await.is_some(),
        "{method} {target}: the body did not end"
    );
    r
}

/// A bodiless or non-2xx `text/event-stream` answer to an SSE candidate is passed through as the
/// app sent it (no chunked framing, no opening comment, no lost Content-Length on HEAD), and the
/// next request on the same HTTP/1.1 connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_and_error_answers_are_not_streams_over_http1() {
    let app = bodiless_app().await;
    let sc = Sidecar::start(&app.url()).await;
    // With and without the SSE hint: the lean relay and pingora's normal path.
    for hint in [&[ES][..], &[][..]] {
        for (method, target, status, body) in BODILESS {
            let what = format!("{method} {target} hint={}", !hint.is_empty());
            let conn = Conn::connect(sc.addr).await;
            let r = on_conn(conn, method, target, hint).await;
            let raw = String::from_utf8_lossy(&r.head.raw).into_owned();
            assert_eq!(r.status(), status, "{what}:\n{raw}");
            assert_eq!(r.body, body, "{what}: body changed:\n{raw}");
            assert!(
                !r.head.has("x-accel-buffering"),
                "{what}: treated as a stream:\n{raw}"
            );
            if status == 204 || status == 304 || method == "HEAD" {
                assert!(
                    !r.head.has("transfer-encoding"),
                    "{what}: a bodiless answer got chunked framing:\n{raw}"
                );
            }
            if method == "HEAD" {
                assert_eq!(
                    r.head.header("content-length"),
                    Some("1234"),
                    "{what}: HEAD keeps the app's Content-Length:\n{raw}"
                );
            }
            // The connection is still in step: the next request on it gets its own answer.
            let next = on_conn(r.into_conn(), "GET", "/next", &[]).await;
            assert_eq!(next.status(), 200, "{what}: next request on the connection");
            assert_eq!(next.body, b"ok\n", "{what}: next request on the connection");
        }
    }
}

/// The same answers over h2c: headers only (END_STREAM) for the bodiless ones, the app's body
/// for the errors, and the connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_and_error_answers_are_not_streams_over_h2() {
    let app = bodiless_app().await;
    let sc = Sidecar::start(&app.url()).await;
    let mut h2 = H2Conn::connect(sc.addr).await;
    for hint in [&[ES][..], &[][..]] {
        for (method, target, status, body) in BODILESS {
            let what = format!("h2 {method} {target} hint={}", !hint.is_empty());
            let mut r = h2.request(method, target, hint, None).await;
            assert_eq!(r.status(), status, "{what}");
            while r.next_data(T).await.is_some() {}
            assert!(r.ended, "{what}: the stream did not end");
            assert_eq!(r.body, body, "{what}: body changed");
            assert!(
                r.header("x-accel-buffering").is_none(),
                "{what}: treated as a stream"
            );
        }
    }
    let mut r = h2.request("GET", "/next", &[], None).await;
    while r.next_data(T).await.is_some() {}
    assert_eq!(r.body, b"ok\n");
}

/// `GET http://host/path` reaches the app as `GET /path` with `Host: host`, on the lean relay
/// and on the normal path; a `Host` that disagrees with the target is refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_reach_the_app_in_origin_form() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let host = [("Host", "example.com")];
    let mut sse_h = vec![ES];
    sse_h.extend(host);
    let target = "http://example.com/sse?events=1&interval_ms=0";
    let r = client::get(sc.addr, target, &sse_h).await;
    assert_eq!(r.status(), 200);
    let rec = one(&origin, "/sse");
    assert_eq!(rec.target, "/sse?events=1&interval_ms=0", "{rec:#?}");
    assert_eq!(rec.header_all("host"), vec!["example.com"], "{rec:#?}");

    let r = client::get(sc.addr, "http://example.com/json?size=5", &host).await;
    assert_eq!(r.status(), 200);
    let rec = one(&origin, "/json");
    assert_eq!(rec.target, "/json?size=5", "{rec:#?}");
    assert_eq!(rec.header_all("host"), vec!["example.com"], "{rec:#?}");

    for h in [&sse_h[..], &host[..]] {
        let r = client::get(sc.addr, "http://other.example/json?size=5", h).await;
        assert_eq!(r.status(), 400, "Host disagreeing with the target");
    }
    assert_eq!(
        origin.requests_to("/json").len(),
        1,
        "a refused request reached the app"
    );
}

/// `Max-Forwards: 0` on OPTIONS and TRACE is answered by the sidecar as the final recipient; a
/// larger value is decremented; other methods carry it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_on_trace_and_options() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;

    let r = client::exchange(sc.addr, "OPTIONS", "/json", &[("Max-Forwards", "0")], None).await;
    assert_eq!(r.status(), 200);
    assert!(r.head.has("allow"), "OPTIONS answered with Allow");
    let r = client::exchange(
        sc.addr,
        "TRACE",
        "/json",
        &[
            ("Max-Forwards", "0"),
            ("Cookie", "secret=1"),
            ("X-Probe", "p"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-type"), Some("message/http"));
    let echo = String::from_utf8_lossy(&r.body).into_owned();
    assert!(echo.starts_with("TRACE /json HTTP/1.1\r\n"), "{echo}");
    assert!(echo.to_ascii_lowercase().contains("x-probe: p"), "{echo}");
    assert!(
        !echo.contains("secret"),
        "TRACE echoed a credential: {echo}"
    );
    assert!(
        origin.requests_to("/json").is_empty(),
        "Max-Forwards 0 reached the app"
    );

    client::exchange(sc.addr, "OPTIONS", "/json", &[("Max-Forwards", "3")], None).await;
    assert_eq!(one(&origin, "/json").header("max-forwards"), Some("2"));
    client::exchange(
        sc.addr,
        "GET",
        "/big?size=10",
        &[("Max-Forwards", "0")],
        None,
    )
    .await;
    assert_eq!(one(&origin, "/big").header("max-forwards"), Some("0"));
}

/// Of `TE`, only `trailers` reaches the app, on the lean relay and the normal path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_te_trailers_passes() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let te = [("TE", "gzip, trailers;q=1"), ("Connection", "TE")];
    client::get(sc.addr, "/json?size=5", &te).await;
    assert_eq!(one(&origin, "/json").header_all("te"), vec!["trailers"]);
    let mut h = vec![ES];
    h.extend(te);
    client::get(sc.addr, "/sse?events=1&interval_ms=0", &h).await;
    assert_eq!(one(&origin, "/sse").header_all("te"), vec!["trailers"]);
    client::get(
        sc.addr,
        "/big?size=5",
        &[("TE", "gzip"), ("Connection", "TE")],
    )
    .await;
    assert!(!one(&origin, "/big").has_header("te"));
}

/// A WebSocket handshake passes through to the app untouched, and the upgraded connection
/// carries bytes both ways — also when the request carries the SSE hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let app = RawOrigin::start(|mut s, _target| async move {
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(T, s.read(&mut buf)).await {
            let _ = s.write_all(&buf[..n]).await;
        }
    })
    .await;
    let sc = Sidecar::start(&app.url()).await;
    for extra in [&[][..], &[ES][..]] {
        let mut h = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        h.extend(extra);
        let mut conn = Conn::connect(sc.addr).await;
        conn.send(&client::request("GET", "/ws", &h, None)).await;
        let head = conn.read_head(T).await.expect("101 head");
        assert_eq!(head.status, 101, "{}", String::from_utf8_lossy(&head.raw));
        assert_eq!(head.header("upgrade"), Some("websocket"));
        conn.send(b"\x81\x05hello").await;
        let got = conn.read_at_least_raw(7, T).await;
        assert_eq!(
            got, b"\x81\x05hello",
            "bytes through the upgraded connection"
        );
    }
}

/// On pingora's normal path too, the app's hop-by-hop fields (`Keep-Alive`, and what its
/// `Connection` names) do not reach the client, while a chunked body stays chunked and the
/// connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_answer_fields_stop_at_the_sidecar() {
    let app = RawOrigin::start(|mut s, target| async move {
        let resp: &[u8] = if target == "/chunked" {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n{}"
        };
        let _ = s.write_all(resp).await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut sink)).await;
    })
    .await;
    let sc = Sidecar::start(&app.url()).await;
    let mut conn = Conn::connect(sc.addr).await;
    for target in ["/chunked", "/length"] {
        let r = on_conn(conn, "GET", target, &[]).await;
        let raw = String::from_utf8_lossy(&r.head.raw).into_owned();
        assert_eq!(r.body, b"{}", "{target}:\n{raw}");
        assert!(
            !r.head.has("keep-alive"),
            "{target}: Keep-Alive leaked:\n{raw}"
        );
        assert!(
            !r.head.has("x-hop"),
            "{target}: a nominated field leaked:\n{raw}"
        );
        assert_eq!(
            r.head.header("x-end"),
            Some("2"),
            "{target}: end-to-end field lost"
        );
        conn = r.into_conn();
    }
}

/// Request bodies on the session relay (SSE candidates over h2c and TLS), which sends them to a
/// plain app itself: as they came with a `Content-Length`, else chunked; a `fetch()`-style POST
/// gets its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_app_on_the_session_relay() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let mut h2 = H2Conn::connect(sc.addr).await;
    let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let len = body.len().to_string();

    // With a Content-Length: forwarded as it is, and echoed back.
    let headers = [ES, ("content-length", len.as_str())];
    let mut r = h2
        .request("POST", "/echo?n=length", &headers, Some(body))
        .await;
    assert_eq!(r.status(), 200);
    let mut echoed = Vec::new();
    while let Some((d, _)) = r.next_data(T).await {
        echoed.extend_from_slice(&d);
    }
    assert_eq!(echoed, body, "echoed body (Content-Length)");
    let rec = one(&origin, "/echo");
    assert_eq!(rec.body, body);
    assert!(!rec.body_chunked, "{rec:#?}");
    assert_eq!(rec.header("content-length"), Some(len.as_str()));

    // Without one (h2 needs none): chunked to the app. The answer is an event stream.
    let mut r = h2
        .request("POST", "/sse?events=2&interval_ms=0", &[ES], Some(body))
        .await;
    assert_eq!(r.status(), 200);
    let mut events = 0;
    while let Some(_e) = r.next_event(T).await {
        events += 1;
    }
    assert_eq!(events, 2, "events after a POST");
    let rec = one(&origin, "/sse");
    assert_eq!(rec.body, body);
    assert!(rec.body_chunked, "{rec:#?}");
    assert_eq!(rec.method, "POST");

    // TLS HTTP/1.1 with a chunked body in two chunks: re-framed, same bytes.
    let cert = common::tls::make_cert();
    let tls_sc = common::tls::TlsSidecar::start(&origin, &cert, "", &[]).await;
    let (mut tls, alpn) = common::tls::tls_connect(tls_sc.addr, &cert, &["http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some("http/1.1"));
    let req = "POST /echo?n=tls HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\
               Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
               5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello world"), "{answer}");
    let rec = origin
        .requests_to("/echo")
        .into_iter()
        .find(|r| r.target.contains("n=tls"))
        .expect("the TLS request reached the app");
    assert_eq!(rec.body, b"hello world");
    assert!(rec.body_chunked, "{rec:#?}");
}
