//! Heartbeats, opening bytes and exact framing over real sockets (issue 3 §2, §3, §6): an app
//! in the test process, the real `sse-sidecar` binary in front of it, a raw HTTP/1.1 client.
//!
//! Most tests use a local [`ScriptOrigin`]: an app that writes exactly the given bytes, one
//! chunk per write, with the given pauses between writes, and stamps each write with the
//! harness clock. That gives byte-level control (an event split by a pause, a BOM split over
//! two writes, lone CRs) and lets timing bounds be measured from the moment the app wrote,
//! which is never later than when the sidecar saw the bytes.
//!
//! Every received body is checked by aligning it with the app's bytes: what the client got
//! must be the opening block, then the app's bytes with whole heartbeat blocks inserted, each
//! at a point where the app's stream is between events.
//!
//! Run: `cargo test --release --test heartbeats`

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::client::{self, End};
use common::sse::{self, Item, SseStream};
use common::{ms, now_ns, show, Origin, Sidecar};

const MS: u64 = 1_000_000;
const BOM: &[u8] = b"\xEF\xBB\xBF";
const OPEN: &[u8] = b": ok\n\n";
const HB: &[u8] = b": \n\n";

/// The cadence and busy-stream tests bound gaps to within ~100-200 ms of what the config asks
/// for; as a precaution on 2 shared cores they take turns, so two of them (each with its own
/// sidecar and app) never compete with each other. The others have no tight upper bounds and
/// run in parallel (all 18 passed with `--test-threads 18` next to the middlebox tests at a
/// load average of 5 on 2 cores).
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A scripted app
// ---------------------------------------------------------------------------------------------

/// One step of what the app does after its response head.
#[derive(Clone, Debug)]
enum Step {
    /// Writes these bytes as one chunk.
    Write(&'static [u8]),
    /// Stays silent this long (watching for the peer closing).
    Pause(u64),
    /// Stays silent until the peer closes (at most 30 s); no terminating chunk.
    Hold,
}

use Step::{Hold, Pause, Write};

#[derive(Default, Debug)]
struct ScriptLog {
    /// `(t_ns, bytes)` for each write, stamped just before the write.
    writes: Vec<(u64, Vec<u8>)>,
    /// When the app saw its connection close.
    closed_ns: Option<u64>,
}

/// An app that answers every request with `200 text/event-stream`, chunked, then plays its
/// script and ends the body with the terminating chunk (unless the script ends in `Hold`).
struct ScriptOrigin {
    addr: SocketAddr,
    log: Arc<Mutex<ScriptLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptOrigin {
    async fn start(script: Vec<Step>) -> ScriptOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(ScriptLog::default()));
        let lg = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                let (lg, script) = (lg.clone(), script.clone());
                tokio::spawn(async move {
                    play(stream, &script, &lg).await;
                    lg.lock().unwrap().closed_ns = Some(now_ns());
                });
            }
        });
        ScriptOrigin { addr, log, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        self.log.lock().unwrap().writes.clone()
    }

    /// Every byte the app wrote, in order.
    fn bytes(&self) -> Vec<u8> {
        self.writes().into_iter().flat_map(|(_, b)| b).collect()
    }

    /// When the app wrote the first chunk equal to `bytes`.
    fn written_at(&self, bytes: &[u8]) -> u64 {
        self.writes()
            .iter()
            .find(|(_, b)| b == bytes)
            .unwrap_or_else(|| panic!("the app never wrote {:?}", show(bytes)))
            .0
    }
}

impl Drop for ScriptOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stays silent for `d`; false if the peer closed (or sent anything) meanwhile.
async fn silent(stream: &mut tokio::net::TcpStream, d: Duration) -> bool {
    let mut tmp = [0u8; 1024];
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stream.read(&mut tmp) => false,
    }
}

