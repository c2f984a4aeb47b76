//! The core proxy over real sockets (issue 2 §2–§4, opening bytes of issue 3 §3): an origin in
//! the test process, the real `sse-sidecar` binary in front of it, raw HTTP/1.1 and h2c clients.
//!
//! Run: `cargo test --test proxy -- --test-threads=2`

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::{self, Conn, End, Response};
use common::h2c::{H2Conn, H2Response};
use common::origin::{big_body, json_body, RequestRecord};
use common::sidecar::{run_cli, temp_file};
use common::sse::{self, Item, SseStream};
use common::{gunzip, ms, now_ns, show, Origin, Sidecar};

const T: Duration = Duration::from_secs(5);
const ES: (&str, &str) = ("Accept", "text/event-stream");
/// Longest allowed time from the client leaving to the app's connection closing.
const CLOSE_WITHIN_NS: u64 = 100_000_000;

async fn setup() -> (Origin, Sidecar) {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    (origin, sc)
}

async fn open_sse(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> SseStream {
    SseStream::new(client::send(addr, &client::request("GET", target, headers, None), "GET").await)
}

/// The one request the origin saw for `target` (panics unless exactly one).
fn one(origin: &Origin, target: &str) -> RequestRecord {
    let reqs = origin.requests_to(target);
    assert_eq!(
        reqs.len(),
        1,
        "requests the origin saw for {target}: {reqs:#?}"
    );
    reqs.into_iter().next().unwrap()
}

/// Asserts the SSE response header policy on an HTTP/1.1 response.
fn assert_sse_headers(r: &Response, content_type: &str, app_cache_control: &[&str]) {
    let h = &r.head;
    let raw = String::from_utf8_lossy(&h.raw);
    assert_eq!(h.status, 200, "status; head:\n{raw}");
    assert_eq!(
        h.header_all("content-type"),
        vec![content_type],
        "Content-Type kept as the app sent it; head:\n{raw}"
    );
    let cc = h.tokens("cache-control");
    for want in ["no-cache", "no-transform"].iter().chain(app_cache_control) {
        assert!(
            cc.contains(&want.to_string()),
            "Cache-Control {cc:?} lacks {want:?}; head:\n{raw}"
        );
    }
    assert_eq!(
        h.header("x-accel-buffering"),
        Some("no"),
        "X-Accel-Buffering; head:\n{raw}"
    );
    assert!(
        !h.has("content-length"),
        "no Content-Length on an SSE response; head:\n{raw}"
    );
    assert_eq!(
        h.tokens("transfer-encoding"),
        vec!["chunked"],
        "chunked on HTTP/1.1; head:\n{raw}"
    );
    assert!(
        !h.has("content-encoding"),
        "SSE not compressed; head:\n{raw}"
    );
}

/// The app's bytes must arrive unchanged after an opening block of comment lines only.
fn assert_app_bytes_after_comments(client_bytes: &[u8], app_bytes: &[u8], what: &str) {
    assert!(
        client_bytes.ends_with(app_bytes),
        "{what}: the app's bytes are not a byte-exact suffix of what the client got\napp:    {}\nclient: {}",
        show(app_bytes),
        show(client_bytes)
    );
    let prefix = &client_bytes[..client_bytes.len() - app_bytes.len()];
    let extra = sse::parse_all(prefix);
    assert!(
        extra
            .iter()
            .all(|i| matches!(i, Item::Comment(_) | Item::Retry(_))),
        "{what}: bytes before the app's are not only comments: {}",
        show(prefix)
    );
}

// ---------------------------------------------------------------------------------------------
// §3 Proxying everything
// ---------------------------------------------------------------------------------------------

/// A JSON response's status, headers and body reach the client byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_passes_through_byte_exact() {
    let (origin, sc) = setup().await;
    let r = client::get(sc.addr, "/json?size=3000", &[]).await;
    let rec = one(&origin, "/json?size=3000");
    assert_eq!(r.status(), 200);
    assert_eq!(r.end, Some(End::Complete));
    assert_eq!(r.body, json_body(3000), "body");
    assert_eq!(r.body, rec.body_sent);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    assert_eq!(r.head.header("etag"), Some("\"v1\""));
    assert_eq!(
        r.head.header("content-length"),
        Some(&*r.body.len().to_string())
    );
    assert_eq!(
        r.head.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; Path=/"]
    );
    assert!(!r.head.has("content-encoding"));
    assert!(
        !r.head.has("x-accel-buffering"),
        "SSE headers on a JSON response"
    );
}

/// A gzip JSON response stays gzip: same compressed bytes, Content-Encoding kept, and the
/// client's Accept-Encoding reached the app (non-SSE requests keep it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_json_stays_gzip() {
    let (origin, sc) = setup().await;
    let target = "/json?size=20000&gzip=auto";
    let r = client::get(sc.addr, target, &[("Accept-Encoding", "gzip")]).await;
    let rec = one(&origin, target);
    assert_eq!(
        rec.header("accept-encoding"),
        Some("gzip"),
        "Accept-Encoding kept for non-SSE"
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-encoding"), Some("gzip"));
    assert_eq!(r.head.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        r.body, rec.body_sent,
        "compressed bytes differ from the app's"
    );
    assert_eq!(gunzip(&r.body).unwrap(), json_body(20000));
}

