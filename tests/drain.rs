//! `sse-sidecar drain` (issue 16 §4): the drain of a running sidecar started from the same
//! host, through its pid file, with no network endpoint.
//!
//! Run: `cargo test --release --test drain`

mod common;

use std::time::Duration;

use common::client;
use common::sidecar::run_cli;
use common::sse::SseStream;
use common::{eventually, Origin, Sidecar};

const T: Duration = Duration::from_secs(5);

/// `drain --wait` finds the sidecar through its pid file, drains it exactly as SIGTERM does
/// (the open stream gets a `retry:` hint and a clean end), and returns once it has exited; a
/// second sidecar with its own pid file is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_drains_the_sidecar_of_its_pid_file_and_no_other() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (pid_a, pid_b) = (dir.path().join("a.pid"), dir.path().join("b.pid"));
    let pid_file = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let mut a = Sidecar::builder(&origin.url())
        .env("SSE_SIDECAR_PID_FILE", &pid_file(&pid_a))
        .config("shutdown:\n  drain_window: 500ms\n")
        .start()
        .await;
    let mut b = Sidecar::builder(&origin.url())
        .env("SSE_SIDECAR_PID_FILE", &pid_file(&pid_b))
        .start()
        .await;
    let written = |p: &std::path::Path, pid: i32| {
        std::fs::read_to_string(p).is_ok_and(|t| t.trim() == pid.to_string())
    };
    eventually(T, "both pid files written", || {
        written(&pid_a, a.pid()) && written(&pid_b, b.pid())
    })
    .await;

    let req = client::request(
        "GET",
        "/sse?events=100&interval_ms=100",
        &[("Accept", "text/event-stream")],
        None,
    );
    let mut stream = SseStream::new(client::send(a.addr, &req, "GET").await);
    stream.next_event(T).await.expect("a first event");

    let out = run_cli(
        &["drain", "--wait", "--timeout", "20s"],
        &[("SSE_SIDECAR_PID_FILE", &pid_file(&pid_a))],
    );
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drain --wait failed: {said}");
    assert!(said.contains("exited"), "{said}");
    assert!(
        a.try_exit().is_some(),
        "drain --wait returned before the sidecar exited"
    );
    assert!(stream.read_to_end(T).await.is_some_and(|e| e.is_clean()));
    assert!(
        stream.bytes.windows(7).any(|w| w == b"retry: "),
        "the stream was drained with a retry hint"
    );
    assert!(b.try_exit().is_none(), "the other sidecar was stopped too");
    assert_eq!(client::get(b.addr, "/json?size=3", &[]).await.status(), 200);
}

/// No pid file, or one whose process is not a sidecar: exit 2 naming the problem and
/// signalling nobody. `--timeout` passing first: exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_names_what_it_could_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pid");
    let out = run_cli(&["drain", "--pid-file", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pid"));

    let stranger = dir.path().join("stranger.pid");
    std::fs::write(&stranger, format!("{}\n", std::process::id())).unwrap();
    let out = run_cli(&["drain", "--pid-file", stranger.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a running sse-sidecar"));

    // A request in flight keeps the sidecar draining, so it outlives a short --timeout. (Not
    // an open stream: a stream's close falls anywhere in the drain window, and 1.5 % of the
    // time within the first 300 ms of a 20 s one, when the sidecar exited first.)
    let origin = Origin::start().await;
    let pid = dir.path().join("slow.pid");
    let sc = Sidecar::builder(&origin.url())
        .env("SSE_SIDECAR_PID_FILE", pid.to_str().unwrap())
        .start()
        .await;
    eventually(T, "pid file written", || pid.exists()).await;
    let addr = sc.addr;
    let in_flight =
        tokio::spawn(async move { client::get(addr, "/slow_headers?ms=3000", &[]).await });
    origin.wait_request("/slow_headers", T).await;
    let out = run_cli(
        &["drain", "--wait", "--timeout", "300ms"],
        &[("SSE_SIDECAR_PID_FILE", pid.to_str().unwrap())],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("still draining"));
    in_flight.abort();
}