async fn play(mut stream: tokio::net::TcpStream, script: &[Step], log: &Mutex<ScriptLog>) {
    // Read the request head (GET, no body).
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                 Transfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head).await.is_err() {
        return;
    }
    for step in script {
        match step {
            Write(b) => {
                let mut chunk = format!("{:x}\r\n", b.len()).into_bytes();
                chunk.extend_from_slice(b);
                chunk.extend_from_slice(b"\r\n");
                log.lock().unwrap().writes.push((now_ns(), b.to_vec()));
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Pause(ms) => {
                if !silent(&mut stream, Duration::from_millis(*ms)).await {
                    return;
                }
            }
            Hold => {
                silent(&mut stream, Duration::from_secs(30)).await;
                return;
            }
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    // Let the sidecar close (or pool) the connection; it is dropped with the task.
    silent(&mut stream, Duration::from_secs(30)).await;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A sidecar in front of `upstream` with one worker thread, extra flags and optional YAML.
async fn sidecar(upstream: &str, flags: &[&str], yaml: Option<&str>) -> Sidecar {
    let mut b = Sidecar::builder(upstream)
        .metrics_off()
        .args(&["--threads", "1"])
        .args(flags);
    if let Some(y) = yaml {
        b = b.config(y);
    }
    b.start().await
}

/// Opens an event stream through the sidecar and reads it to its end (deadline `within`).
async fn read_stream(sc: &Sidecar, within: Duration) -> SseStream {
    let req = client::request("GET", "/events", &[("Accept", "text/event-stream")], None);
    let mut s = SseStream::new(client::send(sc.addr, &req, "GET").await);
    assert_eq!(s.resp.status(), 200, "head: {}", show(&s.resp.head.raw));
    let end = s.read_to_end(within).await;
    assert!(
        end.is_some(),
        "stream did not end within {within:?}; got {}",
        show(&s.bytes)
    );
    s
}

/// Whether `prefix` of an app's stream ends between events: no partial line, and the last
/// complete line (if any) is blank. Lines end with CRLF, LF or a lone CR (WHATWG §9.2.6).
fn ends_at_boundary(prefix: &[u8]) -> bool {
    let (mut start, mut last_blank, mut i) = (0, true, 0);
    while i < prefix.len() {
        let b = prefix[i];
        if b == b'\r' || b == b'\n' {
            last_blank = i == start;
            if b == b'\r' && prefix.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    start == prefix.len() && last_blank
}

/// Aligns what the client received with what the app sent: `client` must be `open`, then
/// `app` with whole `hb` blocks inserted. Returns the offsets into `app` where each block was
/// inserted. Heartbeats start with ':' and the scripted apps never start a line with ':', so
/// matching app bytes first is unambiguous.
fn align(client: &[u8], open: &[u8], app: &[u8], hb: &[u8]) -> Result<Vec<usize>, String> {
    let ctx = |i: usize| show(&client[i.saturating_sub(20)..(i + 40).min(client.len())]);
    if !client.starts_with(open) {
        return Err(format!(
            "body does not start with the opening block {:?}: {}",
            show(open),
            show(client)
        ));
    }
    let (mut i, mut j, mut at) = (open.len(), 0, Vec::new());
    while i < client.len() {
        if j < app.len() && client[i] == app[j] {
            i += 1;
            j += 1;
        } else if client[i..].starts_with(hb) {
            at.push(j);
            i += hb.len();
        } else {
            return Err(format!(
                "client byte {i} is neither the app's next byte (app offset {j}: {:?}) nor a \
                 heartbeat {:?}; around it: {}",
                show(&app[j..(j + 20).min(app.len())]),
                show(hb),
                ctx(i)
            ));
        }
    }
    if j != app.len() {
        return Err(format!(
            "the client got only {j} of the app's {} bytes; missing: {}",
            app.len(),
            show(&app[j..])
        ));
    }
    Ok(at)
}

/// [`align`], then asserts every heartbeat sits at an event boundary of the app's stream and
/// that the client's events equal the app's (harness WHATWG parser). Returns the offsets.
fn assert_framing(s: &SseStream, open: &[u8], app: &[u8], hb: &[u8]) -> Vec<usize> {
    let at = align(&s.bytes, open, app, hb).unwrap_or_else(|e| panic!("{e}"));
    for &p in &at {
        assert!(
            ends_at_boundary(&app[..p]),
            "heartbeat injected inside an event, after app bytes {:?} (before {:?}); body: {}",
            show(&app[p.saturating_sub(30)..p]),
            show(&app[p..(p + 20).min(app.len())]),
            show(&s.bytes)
        );
    }
    let got = sse::events_of(&sse::parse_all(&s.bytes));
    let want = sse::events_of(&sse::parse_all(app));
    assert_eq!(
        got, want,
        "events parsed from the client's bytes vs the app's"
    );
    at
}

/// Comments with this exact text, with their arrival times.
fn comments(s: &SseStream, text: &str) -> Vec<u64> {
    s.comments()
        .into_iter()
        .filter(|(c, _)| c == text)
        .map(|(_, at)| at)
        .collect()
}

fn fmt_ms(ts: &[u64], base: u64) -> String {
    let v: Vec<String> = ts
        .iter()
        .map(|t| format!("{:.0}", ms(t.saturating_sub(base))))
        .collect();
    format!("[{}] ms", v.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Heartbeats
// ---------------------------------------------------------------------------------------------

/// Interval under test, and the window every gap between two heartbeats' arrivals must fall
/// in. Lower 150 ms, not 200: arrival stamps carry the client's own scheduling jitter (the
/// exact "not before the interval" bound is checked against the app's write stamps instead).
/// Upper 400 ms: twice the interval, so a skipped or late heartbeat fails, with room for a
/// busy 2-core machine.
const INTERVAL_MS: u64 = 200;
const GAP_MS: (u64, u64) = (150, 400);

/// During 1.5 s of app silence, heartbeats (`hb_text` as parsed, `hb` as bytes) arrive about
/// every 200 ms, none earlier than the interval after the app's last byte, all at boundaries.
async fn cadence(yaml: Option<&str>, hb_text: &str, hb: &[u8]) {
    let _turn = TIMING.lock().await;
    let app = ScriptOrigin::start(vec![
        Write(b"data: first\n\n"),
        Pause(1500),
        Write(b"data: last\n\n"),
    ])
    .await;
    let sc = sidecar(&app.url(), &["--heartbeat-interval", "200ms"], yaml).await;
    let s = read_stream(&sc, Duration::from_secs(6)).await;
    assert_eq!(s.ended(), Some(&End::Complete));

    let at = assert_framing(&s, OPEN, &app.bytes(), hb);
    let first_end = b"data: first\n\n".len();
    assert!(
        at.iter().all(|&p| p == first_end),
        "heartbeats only in the silence after the first event; app offsets {at:?}"
    );

    let t_first = app.written_at(b"data: first\n\n");
    let t_last = app.written_at(b"data: last\n\n");
    let hbs = comments(&s, hb_text);
    let timeline = format!(
        "heartbeats at {} after the app wrote the first event; the app wrote the last at {:.0} ms",
        fmt_ms(&hbs, t_first),
        ms(t_last - t_first)
    );
    // 1.5 s / 200 ms = 7 at most; 5 leaves room for a late start, not for a missing cadence.
    assert!(hbs.len() >= 5, "too few heartbeats: {timeline}");
    // Not before the interval: the sidecar saw the event no earlier than the app wrote it, and
    // each heartbeat restarts the interval, so heartbeat k comes at least k intervals later.
    for (k, &t) in hbs.iter().enumerate() {
        let min = t_first + (k as u64 + 1) * INTERVAL_MS * MS;
        assert!(
            t >= min,
            "heartbeat {} before its interval: {timeline}",
            k + 1
        );
    }
    for w in hbs.windows(2) {
        let gap = (w[1] - w[0]) / MS;
        assert!(
            (GAP_MS.0..=GAP_MS.1).contains(&gap),
            "gap of {gap} ms between heartbeats, outside {GAP_MS:?}: {timeline}"
        );
    }
    let after_last = hbs.last().map_or(0, |&t| t_last.saturating_sub(t) / MS);
    assert!(
        after_last <= GAP_MS.1,
        "the last heartbeat came {after_last} ms before the app's next event: {timeline}"
    );
}

/// Default heartbeat `": \n\n"` arrives every ~200 ms while the app is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_cadence_during_app_silence() {
    cadence(None, " ", HB).await;
}

/// `sse.heartbeat_comment: ping` sends `": ping\n\n"` at the same cadence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_cadence_with_configured_comment() {
    cadence(
        Some("sse:\n  heartbeat_comment: ping\n"),
        " ping",
        b": ping\n\n",
    )
    .await;
}

/// An app that stalls 700 ms inside an event (after a full line, and in the middle of a line)
/// gets no heartbeat inside it; heartbeats come before and resume after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_heartbeat_inside_an_event_split_by_a_pause() {
    let app = ScriptOrigin::start(vec![
        Pause(500),
        Write(b"data: a\n"),
        Pause(700),
        Write(b"\n"),
        Pause(500),
        Write(b"data: b"),
        Pause(700),
        Write(b"\n\n"),
        Pause(500),
    ])
    .await;
    let sc = sidecar(&app.url(), &["--heartbeat-interval", "200ms"], None).await;
    let s = read_stream(&sc, Duration::from_secs(8)).await;
    let bytes = app.bytes();
    let at = assert_framing(&s, OPEN, &bytes, HB);

    // App offsets: 0 | data: a\n (8) \n (9) | data: b (16) \n\n (18) |
    let count = |p: usize| at.iter().filter(|&&x| x == p).count();
    assert!(count(0) >= 1, "heartbeats before the first event: {at:?}");
    assert!(count(9) >= 1, "heartbeats resume after event a: {at:?}");
    assert!(count(18) >= 1, "heartbeats resume after event b: {at:?}");
    assert_eq!(
        count(0) + count(9) + count(18),
        at.len(),
        "heartbeat offsets {at:?} in app stream {}",
        show(&bytes)
    );
    // The heartbeat after event a comes an interval after its blank line, not earlier (the
    // stall inside the event must not count as silence at a boundary).
    let t_blank = app.written_at(b"\n");
    let first_after = s
        .comments()
        .into_iter()
        .filter(|(c, at)| c == " " && *at > t_blank)
        .map(|(_, at)| at)
        .next()
        .expect("a heartbeat after event a");
    assert!(
        first_after >= t_blank + INTERVAL_MS * MS,
        "heartbeat {:.0} ms after the blank line ending event a; want >= {INTERVAL_MS} ms",
        ms(first_after - t_blank)
    );
    let ev = s.events();
    assert_eq!(ev.len(), 2, "two events: {ev:?}");
}

/// Events every 50 ms for 1.5 s with a 200 ms interval: no heartbeat at all, since the
/// interval runs from the last byte written downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_heartbeats_on_a_busy_stream() {
    let _turn = TIMING.lock().await;
    let origin = Origin::start().await;
    let sc = sidecar(&origin.url(), &["--heartbeat-interval", "200ms"], None).await;
    let req = client::request(
        "GET",
        "/sse?events=30&interval_ms=50",
        &[("Accept", "text/event-stream")],
        None,
    );
    let mut s = SseStream::new(client::send(sc.addr, &req, "GET").await);
    let end = s.read_to_end(Duration::from_secs(8)).await;
    assert_eq!(end, Some(End::Complete), "body: {}", show(&s.bytes));
    sse::assert_seqs(&s.events(), 30, "busy stream");

    // Walk the items: a heartbeat is only excusable after an app gap the sidecar really saw
    // as 200 ms of silence (the origin's own write stamps; 20 ms margin for delivery).
    let mut prev_t: Option<u64> = None;
    let mut pending: Vec<u64> = Vec::new();
    let mut short_gaps = 0;
    let mut unexplained = Vec::new();
    for t in &s.items {
        match &t.item {
            Item::Comment(c) if c == " ok" && prev_t.is_none() => {}
            Item::Comment(_) => pending.push(t.at_ns),
            Item::Event(e) => {
                let te = e.t_ns().expect("t_ns");
                if let Some(p) = prev_t {
                    let gap = (te - p) / MS;
                    if gap < INTERVAL_MS - 20 {
                        short_gaps += 1;
                        if !pending.is_empty() {
                            unexplained.push((e.seq(), gap, pending.len()));
                        }
                    }
                } else if !pending.is_empty() {
                    unexplained.push((e.seq(), 0, pending.len()));
                }
                pending.clear();
                prev_t = Some(te);
            }
            Item::Retry(_) => {}
        }
    }
    assert!(
        unexplained.is_empty(),
        "heartbeats on a busy stream (before event seq, app gap ms, heartbeats): {unexplained:?}"
    );
    assert!(pending.is_empty(), "heartbeats after the last event");
    // Without this the test could pass on a machine too slow to keep the stream busy.
    assert!(
        short_gaps >= 25,
        "only {short_gaps} of 29 app gaps were under 180 ms: machine too busy to test this"
    );
}

/// Heartbeats do not feed the idle timeout: with `--sse-idle-timeout 1s` and heartbeats every
/// 200 ms, an app that goes silent for good has its stream ended about 1 s after its last byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_not_reset_by_heartbeats() {
    let app = ScriptOrigin::start(vec![Write(b"data: x\n\n"), Hold]).await;
    let sc = sidecar(
        &app.url(),
        &["--heartbeat-interval", "200ms", "--sse-idle-timeout", "1s"],
        None,
    )
    .await;
    let s = read_stream(&sc, Duration::from_secs(5)).await;
    let ended_at = now_ns();
    let t_last = app.written_at(b"data: x\n\n");
    let after = (ended_at - t_last) / MS;
    let hbs = comments(&s, " ");
    assert!(
        (1000..=2000).contains(&after),
        "stream ended {after} ms after the app's last byte; want 1000..=2000 (heartbeats at {})",
        fmt_ms(&hbs, t_last)
    );
    assert!(
        hbs.len() >= 3,
        "heartbeats were flowing while the idle timer ran: {}",
        fmt_ms(&hbs, t_last)
    );
    // Whatever closed the stream (a `retry:` block, or a cut), the app's one event arrived
    // and everything else is comments or retry hints.
    let items = sse::parse_all(&s.bytes);
    assert_eq!(
        sse::events_of(&items),
        sse::events_of(&sse::parse_all(&app.bytes())),
        "body: {}",
        show(&s.bytes)
    );
    // The sidecar let go of the app too.
    common::eventually(Duration::from_secs(2), "app connection closed", || {
        app.log.lock().unwrap().closed_ns.is_some()
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Opening bytes
// ---------------------------------------------------------------------------------------------

/// The app waits 300 ms before its first byte; returns the stream and that write's stamp.
async fn opening(yaml: Option<&str>) -> (SseStream, Vec<u8>, u64) {
    let app = ScriptOrigin::start(vec![Pause(300), Write(b"data: a\n\n")]).await;
    let sc = sidecar(&app.url(), &[], yaml).await;
    let s = read_stream(&sc, Duration::from_secs(5)).await;
    assert_eq!(s.ended(), Some(&End::Complete));
    let t = app.written_at(b"data: a\n\n");
    (s, app.bytes(), t)
}

/// Bytes that arrived strictly before `t`.
fn arrived_before(s: &SseStream, t: u64) -> usize {
    s.reads
        .iter()
        .filter(|(at, _)| *at < t)
        .map(|(_, n)| n)
        .sum()
}

/// `": ok\n\n"` is the first body bytes, written right after the head, before the app's first
/// byte; then the app's bytes follow unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_comment_is_the_first_body_bytes() {
    let (s, app, t) = opening(None).await;
    assert_eq!(s.bytes, [OPEN, &app].concat(), "body {}", show(&s.bytes));
    assert_eq!(
        arrived_before(&s, t),
        OPEN.len(),
        "the opening comment arrived before the app's first byte was written"
    );
    assert_eq!(s.resp.chunk_sizes.first(), Some(&OPEN.len()));
}

/// `sse.open_comment: off`: the body is the app's bytes exactly, nothing arrives before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_comment_off_removes_it() {
    let (s, app, t) = opening(Some("sse:\n  open_comment: off\n")).await;
    assert_eq!(s.bytes, app, "body {}", show(&s.bytes));
    assert_eq!(arrived_before(&s, t), 0, "no body bytes before the app's");
}

/// `sse.initial_padding: 2048`: after `": ok\n"` comes one comment line of exactly 2048 bytes
/// (its ':' and LF included), then the blank line, before the app's first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_padding_adds_a_2048_byte_comment_line() {
    let (s, app, t) = opening(Some("sse:\n  initial_padding: 2048\n")).await;
    let b = &s.bytes;
    assert!(b.starts_with(b": ok\n"), "body {}", show(b));
    let pad = &b[5..];
    let lf = pad.iter().position(|&c| c == b'\n').expect("padding line");
    let line = &pad[..=lf];
    assert_eq!(line.len(), 2048, "padding line length (with its LF)");
    assert_eq!(line[0], b':', "padding is a comment line");
    assert!(
        !line[1..lf].contains(&b'\r'),
        "no line break inside the padding"
    );
    assert_eq!(
        &pad[lf + 1..lf + 2],
        b"\n",
        "blank line ends the opening block"
    );
    assert_eq!(&pad[lf + 2..], &app[..], "then the app's bytes");
    assert_eq!(
        arrived_before(&s, t),
        5 + 2048 + 1,
        "opening block before the app"
    );
    assert_eq!(sse::events_of(&sse::parse_all(b)).len(), 1);
}

/// `sse.retry: 3s`: the opening block is `": ok\nretry: 3000\n\n"` and parses as retry 3000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_hint_in_opening_block() {
    let (s, app, t) = opening(Some("sse:\n  retry: 3s\n")).await;
    let open = b": ok\nretry: 3000\n\n";
    assert_eq!(
        s.bytes,
        [&open[..], &app].concat(),
        "body {}",
        show(&s.bytes)
    );
    assert_eq!(arrived_before(&s, t), open.len());
    let items = sse::parse_all(&s.bytes);
    assert_eq!(items[0], Item::Comment(" ok".into()));
    assert_eq!(items[1], Item::Retry(3000));
}

/// All three together, in the contract's order: comment, padding, retry, blank line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_block_with_padding_and_retry() {
    let (s, app, _) = opening(Some("sse:\n  initial_padding: 64\n  retry: 250ms\n")).await;
    let mut open = b": ok\n:".to_vec();
    open.extend(std::iter::repeat_n(b' ', 62));
    open.extend_from_slice(b"\nretry: 250\n\n");
    assert_eq!(
        s.bytes,
        [&open[..], &app].concat(),
        "body {}",
        show(&s.bytes)
    );
}

