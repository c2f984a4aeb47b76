//! Resumable streams (issue 15), black-box: a client's connection breaks, it reconnects with
//! `Last-Event-ID`, and the sidecar answers from the stream it kept, without a second request
//! to the app.
//!
//! Every test here is written against the issue's interface, not the implementation: the
//! `resume:` section of the config, ids of the form `<22 base64url chars>.<seq>[.<app id>]`
//! (read with the tests' own [`ResumeId`]), what the client receives and what the in-process
//! origin saw. The `control_*` tests run the same drops without `resume.paths` and show the
//! events are lost, so the resume tests above them prove something; `cutter_*` tests the
//! connection-breaking proxy of tests/common/cutter.rs that tests/browser.rs puts in front of
//! real clients.
//!
//! Run: `cargo test --release --test resume` (timing bounds assume a release build; ~15 s).

mod common;

use std::time::{Duration, Instant};

use common::client::{self, End};
use common::cutter::Cutter;
use common::h2c::H2Conn;
use common::origin::RequestRecord;
use common::process::{rss, RssWatch};
use common::resume::*;
use common::sse::{self, Event, ResumeId};
use common::{ms, now_ns, show, Origin, Sidecar};

const T: Duration = Duration::from_secs(5);
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Every path resumable, the issue's defaults otherwise.
const RESUME: &str = "resume:\n  paths: [\"/\"]\n";

/// The issue's first scenario: 50 events 50 ms apart, the client leaves after 5.
const FIFTY: &str = "/sse?events=50&interval_ms=50";
const FIFTY_IDS: &str = "/sse?events=50&interval_ms=50&id=1";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A sidecar in front of `origin` with `yaml` as its config file.
async fn with_config(origin: &Origin, yaml: &str) -> Sidecar {
    Sidecar::builder(&origin.url()).config(yaml).start().await
}

/// The app saw exactly one more request after the first, carrying its own `Last-Event-ID`
/// (`None`: none).
fn asked_again(origin: &Origin, last_event_id: Option<&str>) {
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2, "the app is asked again: {reqs:#?}");
    assert_eq!(
        reqs[1].header("last-event-id"),
        last_event_id,
        "the app's own id"
    );
}

/// One series from `/metrics`, or 0 when it is not shown (a labelled series appears on first
/// use).
async fn metric0(sc: &Sidecar, series: &str) -> f64 {
    common::sidecar::series_value(&sc.metrics().await, series).unwrap_or(0.0)
}

/// Polls `series` every 20 ms until `ok` holds of it (returns true) or `deadline` passes.
async fn metric_becomes(
    sc: &Sidecar,
    series: &str,
    deadline: Duration,
    ok: impl Fn(f64) -> bool,
) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if ok(metric0(sc, series).await) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PARKED: &str = "sse_sidecar_streams_parked";
const RESUMED: &str = "sse_sidecar_resumes_total{result=\"resumed\"}";
const UNKNOWN: &str = "sse_sidecar_resumes_total{result=\"unknown\"}";
const DENIED: &str = "sse_sidecar_resumes_total{result=\"denied\"}";
const REPLAYED: &str = "sse_sidecar_replayed_events_total";
const BUFFER_BYTES: &str = "sse_sidecar_resume_buffer_bytes";
const EXPIRED: &str = "sse_sidecar_streams_total{outcome=\"parked_expired\"}";

/// What [`drop_after_5_and_resume`] varies.
struct Drop5 {
    target: &'static str,
    method: &'static str,
    body: Option<&'static [u8]>,
    resume_method: &'static str,
    resume_body: Option<&'static [u8]>,
}

