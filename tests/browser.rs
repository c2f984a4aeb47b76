//! Real clients, end to end (issue 7 §4): headless Chromium on the demo page through the
//! sidecar, across a sidecar restart, and Node's `eventsource` package on the same stream.
//! Resumable streams (issue 15): Chromium's EventSource and a fetch-based client that resends
//! `Last-Event-ID`, through the connection-cutting proxy of tests/common/cutter.rs.
//!
//! The app is the real demo origin (examples/demo_origin.rs, built by `cargo test`, or
//! `cargo build --release --example demo_origin`), or for the resume tests the in-process
//! scriptable origin; the sidecar is the real binary. The node scripts in tests/browser/ drive
//! the clients and report JSON lines; the assertions are here.
//!
//! Needs Debian's `chromium`, node >= 20 and the npm packages of tests/browser/:
//! `scripts/install-browser-deps.sh` installs them (`make test` does). Without them the tests
//! fail saying so; `SSE_SIDECAR_SKIP_BROWSER=1` skips them with a loud note instead.
//! Screenshots of the page land in `target/tmp/browser/` (`CARGO_TARGET_TMPDIR`).
//!
//! Run: `cargo build --release --example demo_origin && cargo test --release --test browser`

mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::cutter::Cutter;
use common::node::{node_dir, require_packages, skipped, INSTALL_HINT};
use common::process::Process;
use common::sidecar::command;
use common::sse::{self, Item, ResumeId};
use common::{free_port, Origin, Sidecar};

/// Where Debian's package puts the browser (playwright's own download does not work here).
const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails unless node, the npm packages and (when `browser`) Chromium are installed.
fn require_deps(browser: bool) {
    require_packages(&["playwright-core", "eventsource"]);
    if browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} is missing (Debian package `chromium`): {INSTALL_HINT}"
        );
    }
}

/// The demo origin binary of the same build profile as this test (or the release one).
fn demo_origin_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/browser-HASH -> target/<profile>/examples/demo_origin
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let candidates = [
        profile_dir.join("examples/demo_origin"),
        profile_dir
            .parent()
            .unwrap()
            .join("release/examples/demo_origin"),
    ];
    let Some(bin) = candidates.iter().find(|p| p.is_file()) else {
        panic!(
            "the demo origin is not built (looked for {candidates:?}): run \
             `cargo build --release --example demo_origin` (a full `cargo test --release` builds it)"
        );
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_origin.rs");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&src) > mtime(bin) {
        eprintln!(
            "WARNING: {} is older than examples/demo_origin.rs; rebuild it with \
             `cargo build --release --example demo_origin`",
            bin.display()
        );
    }
    bin.clone()
}

/// Spawns `cmd` with its stdout and stderr going to the file `log`.
fn spawn_logged(name: &str, mut cmd: Command, log: PathBuf) -> Process {
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
    Process::new(name, child, log)
}

/// Waits until `p` accepts connections on `addr` (10 s at most).
async fn wait_up(p: &mut Process, addr: SocketAddr) {
    if let Err(e) = p.wait_listening(addr, Duration::from_secs(10)).await {
        panic!("{e}");
    }
}

/// The demo origin on a free port.
async fn start_demo(dir: &Path) -> (Process, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(demo_origin_bin());
    cmd.args(["--listen", &addr.to_string()]);
    let mut p = spawn_logged("demo origin", cmd, dir.join("demo-origin.log"));
    wait_up(&mut p, addr).await;
    (p, addr)
}

/// The `Last-Event-ID` values the demo origin logged for `/events`, in order. Its line is
/// `PEER /events: Last-Event-ID "N", resuming at N+1`.
fn last_event_ids(origin_log: &str) -> Vec<String> {
    origin_log
        .lines()
        .filter_map(|l| l.split_once("/events: Last-Event-ID \""))
        .filter_map(|(_, rest)| rest.split_once('"').map(|(id, _)| id.to_string()))
        .collect()
}

/// The sidecar on a given address (so a second one can take the port over).
async fn start_sidecar(dir: &Path, n: usize, addr: SocketAddr, upstream: SocketAddr) -> Process {
    // A short drain window and a 1 s retry hint keep the restart within a few seconds.
    let yaml = format!("listen: [\"{addr}\"]\nshutdown:\n  drain_window: 300ms\n  retry: 1s\n");
    start_sidecar_with(dir, n, &yaml, addr, upstream).await
}