// ---------------------------------------------------------------------------------------------
// BOM
// ---------------------------------------------------------------------------------------------

const EV: &[u8] = b"data: a\n\n";

/// Runs an app writing `writes` (10 ms apart) behind a sidecar; returns the client's bytes.
async fn bom_case(writes: &[&'static [u8]], flags: &[&str], yaml: Option<&str>) -> Vec<u8> {
    let mut script = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        if i > 0 {
            script.push(Pause(10));
        }
        script.push(Write(w));
    }
    let app = ScriptOrigin::start(script).await;
    let sc = sidecar(&app.url(), flags, yaml).await;
    let s = read_stream(&sc, Duration::from_secs(5)).await;
    assert_eq!(s.ended(), Some(&End::Complete));
    assert_eq!(
        app.bytes(),
        [BOM, EV].concat(),
        "the app wrote a BOM and an event"
    );
    s.bytes
}

/// With the opening comment, the app's leading BOM is dropped: the client gets `": ok\n\n"`
/// then the app's bytes minus the BOM, also when the BOM is split across writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_dropped_after_opening_comment() {
    let want = [OPEN, EV].concat();
    let cases: [&[&'static [u8]]; 4] = [
        &[b"\xEF\xBB\xBFdata: a\n\n"],
        &[b"\xEF", b"\xBB\xBFdata: a\n\n"],
        &[b"\xEF\xBB", b"\xBF", b"data: a\n\n"],
        &[b"\xEF", b"\xBB", b"\xBF", b"data: a\n", b"\n"],
    ];
    for writes in cases {
        let got = bom_case(writes, &[], None).await;
        assert_eq!(got, want, "writes {writes:?}: got {}", show(&got));
    }
}