/// Issue 15's first scenario over HTTP/1.1: a client reads 5 of 50 events, is reset, and
/// reconnects 1 s later with the last id. It must receive events 6–50 exactly once, in order,
/// and a clean end; the app sees one request. The metrics are checked on the way: the stream
/// is parked during the gap, then one resume, some replayed events, nothing parked.
async fn drop_after_5_and_resume(case: Drop5) -> (Sidecar, Origin) {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let mut first = open(sc.addr, case.method, case.target, &[], case.body).await;
    let seen = take(&mut first, 5, "first connection").await;
    let ids: Vec<ResumeId> = seen
        .iter()
        .map(|e| resume_id(e, "first connection"))
        .collect();
    assert_eq!(
        ids.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "the ids count the stream's events from 1"
    );
    assert!(
        ids.iter().all(|i| i.token == ids[0].token),
        "one token per stream: {ids:?}"
    );
    reset(first);

    let parked = metric_becomes(&sc, PARKED, Duration::from_millis(900), |v| v == 1.0).await;
    let buffered = metric0(&sc, BUFFER_BYTES).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut again = open(
        sc.addr,
        case.resume_method,
        case.target,
        &[("Last-Event-ID", seen[4].id.as_str())],
        case.resume_body,
    )
    .await;
    let (got, end) = read_rest(&mut again).await;
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "the app saw one request: {reqs:#?}");
    assert_rest(
        &again.bytes,
        &got,
        &reqs[0],
        6,
        &ids[0].token,
        "the resumed stream",
    );
    assert_eq!(
        end,
        Some(End::Complete),
        "the resumed stream ends with the app's end (terminating chunk)"
    );

    assert!(parked, "{PARKED} did not show the dropped stream parked");
    assert!(buffered > 0.0, "{BUFFER_BYTES} was {buffered} while parked");
    assert_eq!(metric0(&sc, RESUMED).await, 1.0, "{RESUMED}");
    let replayed = metric0(&sc, REPLAYED).await;
    assert!(
        (10.0..=45.0).contains(&replayed),
        "{REPLAYED} = {replayed}: about 20 events (1 s of 50 ms) waited in the buffer"
    );
    assert!(
        metric_becomes(&sc, PARKED, T, |v| v == 0.0).await,
        "{PARKED} back to 0 after the resume"
    );
    (sc, origin)
}

// ---------------------------------------------------------------------------------------------
// The cutter
// ---------------------------------------------------------------------------------------------

/// The cutter passes bytes both ways unchanged (a whole response arrives through it), and
/// resets a connection still open when its time is up: the client's read fails with a reset
/// after the events that passed, the app's side sees a reset too, and the cut is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutter_passes_bytes_and_resets_on_schedule() {
    let origin = Origin::start().await;
    let cutter = Cutter::start(
        origin.addr(),
        Duration::from_millis(600),
        Duration::from_millis(100),
    )
    .await;

    let r = client::get(cutter.addr, "/json?size=5000", &[]).await;
    assert_eq!(r.end, Some(End::Complete));
    assert_eq!(
        r.body,
        common::origin::json_body(5000),
        "bytes pass unchanged"
    );
    r.into_conn().close_fin();
    origin
        .wait_closed("/json", Duration::from_millis(400))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        cutter.cuts(),
        0,
        "a connection that ended by itself is not cut"
    );

    let start = Instant::now();
    let mut s = open(
        cutter.addr,
        "GET",
        "/sse?events=200&interval_ms=20",
        &[],
        None,
    )
    .await;
    let end = s.read_to_end(Duration::from_secs(3)).await;
    let lived = start.elapsed();
    assert!(
        matches!(&end, Some(End::Error(e)) if e.contains("reset")),
        "the client sees a reset, not {end:?}"
    );
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1200)).contains(&lived),
        "cut after {lived:?}, want about 500-700 ms"
    );
    let events = s.events();
    assert!(
        events.len() >= 10,
        "events passed before the cut: {}",
        events.len()
    );
    sse::assert_seqs(&events, events.len() as u64, "through the cutter");
    let rec = origin.wait_closed("/sse", T).await;
    let why = rec.close_reason.clone().unwrap_or_default();
    assert!(
        why.contains("reset") || why.contains("pipe"),
        "the app's side was reset too: {rec:?}"
    );
    assert_eq!(cutter.cuts(), 1);
    assert_eq!(cutter.connections(), 2);
}

// ---------------------------------------------------------------------------------------------
// Resuming
// ---------------------------------------------------------------------------------------------

/// HTTP/1.1, an app that sends no ids: after a reset at event 5 and a reconnect 1 s later with
/// the last id, the client gets events 6–50 exactly once, in order, byte-exact but for the ids,
/// then a clean end; the app saw one request. The resume metrics move (parked gauge, buffer
/// bytes, `resumes_total{result="resumed"}`, replayed events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_h1_without_app_ids_gets_6_to_50_once() {
    drop_after_5_and_resume(Drop5 {
        target: FIFTY,
        method: "GET",
        body: None,
        resume_method: "GET",
        resume_body: None,
    })
    .await;
}

