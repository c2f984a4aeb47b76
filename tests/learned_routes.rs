//! Learned SSE routes (`sse.learn`, issue 17 part 1) and the normal-path fixes that came with
//! them, over real sockets: the real `sse-sidecar` binary in front of the in-process origin,
//! and in front of a real Express app with `compression()` streamed to by Node's `fetch()`.
//!
//! The Express tests need node and the npm packages of tests/browser/ (`express`,
//! `compression`): `scripts/install-browser-deps.sh` installs them (`make test` does). Without
//! them they fail saying so; `SSE_SIDECAR_SKIP_BROWSER=1` skips them with a loud note instead.
//!
//! Run: `cargo test --release --test learned_routes`

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::client;
use common::node::{node_dir, require_packages, skipped};
use common::origin::RequestRecord;
use common::process::Process;
use common::sidecar::run_cli;
use common::sse::SseStream;
use common::{Origin, Sidecar};

const T: Duration = Duration::from_secs(5);
const HEX: &str = "8f14e45fceea167a5a36dedd4bea2543";
/// What a chat UI's `fetch()` sends instead of `Accept: text/event-stream`.
const FETCH: [(&str, &str); 3] = [
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Content-Type", "application/json"),
];

const LEARNED: &str = "sse_sidecar_learned_routes";
const SSE_2XX: &str = "sse_sidecar_requests_total{code=\"2xx\",kind=\"sse\"}";
const UNLEARNED_2XX: &str = "sse_sidecar_requests_total{code=\"2xx\",kind=\"sse_unlearned\"}";

/// POSTs `target` as a fetch() client would and reads the whole answer.
async fn post(addr: SocketAddr, target: &str) -> SseStream {
    let req = client::request("POST", target, &FETCH, Some(b"{\"prompt\":\"hi\"}"));
    let mut s = SseStream::new(client::send(addr, &req, "POST").await);
    let end = s.read_to_end(T).await;
    assert!(
        end.as_ref().is_some_and(|e| e.is_clean()),
        "POST {target}: the body did not end cleanly ({end:?})"
    );
    s
}

/// Whether the client's stream came through a relay: it opens with the sidecar's `: ok`.
fn relayed(s: &SseStream) -> bool {
    s.comments().iter().any(|(c, _)| c.trim() == "ok")
}

/// The one request the origin saw for `target` (a full target, query included).
async fn seen(origin: &Origin, target: &str) -> RequestRecord {
    origin.wait_request(target, T).await
}

