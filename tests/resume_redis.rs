//! Resume across replicas and through deploys on Redis Streams (issue 16), black-box: a real
//! `redis-server` started by the test on a free port, two sidecars sharing it, the in-process
//! origin as the app, and the raw client.
//!
//! Run: `cargo test --release --test resume_redis` (needs redis-server; `make test` installs it).

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::resume::*;
use common::sidecar::run_cli;
use common::sse::{Event, ResumeId};
use common::{eventually, now_ns, Origin, Sidecar};

const T: Duration = Duration::from_secs(5);

/// The config of both replicas: every path resumable on the shared store, a short drain.
fn config(redis: &RedisServer, extra: &str) -> String {
    format!(
        "resume:\n  paths: [\"/\"]\n  store: {}\n  grace: 10s\nshutdown:\n  drain_window: 300ms\n  handoff_timeout: 30s\n{extra}",
        redis.url()
    )
}

async fn store_up(s: &Sidecar) -> f64 {
    s.metric("sse_sidecar_resume_store_up").await
}

/// A sidecar on the shared store, once it sees the store up (5 s at most).
async fn replica(origin: &Origin, redis: &RedisServer, extra: &str, pid: Option<&str>) -> Sidecar {
    let mut b = Sidecar::builder(&origin.url()).config(&config(redis, extra));
    if let Some(p) = pid {
        b = b.env("SSE_SIDECAR_PID_FILE", p);
    }
    if redis.url().starts_with("rediss://") {
        // rustls-native-certs trusts the file SSL_CERT_FILE names instead of the system's.
        b = b.env("SSL_CERT_FILE", redis.ca_file().to_str().unwrap());
    }
    let s = b.start().await;
    let end = Instant::now() + T;
    while store_up(&s).await != 1.0 {
        assert!(
            Instant::now() < end,
            "the store is not up after 5 s: {}",
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s
}

fn token_of(e: &Event) -> String {
    resume_id(e, "event").token
}

/// The first test: 10 of 100 events on replica A, a reset, the rest on replica B,
/// each exactly once and in order; the app saw one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_on_another_replica() {
    let (origin, redis) = (Origin::start().await, RedisServer::start().await);
    let a = replica(&origin, &redis, "", None).await;
    let b = replica(&origin, &redis, "", None).await;
    let target = "/sse?events=100&interval_ms=20&id=1";
    let mut s = open(a.addr, "GET", target, &[], None).await;
    let first = take(&mut s, 10, "on A").await;
    let last = first[9].id.clone();
    reset(s);

    let mut r = reconnect(b.addr, target, &last, &[]).await;
    let (rest, end) = read_rest(&mut r).await;
    assert!(end.is_some_and(|e| e.is_clean()), "{:?}", r.ended());
    let app = origin.requests_to("/sse");
    assert_eq!(app.len(), 1, "the app saw one request");
    assert_rest(&r.bytes, &rest, &app[0], 11, &token_of(&first[0]), "on B");
    assert_eq!(
        b.metric("sse_sidecar_resumes_total{result=\"resumed\"}")
            .await,
        1.0
    );
}

/// The same over TLS (`rediss://`), trusting the server's certificate through
/// `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_on_another_replica_over_rediss() {
    let (origin, redis) = (Origin::start().await, RedisServer::start_tls().await);
    let a = replica(&origin, &redis, "", None).await;
    let b = replica(&origin, &redis, "", None).await;
    let target = "/sse?events=20&interval_ms=20";
    let mut s = open(a.addr, "GET", target, &[], None).await;
    let first = take(&mut s, 5, "on A").await;
    reset(s);
    let mut r = reconnect(b.addr, target, &first[4].id, &[]).await;
    let (rest, end) = read_rest(&mut r).await;
    assert!(end.is_some_and(|e| e.is_clean()), "{:?}", r.ended());
    let app = origin.requests_to("/sse");
    assert_eq!(app.len(), 1, "the app saw one request");
    assert_rest(&r.bytes, &rest, &app[0], 6, &token_of(&first[0]), "on B");
}

/// A deploy: SIGTERM to A in the middle of a 30-event answer. The client gets its `retry:`,
/// resumes on B and assembles the whole answer exactly once; A relays the rest of the app's
/// stream into Redis and exits when the app's stream ends, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_stream_off_to_another_replica() {
    let (origin, redis) = (Origin::start().await, RedisServer::start().await);
    let mut a = replica(&origin, &redis, "", None).await;
    let b = replica(&origin, &redis, "", None).await;
    let target = "/sse?events=30&interval_ms=100&last_event=done";
    let mut s = open(a.addr, "GET", target, &[], None).await;
    take(&mut s, 5, "on A").await;
    a.sigterm();
    handed_off(&origin, &mut a, &b, s, target).await;
}