/// As above with an app that sends `id: N`: every id the client sees is `<token>.<seq>.N`, and
/// the resume still gets events 6–50 exactly once from the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_h1_with_app_ids_gets_6_to_50_once() {
    drop_after_5_and_resume(Drop5 {
        target: FIFTY_IDS,
        method: "GET",
        body: None,
        resume_method: "GET",
        resume_body: None,
    })
    .await;
}

/// An LLM-style POST stream, resumed by a GET with `Last-Event-ID` (what fetch-based clients
/// send): events 6–50 once, and the app saw only the original POST with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_post_stream_by_get() {
    let (_sc, origin) = drop_after_5_and_resume(Drop5 {
        target: FIFTY_IDS,
        method: "POST",
        body: Some(br#"{"prompt":"tell me a story"}"#),
        resume_method: "GET",
        resume_body: None,
    })
    .await;
    let req = &origin.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, br#"{"prompt":"tell me a story"}"#);
}

/// A POST stream resumed by a POST that carries a body of its own: the resume is answered by
/// the sidecar and the resuming request's body never reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_post_stream_by_post_sends_no_body_to_the_app() {
    let (_sc, origin) = drop_after_5_and_resume(Drop5 {
        target: FIFTY,
        method: "POST",
        body: Some(br#"{"prompt":"first"}"#),
        resume_method: "POST",
        resume_body: Some(br#"{"prompt":"SECOND BODY"}"#),
    })
    .await;
    let reqs = origin.requests();
    assert_eq!(reqs[0].body, br#"{"prompt":"first"}"#);
    assert!(
        reqs.iter().all(|r| !show(&r.body).contains("SECOND")),
        "the resuming request's body reached the app: {reqs:#?}"
    );
}

/// Over h2c: the client's TCP connection is reset after 5 events (a dead h2 connection, not a
/// stream reset), and a new h2 connection 1 s later with the last id gets events 6–50 once, in
/// order, and the stream's end; the app saw one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_h2c_gets_6_to_50_once() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let mut c1 = H2Conn::connect_resetting(sc.addr).await;
    let mut r1 = c1.request("GET", FIFTY_IDS, &[ES], None).await;
    assert_eq!(r1.status(), 200);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let (e, _) = r1.next_event(T).await.expect("h2: an event");
        seen.push(e);
    }
    let last = resume_id(&seen[4], "h2 first connection");
    assert_eq!(last.seq, 5);
    // Close the TCP connection first; `r1` is kept until the end so that nothing sends a
    // RST_STREAM (a deliberate close, which ends the stream).
    c1.close();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut c2 = H2Conn::connect(sc.addr).await;
    let mut r2 = c2
        .request(
            "GET",
            FIFTY_IDS,
            &[ES, ("last-event-id", seen[4].id.as_str())],
            None,
        )
        .await;
    assert_eq!(r2.status(), 200);
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while let Some((e, _)) = r2.next_event(T).await {
        got.push(e);
        assert!(
            Instant::now() < end,
            "h2: the resumed stream did not end in 10 s"
        );
    }
    assert!(
        r2.ended,
        "h2: the resumed stream ends (END_STREAM), it did not stall"
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "the app saw one request: {reqs:#?}");
    assert_rest(
        &r2.body,
        &got,
        &reqs[0],
        6,
        &last.token,
        "h2 resumed stream",
    );
    drop(r1);
}