/// The sidecar with the config `yaml` (which names the listeners), waited for on `addr`.
async fn start_sidecar_with(
    dir: &Path,
    n: usize,
    yaml: &str,
    addr: SocketAddr,
    upstream: SocketAddr,
) -> Process {
    let conf = dir.join(format!("sse-sidecar{n}.yaml"));
    std::fs::write(&conf, yaml).unwrap();
    let mut cmd = command();
    cmd.arg("--config")
        .arg(&conf)
        .args(["--upstream", &format!("http://{upstream}")])
        .args(["--metrics-listen", "off", "--heartbeat-interval", "200ms"])
        .env("SSE_SIDECAR_PID_FILE", dir.join(format!("pid{n}")))
        .env(
            "SSE_SIDECAR_UPGRADE_SOCK",
            dir.join(format!("upgrade{n}.sock")),
        );
    let mut p = spawn_logged(
        &format!("sse-sidecar #{n}"),
        cmd,
        dir.join(format!("sidecar{n}.log")),
    );
    wait_up(&mut p, addr).await;
    p
}

/// A node script whose stdout lines (JSON) are read as they come.
struct Node {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: PathBuf,
}

impl Node {
    fn spawn(script: &str, args: &[&str], stderr: PathBuf) -> Node {
        let mut child = Command::new("node")
            .arg(node_dir().join(script))
            .args(args)
            .current_dir(node_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn node");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next JSON line, which must be `{"step": step, ...}` (a line with step "error", a
    /// timeout or the script ending fail the test with the script's stderr).
    async fn step(&mut self, step: &str, deadline: Duration) -> Value {
        let line = match tokio::time::timeout(deadline, self.lines.recv()).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!(
                "node ended before step {step:?}; stderr:\n{}",
                self.stderr()
            ),
            Err(_) => panic!(
                "node: no step {step:?} within {deadline:?}; stderr:\n{}",
                self.stderr()
            ),
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("node printed a non-JSON line {line:?}: {e}"));
        assert_eq!(
            v["step"].as_str(),
            Some(step),
            "node: {v:#}\nstderr:\n{}",
            self.stderr()
        );
        v
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Ids as numbers; panics on anything else.
fn numbers(ids: &[String], what: &str) -> Vec<u64> {
    ids.iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{what}: id {s:?} is not a number ({ids:?})"))
        })
        .collect()
}

/// Headless Chromium opens the demo page through the sidecar and renders events; then the
/// sidecar gets SIGTERM (drain: retry hint, clean end) and a new one starts on the same port.
/// The page's EventSource reconnects by itself, the origin receives `Last-Event-ID` equal to
/// the last id the page had rendered, and the page renders the following ids with no gap and
/// no repeat. Takes about 10 s (the demo sends one event a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_events_and_resumes_after_sidecar_restart() {
    if skipped("chromium_renders_events_and_resumes_after_sidecar_restart") {
        return;
    }
    require_deps(true);
    let dir = tempfile::tempdir().unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let (origin, origin_addr) = start_demo(dir.path()).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut first = start_sidecar(dir.path(), 1, addr, origin_addr).await;

    let url = format!("http://{addr}/");
    let mut page = Node::spawn(
        "page.mjs",
        &[&url, shots.to_str().unwrap()],
        dir.path().join("page.stderr"),
    );
    let rendered = page.step("rendered", Duration::from_secs(30)).await;
    let rows = numbers(&strings(&rendered["rows"]), "rows rendered");
    assert!(rows.len() >= 3, "rendered rows: {rendered:#}");
    assert_eq!(
        rows,
        (1..=rows.len() as u64).collect::<Vec<_>>(),
        "the page renders ids 1, 2, 3... in order: {rendered:#}"
    );
    let shown = strings(&rendered["shown"]);
    let newest = *rows.last().unwrap();
    assert!(
        shown
            .first()
            .is_some_and(|t| t.contains(&format!("\"notification {newest}\""))),
        "the newest row shows the event's data: {shown:?}"
    );