/// Status codes and the app's headers pass through, with bodies (none for 204/304).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_headers_pass_through() {
    let (_origin, sc) = setup().await;
    for st in [200u16, 201, 204, 301, 304, 404, 418, 500, 503] {
        let r = client::get(
            sc.addr,
            &format!("/status/{st}?h=X-Custom:hello%20world"),
            &[],
        )
        .await;
        assert_eq!(r.status(), st, "status; head: {}", show(&r.head.raw));
        assert_eq!(r.head.header("x-origin-status"), Some(&*st.to_string()));
        assert_eq!(r.head.header("x-custom"), Some("hello world"));
        let want: Vec<u8> = if st == 204 || st == 304 {
            vec![]
        } else {
            format!("status {st}\n").into_bytes()
        };
        assert_eq!(r.body, want, "body of {st}");
    }
}

/// Request bodies of any method (Content-Length or chunked) reach the app intact and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_app() {
    let (origin, sc) = setup().await;
    for (i, method) in ["POST", "PUT", "PATCH", "DELETE"].into_iter().enumerate() {
        let body = big_body(1000 + i * 777);
        let target = format!("/echo?n={i}");
        let r = client::exchange(
            sc.addr,
            method,
            &target,
            &[("Content-Type", "application/octet-stream")],
            Some(&body),
        )
        .await;
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(r.head.header("x-echo-method"), Some(method));
        assert_eq!(r.body, body, "{method} body echoed");
        let rec = one(&origin, &target);
        assert_eq!(rec.method, method);
        assert_eq!(rec.body, body);
    }
    // A chunked request body of 300 KB.
    let body = big_body(300_000);
    let mut req = client::request(
        "POST",
        "/echo?n=chunked",
        &[("Transfer-Encoding", "chunked")],
        None,
    );
    req.extend(client::chunked(&body, 8000));
    let mut r = client::send(sc.addr, &req, "POST").await;
    assert_eq!(r.read_to_end(T).await, Some(End::Complete));
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, body, "chunked POST body echoed");
    assert_eq!(one(&origin, "/echo?n=chunked").body, body);
}

/// A large body (8 MiB, with Content-Length and chunked) arrives byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_byte_exact() {
    let (_origin, sc) = setup().await;
    let want = big_body(8 << 20);
    for q in ["", "&chunked=1"] {
        let r = client::get(sc.addr, &format!("/big?size={}{q}", 8 << 20), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.end, Some(End::Complete), "{q}");
        assert!(
            r.body == want,
            "8 MiB body differs ({q}): got {} bytes",
            r.body.len()
        );
    }
}

fn assert_no_hop_by_hop(rec: &RequestRecord, what: &str) {
    for h in [
        "x-hop-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade-insecure-x",
    ] {
        assert!(
            !rec.has_header(h),
            "{what}: hop-by-hop request header {h} was forwarded: {:?}",
            rec.headers
        );
    }
    for c in rec.header_all("connection") {
        assert!(
            !c.to_ascii_lowercase().contains("x-hop-custom"),
            "{what}: Connection forwarded as {c:?}"
        );
    }
    assert_eq!(
        rec.header("x-end-to-end"),
        Some("yes"),
        "{what}: end-to-end header lost"
    );
}

/// Hop-by-hop request headers (Connection-nominated, Keep-Alive, TE, Proxy-*) are not
/// forwarded, on the normal path and on the SSE relay; end-to-end headers are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_not_forwarded() {
    let (origin, sc) = setup().await;
    let hop = [
        ("Connection", "keep-alive, X-Hop-Custom, Upgrade-Insecure-X"),
        ("X-Hop-Custom", "1"),
        ("Upgrade-Insecure-X", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "deflate"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("X-End-To-End", "yes"),
    ];
    let r = client::get(sc.addr, "/json?hop=1", &hop).await;
    assert_eq!(r.status(), 200);
    assert_no_hop_by_hop(&one(&origin, "/json?hop=1"), "normal path");

    let mut sse_hdrs = hop.to_vec();
    sse_hdrs.push(ES);
    let mut s = open_sse(sc.addr, "/sse?events=1&hop=1", &sse_hdrs).await;
    s.read_to_end(T).await;
    assert_no_hop_by_hop(&one(&origin, "/sse?events=1&hop=1"), "SSE relay");
}

fn assert_forwarded(rec: &RequestRecord, incoming: Option<&str>, what: &str) {
    let xff: Vec<String> = rec
        .header_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    let want: Vec<String> = incoming
        .into_iter()
        .map(String::from)
        .chain(["127.0.0.1".to_string()])
        .collect();
    assert_eq!(
        xff, want,
        "{what}: X-Forwarded-For (headers {:?})",
        rec.headers
    );
    assert_eq!(
        rec.header("x-forwarded-proto"),
        Some("http"),
        "{what}: X-Forwarded-Proto"
    );
}

/// X-Forwarded-For (appended to an incoming one) and X-Forwarded-Proto reach the app, on the
/// normal path and on the SSE relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_added() {
    let (origin, sc) = setup().await;
    client::get(sc.addr, "/json?xff=0", &[]).await;
    assert_forwarded(&one(&origin, "/json?xff=0"), None, "normal path");
    client::get(
        sc.addr,
        "/json?xff=1",
        &[("X-Forwarded-For", "203.0.113.7")],
    )
    .await;
    assert_forwarded(
        &one(&origin, "/json?xff=1"),
        Some("203.0.113.7"),
        "normal path, incoming XFF",
    );

    let mut s = open_sse(sc.addr, "/sse?events=1&xff=0", &[ES]).await;
    s.read_to_end(T).await;
    assert_forwarded(&one(&origin, "/sse?events=1&xff=0"), None, "SSE relay");
    let mut s = open_sse(
        sc.addr,
        "/sse?events=1&xff=1",
        &[ES, ("X-Forwarded-For", "203.0.113.7")],
    )
    .await;
    s.read_to_end(T).await;
    assert_forwarded(
        &one(&origin, "/sse?events=1&xff=1"),
        Some("203.0.113.7"),
        "SSE relay, incoming XFF",
    );
}