/// Half-open takeover (a phone switching networks): the first client stops reading and never
/// closes. A resume with its last id takes the stream over and gets events 6–50 once, and the
/// sidecar closes the old socket: the old client reads EOF or a reset within 2 s, not the rest
/// of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_of_a_half_open_connection_closes_the_old_socket() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let mut old = open(sc.addr, "GET", FIFTY_IDS, &[], None).await;
    let seen = take(&mut old, 5, "old connection").await;
    let token = resume_id(&seen[4], "old connection").token;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut new = reconnect(sc.addr, FIFTY_IDS, &seen[4].id, &[]).await;
    let took_over = Instant::now();
    let old_end = old.read_to_end(Duration::from_secs(2)).await;
    assert!(
        matches!(old_end, Some(End::Truncated | End::Error(_))),
        "the sidecar closes the old socket after a takeover: it ended {old_end:?} after {:?}",
        took_over.elapsed()
    );
    let (got, end) = read_rest(&mut new).await;
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "the app saw one request: {reqs:#?}");
    assert_rest(
        &new.bytes,
        &got,
        &reqs[0],
        6,
        &token,
        "the stream taken over",
    );
    assert_eq!(end, Some(End::Complete));
    assert_eq!(
        metric0(&sc, RESUMED).await,
        1.0,
        "a takeover counts as resumed"
    );
}

/// A takeover while the app is silent: the first connection is reading and its stream sits in
/// the event loop, where no event and no heartbeat comes to notice the takeover; the resume
/// wakes the loop, and the old socket closes at once, not at the app's next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_while_the_app_is_silent_closes_the_old_socket_at_once() {
    const HOLD: &str = "/sse?events=5&end=hold";
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let mut old = open(sc.addr, "GET", HOLD, &[], None).await;
    let seen = take(&mut old, 5, "old connection").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let _new = reconnect(sc.addr, HOLD, &seen[4].id, &[]).await;
    let took_over = Instant::now();
    let old_end = old.read_to_end(Duration::from_secs(3)).await;
    let after = took_over.elapsed();
    println!("old connection ended {old_end:?} {after:?} after the takeover");
    assert!(
        matches!(old_end, Some(End::Truncated | End::Error(_))),
        "the sidecar closes the old socket after a takeover: it ended {old_end:?} after {after:?}"
    );
    assert!(
        after < Duration::from_millis(500),
        "the old socket closed {after:?} after the takeover"
    );
    assert_eq!(origin.requests().len(), 1, "the resume reached the app");
    assert_eq!(metric0(&sc, RESUMED).await, 1.0);
}

/// The app ends the stream while its client is away: the resume gets the rest and the clean
/// end (terminating chunk). The end has now been delivered, so the last id no longer resumes:
/// a reconnect with it reaches the app as a fresh request carrying the app's own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_ending_during_grace_is_kept_for_the_resume() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let target = "/sse?events=10&interval_ms=50&id=1";
    let mut first = open(sc.addr, "GET", target, &[], None).await;
    let seen = take(&mut first, 3, "first connection").await;
    let token = resume_id(&seen[2], "first connection").token;
    reset(first);
    common::eventually(
        T,
        "the app ends its stream while the client is away",
        || origin.requests()[0].response_done_ns.is_some(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut again = reconnect(sc.addr, target, &seen[2].id, &[]).await;
    let (got, end) = read_rest(&mut again).await;
    assert_eq!(origin.requests().len(), 1, "the app saw one request");
    assert_rest(
        &again.bytes,
        &got,
        &origin.requests()[0],
        4,
        &token,
        "resumed",
    );
    assert_eq!(
        end,
        Some(End::Complete),
        "the app's end is kept: {}",
        show(&again.resp.raw_body)
    );
    assert!(again.resp.raw_body.ends_with(b"0\r\n\r\n"));

    let last = got.last().expect("events").id.clone();
    let mut after = reconnect(sc.addr, target, &last, &[]).await;
    let fresh = take(&mut after, 1, "reconnect after the end").await;
    assert_eq!(fresh[0].seq(), Some(1), "a fresh stream from the app");
    asked_again(&origin, Some("10"));
}

/// `grace: 2s` runs out: the app's connection is closed between 1.5 s and 3 s (grace + 1 s)
/// after the client left, counted as `parked_expired`. A later resume reaches the app as a
/// fresh request carrying the app's own `Last-Event-ID` (none when the app sent no id), and is
/// counted as `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expiry_closes_the_app_and_a_late_resume_reaches_the_app() {
    let origin = Origin::start().await;
    let sc = with_config(&origin, "resume:\n  paths: [\"/\"]\n  grace: 2s\n").await;
    let with_ids = "/sse?events=5&interval_ms=20&end=hold&id=1";
    let no_ids = "/sse?events=5&interval_ms=20&end=hold&n=1";
    let mut a = open(sc.addr, "GET", with_ids, &[], None).await;
    let mut b = open(sc.addr, "GET", no_ids, &[], None).await;
    let a_seen = take(&mut a, 5, "with app ids").await;
    let b_seen = take(&mut b, 5, "without app ids").await;
    let left = now_ns();
    reset(a);
    reset(b);

    for target in [with_ids, no_ids] {
        let rec = origin.wait_closed(target, Duration::from_secs(4)).await;
        let after = rec.closed_ns.unwrap().saturating_sub(left);
        assert!(
            (1_500_000_000..=3_000_000_000).contains(&after),
            "{target}: the app's connection closed {:.0} ms after the client left; want \
             within grace (2 s) + 1 s, and not before the grace: {rec:?}",
            ms(after)
        );
    }
    assert!(
        metric_becomes(&sc, EXPIRED, T, |v| v == 2.0).await,
        "{EXPIRED} counts both streams"
    );
    assert_eq!(metric0(&sc, PARKED).await, 0.0, "{PARKED}");

    let mut a2 = reconnect(sc.addr, with_ids, &a_seen[4].id, &[]).await;
    let mut b2 = reconnect(sc.addr, no_ids, &b_seen[4].id, &[]).await;
    assert_eq!(take(&mut a2, 1, "late resume").await[0].seq(), Some(1));
    assert_eq!(take(&mut b2, 1, "late resume").await[0].seq(), Some(1));
    let a_reqs = origin.requests_to(with_ids);
    let b_reqs = origin.requests_to(no_ids);
    assert_eq!(
        a_reqs.len(),
        2,
        "the late resume reached the app: {a_reqs:#?}"
    );
    assert_eq!(
        b_reqs.len(),
        2,
        "the late resume reached the app: {b_reqs:#?}"
    );
    assert_eq!(
        a_reqs[1].header("last-event-id"),
        Some("5"),
        "the app gets its own id back, not the sidecar's"
    );
    assert_eq!(
        b_reqs[1].header("last-event-id"),
        None,
        "the app sent no id, so it gets no Last-Event-ID"
    );
    assert_eq!(metric0(&sc, UNKNOWN).await, 2.0, "{UNKNOWN}");
}