    // Restart: SIGTERM drains the open stream (retry hint, clean end) and the process exits;
    // a new sidecar then takes the port. The browser reconnects on its own.
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(first.pid(), libc::SIGTERM) }, 0);
    let st = first.wait_exit(Duration::from_secs(5)).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "first sidecar after SIGTERM: {st:?} (drain window 300 ms)\n{}",
        first.log()
    );
    let _second = start_sidecar(dir.path(), 2, addr, origin_addr).await;

    let rec = page.step("reconnected", Duration::from_secs(30)).await;
    let at_drop: u64 = rec["idAtDrop"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("idAtDrop: {rec:#}"));
    let before = numbers(&strings(&rec["rowsBefore"]), "rows before the drop");
    let after = numbers(&strings(&rec["rowsAfter"]), "rows after the drop");
    assert_eq!(
        before.last(),
        Some(&at_drop),
        "the last row rendered before the drop is the page's last id: {rec:#}"
    );
    assert_eq!(
        after,
        (at_drop + 1..=at_drop + after.len() as u64).collect::<Vec<_>>(),
        "after reconnecting the page renders the ids after {at_drop}, none lost or repeated: {rec:#}"
    );

    // The origin saw the browser's own Last-Event-ID, equal to the last id the page saw.
    let ids = last_event_ids(&origin.log());
    assert_eq!(
        ids,
        vec![at_drop.to_string()],
        "Last-Event-ID values the demo origin received (the page last saw {at_drop}); origin log:\n{}",
        origin.log()
    );
    eprintln!(
        "chromium: rendered {:?}, dropped at id {at_drop}, resumed with {:?}; screenshots in {}",
        before,
        after,
        shots.display()
    );
}

/// Node's `eventsource` package reads the demo's notifications through the sidecar with
/// 200 ms heartbeats: the heartbeat comments are in the bytes it received (a tee of its own
/// response), yet its message events are exactly the demo's events — ids 1, 2, 3, the data
/// as sent, the same as a WHATWG parser of those bytes yields — with no empty message and no
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_eventsource_parses_events_and_ignores_heartbeats() {
    if skipped("node_eventsource_parses_events_and_ignores_heartbeats") {
        return;
    }
    require_deps(false);
    let dir = tempfile::tempdir().unwrap();
    let (_origin, origin_addr) = start_demo(dir.path()).await;
    let sc = Sidecar::builder(&format!("http://{origin_addr}"))
        .args(&["--heartbeat-interval", "200ms"])
        .metrics_off()
        .start()
        .await;
    let url = format!("http://{}/events", sc.addr);
    let mut node = Node::spawn(
        "eventsource-client.mjs",
        &[&url, "3"],
        dir.path().join("es.stderr"),
    );
    let line = tokio::time::timeout(Duration::from_secs(30), node.lines.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "eventsource client printed nothing; stderr:\n{}",
                node.stderr()
            )
        });
    let out: Value = serde_json::from_str(&line).expect("eventsource client JSON");
    assert_eq!(out["status"], 200, "{out:#}");
    assert_eq!(out["contentType"], "text/event-stream", "{out:#}");
    assert_eq!(out["opens"], 1, "one connection, no reconnect: {out:#}");
    assert_eq!(
        out["errors"],
        Value::Array(vec![]),
        "no error events: {out:#}"
    );

    let raw = out["raw"].as_str().expect("raw body");
    let items = sse::parse_all(raw.as_bytes());
    let heartbeats = items
        .iter()
        .filter(|i| matches!(i, Item::Comment(c) if c.trim().is_empty()))
        .count();
    assert!(
        heartbeats >= 4,
        "want >= 4 heartbeat comments in ~2 s of 1 s gaps at 200 ms; got {heartbeats} in {raw:?}"
    );

    let msgs = out["messages"].as_array().expect("messages");
    let got: Vec<(String, String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap_or_default().to_string(),
                m["lastEventId"].as_str().unwrap_or_default().to_string(),
                m["data"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let spec: Vec<(String, String, String)> = sse::events_of(&items)
        .into_iter()
        .take(got.len())
        .map(|e| (e.event, e.id, e.data))
        .collect();
    assert_eq!(got.len(), 3, "three message events: {got:#?}");
    assert_eq!(
        got, spec,
        "the eventsource package's events equal a spec parser's on the same bytes"
    );
    for (i, (ty, id, data)) in got.iter().enumerate() {
        let n = i + 1;
        assert_eq!(
            (ty.as_str(), id.as_str()),
            ("message", n.to_string().as_str())
        );
        assert!(
            data.starts_with(&format!("{{\"n\":{n},\"text\":\"notification {n}\"")),
            "message {n} data: {data:?}"
        );
    }
}

/// Chromium over the sidecar's HTTPS listener negotiates h2 and keeps the page's EventSource
/// plus 8 more open at once on one connection: every one receives an event. The control, the
/// same page on the sidecar's plain HTTP/1.1 listener, is held to Chromium's 6 connections per
/// host, so some of the 8 never start — which is why h2 matters for SSE. About 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_over_https_h2_keeps_many_streams_on_one_connection() {
    const N: usize = 8;
    if skipped("chromium_over_https_h2_keeps_many_streams_on_one_connection") {
        return;
    }
    require_deps(true);
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (origin, origin_addr) = start_demo(dir.path()).await;
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "listen:\n  - \"{plain}\"\n  - addr: \"{tls}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\n",
        cert.display(),
        key.display()
    );
    let mut sc = start_sidecar_with(dir.path(), 1, &yaml, tls, origin_addr).await;
    wait_up(&mut sc, plain).await;

    let https = format!("https://localhost:{}/", tls.port());
    let http = format!("http://localhost:{}/", plain.port());
    let mut node = Node::spawn(
        "many-streams.mjs",
        &[&N.to_string(), &https, &http],
        dir.path().join("many.stderr"),
    );
    let h2 = node.step("streams", Duration::from_secs(40)).await;
    let h1 = node.step("streams", Duration::from_secs(20)).await;
    eprintln!("chromium, {N} extra EventSources: https {h2} / http {h1}");
    assert_eq!(
        h2["protocol"], "h2",
        "the page over the TLS listener: {h2:#}"
    );
    assert_eq!(
        h2["withMessage"],
        N,
        "over h2 every extra EventSource receives an event: {h2:#}\norigin:\n{}",
        origin.log()
    );
    assert_eq!(h1["protocol"], "http/1.1", "the control page: {h1:#}");
    assert!(
        h1["withMessage"].as_u64().is_some_and(|k| k < N as u64),
        "control: over HTTP/1.1 Chromium's 6-connections-per-host limit should have held some \
         of the {N} streams back, so the h2 result above proves nothing: {h1:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// Resumable streams (issue 15) through a connection-cutting proxy
// ---------------------------------------------------------------------------------------------

/// The resume tests' stream: 200 events 40 ms apart (8 s, long enough for several cuts), no
/// app ids.
const STREAM_200: &str = "/sse?events=200&interval_ms=40";
/// A 300 ms `retry:` hint, so the EventSource reconnects quickly after each cut.
const FAST_RETRY: &str = "sse:\n  retry: 300ms\n";

/// The `seq` in the data (`{"seq":N,...}`) of each message of a JSON array, in order.
fn seqs_of(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("not an array of messages: {messages:#}"))
        .iter()
        .map(|m| {
            let data = m["data"].as_str().unwrap_or_default();
            let v: Value = serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("message data {data:?} is not JSON: {e}"));
            v["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq in {data:?}"))
        })
        .collect()
}