/// With `open_comment: off` and no padding or retry, nothing precedes the app's bytes, so the
/// BOM passes through untouched, whole or split across writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_passes_through_without_opening_bytes() {
    let want = [BOM, EV].concat();
    let cases: [&[&'static [u8]]; 3] = [
        &[b"\xEF\xBB\xBFdata: a\n\n"],
        &[b"\xEF", b"\xBB\xBFdata: a\n\n"],
        &[b"\xEF\xBB", b"\xBF", b"data: a\n\n"],
    ];
    for writes in cases {
        let got = bom_case(writes, &[], Some("sse:\n  open_comment: off\n")).await;
        assert_eq!(got, want, "writes {writes:?}: got {}", show(&got));
    }
}

/// With `open_comment: off` but a heartbeat written before the app's first byte, the sidecar
/// did write first, so the BOM is dropped (a BOM mid-stream would corrupt the field name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_dropped_after_a_heartbeat_came_first() {
    let app = ScriptOrigin::start(vec![
        Pause(500),
        Write(b"\xEF"),
        Pause(10),
        Write(b"\xBB\xBFdata: a\n\n"),
    ])
    .await;
    let sc = sidecar(
        &app.url(),
        &["--heartbeat-interval", "200ms"],
        Some("sse:\n  open_comment: off\n"),
    )
    .await;
    let s = read_stream(&sc, Duration::from_secs(5)).await;
    let at = assert_framing(&s, b"", EV, HB);
    assert!(
        !at.is_empty() && at.iter().all(|&p| p == 0),
        "heartbeats before the app's first byte: {at:?}; body {}",
        show(&s.bytes)
    );
}