/// The same hand-off started by `sse-sidecar drain --wait`, which returns once A has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_hands_the_stream_off() {
    let (origin, redis) = (Origin::start().await, RedisServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let pid = dir.path().join("a.pid").to_str().unwrap().to_string();
    let mut a = replica(&origin, &redis, "", Some(&pid)).await;
    let b = replica(&origin, &redis, "", None).await;
    eventually(T, "A's pid file", || {
        std::fs::read_to_string(&pid).is_ok_and(|t| t.trim() == a.pid().to_string())
    })
    .await;
    let target = "/sse?events=30&interval_ms=100&last_event=done";
    let mut s = open(a.addr, "GET", target, &[], None).await;
    take(&mut s, 5, "on A").await;
    let pid2 = pid.clone();
    let drain = tokio::task::spawn_blocking(move || {
        let out = run_cli(
            &["drain", "--wait", "--timeout", "30s", "--pid-file", &pid2],
            &[],
        );
        (out.status, now_ns())
    });
    handed_off(&origin, &mut a, &b, s, target).await;
    let (status, returned) = drain.await.unwrap();
    assert!(status.success(), "drain --wait: {status:?}");
    let app = &origin.requests_to("/sse")[0];
    let last_sent = app.events_sent.last().expect("the app's events").1;
    assert!(
        returned >= last_sent,
        "drain --wait returned before the handed-off stream ended"
    );
}

/// The rest of a drain with hand-off, from A's client being closed to A's exit.
async fn handed_off(
    origin: &Origin,
    a: &mut Sidecar,
    b: &Sidecar,
    mut s: SseStreamT,
    target: &str,
) {
    let (on_a, end) = read_rest(&mut s).await;
    assert!(
        end.is_some_and(|e| e.is_clean()),
        "A closed its client cleanly"
    );
    assert!(
        s.bytes.windows(7).any(|w| w == b"retry: "),
        "A's client got a retry hint"
    );
    assert!(on_a.len() < 30, "the drain closed the client mid-answer");
    assert!(
        a.try_exit().is_none(),
        "A exited while the app's stream was still running"
    );
    let last = on_a.last().expect("events on A").id.clone();
    let mut r = reconnect(b.addr, target, &last, &[]).await;
    let (rest, end) = read_rest(&mut r).await;
    assert!(end.is_some_and(|e| e.is_clean()), "{:?}", r.ended());
    let app = origin.requests_to("/sse");
    assert_eq!(app.len(), 1, "the app saw one request");
    let from = on_a.len() as u64 + 1;
    assert_rest(&r.bytes, &rest, &app[0], from, &token_of(&on_a[0]), "on B");
    assert_eq!(rest.last().unwrap().event, "done", "the whole answer");
    let status = a.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "A exits (0) once the handed-off stream ended: {status:?}\n{}",
        a.stderr()
    );
}

type SseStreamT = common::sse::SseStream;

/// Redis killed mid-stream: the live stream goes on undelayed, new streams work without
/// resume, a resume goes to the app; Redis back: new streams are resumable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_never_takes_streams_down() {
    let (origin, mut redis) = (Origin::start().await, RedisServer::start().await);
    let a = replica(&origin, &redis, "", None).await;
    let target = "/sse?events=120&interval_ms=50";
    let mut live = open(a.addr, "GET", target, &[], None).await;
    let before = take(&mut live, 5, "before the outage").await;
    let mut seqs: Vec<u64> = before.iter().filter_map(Event::seq).collect();
    let token = token_of(&before[0]);

    redis.stop();
    let gone = Instant::now();
    let mut delays = Vec::new();
    let mut seen_down = None;
    let mut fresh_checked = false;
    while delays.len() < 60 {
        let (e, at) = live.next_event(T).await.expect("the live stream goes on");
        delays.push(at.saturating_sub(e.t_ns().unwrap()) / 1_000_000);
        seqs.extend(e.seq());
        if seen_down.is_none() && store_up(&a).await == 0.0 {
            seen_down = Some(gone.elapsed());
        }
        if seen_down.is_some() && !fresh_checked {
            fresh_checked = true;
            // New streams flow, without resume.
            let mut n = open(a.addr, "GET", "/sse?events=2&interval_ms=10", &[], None).await;
            let got = take(&mut n, 2, "a new stream during the outage").await;
            assert!(
                got.iter().all(|e| ResumeId::parse(&e.id).is_none()),
                "a new stream during the outage is not resumable: {got:?}"
            );
            // A resume cannot be looked up: a fresh request for the app.
            let id = format!("{token}.3");
            let mut f = reconnect(a.addr, "/sse?events=1", &id, &[]).await;
            take(&mut f, 1, "a resume during the outage").await;
            assert_eq!(origin.requests_to("/sse").len(), 3);
        }
    }
    let seen_down = seen_down.expect("resume_store_up went to 0");
    assert!(seen_down < T, "up went to 0 after {seen_down:?}");
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no event lost or repeated through the outage"
    );
    let worst = delays.iter().max().copied().unwrap_or(0);
    assert!(
        worst < 100,
        "an event was delayed {worst} ms by the outage: {delays:?}"
    );
    assert!(
        a.metric("sse_sidecar_resume_store_errors_total{op=\"ping\"}")
            .await
            >= 1.0
    );

    redis.restart().await;
    let back = Instant::now();
    while store_up(&a).await != 1.0 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut n = open(a.addr, "GET", "/sse?events=2&interval_ms=10", &[], None).await;
    let got = take(&mut n, 2, "a new stream after the outage").await;
    assert!(
        ResumeId::parse(&got[0].id).is_some(),
        "resumable again: {got:?}"
    );
    let (_, end) = read_rest(&mut live).await;
    assert!(
        end.is_some_and(|e| e.is_clean()),
        "the live stream ended cleanly"
    );
}