/// Another client's credentials, no credentials, another query or another path never get the
/// stream's events: each goes to the app as a fresh request (with the app's own id) and is
/// counted `denied`. The stream is still there for its own client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_credentials_or_path_get_a_fresh_request() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let target = "/sse?events=60&interval_ms=50&id=1";
    let alice = [
        ("Authorization", "Bearer alice"),
        ("Cookie", "session=a; theme=dark"),
    ];
    let mut first = open(sc.addr, "GET", target, &alice, None).await;
    let seen = take(&mut first, 5, "alice").await;
    let id = seen[4].id.clone();
    let token = resume_id(&seen[4], "alice").token;
    reset(first);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let attempts = [
        (
            "another Authorization",
            target,
            vec![("Authorization", "Bearer mallory"), alice[1]],
        ),
        (
            "another cookie",
            target,
            vec![alice[0], ("Cookie", "session=b; theme=dark")],
        ),
        ("no credentials", target, vec![]),
        (
            "another query",
            "/sse?events=60&interval_ms=50&id=1&x=1",
            alice.to_vec(),
        ),
        (
            "another path",
            "/slow_headers?ms=0&sse=1&events=60&interval_ms=50&id=1",
            alice.to_vec(),
        ),
    ];
    for (n, (what, path, headers)) in attempts.iter().enumerate() {
        let mut s = reconnect(sc.addr, path, &id, headers).await;
        let e = take(&mut s, 1, what).await.remove(0);
        assert_eq!(
            e.seq(),
            Some(1),
            "{what}: a fresh stream from the app, not a replay"
        );
        assert!(
            !seen.iter().any(|a| a.data == e.data),
            "{what}: got one of alice's events"
        );
        if let Some(other) = ResumeId::parse(&e.id) {
            assert_ne!(other.token, token, "{what}: alice's stream token");
        }
        s.resp.conn.close_fin();
        let reqs = origin.requests();
        assert_eq!(
            reqs.len(),
            n + 2,
            "{what}: the app got a request: {reqs:#?}"
        );
        assert_eq!(
            reqs[n + 1].header("last-event-id"),
            Some("5"),
            "{what}: the app sees its own id"
        );
    }
    assert_eq!(metric0(&sc, DENIED).await, 5.0, "{DENIED}");

    let mut again = reconnect(sc.addr, target, &id, &alice).await;
    let (got, end) = read_rest(&mut again).await;
    let first_req = origin.requests()[0].clone();
    assert_rest(
        &again.bytes,
        &got,
        &first_req,
        6,
        &token,
        "alice's own resume",
    );
    assert_eq!(end, Some(End::Complete));
}