/// App unreachable: a non-SSE request gets a 502 with a short plain-text body, and the log
/// line says 502 and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_gives_502() {
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let sc = Sidecar::start(&dead).await;
    let r = client::get(sc.addr, "/json", &[]).await;
    assert_eq!(r.status(), 502, "head: {}", show(&r.head.raw));
    assert!(
        r.head
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "content-type: {:?}",
        r.head.header("content-type")
    );
    assert!(
        !r.body.is_empty() && r.body.len() < 512,
        "short plain-text body: {}",
        show(&r.body)
    );
    common::eventually(T, "a log line with 502 and the reason", || {
        let log = sc.stderr().to_ascii_lowercase();
        log.contains("502")
            && (log.contains("refused") || log.contains("unreachable") || log.contains("connect"))
    })
    .await;
}

/// The app resets the connection before answering: a non-SSE request gets a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_response_gives_502() {
    let (_origin, sc) = setup().await;
    let r = client::get(sc.addr, "/reset", &[]).await;
    assert_eq!(r.status(), 502, "head: {}", show(&r.head.raw));
    assert!(r
        .head
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
}

/// The app accepts but sends no response head within --read-timeout: a non-SSE request gets
/// a 504 plain-text answer, after about the read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_silent_past_read_timeout_gives_504() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--read-timeout", "1s"])
        .start()
        .await;
    let t0 = now_ns();
    let r = client::get(sc.addr, "/slow_headers?ms=4000", &[]).await;
    let took = now_ns() - t0;
    assert_eq!(r.status(), 504, "head: {}", show(&r.head.raw));
    assert!(r
        .head
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(
        !r.body.is_empty() && r.body.len() < 512,
        "short body: {}",
        show(&r.body)
    );
    assert!(
        (900e6..3500e6).contains(&(took as f64)),
        "504 after {:.0} ms; expected about the 1 s read timeout",
        ms(took)
    );
}

/// With `sse.on_upstream_error: status`, SSE candidates get the same 502 (unreachable) and
/// 504 (no response head within --read-timeout) as other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_candidate_upstream_errors_with_status_mode() {
    let cfg = "sse:\n  on_upstream_error: status\n";
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let sc = Sidecar::builder(&dead).config(cfg).start().await;
    let r = client::get(sc.addr, "/sse", &[ES]).await;
    assert_eq!(r.status(), 502, "unreachable; head: {}", show(&r.head.raw));
    assert!(r
        .head
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    drop(sc);

    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config(cfg)
        .args(&["--read-timeout", "1s"])
        .start()
        .await;
    let r = client::get(sc.addr, "/slow_headers?ms=4000&sse=1", &[ES]).await;
    assert_eq!(r.status(), 504, "silent app; head: {}", show(&r.head.raw));
    assert!(r
        .head
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
}

// ---------------------------------------------------------------------------------------------
// §4 SSE streams
// ---------------------------------------------------------------------------------------------

/// An SSE response gets the header policy: Content-Type kept verbatim (odd case, params),
/// Cache-Control merged with the app's `private`, X-Accel-Buffering: no, no Content-Length,
/// chunked — and its events arrive complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_header_policy() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=2&cc=private&ct=Text/Event-Stream;%20charset=utf-8&h=X-App:1";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    assert_sse_headers(&s.resp, "Text/Event-Stream; charset=utf-8", &["private"]);
    assert_eq!(s.resp.head.header("x-app"), Some("1"), "app headers kept");
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    sse::assert_seqs(&s.events(), 2, "events");
    assert_app_bytes_after_comments(&s.bytes, &one(&origin, target).body_sent, "body");
}

/// A close-delimited SSE response from the app still reaches an HTTP/1.1 client chunked,
/// with the header policy and a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_close_delimited_upstream_is_chunked_downstream() {
    let (_origin, sc) = setup().await;
    let mut s = open_sse(sc.addr, "/sse?events=3&framing=close", &[ES]).await;
    assert_sse_headers(&s.resp, "text/event-stream", &[]);
    assert_eq!(
        s.read_to_end(T).await,
        Some(End::Complete),
        "terminal chunk after the app closed"
    );
    sse::assert_seqs(&s.events(), 3, "events");
}

/// A text/event-stream answer to a request that is not a candidate (no Accept, path not
/// configured) still gets the SSE headers, and its events pass through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_headers_for_non_candidate_request() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=3&cc=private";
    let mut s = open_sse(sc.addr, target, &[]).await;
    assert_sse_headers(&s.resp, "text/event-stream", &["private"]);
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    let ev = s.events();
    sse::assert_seqs(&ev, 3, "events");
    sse::assert_each_before_next(&ev, "non-candidate");
    assert_app_bytes_after_comments(&s.bytes, &one(&origin, target).body_sent, "body");
}