/// Waits until the series `series` of `sc`'s `/metrics` is `want`.
async fn wait_metric(sc: &Sidecar, series: &str, want: f64) {
    let end = Instant::now() + T;
    loop {
        let got = sc.metric(series).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{series} is {got}, want {want}\n{}",
            sc.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines of the sidecar's stderr containing `needle`.
fn log_lines(sc: &Sidecar, needle: &str) -> Vec<String> {
    sc.stderr()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// With the in-process origin
// ---------------------------------------------------------------------------------------------

/// A fetch()-style POST answered with an event stream teaches the sidecar its route: the first
/// request went through pingora's normal path unprepared (the app saw `Accept-Encoding`, no
/// opening comment), every later one is relayed (no `Accept-Encoding`, the opening comment).
/// Its id segment is generalised, so other ids — hex, digits, a UUID, over HTTP/1 and h2c —
/// are the same route, learned once; a word in the id's place is another route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_with_an_id_segment_is_learned_once_for_all_ids() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let q = "?events=2&interval_ms=5";

    let first = format!("/sse/{HEX}/stream{q}");
    let s = post(sc.addr, &first).await;
    assert!(!relayed(&s), "the first request is not a candidate yet");
    assert_eq!(s.events().len(), 2);
    assert!(
        seen(&origin, &first).await.has_header("accept-encoding"),
        "unprepared: the app saw Accept-Encoding"
    );
    wait_metric(&sc, LEARNED, 1.0).await;
    wait_metric(&sc, UNLEARNED_2XX, 1.0).await;

    let others = [
        "0d9b2c4e6f8a1357acef0246bdf13579".to_string(),
        "42".to_string(),
        "550e8400-e29b-41d4-a716-446655440000".to_string(),
    ];
    for id in &others {
        let target = format!("/sse/{id}/stream{q}");
        let s = post(sc.addr, &target).await;
        assert!(relayed(&s), "{target}: relayed as a learned route");
        assert_eq!(s.events().len(), 2, "{target}");
        let rec = seen(&origin, &target).await;
        assert_eq!(
            rec.header("accept-encoding"),
            None,
            "{target}: Accept-Encoding removed: {rec:?}"
        );
    }
    // h2c goes through pingora's request_filter, which reads the same table.
    let target = format!("/sse/77/stream{q}");
    let mut h2 = common::h2c::H2Conn::connect(sc.addr).await;
    let mut r = h2
        .request("POST", &target, &FETCH, Some(b"{\"prompt\":\"hi\"}"))
        .await;
    assert_eq!(r.status(), 200);
    while r.next_data(T).await.is_some() {}
    assert_eq!(
        seen(&origin, &target).await.header("accept-encoding"),
        None,
        "h2c: Accept-Encoding removed"
    );

    wait_metric(&sc, SSE_2XX, 4.0).await;
    assert_eq!(sc.metric(LEARNED).await, 1.0, "one route for every id");
    assert_eq!(sc.metric(UNLEARNED_2XX).await, 1.0);
    let learned = log_lines(&sc, "learned an SSE route");
    assert_eq!(learned.len(), 1, "logged once: {learned:#?}");
    assert!(
        learned[0].contains("POST /sse/{id}/stream")
            && learned[0].contains("sse.paths: [\"/sse/\"]"),
        "names the route and the sse.paths line: {}",
        learned[0]
    );

    // A word where the id was is another route, not learned yet.
    let word = format!("/sse/hello/stream{q}");
    let s = post(sc.addr, &word).await;
    assert!(!relayed(&s), "{word} is not the learned route");
    assert!(seen(&origin, &word).await.has_header("accept-encoding"));
    wait_metric(&sc, LEARNED, 2.0).await;
}

/// A learned route that then answers three times in a row with something else than an event
/// stream is forgotten: the next request goes down the normal path again (and teaches the
/// route anew when it streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_is_forgotten_after_three_answers_that_are_not_streams() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let stream = |n: usize| format!("/sse?events=1&n={n}");
    let json = |n: usize| format!("/sse?events=1&ct=application/json&n={n}");

    post(sc.addr, &stream(1)).await;
    wait_metric(&sc, LEARNED, 1.0).await;
    // A miss, a stream (the count starts again), then three misses.
    for (i, target) in [json(2), stream(3), json(4), json(5), json(6)]
        .iter()
        .enumerate()
    {
        let s = post(sc.addr, target).await;
        let rec = seen(&origin, target).await;
        assert_eq!(
            rec.header("accept-encoding"),
            None,
            "request {}: {target} is relayed while the route is learned",
            i + 2
        );
        assert_eq!(s.resp.status(), 200);
    }
    wait_metric(&sc, LEARNED, 0.0).await;
    let forgot = log_lines(&sc, "forgot a learned SSE route");
    assert_eq!(forgot.len(), 1, "{forgot:#?}");
    assert!(forgot[0].contains("POST /sse"), "{}", forgot[0]);

    let s = post(sc.addr, &stream(7)).await;
    assert!(!relayed(&s), "forgotten: the normal path again");
    assert!(seen(&origin, &stream(7))
        .await
        .has_header("accept-encoding"));
    wait_metric(&sc, LEARNED, 1.0).await;
    assert_eq!(log_lines(&sc, "learned an SSE route").len(), 2);
}

/// With `sse.learn: off` nothing is learned: every fetch()-style request to a streaming route
/// reaches the app with `Accept-Encoding` and goes down the normal path, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_off_keeps_every_request_on_the_normal_path() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  learn: off\n")
        .start()
        .await;
    for n in 1..=3 {
        let target = format!("/sse?events=1&n={n}");
        let s = post(sc.addr, &target).await;
        assert!(!relayed(&s), "request {n} is not relayed");
        assert!(seen(&origin, &target).await.has_header("accept-encoding"));
    }
    wait_metric(&sc, UNLEARNED_2XX, 3.0).await;
    assert_eq!(sc.metric(LEARNED).await, 0.0);
    assert_eq!(sc.metric(SSE_2XX).await, 0.0);
    assert!(log_lines(&sc, "learned an SSE route").is_empty());
}