/// With `cookies: [session]` only that cookie identifies the client: a resume whose other
/// cookies changed gets the stream, one with another `session` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_cookies_identify_the_client() {
    let origin = Origin::start().await;
    let sc = with_config(&origin, "resume:\n  paths: [\"/\"]\n  cookies: [session]\n").await;
    let mut first = open(
        sc.addr,
        "GET",
        FIFTY,
        &[("Cookie", "theme=dark; session=s1")],
        None,
    )
    .await;
    let seen = take(&mut first, 5, "first").await;
    let token = resume_id(&seen[4], "first").token;
    reset(first);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut other = reconnect(
        sc.addr,
        FIFTY,
        &seen[4].id,
        &[("Cookie", "theme=dark; session=s2")],
    )
    .await;
    let e = take(&mut other, 1, "another session").await.remove(0);
    assert_eq!(e.seq(), Some(1), "another session cookie: a fresh stream");
    other.resp.conn.close_fin();

    let mut again = reconnect(
        sc.addr,
        FIFTY,
        &seen[4].id,
        &[("Cookie", "session=s1; theme=light; lang=fr")],
    )
    .await;
    let (got, end) = read_rest(&mut again).await;
    let first_req = origin.requests()[0].clone();
    assert_rest(
        &again.bytes,
        &got,
        &first_req,
        6,
        &token,
        "same session, other cookies",
    );
    assert_eq!(end, Some(End::Complete));
    assert_eq!(
        origin.requests().len(),
        2,
        "the app saw the stream and the denied attempt"
    );
}