/// Runs tests/browser/resume-page.mjs: Chromium's EventSource on `STREAM_200` through
/// `cutter`, until seq 200 or `max`; returns its report.
async fn chromium_through_cutter(cutter: &Cutter, dir: &Path, max: Duration) -> Value {
    let mut page = Node::spawn(
        "resume-page.mjs",
        &[
            &cutter.url(),
            STREAM_200,
            "200",
            &max.as_millis().to_string(),
        ],
        dir.join("resume-page.stderr"),
    );
    page.step("messages", max + Duration::from_secs(30)).await
}

/// Headless Chromium's EventSource reads a 200-event stream (40 ms apart) through a proxy that
/// resets the connection about once a second, with `resume.paths: ["/"]`: across the cuts the
/// page receives every event exactly once and in order, each `lastEventId` is one of the
/// sidecar's ids (one stream's token, the event's seq), and the app saw a single request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_eventsource_resumes_through_cuts_every_event_once() {
    if skipped("chromium_eventsource_resumes_through_cuts_every_event_once") {
        return;
    }
    require_deps(true);
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config(&format!("{FAST_RETRY}resume:\n  paths: [\"/\"]\n"))
        .start()
        .await;
    let cutter = Cutter::start(sc.addr, Duration::from_secs(1), Duration::from_millis(300)).await;
    let out = chromium_through_cutter(&cutter, dir.path(), Duration::from_secs(45)).await;
    eprintln!(
        "resume: {} messages in {} ms, {} opens, errors {}, {} cuts",
        out["messages"].as_array().map_or(0, Vec::len),
        out["ms"],
        out["opens"],
        out["errors"],
        cutter.cuts()
    );

    let seqs = seqs_of(&out["messages"]);
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "every event exactly once, in order (opens {}, errors {}, {} cuts)",
        out["opens"],
        out["errors"],
        cutter.cuts()
    );
    assert_eq!(out["done"], true, "{out:#}");
    let ids: Vec<ResumeId> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["lastEventId"].as_str().unwrap_or_default();
            ResumeId::parse(id).unwrap_or_else(|| panic!("lastEventId {id:?} is not the sidecar's"))
        })
        .collect();
    assert!(
        ids.iter()
            .zip(1..)
            .all(|(id, n)| id.seq == n && id.app.is_none()),
        "each lastEventId carries the event's seq: {ids:?}"
    );
    assert!(
        ids.iter().all(|id| id.token == ids[0].token),
        "one stream throughout"
    );
    assert!(
        cutter.cuts() >= 3 && out["opens"].as_u64() >= Some(4),
        "the stream should have been cut several times: {} cuts, {} opens",
        cutter.cuts(),
        out["opens"]
    );
    // Only the stream counts: Chromium may also ask for /favicon.ico.
    let reqs = origin.requests_to("/sse");
    assert_eq!(reqs.len(), 1, "the app saw one stream request: {reqs:#?}");
}

