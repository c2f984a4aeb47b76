//! HTTP/1.1 over TLS, request by request: every request head on a TLS connection is read by
//! the sidecar's head guard (as on plain TCP), an SSE candidate is relayed off pingora on the
//! lean relay with the TLS connection moved to it, and everything else goes to pingora with
//! its head handed back — on the same connection, in any order.
//!
//! The sidecar is the real binary with a TLS listener (a certificate made at run time), the
//! app the in-process origin from tests/common, the client rustls with the raw HTTP/1.1
//! reader of tests/common/client.rs.
//!
//! Run: `cargo test --release --test tls_http1`

mod common;

use std::time::{Duration, Instant};

use common::client::{request, Conn, End, Response};
use common::origin::json_body;
use common::sse;
use common::tls::{make_cert, tls_connect, TestCert, TlsSidecar};
use common::{show, Origin};

const T: Duration = Duration::from_secs(5);
const ES: (&str, &str) = ("accept", "text/event-stream");

async fn connect(sc: &TlsSidecar, cert: &TestCert) -> Conn {
    let (tls, chosen) = tls_connect(sc.addr, cert, &["http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some("http/1.1"), "ALPN for HTTP/1.1");
    Conn::over_tls(tls)
}

/// Sends one request on `conn` and reads its whole answer.
async fn exchange(
    mut conn: Conn,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    conn.send(&request(method, target, headers, body)).await;
    let mut r = Response::read(conn, method, T)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    assert!(
        r.read_to_end(T).await.is_some(),
        "{method} {target}: the body did not end within {T:?}: {}",
        show(&r.body)
    );
    r
}

/// One TLS connection carries, in turn, a JSON answer (pingora's path), an event stream
/// (the lean relay), a POSTed event stream with a body (lean again), and another JSON answer
/// (pingora again, on a connection the lean relay gave back): each answer as the app sent
/// it, and the app told `X-Forwarded-Proto: https` every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tls_connection_carries_answers_and_streams_in_turn() {
    let origin = Origin::start().await;
    let cert = make_cert();
    let sc = TlsSidecar::start(&origin, &cert, "", &[]).await;
    let conn = connect(&sc, &cert).await;

    let r = exchange(conn, "GET", "/json?size=300", &[], None).await;
    assert_eq!(r.status(), 200, "first JSON answer");
    assert_eq!(r.body, json_body(300), "first JSON body");

    let r = exchange(r.into_conn(), "GET", "/sse?events=3&id=1", &[ES], None).await;
    assert_eq!(r.status(), 200, "the event stream");
    assert_eq!(r.head.header("content-type"), Some("text/event-stream"));
    let rec = origin.wait_request("/sse", T).await;
    assert_eq!(
        sse::events_of(&sse::parse_all(&r.body)),
        sse::events_of(&sse::parse_all(&rec.body_sent)),
        "the stream's events as the app sent them: {}",
        show(&r.body)
    );

    let posted = b"{\"prompt\":\"hello over TLS\"}";
    let r = exchange(
        r.into_conn(),
        "POST",
        "/sse?events=2&id=1",
        &[ES, ("content-type", "application/json")],
        Some(posted),
    )
    .await;
    assert_eq!(r.status(), 200, "the POSTed event stream");
    assert_eq!(sse::events_of(&sse::parse_all(&r.body)).len(), 2);

    let r = exchange(r.into_conn(), "GET", "/json?size=50", &[], None).await;
    assert_eq!(r.status(), 200, "JSON after the streams");
    assert_eq!(r.body, json_body(50), "JSON body after the streams");

    let reqs = origin.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/json"),
            ("GET", "/sse"),
            ("POST", "/sse"),
            ("GET", "/json")
        ],
        "the app saw the four requests in order"
    );
    assert_eq!(reqs[2].body, posted, "the POST's body reached the app");
    for r in &reqs {
        assert_eq!(
            r.header("x-forwarded-proto"),
            Some("https"),
            "{} {}: X-Forwarded-Proto",
            r.method,
            r.path
        );
    }
}