/// Accept-Encoding is removed from SSE candidate requests: the app's compression never
/// engages and the stream arrives uncompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_stripped_for_sse_candidates() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=2&gzip=auto";
    let mut s = open_sse(
        sc.addr,
        target,
        &[ES, ("Accept-Encoding", "gzip, deflate, br")],
    )
    .await;
    let rec = origin.wait_request(target, T).await;
    assert_eq!(
        rec.header("accept-encoding"),
        None,
        "Accept-Encoding forwarded: {:?}",
        rec.headers
    );
    assert!(
        !s.resp.head.has("content-encoding"),
        "head: {}",
        show(&s.resp.head.raw)
    );
    s.read_to_end(T).await;
    sse::assert_seqs(&s.events(), 2, "events");
}

/// An SSE candidate whose answer is not an event stream (a 401 JSON error) passes through
/// unchanged: status, headers, Content-Length and body, without SSE headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_with_non_sse_response_passes_through() {
    let (origin, sc) = setup().await;
    let target = "/json?size=100&status=401&h=WWW-Authenticate:Bearer";
    let r = client::get(sc.addr, target, &[ES]).await;
    assert_eq!(r.status(), 401, "head: {}", show(&r.head.raw));
    assert_eq!(r.end, Some(End::Complete));
    assert_eq!(r.body, json_body(100));
    assert_eq!(r.body, one(&origin, target).body_sent);
    assert_eq!(r.head.header("content-type"), Some("application/json"));
    assert_eq!(
        r.head.header("content-length"),
        Some(&*json_body(100).len().to_string())
    );
    assert_eq!(r.head.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.head.header_all("set-cookie").len(), 2);
    assert!(
        !r.head.has("x-accel-buffering"),
        "SSE headers on a JSON answer"
    );
}

/// A client's HTTP/1.1 connection carries a relayed JSON answer, a relayed SSE stream and a
/// normal-path request in turn (or the sidecar says `Connection: close`): framing stays right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_reused_across_relay_and_normal_path() {
    let (_origin, sc) = setup().await;
    let steps: [(&str, &[(&str, &str)]); 3] = [
        ("/json?size=5", &[ES]),
        ("/sse?events=2&interval_ms=10", &[ES]),
        ("/json?size=7", &[]),
    ];
    let mut conn = Some(Conn::connect(sc.addr).await);
    for (target, headers) in steps {
        let mut c = match conn.take() {
            Some(c) => c,
            None => Conn::connect(sc.addr).await,
        };
        c.send(&client::request("GET", target, headers, None)).await;
        let mut r = Response::read(c, "GET", T)
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(r.read_to_end(T).await, Some(End::Complete), "{target}");
        assert_eq!(r.status(), 200, "{target}");
        if target.starts_with("/sse") {
            let seqs: Vec<_> = sse::events_of(&sse::parse_all(&r.body))
                .iter()
                .map(|e| e.seq())
                .collect();
            assert_eq!(seqs, vec![Some(1), Some(2)], "{target}");
        }
        let close = r.head.tokens("connection").contains(&"close".to_string());
        eprintln!(
            "{target}: connection {}",
            if close { "closed" } else { "kept" }
        );
        conn = (!close).then(|| r.into_conn());
    }
}

/// Events larger than any read buffer (200 KB of data each) arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_pass_through_intact() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=3&interval_ms=30&pad=200000";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    assert_app_bytes_after_comments(&s.bytes, &one(&origin, target).body_sent, "large events");
    sse::assert_seqs(&s.events(), 3, "large events");
}

/// Each event reaches the client before the app writes the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_delivered_before_next_is_sent() {
    let (_origin, sc) = setup().await;
    let mut s = open_sse(sc.addr, "/sse?events=6&interval_ms=100", &[ES]).await;
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    let ev = s.events();
    sse::assert_seqs(&ev, 6, "events");
    sse::assert_each_before_next(&ev, "via sidecar");
    let lat: Vec<String> = ev
        .iter()
        .map(|(e, at)| format!("{:.2}", ms(at - e.t_ns().unwrap())))
        .collect();
    eprintln!("per-event latency (ms): {lat:?}");
}

/// Events with LF, CRLF and lone-CR line ends, each split across two writes, arrive
/// byte-exact and each before the next is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_endings_and_split_writes_pass_through() {
    let (origin, sc) = setup().await;
    for le in ["lf", "crlf", "cr"] {
        let target = format!("/sse?events=3&interval_ms=60&split=1&id=1&le={le}");
        let mut s = open_sse(sc.addr, &target, &[ES]).await;
        assert_eq!(s.read_to_end(T).await, Some(End::Complete), "{le}");
        let rec = one(&origin, &target);
        assert_app_bytes_after_comments(&s.bytes, &rec.body_sent, le);
        let ev = s.events();
        sse::assert_seqs(&ev, 3, le);
        assert_eq!(ev[2].0.id, "3", "{le}: last event id");
        sse::assert_each_before_next(&ev, le);
    }
}

/// An SSE stream survives app silence longer than --read-timeout (1 s read timeout, 2.5 s
/// silence between events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_survives_silence_longer_than_read_timeout() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--read-timeout", "1s"])
        .start()
        .await;
    let mut s = open_sse(
        sc.addr,
        "/sse?events=2&interval_ms=0&silence_ms=2500",
        &[ES],
    )
    .await;
    assert_eq!(
        s.read_to_end(Duration::from_secs(8)).await,
        Some(End::Complete)
    );
    sse::assert_seqs(&s.events(), 2, "events around the silence");
}