/// An event stream on pingora's normal path reaches the client without the app's hop-by-hop
/// fields (`Keep-Alive`, fields its `Connection` names); the only `Connection` left is
/// pingora's own for the client's connection. Its access-log line and its count say
/// `sse_unlearned`, since it was not relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_path_stream_drops_hop_by_hop_fields_and_is_logged_unlearned() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  learn: off\n")
        .env("RUST_LOG", "info")
        .start()
        .await;
    let target = "/sse?events=2&h=Keep-Alive:timeout%3D5&h=Connection:keep-alive,X-App-Hop&h=X-App-Hop:1&h=X-End-To-End:yes";
    let req = client::request("GET", target, &[], None);
    let mut s = SseStream::new(client::send(sc.addr, &req, "GET").await);
    assert!(s.read_to_end(T).await.is_some_and(|e| e.is_clean()));
    let head = &s.resp.head;
    let raw = String::from_utf8_lossy(&head.raw).into_owned();
    assert_eq!(head.status, 200, "{raw}");
    assert_eq!(head.header("x-accel-buffering"), Some("no"), "{raw}");
    assert!(!head.has("keep-alive"), "the app's Keep-Alive: {raw}");
    assert!(!head.has("x-app-hop"), "a field Connection named: {raw}");
    assert_eq!(head.header("x-end-to-end"), Some("yes"), "{raw}");
    for token in head.tokens("connection") {
        assert!(
            token == "keep-alive" || token == "close",
            "Connection {token:?} is not pingora's own: {raw}"
        );
    }
    assert_eq!(s.events().len(), 2);

    wait_metric(&sc, UNLEARNED_2XX, 1.0).await;
    assert_eq!(sc.metric(SSE_2XX).await, 0.0);
    let end = Instant::now() + T;
    let line = loop {
        let lines = log_lines(&sc, "path=/sse ");
        if let Some(l) = lines.into_iter().next() {
            break l;
        }
        assert!(Instant::now() < end, "no access line:\n{}", sc.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains("kind=sse_unlearned"), "{line}");
}