// ---------------------------------------------------------------------------------------------
// Line endings
// ---------------------------------------------------------------------------------------------

/// Plays `script` behind a sidecar with 200 ms heartbeats; checks the client's events equal
/// the app's and every heartbeat sits at a boundary; returns the heartbeat offsets.
async fn line_endings(script: Vec<Step>) -> (Vec<usize>, Vec<u8>) {
    let app = ScriptOrigin::start(script).await;
    let sc = sidecar(&app.url(), &["--heartbeat-interval", "200ms"], None).await;
    let s = read_stream(&sc, Duration::from_secs(8)).await;
    assert_eq!(s.ended(), Some(&End::Complete));
    let bytes = app.bytes();
    let at = assert_framing(&s, OPEN, &bytes, HB);
    (at, bytes)
}

/// CRLF line ends, with pauses at boundaries and inside events (including between the CR and
/// LF of a line end): same events as the app's, heartbeats only at boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_line_endings_with_heartbeats() {
    let (at, bytes) = line_endings(vec![
        Write(b"id: 1\r\ndata: a\r\n"),
        Pause(450), // inside event 1
        Write(b"data: a2\r\n\r\n"),
        Pause(450), // boundary
        Write(b"event: x\r\ndata: b\r"),
        Pause(450), // inside event 2, between CR and LF
        Write(b"\n\r"),
        Pause(450), // after the CR of the blank line: a boundary, its LF still to come
        Write(b"\ndata: c\r\n\r\n"),
        Pause(450), // boundary
    ])
    .await;
    let b1 = b"id: 1\r\ndata: a\r\ndata: a2\r\n\r\n".len();
    let b2 = b1 + b"event: x\r\ndata: b\r\n\r".len();
    let b3 = bytes.len();
    for p in [b1, b2, b3] {
        assert!(
            at.contains(&p),
            "a heartbeat in the silence at app offset {p}: {at:?} in {}",
            show(&bytes)
        );
    }
}