/// Once the SSE response head has arrived, --sse-idle-timeout (not --read-timeout) bounds the
/// app's silence: 1 s idle timeout, 2.5 s silence, the stream is ended and the app's
/// connection closed before the event after the silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_idle_timeout_bounds_app_silence() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--read-timeout", "10s", "--sse-idle-timeout", "1s"])
        .start()
        .await;
    let target = "/sse?events=2&interval_ms=0&silence_ms=2500";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    let t0 = now_ns();
    let end = s.read_to_end(Duration::from_secs(8)).await;
    let took = now_ns() - t0;
    let seqs: Vec<_> = s.events().iter().map(|(e, _)| e.seq()).collect();
    assert_eq!(seqs, vec![Some(1)], "events; stream end {end:?}");
    assert!(end.is_some(), "stream still open after 8 s");
    assert!(
        took < 2_400_000_000,
        "stream ended {:.0} ms after it opened; want about the 1 s idle timeout",
        ms(took)
    );
    let rec = origin.wait_closed(target, T).await;
    assert_eq!(
        rec.events_sent.len(),
        1,
        "the app was still connected after its silence"
    );
}

/// A non-SSE response with the same 2.5 s silence does not survive --read-timeout 1s: it is
/// cut (or answered 504) and the data after the silence never arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_sse_silence_longer_than_read_timeout_fails() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--read-timeout", "1s"])
        .start()
        .await;
    let mut r = client::send(
        sc.addr,
        &client::request(
            "GET",
            "/sse?events=2&interval_ms=0&silence_ms=2500&ct=text/plain",
            &[],
            None,
        ),
        "GET",
    )
    .await;
    let end = r.read_to_end(Duration::from_secs(8)).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let completed = r.status() == 200 && end.as_ref().is_some_and(End::is_clean);
    let got_after_silence = text.contains("\"seq\":2");
    eprintln!(
        "non-SSE after silence: status {}, end {end:?}, body {text:?}",
        r.status()
    );
    assert!(
        !completed && !got_after_silence,
        "the response survived the silence: status {}, end {end:?}, body {text:?}",
        r.status()
    );
}

/// Runs `leave` (the client going away) and returns how long after it the app's connection to
/// `target` closed, in ns (waiting 3 s at most).
async fn upstream_close_ns(origin: &Origin, target: &str, leave: impl FnOnce()) -> u64 {
    let t0 = now_ns();
    leave();
    let rec = origin.wait_closed(target, Duration::from_secs(3)).await;
    rec.closed_ns.unwrap() - t0
}

/// An h2c (prior knowledge) connection to `addr` with an SSE request for `target` on it.
async fn h2c_sse(addr: SocketAddr, target: &str) -> (H2Conn, H2Response) {
    let mut c = H2Conn::connect(addr).await;
    let r = c
        .request("GET", target, &[("accept", "text/event-stream")], None)
        .await;
    (c, r)
}

/// Client FIN while the app is silent closes the upstream connection within 100 ms (HTTP/1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fin_closes_upstream_promptly() {
    client_close_closes_upstream(false).await;
}

/// Client RST (SO_LINGER 0) while the app is silent closes the upstream connection within
/// 100 ms (HTTP/1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rst_closes_upstream_promptly() {
    client_close_closes_upstream(true).await;
}

async fn client_close_closes_upstream(rst: bool) {
    let (origin, sc) = setup().await;
    let target = "/sse?events=1&end=hold";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    s.next_event(T).await.expect("first event");
    // Let the app be silent for a moment: the relay must notice the client, not a write.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        origin.requests_to(target)[0].closed_ns.is_none(),
        "upstream closed before the client left"
    );
    let SseStream { resp, .. } = s;
    let took = upstream_close_ns(&origin, target, || {
        if rst {
            resp.conn.close_rst()
        } else {
            resp.conn.close_fin()
        }
    })
    .await;
    assert!(
        took < CLOSE_WITHIN_NS,
        "upstream closed {:.1} ms after the client (rst={rst}); want < 100 ms",
        ms(took)
    );
}

/// h2c prior knowledge on the listening port: an SSE stream gets the header policy, and
/// dropping the TCP connection closes the upstream within 100 ms while the app is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connection_close_closes_upstream_promptly() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=1&end=hold&cc=private";
    let (c, mut r) = h2c_sse(sc.addr, target).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert!(
        r.header("content-length").is_none(),
        "no content-length over h2"
    );
    let cc = r.header("cache-control").unwrap_or("").to_ascii_lowercase();
    for want in ["no-cache", "no-transform", "private"] {
        assert!(
            cc.split(',').any(|t| t.trim() == want),
            "cache-control {cc:?} lacks {want}"
        );
    }
    r.next_event(T).await.expect("first event over h2c");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Only the TCP connection goes away (no RST_STREAM first): `r` lives on.
    let took = upstream_close_ns(&origin, target, || c.close()).await;
    drop(r);
    assert!(
        took < CLOSE_WITHIN_NS,
        "upstream closed {:.1} ms after the h2c connection; want < 100 ms",
        ms(took)
    );
}