/// `max_bytes: 64KiB` while a parked stream's app writes 48 MiB of 16 KiB events as fast as it
/// can: the sidecar keeps reading it (the app finishes), its buffer gauge stays at most 64 KiB
/// and an event, its RSS grows by less than 16 MiB, and a resume from an event long dropped
/// from the buffer goes to the app as a fresh request with the app's own id (`unknown`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_overflow_while_parked_stays_bounded_and_goes_to_the_app() {
    const PAD: u64 = 16 * KIB;
    let origin = Origin::start().await;
    let sc = with_config(&origin, "resume:\n  paths: [\"/\"]\n  max_bytes: 64KiB\n").await;
    // Warm up: one whole resumable stream, so the baseline has the threads and buffers a
    // stream needs.
    let mut warm = open(
        sc.addr,
        "GET",
        "/sse?events=20&interval_ms=1&pad=16384&w=1",
        &[],
        None,
    )
    .await;
    assert_eq!(read_rest(&mut warm).await.1, Some(End::Complete));
    let rss0 = rss(sc.pid());
    let buffer0 = metric0(&sc, BUFFER_BYTES).await;
    let watch = RssWatch::start(sc.pid());

    let target = "/sse?events=3000&interval_ms=1&pad=16384&id=1";
    let mut first = open(sc.addr, "GET", target, &[], None).await;
    let seen = take(&mut first, 2, "first").await;
    reset(first);
    let mut buffer_peak = 0.0f64;
    let end = Instant::now() + Duration::from_secs(40);
    // (done, closed, bytes sent) of the stream, read without copying its 48 MiB record.
    let state = || {
        origin.inspect(|reqs| {
            let r = reqs
                .iter()
                .find(|r| r.target == target)
                .expect("the stream's request");
            (
                r.response_done_ns.is_some(),
                r.close_reason.clone(),
                r.body_sent.len() as u64,
            )
        })
    };
    let sent = loop {
        let (done, closed, sent) = state();
        if done {
            break sent;
        }
        assert!(
            closed.is_none(),
            "the sidecar must keep reading a parked stream; the app's connection closed \
             ({closed:?}) after {} MiB",
            sent / MIB
        );
        assert!(
            Instant::now() < end,
            "the app did not finish 3000 events in 40 s"
        );
        buffer_peak = buffer_peak.max(metric0(&sc, BUFFER_BYTES).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let grew = watch.max().saturating_sub(rss0);
    assert!(sent > 45 * MIB, "the app wrote {sent} bytes");
    assert!(
        grew < 16 * MIB,
        "RSS grew by {} KiB while a parked stream took {} MiB with max_bytes 64KiB",
        grew / KIB,
        sent / MIB
    );
    assert!(
        buffer_peak - buffer0 <= (64 * KIB + PAD + 256) as f64,
        "{BUFFER_BYTES} peaked at {buffer_peak} (from {buffer0})"
    );

    let mut late = reconnect(sc.addr, target, &seen[1].id, &[]).await;
    assert_eq!(
        take(&mut late, 1, "resume past the buffer").await[0].seq(),
        Some(1)
    );
    late.resp.conn.close_fin();
    let second = origin.inspect(|reqs| {
        let to: Vec<&RequestRecord> = reqs.iter().filter(|r| r.target == target).collect();
        assert_eq!(to.len(), 2, "the resume went to the app");
        to[1].header("last-event-id").map(str::to_string)
    });
    assert_eq!(second.as_deref(), Some("2"), "with the app's own id");
    assert_eq!(metric0(&sc, UNKNOWN).await, 1.0, "{UNKNOWN}");
}

/// `Last-Event-ID`s that match no stream go to the app as fresh requests carrying the app's
/// own id: one that is not the sidecar's (`42`) passes unchanged; one of the sidecar's form for
/// a stream that never existed is translated to its app part (`….7.42` → `42`) or removed
/// (`….7`), and counted `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_ids_reach_the_app_as_its_own_id() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let never = "AAAAAAAAAAAAAAAAAAAAAA";
    let cases = [
        ("/sse?events=3&c=1", "42".to_string(), Some("42")),
        ("/sse?events=3&c=2", format!("{never}.7.42"), Some("42")),
        ("/sse?events=3&c=3", format!("{never}.7"), None),
    ];
    for (target, id, want) in &cases {
        let mut s = reconnect(sc.addr, target, id, &[]).await;
        let (got, end) = read_rest(&mut s).await;
        assert_eq!(end, Some(End::Complete), "{id}");
        assert_eq!(
            got.iter().map(Event::seq).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3)],
            "{id}: the app's fresh stream"
        );
        let rec = origin.wait_request(target, T).await;
        assert_eq!(
            rec.header("last-event-id"),
            *want,
            "Last-Event-ID {id} at the app"
        );
    }
    assert_eq!(
        metric0(&sc, UNKNOWN).await,
        2.0,
        "{UNKNOWN}: the two ids of the sidecar's form"
    );
    assert_eq!(metric0(&sc, RESUMED).await, 0.0, "{RESUMED}");
}

/// An h2 stream that the client resets on a live connection (a page closing its EventSource)
/// is a deliberate close, not a drop: the app's connection closes within 250 ms, nothing is
/// parked, and the stream's last id no longer resumes (a reconnect reaches the app).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_reset_on_a_live_connection_is_not_parked() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url()).config(RESUME).start().await;
    let mut c = H2Conn::connect(sc.addr).await;
    let mut r = c.request("GET", FIFTY_IDS, &[ES], None).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(r.next_event(T).await.expect("h2: an event").0);
    }
    let left = now_ns();
    r.reset();
    let rec = origin.wait_closed(FIFTY_IDS, Duration::from_secs(2)).await;
    let after = rec.closed_ns.unwrap().saturating_sub(left);
    assert!(
        after < 250_000_000,
        "RST_STREAM on a live connection: the app's connection closed {:.0} ms later",
        ms(after)
    );
    assert_eq!(metric0(&sc, PARKED).await, 0.0, "{PARKED}");

    let mut again = c
        .request(
            "GET",
            FIFTY_IDS,
            &[ES, ("last-event-id", seen[2].id.as_str())],
            None,
        )
        .await;
    let (e, _) = again.next_event(T).await.expect("h2: an event");
    assert_eq!(e.seq(), Some(1), "a fresh stream from the app");
    asked_again(&origin, Some("3"));
}