/// Another client holding the id on replica B: no replay, a fresh request for the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_credentials_get_no_replay_on_another_replica() {
    let (origin, redis) = (Origin::start().await, RedisServer::start().await);
    let a = replica(&origin, &redis, "", None).await;
    let b = replica(&origin, &redis, "", None).await;
    let target = "/sse?events=50&interval_ms=20";
    let mine = [("Authorization", "Bearer alice")];
    let mut s = open(a.addr, "GET", target, &mine, None).await;
    let got = take(&mut s, 3, "alice on A").await;
    reset(s);
    let theirs = [("Authorization", "Bearer mallory")];
    let mut r = reconnect(b.addr, target, &got[2].id, &theirs).await;
    let e = take(&mut r, 1, "mallory on B").await;
    assert_eq!(
        e[0].seq(),
        Some(1),
        "a fresh stream from the app, not alice's"
    );
    assert_eq!(origin.requests_to("/sse").len(), 2);
    assert_eq!(
        b.metric("sse_sidecar_resumes_total{result=\"denied\"}")
            .await,
        1.0
    );
}

/// Redis's memory is bounded: a stream's events are trimmed to about `resume.max_bytes`,
/// every key has a TTL of `resume.grace`, and the keys are gone `grace` after the stream
/// ended, or after its replica was killed mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_trimmed_and_expire() {
    let (origin, redis) = (Origin::start().await, RedisServer::start().await);
    let extra = "";
    let cfg = config(&redis, extra).replace(
        "grace: 10s",
        "grace: 2s\n  max_bytes: 4KiB\n  max_total_bytes: 1MiB",
    );
    let a = Sidecar::builder(&origin.url()).config(&cfg).start().await;
    while store_up(&a).await != 1.0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 300 events of ~540 bytes: 160 KiB in all, 4 KiB kept.
    let mut s = open(
        a.addr,
        "GET",
        "/sse?events=300&interval_ms=5&pad=500",
        &[],
        None,
    )
    .await;
    let got = take(&mut s, 250, "the stream").await;
    let token = token_of(&got[0]);
    let events = format!("sse-sidecar:{{{token}}}:events");
    let meta = format!("sse-sidecar:{{{token}}}:meta");
    let xlen: u64 = redis.cli(&["XLEN", &events]).parse().unwrap();
    assert!(
        (1..=24).contains(&xlen),
        "{xlen} entries kept for 4 KiB of ~540-byte events"
    );
    for key in [&events, &meta] {
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        assert!((1..=2000).contains(&ttl), "{key} has TTL {ttl} ms");
    }
    let (_, end) = read_rest(&mut s).await;
    assert!(end.is_some_and(|e| e.is_clean()));
    let ended = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the keys expire after the grace",
        || redis.keys().is_empty(),
    )
    .await;
    assert!(
        ended.elapsed() >= Duration::from_millis(1500),
        "kept for the grace"
    );

    // A replica killed mid-stream leaves nothing behind for longer than the grace.
    let mut s = open(a.addr, "GET", "/sse?events=1000&interval_ms=20", &[], None).await;
    take(&mut s, 3, "the second stream").await;
    assert!(!redis.keys().is_empty(), "the stream is in Redis");
    a.sigkill();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(5),
        "a killed replica's keys expire",
        || redis.keys().is_empty(),
    )
    .await;
    assert!(killed.elapsed() < Duration::from_secs(4));
}