/// A TLS connection's request head gets the head guard's answers, as on plain TCP: `431`
/// over 64 KiB, `400` for a smuggling shape (Content-Length with Transfer-Encoding), and
/// `408` for a head trickled past `limits.header_read_timeout` — which pingora alone would
/// wait 60 s per read for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_request_heads_are_guarded_as_on_plain_tcp() {
    let origin = Origin::start().await;
    let cert = make_cert();
    let sc = TlsSidecar::start(&origin, &cert, "limits:\n  header_read_timeout: 1s\n", &[]).await;

    let pad = "a".repeat(70 * 1024);
    let mut conn = connect(&sc, &cert).await;
    conn.send(&request("GET", "/json", &[("x-pad", &pad)], None))
        .await;
    let head = conn.read_head(T).await.expect("an answer to a 70 KiB head");
    assert_eq!(head.status, 431, "a head over 64 KiB");

    let mut conn = connect(&sc, &cert).await;
    let smuggle = b"POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    conn.send(smuggle).await;
    let head = conn.read_head(T).await.expect("an answer to CL + TE");
    assert_eq!(head.status, 400, "Content-Length with Transfer-Encoding");

    let mut conn = connect(&sc, &cert).await;
    let started = Instant::now();
    conn.send(b"GET /json HTTP/1.1\r\n").await;
    // A header line every 300 ms: each read is prompt, the head never ends.
    let mut answer = None;
    for i in 0..20 {
        match conn.read_head(Duration::from_millis(300)).await {
            Ok(head) => {
                answer = Some(head);
                break;
            }
            Err(_) => {
                let _ = conn.try_send(format!("X-{i}: y\r\n").as_bytes()).await;
            }
        }
    }
    let head = answer.expect("an answer to a trickled head within 6 s");
    let took = started.elapsed();
    assert_eq!(head.status, 408, "a head not received within 1 s");
    assert!(
        took < Duration::from_secs(5),
        "the trickled head was answered after {took:?}; header_read_timeout is 1 s"
    );
    assert!(
        origin.requests().is_empty(),
        "no refused head reached the app"
    );
    drop(sc);
}

/// A TLS client that stops reading an event stream: once its socket and rustls's buffer are
/// full and `sse.write_timeout` passes without progress, the stream is cut (no last chunk,
/// no close_notify) and the app's connection closed; the app was held back meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_cut_after_the_write_timeout() {
    const EVENTS: usize = 3000;
    let origin = Origin::start().await;
    let cert = make_cert();
    let sc = TlsSidecar::start(&origin, &cert, "sse:\n  write_timeout: 1s\n", &[]).await;
    let mut conn = connect(&sc, &cert).await;
    let target = format!("/sse?events={EVENTS}&interval_ms=0&pad=32000");
    conn.send(&request("GET", &target, &[ES], None)).await;
    // Not a byte read until the app's connection is closed.
    let rec = origin.wait_closed("/sse", Duration::from_secs(15)).await;
    let last = rec.events_sent.last().expect("events sent").1;
    let closed = rec.closed_ns.expect("closed");
    assert!(
        rec.events_sent.len() < EVENTS,
        "the app sent all {EVENTS} events (~96 MB) to a client that reads nothing"
    );
    let gap = Duration::from_nanos(closed.saturating_sub(last));
    eprintln!(
        "app sent {} of {EVENTS} events; its connection closed {gap:?} after the last",
        rec.events_sent.len()
    );
    // The app fills the socket buffers between it and the sidecar for a few hundred ms after
    // the sidecar's write stalls (measured: 0.80–0.83 s from its last event to the close).
    assert!(
        (Duration::from_millis(500)..=Duration::from_millis(3500)).contains(&gap),
        "the app's connection closed {gap:?} after its last event (write_timeout 1 s)"
    );
    // Reading now, the client finds its stream cut.
    let mut r = Response::read(conn, "GET", T)
        .await
        .expect("the stream's head");
    assert_eq!(r.status(), 200);
    let end = r.read_to_end(Duration::from_secs(10)).await;
    assert!(
        matches!(end, Some(End::Truncated) | Some(End::Error(_))),
        "the stalled client's stream ended {end:?}; want it cut"
    );
}