/// A path outside `resume.paths` is relayed as before: the app's own ids pass unchanged and a
/// client leaving closes the app's connection within 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_resume_paths_are_relayed_as_before() {
    let origin = Origin::start().await;
    let sc = with_config(&origin, "resume:\n  paths: [\"/v1/chat\"]\n").await;
    let mut s = open(sc.addr, "GET", FIFTY_IDS, &[], None).await;
    let seen = take(&mut s, 3, "outside resume.paths").await;
    assert_eq!(
        seen.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"],
        "the app's ids, unstamped"
    );
    let left = now_ns();
    reset(s);
    let rec = origin.wait_closed(FIFTY_IDS, Duration::from_secs(2)).await;
    let after = rec.closed_ns.unwrap().saturating_sub(left);
    assert!(
        after < 250_000_000,
        "the app's connection closed {:.0} ms after the client left",
        ms(after)
    );
    assert_eq!(metric0(&sc, PARKED).await, 0.0, "{PARKED}");
}

// ---------------------------------------------------------------------------------------------
// Controls: the same drops without resume
// ---------------------------------------------------------------------------------------------

/// Control for the tests above: without `resume.paths` the sidecar behaves as before. A client
/// reset after 5 of 50 events closes the app's connection within 250 ms (the app stops early),
/// the ids are the app's own, and a reconnect with the last id reaches the app as a fresh
/// request carrying that id: the app's events after 5 are lost to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_resume_paths_loses_the_events() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let mut first = open(sc.addr, "GET", FIFTY_IDS, &[], None).await;
    let seen = take(&mut first, 5, "first").await;
    assert_eq!(
        seen[4].id, "5",
        "no resume: the app's own ids pass unchanged"
    );
    let left = now_ns();
    reset(first);
    let rec = origin.wait_closed(FIFTY_IDS, Duration::from_secs(2)).await;
    let after = rec.closed_ns.unwrap().saturating_sub(left);
    assert!(
        after < 250_000_000,
        "the app's connection closed {:.0} ms after the client left",
        ms(after)
    );
    assert!(rec.events_sent.len() < 50, "the app stopped early: {rec:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut again = reconnect(sc.addr, FIFTY_IDS, "5", &[]).await;
    let got = take(&mut again, 3, "reconnect").await;
    assert_eq!(
        got.iter().map(Event::seq).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)],
        "the app starts over: events 6.. of the first stream are lost"
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 2, "the reconnect reached the app: {reqs:#?}");
    assert_eq!(reqs[1].header("last-event-id"), Some("5"));
    assert_eq!(metric0(&sc, RESUMED).await, 0.0, "{RESUMED}");
}

/// A client attached to a resumable stream that stops reading holds the app back, as on any
/// stream (the log never runs a whole buffer ahead of it); once `sse.write_timeout` drops the
/// client, the stream parks and the app is read again, into the bounded buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_the_app_back_until_it_is_dropped() {
    let origin = Origin::start().await;
    let yaml = "resume:\n  paths: [\"/\"]\n  max_bytes: 64KiB\nsse:\n  write_timeout: 2s\n";
    let sc = with_config(&origin, yaml).await;
    let target = "/sse?events=3000&interval_ms=0&pad=16384&id=1";
    let mut reader = open(sc.addr, "GET", target, &[], None).await;
    take(&mut reader, 1, "the first event").await;
    // The client reads no more: the app may only run socket buffers and one log ahead.
    let sent = || {
        origin.inspect(|reqs| {
            reqs.iter()
                .find(|r| r.target == target)
                .map_or(0, |r| r.body_sent.len() as u64)
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let held = sent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(), held, "the app kept writing past a stalled client");
    assert!(
        held < 16 * MIB,
        "the app wrote {} MiB before being held back",
        held / MIB
    );
    // After the write timeout the client is dropped, the stream parks, and the app finishes.
    let end = Instant::now() + Duration::from_secs(30);
    while sent() < 45 * MIB {
        assert!(
            Instant::now() < end,
            "a parked stream must be read again: the app wrote {} MiB",
            sent() / MIB
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric0(&sc, "sse_sidecar_resume_buffer_bytes").await <= (64 * KIB + 20 * KIB) as f64);
    drop(reader);
}