/// h2c: RST_STREAM on a silent SSE stream closes the upstream within 100 ms, and the
/// connection stays usable for a normal request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_stream_reset_closes_upstream_promptly() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=1&end=hold";
    let (mut c, mut r) = h2c_sse(sc.addr, target).await;
    assert_eq!(r.status(), 200);
    r.next_event(T).await.expect("first event over h2c");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = upstream_close_ns(&origin, target, || r.reset()).await;
    assert!(
        took < CLOSE_WITHIN_NS,
        "upstream closed {:.1} ms after RST_STREAM; want < 100 ms",
        ms(took)
    );

    let mut j = c.request("GET", "/json?size=10", &[], None).await;
    assert_eq!(j.status(), 200);
    while j.next_data(T).await.is_some() {}
    assert_eq!(j.body, json_body(10), "JSON over the same h2c connection");
}

/// A POST to a configured `sse.paths` prefix without an Accept header is relayed as SSE:
/// its body (Content-Length or chunked) reaches the app, Accept-Encoding is stripped, and
/// each event arrives before the next is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_stream_on_configured_path() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  paths: [\"/sse\"]\n")
        .start()
        .await;
    let body = br#"{"model":"x","prompt":"hello","stream":true}"#;
    let target = "/sse?events=4&interval_ms=80&gzip=auto";
    let req = client::request(
        "POST",
        target,
        &[
            ("Content-Type", "application/json"),
            ("Accept-Encoding", "gzip"),
        ],
        Some(body),
    );
    let mut s = SseStream::new(client::send(sc.addr, &req, "POST").await);
    assert_sse_headers(&s.resp, "text/event-stream", &[]);
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    let ev = s.events();
    sse::assert_seqs(&ev, 4, "POST stream");
    sse::assert_each_before_next(&ev, "POST stream");
    let rec = one(&origin, target);
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.body, body, "POST body at the app");
    assert_eq!(
        rec.header("accept-encoding"),
        None,
        "Accept-Encoding stripped for a path candidate"
    );

    let target = "/sse?events=2&chunkedbody=1";
    let mut req = client::request("POST", target, &[("Transfer-Encoding", "chunked")], None);
    req.extend(client::chunked(body, 10));
    let mut s = SseStream::new(client::send(sc.addr, &req, "POST").await);
    assert_sse_headers(&s.resp, "text/event-stream", &[]);
    s.read_to_end(T).await;
    sse::assert_seqs(&s.events(), 2, "chunked POST stream");
    assert_eq!(
        one(&origin, target).body,
        body,
        "chunked POST body at the app"
    );
}

// ---------------------------------------------------------------------------------------------
// Opening bytes (issue 3 §3)
// ---------------------------------------------------------------------------------------------

/// The first body bytes of an SSE stream are the opening comment ": ok\n\n", written before
/// the app's first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_comment_is_written_first() {
    let (origin, sc) = setup().await;
    let target = "/sse?events=1&first_ms=500";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    let first = s.next(Duration::from_millis(400)).await;
    assert!(
        matches!(&first, Some(t) if t.item == Item::Comment(" ok".into())),
        "first item before the app wrote anything: {first:?}; bytes {}",
        show(&s.bytes)
    );
    assert!(
        s.bytes.starts_with(b": ok\n\n"),
        "first bytes: {}",
        show(&s.bytes)
    );
    s.read_to_end(T).await;
    assert_app_bytes_after_comments(&s.bytes, &one(&origin, target).body_sent, "body");
}

/// `sse.initial_padding: 2048` adds a padding comment: the opening block is at least 2048
/// bytes of comments, ends with a blank line, and the app's bytes follow unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_padding_in_opening_block() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  initial_padding: 2048\n")
        .start()
        .await;
    let target = "/sse?events=2";
    let mut s = open_sse(sc.addr, target, &[ES]).await;
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    let app = one(&origin, target).body_sent;
    assert_app_bytes_after_comments(&s.bytes, &app, "padded stream");
    let opening = &s.bytes[..s.bytes.len() - app.len()];
    assert!(
        opening.len() >= 2048,
        "opening block is {} bytes: {}",
        opening.len(),
        show(opening)
    );
    assert!(
        opening.starts_with(b":") && opening.ends_with(b"\n\n"),
        "opening block: {}",
        show(opening)
    );
    sse::assert_seqs(&s.events(), 2, "events after padding");
}

/// A UTF-8 BOM at the start of the app's body is dropped when the opening comment precedes
/// it, so the first event still parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_dropped_after_opening_comment() {
    let (_origin, sc) = setup().await;
    let mut s = open_sse(sc.addr, "/sse?events=2&bom=1", &[ES]).await;
    s.read_to_end(T).await;
    assert!(
        s.bytes.starts_with(b":"),
        "opening comment first: {}",
        show(&s.bytes)
    );
    assert!(
        !s.bytes.windows(3).any(|w| w == b"\xEF\xBB\xBF"),
        "BOM mid-stream: {}",
        show(&s.bytes)
    );
    sse::assert_seqs(&s.events(), 2, "events");
}

// ---------------------------------------------------------------------------------------------
// `check` and `print-config`
// ---------------------------------------------------------------------------------------------

/// Runs `check --config` on `yaml`; returns (exit code, stderr).
fn check(yaml: &str) -> (i32, String) {
    let (_dir, path) = temp_file("bad.yaml", yaml);
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "check panicked on {yaml:?}:\n{err}"
    );
    (out.status.code().unwrap_or(-1), err)
}

/// `check` must exit 2 and name every `needles` (the key and the bad value) in its message.
fn assert_rejected(yaml: &str, needles: &[&str]) {
    let (code, err) = check(yaml);
    assert_eq!(code, 2, "check exit code for {yaml:?}; stderr:\n{err}");
    for n in needles {
        assert!(
            err.contains(n),
            "check's message for {yaml:?} does not name {n:?}:\n{err}"
        );
    }
}