/// Control for the test above: the same page, stream and cuts without `resume.paths`. Each
/// reconnect reaches the app as a new stream, so the page does not get every event exactly
/// once and in order (here the app starts over, so events repeat and the end never comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_chromium_without_resume_loses_or_repeats_events() {
    if skipped("control_chromium_without_resume_loses_or_repeats_events") {
        return;
    }
    require_deps(true);
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config(FAST_RETRY)
        .start()
        .await;
    let cutter = Cutter::start(sc.addr, Duration::from_secs(1), Duration::from_millis(300)).await;
    let out = chromium_through_cutter(&cutter, dir.path(), Duration::from_secs(8)).await;
    eprintln!(
        "control: {} messages, {} opens, errors {}, {} cuts",
        out["messages"].as_array().map_or(0, Vec::len),
        out["opens"],
        out["errors"],
        cutter.cuts()
    );

    let seqs = seqs_of(&out["messages"]);
    assert!(
        out["opens"].as_u64() >= Some(2) && cutter.cuts() >= 2,
        "the control must see the connection cut and reopened: {} cuts, {out:#}",
        cutter.cuts()
    );
    assert!(!seqs.is_empty(), "no events at all: {out:#}");
    assert_ne!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "without resume the cuts should have cost or repeated events, so the test above \
         proves something"
    );
    assert!(
        origin.requests_to("/sse").len() >= 2,
        "each reconnect reached the app as a fresh request"
    );
}

/// A fetch-based client that resends `Last-Event-ID` (like `@microsoft/fetch-event-source`)
/// POSTs for an LLM-style answer — 30 token events, then `event: done` — through a proxy that
/// resets the connection about once a second: across at least two drops it gets the whole
/// answer exactly once, in order, and the app saw one request (the POST, with its body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_client_gets_a_whole_llm_answer_once_across_two_drops() {
    if skipped("fetch_client_gets_a_whole_llm_answer_once_across_two_drops") {
        return;
    }
    require_deps(false);
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("resume:\n  paths: [\"/\"]\n")
        .start()
        .await;
    let cutter = Cutter::start(sc.addr, Duration::from_secs(1), Duration::from_millis(200)).await;
    let url = format!(
        "{}/sse?events=31&interval_ms=120&last_event=done",
        cutter.url()
    );
    let mut client = Node::spawn(
        "fetch-resume-client.mjs",
        &[&url, "20000"],
        dir.path().join("fetch.stderr"),
    );
    let out = client.step("answer", Duration::from_secs(40)).await;

    let events = out["events"].as_array().expect("events");
    let seqs = seqs_of(&out["events"]);
    assert_eq!(
        seqs,
        (1..=31).collect::<Vec<u64>>(),
        "the whole answer exactly once, in order: {out:#}"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect();
    assert!(
        kinds[..30].iter().all(|k| *k == "message") && kinds[30] == "done",
        "30 tokens then done: {kinds:?}"
    );
    assert_eq!(out["done"], true);
    let tokens: Vec<String> = events
        .iter()
        .map(|e| {
            let id = e["id"].as_str().unwrap_or_default();
            ResumeId::parse(id)
                .unwrap_or_else(|| panic!("id {id:?} is not the sidecar's"))
                .token
        })
        .collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "one stream: {tokens:?}"
    );
    assert!(
        out["drops"].as_u64() >= Some(2) && cutter.cuts() >= 2,
        "the answer should have been cut at least twice: {} cuts, {out:#}",
        cutter.cuts()
    );
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1, "the app saw one request: {reqs:#?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].body, br#"{"prompt":"tell me a story"}"#);
}