/// Lone-CR line ends: same events, heartbeats only at boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_only_line_endings_with_heartbeats() {
    let (at, bytes) = line_endings(vec![
        Write(b"data: a\r"),
        Pause(450), // inside event 1
        Write(b"data: a2\r\r"),
        Pause(450), // boundary
        Write(b"event: x\rid: 2\rdata: b\r"),
        Pause(450), // inside event 2
        Write(b"\rdata: c\r\r"),
        Pause(450), // boundary
    ])
    .await;
    let b1 = b"data: a\rdata: a2\r\r".len();
    let b2 = bytes.len();
    for p in [b1, b2] {
        assert!(
            at.contains(&p),
            "a heartbeat in the silence at app offset {p}: {at:?} in {}",
            show(&bytes)
        );
    }
}

/// A mix of LF, CRLF and CR in one stream, with a CR ending one write and the LF opening the
/// next at a boundary: same events, heartbeats only at boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_line_endings_with_heartbeats() {
    let (at, bytes) = line_endings(vec![
        Write(b"data: a\n\r\n"),
        Pause(450),
        Write(b"data: b\r\r"),
        Pause(450),
        Write(b"\ndata: c\r\n\n"),
        Pause(450),
        Write(b"data: d\r"),
        Pause(450),
        Write(b"\r"),
    ])
    .await;
    let b1 = b"data: a\n\r\n".len();
    let b2 = b1 + b"data: b\r\r".len();
    let b3 = b2 + b"\ndata: c\r\n\n".len();
    for p in [b1, b2, b3] {
        assert!(
            at.contains(&p),
            "a heartbeat in the silence at app offset {p}: {at:?} in {}",
            show(&bytes)
        );
    }
}

#[test]
fn boundary_helper() {
    assert!(ends_at_boundary(b""));
    assert!(ends_at_boundary(b"data: a\n\n"));
    assert!(ends_at_boundary(b"data: a\r\r"));
    assert!(ends_at_boundary(b"data: a\r\n\r"));
    assert!(ends_at_boundary(b"data: a\r\n\r\n"));
    assert!(!ends_at_boundary(b"data: a\n"));
    assert!(!ends_at_boundary(b"data: a\r\n"));
    assert!(!ends_at_boundary(b"data: a"));
    assert!(!ends_at_boundary(b"data: a\n\nda"));
    assert_eq!(align(b"X: \n\nab: \n\n", b"X", b"ab", HB), Ok(vec![0, 2]));
    assert!(align(b"Xa: \nb", b"X", b"ab", HB).is_err());
}