/// `check` accepts a valid config and the shipped conf/sse-sidecar.yaml (exit 0).
#[test]
fn check_accepts_valid_configs() {
    let (code, err) =
        check("upstream: http://127.0.0.1:3000\nread_timeout: 30s\nsse:\n  paths: [/v1/chat]\n");
    assert_eq!(code, 0, "stderr:\n{err}");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/sse-sidecar.yaml");
    let out = run_cli(&["check", "--config", shipped], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "check {shipped}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check` rejects unknown keys (top level and nested), naming them.
#[test]
fn check_rejects_unknown_keys() {
    assert_rejected(
        "upstream: http://127.0.0.1:3000\nlisten_adress: [\"0.0.0.0:1\"]\n",
        &["listen_adress"],
    );
    assert_rejected("sse:\n  pathz: [/x]\n", &["pathz"]);
}

/// `check` rejects bad durations, naming the key and the value.
#[test]
fn check_rejects_bad_durations() {
    assert_rejected(
        "read_timeout: 10 parsecs\n",
        &["read_timeout", "10 parsecs"],
    );
    assert_rejected("heartbeat_interval: 5\n", &["heartbeat_interval", "5"]);
    assert_rejected(
        "shutdown:\n  drain_window: soon\n",
        &["drain_window", "soon"],
    );
}

/// `check` rejects a bad upstream URL, naming the key and the value.
#[test]
fn check_rejects_bad_upstream_url() {
    assert_rejected("upstream: \"not a url\"\n", &["upstream", "not a url"]);
    assert_rejected(
        "upstream: \"ftp://127.0.0.1:21\"\n",
        &["upstream", "ftp://127.0.0.1:21"],
    );
}

/// `check` rejects bad listen addresses, naming the key and the value.
#[test]
fn check_rejects_bad_listen_address() {
    assert_rejected(
        "listen: [\"127.0.0.1:99999\"]\n",
        &["listen", "127.0.0.1:99999"],
    );
    assert_rejected(
        "metrics_listen: \"nowhere\"\n",
        &["metrics_listen", "nowhere"],
    );
}

/// `check` rejects bad enum values, naming the key and the value.
/// `resume.*`: each bad value is named with its key, and a per-stream buffer larger than the
/// total is refused.
#[test]
fn check_rejects_bad_resume_values() {
    assert_rejected("resume:\n  paths: [events]\n", &["resume.paths", "events"]);
    assert_rejected(
        "resume:\n  grace: 0s\n",
        &["resume.grace", "greater than zero"],
    );
    assert_rejected(
        "resume:\n  max_bytes: 1.5MiB\n",
        &["resume.max_bytes", "1.5MiB"],
    );
    assert_rejected("resume:\n  store: redis\n", &["resume.store", "redis://"]);
    assert_rejected(
        "resume:\n  store: http://x:6379\n",
        &["resume.store", "http://x:6379"],
    );
    assert_rejected(
        "resume:\n  redis:\n    timeout: 0s\n",
        &["resume.redis.timeout", "greater than zero"],
    );
    assert_rejected(
        "resume:\n  redis:\n    key_prefix: \"a b\"\n",
        &["resume.redis.key_prefix"],
    );
    assert_rejected("resume:\n  redis:\n    port: 1\n", &["resume.redis.port"]);
    assert_rejected(
        "resume:\n  cookies: [\"a=b\"]\n",
        &["resume.cookies", "a=b"],
    );
    assert_rejected(
        "resume:\n  max_bytes: 2GiB\n",
        &["resume.max_bytes (2GiB) is larger than resume.max_total_bytes (256MiB)"],
    );
}

#[test]
fn check_rejects_bad_enum_values() {
    assert_rejected("log_format: xml\n", &["log_format", "xml"]);
    assert_rejected(
        "sse:\n  on_upstream_error: explode\n",
        &["on_upstream_error", "explode"],
    );
}

/// `check` rejects a comment containing a newline (it would break the stream's framing).
#[test]
fn check_rejects_comment_with_newline() {
    let (code, err) = check("sse:\n  heartbeat_comment: \"a\\nb\"\n");
    assert_eq!(code, 2, "stderr:\n{err}");
    assert!(err.contains("heartbeat_comment"), "key not named:\n{err}");
    assert!(
        err.contains("a\\nb") || err.contains("a\nb"),
        "value not shown:\n{err}"
    );
}

/// `check` rejects negative and non-numeric numbers, naming the key and the value.
#[test]
fn check_rejects_bad_numbers() {
    assert_rejected("threads: -1\n", &["threads", "-1"]);
    assert_rejected("limits:\n  max_streams: lots\n", &["max_streams", "lots"]);
    assert_rejected("sse:\n  initial_padding: -5\n", &["initial_padding", "-5"]);
}

/// `check` reports every problem of a file at once, and rejects malformed YAML without
/// panicking.
#[test]
fn check_reports_every_problem() {
    assert_rejected(
        "read_timeout: forever\nlog_format: xml\nthreads: many\n",
        &[
            "read_timeout",
            "forever",
            "log_format",
            "xml",
            "threads",
            "many",
        ],
    );
    let (code, err) = check("listen: [\"0.0.0.0:1\"\n  bad: [\n");
    assert_eq!(code, 2, "malformed YAML; stderr:\n{err}");
}

fn dur_ms(v: &serde_yaml::Value) -> u64 {
    let s = match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => panic!("duration printed as {other:?}"),
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    n * match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => panic!("duration {s:?}"),
    }
}

fn listen_addrs(v: &serde_yaml::Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("listen printed as {v:?}"))
        .iter()
        .map(|i| match i {
            serde_yaml::Value::String(s) => s.clone(),
            m => m["addr"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// `print-config` reflects the precedence defaults < file < environment < flags, and its
/// output is itself a valid config.
#[test]
fn print_config_precedence() {
    let (dir, path) = temp_file(
        "c.yaml",
        "read_timeout: 7s\nheartbeat_interval: 3s\nconnect_timeout: 4s\nthreads: 3\nlog_format: json\nupstream: http://127.0.0.1:4000\n",
    );
    let out = run_cli(
        &[
            "print-config",
            "--config",
            path.to_str().unwrap(),
            "--connect-timeout",
            "8s",
            "--threads",
            "5",
        ],
        &[
            ("SSE_SIDECAR_HEARTBEAT_INTERVAL", "5s"),
            ("SSE_SIDECAR_CONNECT_TIMEOUT", "6s"),
            ("SSE_SIDECAR_THREADS", "4"),
            ("SSE_SIDECAR_LISTEN", "127.0.0.1:8001,127.0.0.1:8002"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"));
    assert_eq!(
        dur_ms(&y["read_timeout"]),
        7000,
        "file beats default:\n{text}"
    );
    assert_eq!(
        dur_ms(&y["heartbeat_interval"]),
        5000,
        "env beats file:\n{text}"
    );
    assert_eq!(
        dur_ms(&y["connect_timeout"]),
        8000,
        "flag beats env:\n{text}"
    );
    assert_eq!(
        y["threads"].as_u64(),
        Some(5),
        "flag beats env and file:\n{text}"
    );
    assert_eq!(y["log_format"].as_str(), Some("json"), "file:\n{text}");
    assert_eq!(
        y["upstream"].as_str().map(|u| u.trim_end_matches('/')),
        Some("http://127.0.0.1:4000"),
        "file:\n{text}"
    );
    assert_eq!(
        dur_ms(&y["sse_idle_timeout"]),
        3_600_000,
        "default:\n{text}"
    );
    assert_eq!(
        listen_addrs(&y["listen"]),
        vec!["127.0.0.1:8001", "127.0.0.1:8002"],
        "env list:\n{text}"
    );

    // Defaults alone.
    let out = run_cli(&["print-config"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let y: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"));
    assert_eq!(
        listen_addrs(&y["listen"]),
        vec!["0.0.0.0:8080"],
        "default listen:\n{text}"
    );
    assert_eq!(
        y["upstream"].as_str().map(|u| u.trim_end_matches('/')),
        Some("http://127.0.0.1:3000")
    );
    assert_eq!(y["metrics_listen"].as_str(), Some("0.0.0.0:9090"));
    assert_eq!(dur_ms(&y["heartbeat_interval"]), 15_000);
    assert_eq!(dur_ms(&y["read_timeout"]), 60_000);
    assert_eq!(dur_ms(&y["connect_timeout"]), 5_000);

    // The printed config round-trips through `check`.
    let printed = dir.path().join("printed.yaml");
    std::fs::write(&printed, &text).unwrap();
    let out = run_cli(&["check", "--config", printed.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "print-config output rejected by check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The secrets (`resume.store`'s Redis password, `probe.token`) can come from the environment,
/// so that a Kubernetes Secret keeps them out of the config file, and `print-config` and
/// `check` never show them.
#[test]
fn secrets_from_the_environment_are_never_printed() {
    let env = [
        (
            "SSE_SIDECAR_RESUME_STORE",
            "redis://:s3cret@127.0.0.1:6399/2",
        ),
        ("SSE_SIDECAR_PROBE_TOKEN", "t0ken-42"),
    ];
    let out = run_cli(&["print-config"], &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !text.contains("s3cret") && !text.contains("t0ken-42"),
        "{text}"
    );
    let y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        y["resume"]["store"].as_str(),
        Some("redis://:***@127.0.0.1:6399/2"),
        "{text}"
    );
    assert_eq!(y["probe"]["token"].as_str(), Some("***"), "{text}");

    // The flag beats the environment; a bad value is named, its source too, the secret not.
    let out = run_cli(
        &[
            "check",
            "--resume-store",
            "memory",
            "--probe-token",
            "has space",
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("probe.token: invalid value \"***\" (from command line)"),
        "{err}"
    );
    assert!(
        !err.contains("resume.store") && !err.contains("has space"),
        "{err}"
    );
    let out = run_cli(
        &["check"],
        &[("SSE_SIDECAR_RESUME_STORE", "mysql://u:pw@db/0")],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("resume.store: invalid value \"mysql://u:***@db/0\" (from environment)"),
        "{err}"
    );
}

/// Sanity check of the harness itself: the origin's stream, read directly, has every event
/// before the next is sent (so failures through the sidecar are the sidecar's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_origin_direct_baseline() {
    let origin = Origin::start().await;
    let mut s = open_sse(
        origin.addr(),
        "/sse?events=4&interval_ms=50&split=1&le=crlf",
        &[ES],
    )
    .await;
    assert_eq!(s.read_to_end(T).await, Some(End::Complete));
    let ev = s.events();
    sse::assert_seqs(&ev, 4, "direct");
    sse::assert_each_before_next(&ev, "direct");
}