/// `sse.learn` is on by default, and is set by the file, `SSE_SIDECAR_SSE_LEARN` and
/// `--sse-learn` in that order of precedence; `check` names a bad value.
#[test]
fn sse_learn_setting() {
    let learn = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["print-config"];
        all.extend(args);
        let out = run_cli(&all, env);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?} {env:?}: {out:?}");
        let y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        y["sse"]["learn"].as_str().unwrap_or_default().to_string()
    };
    let (_dir, path) = common::sidecar::temp_file("c.yaml", "sse:\n  learn: off\n");
    let file = path.to_str().unwrap();
    assert_eq!(learn(&[], &[]), "on", "default");
    assert_eq!(learn(&["--config", file], &[]), "off", "file");
    let env_on = [("SSE_SIDECAR_SSE_LEARN", "on")];
    assert_eq!(learn(&["--config", file], &env_on), "on", "env beats file");
    assert_eq!(
        learn(&["--config", file, "--sse-learn", "off"], &env_on),
        "off",
        "flag beats env"
    );

    let (_dir, bad) = common::sidecar::temp_file("bad.yaml", "sse:\n  learn: maybe\n");
    let out = run_cli(&["check", "--config", bad.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sse.learn") && err.contains("maybe") && err.contains("on, off"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real Express app with compression(), and Node's fetch()
// ---------------------------------------------------------------------------------------------

/// tests/browser/express-app.mjs on a free port.
async fn start_express(dir: &std::path::Path) -> (Process, SocketAddr) {
    let port_file = dir.join("express.port");
    let log = dir.join("express.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new("node")
        .arg(node_dir().join("express-app.mjs"))
        .arg(&port_file)
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn node express-app.mjs");
    let mut p = Process::new("express app", child, log);
    // The app picks its port (port 0) and says which.
    let port: u16 = common::wait_for(Duration::from_secs(10), "express app's port", || {
        std::fs::read_to_string(&port_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if let Err(e) = p.wait_listening(addr, Duration::from_secs(10)).await {
        panic!("{e}");
    }
    (p, addr)
}

/// One request as tests/browser/fetch-stream.mjs saw it.
#[derive(Debug)]
struct Fetched {
    content_encoding: Option<String>,
    keep_alive: Option<String>,
    /// Arrival of each event, ms after the request was sent.
    arrivals: Vec<f64>,
}

impl Fetched {
    /// Last arrival minus first: ~0 for a held stream, ~11 × 150 ms streamed.
    fn spread_ms(&self) -> f64 {
        self.arrivals.last().unwrap_or(&0.0) - self.arrivals.first().unwrap_or(&0.0)
    }

    /// Gaps between consecutive arrivals.
    fn gaps_ms(&self) -> Vec<f64> {
        self.arrivals.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Runs fetch-stream.mjs for `count` POSTs to `url` (30 s at most) and returns what it saw.
async fn fetch_posts(url: &str, count: usize, dir: &std::path::Path) -> Vec<Fetched> {
    let stderr = dir.join("fetch.stderr");
    let mut child = Command::new("node")
        .arg(node_dir().join("fetch-stream.mjs"))
        .args([url, &count.to_string()])
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn node fetch-stream.mjs");
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fetch-stream.mjs did not finish within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let why = || {
        format!(
            "fetch-stream.mjs ({}):\n{text}\nstderr:\n{}",
            out.status,
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    };
    assert!(out.status.success(), "{}", why());
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {}", why())))
        .collect();
    assert_eq!(lines.len(), count, "{}", why());
    lines
        .iter()
        .map(|v| {
            assert_eq!(v["status"], 200, "{v}");
            assert_eq!(v["contentType"], "text/event-stream", "{v}");
            assert_eq!(v["events"], 12, "every token arrived: {v}");
            Fetched {
                content_encoding: v["contentEncoding"].as_str().map(str::to_string),
                keep_alive: v["keepAlive"].as_str().map(str::to_string),
                arrivals: v["arrivals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_f64().unwrap())
                    .collect(),
            }
        })
        .collect()
}

/// Express with `app.use(compression())`, 12 tokens 150 ms apart to a POST, read by Node's
/// fetch() (`Accept: */*`, `Accept-Encoding: gzip, deflate`) through a sidecar with no
/// configuration: the first answer may be held by the compression (it is not an SSE
/// candidate yet), but from the second request on the tokens arrive one by one at the app's
/// cadence, uncompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_compression_fetch_post_streams_from_the_second_request() {
    if skipped("express_compression_fetch_post_streams_from_the_second_request") {
        return;
    }
    require_packages(&["express", "compression"]);
    let dir = tempfile::tempdir().unwrap();
    let (_app, app_addr) = start_express(dir.path()).await;
    let sc = Sidecar::start(&format!("http://{app_addr}")).await;
    let url = format!("http://{}/api/chat", sc.addr);
    let got = fetch_posts(&url, 3, dir.path()).await;
    for (i, f) in got.iter().enumerate() {
        eprintln!(
            "learn on, request {}: spread {:.0} ms, encoding {:?}, gaps {:?}",
            i + 1,
            f.spread_ms(),
            f.content_encoding,
            f.gaps_ms()
        );
    }
    assert_eq!(got[0].keep_alive, None, "the app's Keep-Alive stripped");
    for (i, f) in got.iter().enumerate().skip(1) {
        let n = i + 1;
        assert_eq!(f.content_encoding, None, "request {n} uncompressed: {f:?}");
        // 11 gaps of 150 ms: 1,650 ms. Bounds are loose for a loaded 2-core machine.
        let spread = f.spread_ms();
        assert!(
            (1_000.0..4_000.0).contains(&spread),
            "request {n}: tokens spread over {spread:.0} ms, want ~1650: {f:?}"
        );
        let steady = f.gaps_ms().iter().filter(|g| **g >= 60.0).count();
        assert!(
            steady >= 9,
            "request {n}: only {steady} of 11 gaps >= 60 ms, tokens bunched: {f:?}"
        );
    }
    wait_metric(&sc, LEARNED, 1.0).await;
    wait_metric(&sc, SSE_2XX, 2.0).await;
    assert_eq!(sc.metric(UNLEARNED_2XX).await, 1.0);
    let learned = log_lines(&sc, "learned an SSE route");
    assert!(
        learned.len() == 1 && learned[0].contains("sse.paths: [\"/api/chat\"]"),
        "{learned:#?}"
    );
}

/// The control for the test above: with `sse.learn: off` the second request is held too —
/// compressed, every token arriving at once at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_compression_fetch_post_is_held_without_learning() {
    if skipped("express_compression_fetch_post_is_held_without_learning") {
        return;
    }
    require_packages(&["express", "compression"]);
    let dir = tempfile::tempdir().unwrap();
    let (_app, app_addr) = start_express(dir.path()).await;
    let sc = Sidecar::builder(&format!("http://{app_addr}"))
        .args(&["--sse-learn", "off"])
        .start()
        .await;
    let url = format!("http://{}/api/chat/{HEX}/stream", sc.addr);
    let got = fetch_posts(&url, 2, dir.path()).await;
    for (i, f) in got.iter().enumerate() {
        eprintln!(
            "learn off, request {}: spread {:.0} ms, encoding {:?}",
            i + 1,
            f.spread_ms(),
            f.content_encoding
        );
    }
    let second = &got[1];
    assert!(
        second.content_encoding.is_some(),
        "the app compressed: {second:?}"
    );
    assert!(
        second.spread_ms() < 300.0,
        "held: every token at once, not spread over {:.0} ms: {second:?}",
        second.spread_ms()
    );
    assert_eq!(sc.metric(LEARNED).await, 0.0);
    wait_metric(&sc, UNLEARNED_2XX, 2.0).await;
}
