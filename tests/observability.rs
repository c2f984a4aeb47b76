//! Observability over real sockets (issue 4): the real `sse-sidecar` binary in front of an
//! in-process origin, its admin listener on a free port, `/metrics` scraped over HTTP and
//! parsed here from the Prometheus text format, the access log read from its stderr. Also keeps
//! `examples/grafana/sse-sidecar-dashboard.json` and `examples/prometheus/alerts.yml` from
//! drifting away from the metrics the binary really exports.
//!
//! Run: `cargo test --release --test observability`. The promtool checks use the promtool
//! `make test-deps` unpacks into target/tools (scripts/promtool.sh), or one on PATH; without
//! either they are skipped outside CI. The structural checks always run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::client;
use common::sse::{Item, SseStream};
use common::{Origin, Sidecar};

/// Patience for anything that should happen "at once".
const T: Duration = Duration::from_secs(5);
const ES: (&str, &str) = ("Accept", "text/event-stream");

/// Every value of the `outcome` label, in the order the code declares them.
const OUTCOMES: [&str; 7] = [
    "completed",
    "client_closed",
    "upstream_error",
    "idle_timeout",
    "shutdown",
    "max_duration",
    "slow_consumer",
];

// ---------------------------------------------------------------------------------------------
// The Prometheus text format, parsed here (not with the crate that wrote it).
// ---------------------------------------------------------------------------------------------

/// One series: metric name and labels (sorted).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// One scrape of `/metrics`.
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<Series, f64>,
    /// `# TYPE` per family.
    types: BTreeMap<String, String>,
    /// `# HELP` per family.
    helps: BTreeMap<String, String>,
    text: String,
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let eq = s[i..]
            .find('=')
            .ok_or_else(|| format!("no '=' in labels {s:?}"))?;
        let name = s[i..i + eq].trim().to_string();
        i += eq + 1;
        if b.get(i) != Some(&b'"') {
            return Err(format!("label value not quoted in {s:?}"));
        }
        i += 1;
        let mut value = String::new();
        loop {
            match b.get(i) {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some(b'"') => break,
                Some(b'\\') => {
                    match b.get(i + 1) {
                        Some(b'n') => value.push('\n'),
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        other => return Err(format!("bad escape {other:?} in {s:?}")),
                    }
                    i += 2;
                    continue;
                }
                Some(_) => {
                    let ch = s[i..].chars().next().unwrap();
                    value.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
            }
        }
        i += 1;
        if out.insert(name.clone(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad sample value {v:?}")),
    }
}

impl Scrape {
    fn parse(text: &str) -> Result<Scrape, String> {
        let mut s = Scrape {
            samples: BTreeMap::new(),
            types: BTreeMap::new(),
            helps: BTreeMap::new(),
            text: text.to_string(),
        };
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut it = rest.splitn(3, ' ');
                let (Some(kw), Some(name)) = (it.next(), it.next()) else {
                    return Err(format!("bad comment line {line:?}"));
                };
                let arg = it.next().unwrap_or("").to_string();
                match kw {
                    "TYPE" => s.types.insert(name.to_string(), arg),
                    "HELP" => s.helps.insert(name.to_string(), arg),
                    _ => None,
                };
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(open) => {
                    let close = line
                        .rfind('}')
                        .ok_or_else(|| format!("no '}}' in {line:?}"))?;
                    (
                        &line[..open],
                        parse_labels(&line[open + 1..close])?,
                        &line[close + 1..],
                    )
                }
                None => {
                    let sp = line
                        .find(' ')
                        .ok_or_else(|| format!("no value in {line:?}"))?;
                    (&line[..sp], BTreeMap::new(), &line[sp..])
                }
            };
            // The value, then an optional timestamp.
            let value = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| format!("no value in {line:?}"))?;
            let series = Series {
                name: name.to_string(),
                labels,
            };
            if s.samples.insert(series, parse_value(value)?).is_some() {
                return Err(format!("series twice: {line:?}"));
            }
        }
        Ok(s)
    }

    /// The value of one series; panics (listing the family) if it is not exposed.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_get(name, labels).unwrap_or_else(|| {
            let family: Vec<String> = self
                .text
                .lines()
                .filter(|l| l.starts_with(name))
                .map(str::to_string)
                .collect();
            panic!("{name}{labels:?} not exposed; lines of that family:\n{family:#?}")
        })
    }

    fn try_get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = Series {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.samples.get(&key).copied()
    }

    /// Names of every exposed series (`x_bucket`, `x_count` ... for histograms).
    fn series_names(&self) -> BTreeSet<String> {
        self.samples.keys().map(|s| s.name.clone()).collect()
    }

    /// Every value a label takes on the series named `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .keys()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// `GET /metrics` on the admin listener, parsed.
async fn scrape(admin: SocketAddr) -> Scrape {
    let r = client::get(admin, "/metrics", &[]).await;
    assert_eq!(r.status(), 200, "GET /metrics on {admin}");
    let ct = r.head.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "/metrics Content-Type {ct:?}");
    let text = String::from_utf8(r.body).expect("/metrics is UTF-8");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

/// Scrapes until `cond` holds or `deadline` passes, and returns the last scrape either way, so
/// the caller's exact assertions say what was wrong.
async fn scrape_until(
    admin: SocketAddr,
    deadline: Duration,
    cond: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let end = Instant::now() + deadline;
    loop {
        let s = scrape(admin).await;
        if cond(&s) || Instant::now() >= end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `after - before` for one series.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

/// How much each `sse_sidecar_streams_total{outcome}` moved.
fn outcome_deltas(before: &Scrape, after: &Scrape) -> BTreeMap<&'static str, f64> {
    OUTCOMES
        .iter()
        .map(|o| {
            (
                *o,
                delta(
                    before,
                    after,
                    "sse_sidecar_streams_total",
                    &[("outcome", o)],
                ),
            )
        })
        .collect()
}

/// The outcome deltas expected when only `outcome` moved, by `n`.
fn only(outcome: &str, n: f64) -> BTreeMap<&'static str, f64> {
    OUTCOMES
        .iter()
        .map(|o| (*o, if *o == outcome { n } else { 0.0 }))
        .collect()
}

fn active(s: &Scrape) -> f64 {
    s.get("sse_sidecar_streams_active", &[])
}

async fn open_sse(addr: SocketAddr, target: &str) -> SseStream {
    SseStream::new(client::send(addr, &client::request("GET", target, &[ES], None), "GET").await)
}

/// Heartbeats are `: \n\n`: a comment with nothing after the colon but the space.
fn heartbeats_seen(s: &SseStream) -> usize {
    s.comments()
        .iter()
        .filter(|(c, _)| c.trim().is_empty())
        .count()
}

// ---------------------------------------------------------------------------------------------
// Metrics after known workloads
// ---------------------------------------------------------------------------------------------

/// N concurrent streams of M events each move every counter and histogram count by exactly
/// what the clients saw: events N·M, streams completed N, event-delay samples N·M,
/// time-to-first-event and stream-duration samples N, SSE 2xx requests N, stream bytes equal to
/// the body bytes the clients received, heartbeats equal to the heartbeat comments they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_moves_metrics_by_exact_deltas() {
    const N: usize = 4;
    const M: usize = 5;
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--heartbeat-interval", "100ms"])
        .start()
        .await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;
    assert_eq!(active(&before), 0.0, "no stream open yet");

    // A pause after event 2 long enough for a few heartbeats.
    let target = format!("/sse?events={M}&interval_ms=20&silence_after=2&silence_ms=350");
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (addr, target) = (sc.addr, target.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = open_sse(addr, &target).await;
            let end = s.read_to_end(T).await;
            (s, end)
        }));
    }
    let mut body_bytes = 0usize;
    let mut heartbeats = 0usize;
    for t in tasks {
        let (s, end) = t.await.unwrap();
        assert_eq!(
            end,
            Some(client::End::Complete),
            "stream ended cleanly; body: {}",
            common::show(&s.bytes)
        );
        let seqs: Vec<u64> = s.events().iter().filter_map(|(e, _)| e.seq()).collect();
        assert_eq!(
            seqs,
            (1..=M as u64).collect::<Vec<_>>(),
            "events the client saw"
        );
        body_bytes += s.resp.body.len();
        heartbeats += heartbeats_seen(&s);
    }
    assert!(
        heartbeats >= N,
        "each stream's 350 ms pause got a heartbeat"
    );

    let after = scrape_until(admin, T, |s| {
        delta(
            &before,
            s,
            "sse_sidecar_streams_total",
            &[("outcome", "completed")],
        ) >= N as f64
            && delta(
                &before,
                s,
                "sse_sidecar_requests_total",
                &[("kind", "sse"), ("code", "2xx")],
            ) >= N as f64
    })
    .await;
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let (n, nm) = (N as f64, (N * M) as f64);
    assert_eq!(outcome_deltas(&before, &after), only("completed", n));
    assert_eq!(d("sse_sidecar_events_total", &[]), nm, "events_total");
    assert_eq!(
        d("sse_sidecar_event_delay_seconds_count", &[]),
        nm,
        "one delay sample per event"
    );
    assert_eq!(
        d("sse_sidecar_time_to_first_event_seconds_count", &[]),
        n,
        "one time-to-first-event sample per stream"
    );
    assert_eq!(
        d("sse_sidecar_stream_duration_seconds_count", &[]),
        n,
        "one duration sample per stream"
    );
    assert_eq!(
        d(
            "sse_sidecar_requests_total",
            &[("kind", "sse"), ("code", "2xx")]
        ),
        n,
        "SSE 2xx requests"
    );
    assert_eq!(
        d("sse_sidecar_heartbeats_total", &[]),
        heartbeats as f64,
        "heartbeats_total vs the heartbeat comments the clients read"
    );
    // Every stream's pause shows up as one upstream gap above 100 ms.
    let slow_gaps = d("sse_sidecar_upstream_silence_seconds_count", &[])
        - d(
            "sse_sidecar_upstream_silence_seconds_bucket",
            &[("le", "0.1")],
        );
    assert_eq!(slow_gaps, n, "upstream silences over 100 ms");
    // Streams lasted ~0.45 s: all of them in the 0.5 s duration bucket, none in 0.1 s.
    assert_eq!(
        d(
            "sse_sidecar_stream_duration_seconds_bucket",
            &[("le", "0.1")]
        ),
        0.0
    );
    assert_eq!(active(&after), 0.0, "active gauge back to 0");
    assert_eq!(
        d("sse_sidecar_stream_bytes_total", &[]),
        body_bytes as f64,
        "stream_bytes_total vs the body bytes the {N} clients received (opening block, events, \
         heartbeats)"
    );
}

/// While streams are open the active gauge equals the number open; each client leaving
/// mid-stream brings it down by one and counts one `client_closed`, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_gauge_follows_open_streams_and_client_closed() {
    const K: usize = 3;
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;

    let mut streams = Vec::new();
    for i in 0..K {
        let mut s = open_sse(sc.addr, "/sse?events=1&end=hold").await;
        assert!(s.next_event(T).await.is_some(), "stream {i}: first event");
        streams.push(s);
        let now = scrape_until(admin, T, |s| active(s) == (i + 1) as f64).await;
        assert_eq!(
            active(&now),
            (i + 1) as f64,
            "gauge with {} streams open",
            i + 1
        );
    }
    for left in (0..K).rev() {
        drop(streams.pop());
        let now = scrape_until(admin, T, |s| active(s) == left as f64).await;
        assert_eq!(
            active(&now),
            left as f64,
            "gauge with {left} streams still open"
        );
        assert_eq!(
            outcome_deltas(&before, &now),
            only("client_closed", (K - left) as f64)
        );
    }
    // The sidecar let go of the app's side too.
    origin.wait_closed("/sse", T).await;
}

/// The same accounting on the pingora (h2) path as on the HTTP/1 one: an h2c stream moves
/// events, heartbeats, histogram counts and stream bytes by exactly what its client received
/// and counts `completed`; an RST_STREAM on a second stream counts `client_closed`; the gauge
/// ends at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_move_metrics_by_exact_deltas() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--heartbeat-interval", "100ms"])
        .start()
        .await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;
    let mut c = common::h2c::H2Conn::connect(sc.addr).await;

    let mut r = c
        .request(
            "GET",
            "/sse?events=3&interval_ms=10&silence_ms=300",
            &[("accept", "text/event-stream")],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    while r.next_item(T).await.is_some() {}
    assert!(r.ended, "h2 stream did not end within {T:?}");
    let events = r
        .items
        .iter()
        .filter(|t| matches!(t.item, Item::Event(_)))
        .count();
    let heartbeats = r
        .items
        .iter()
        .filter(|t| matches!(&t.item, Item::Comment(c) if c.trim().is_empty()))
        .count();
    assert_eq!(events, 3);
    assert!(heartbeats >= 1, "the 300 ms pause got a heartbeat");
    let after = scrape_until(admin, T, |a| {
        outcome_deltas(&before, a) == only("completed", 1.0)
            && delta(
                &before,
                a,
                "sse_sidecar_requests_total",
                &[("kind", "sse"), ("code", "2xx")],
            ) >= 1.0
    })
    .await;
    let d = |name: &str| delta(&before, &after, name, &[]);
    assert_eq!(outcome_deltas(&before, &after), only("completed", 1.0));
    assert_eq!(d("sse_sidecar_events_total"), 3.0, "events_total");
    assert_eq!(d("sse_sidecar_event_delay_seconds_count"), 3.0);
    assert_eq!(d("sse_sidecar_time_to_first_event_seconds_count"), 1.0);
    assert_eq!(d("sse_sidecar_stream_duration_seconds_count"), 1.0);
    assert_eq!(d("sse_sidecar_heartbeats_total"), heartbeats as f64);
    assert_eq!(
        d("sse_sidecar_stream_bytes_total"),
        r.body.len() as f64,
        "stream_bytes_total vs the DATA bytes the h2 client received"
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "sse_sidecar_requests_total",
            &[("kind", "sse"), ("code", "2xx")]
        ),
        1.0
    );

    let mut r = c
        .request(
            "GET",
            "/sse?events=1&end=hold",
            &[("accept", "text/event-stream")],
            None,
        )
        .await;
    assert!(
        r.next_event(T).await.is_some(),
        "first event of the held stream"
    );
    let open = scrape_until(admin, T, |a| active(a) == 1.0).await;
    assert_eq!(active(&open), 1.0, "one h2 stream open");
    r.reset();
    let after = scrape_until(admin, T, |a| {
        active(a) == 0.0 && outcome_deltas(&before, a)["client_closed"] >= 1.0
    })
    .await;
    assert_eq!(active(&after), 0.0);
    let mut want = only("completed", 1.0);
    want.insert("client_closed", 1.0);
    assert_eq!(outcome_deltas(&before, &after), want);
    c.close();
}

/// A stream the app completes normally: `completed` +1, gauge back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_completed() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;
    let mut s = open_sse(sc.addr, "/sse?events=2&interval_ms=10").await;
    assert_eq!(s.read_to_end(T).await, Some(client::End::Complete));
    assert_eq!(s.events().len(), 2);
    let after = scrape_until(admin, T, |a| {
        outcome_deltas(&before, a) == only("completed", 1.0)
    })
    .await;
    assert_eq!(outcome_deltas(&before, &after), only("completed", 1.0));
    assert_eq!(active(&after), 0.0);
}

/// The app resets its connection mid-stream: the client's body ends without the terminating
/// chunk, `upstream_error` +1 and `upstream_errors_total{reason="reset"}` +1, gauge back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_upstream_error() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;
    let mut s = open_sse(sc.addr, "/sse?events=2&interval_ms=10&end=reset").await;
    let end = s.read_to_end(T).await;
    assert!(
        matches!(end, Some(client::End::Truncated | client::End::Error(_))),
        "the client must see the stream break, got {end:?}"
    );
    assert_eq!(s.events().len(), 2, "events before the reset were relayed");
    let after = scrape_until(admin, T, |a| {
        outcome_deltas(&before, a) == only("upstream_error", 1.0)
    })
    .await;
    assert_eq!(outcome_deltas(&before, &after), only("upstream_error", 1.0));
    assert_eq!(active(&after), 0.0);
    assert_eq!(
        delta(
            &before,
            &after,
            "sse_sidecar_upstream_errors_total",
            &[("reason", "reset")]
        ),
        1.0,
        "upstream_errors_total{{reason=\"reset\"}}"
    );
}

/// A silent app under `--sse-idle-timeout 500ms`: the sidecar ends the stream cleanly about
/// 0.5 s after the last upstream read, `idle_timeout` +1, gauge back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_idle_timeout() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--sse-idle-timeout", "500ms"])
        .start()
        .await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;
    let mut s = open_sse(sc.addr, "/sse?events=1&end=hold").await;
    let (_, first_at) = s.next_event(T).await.expect("first event");
    assert_eq!(s.read_to_end(T).await, Some(client::End::Complete));
    let last_at = s.items.last().map_or(first_at, |t| t.at_ns);
    let silent_ms = (last_at - first_at) as f64 / 1e6;
    assert!(
        silent_ms >= 450.0,
        "closed {silent_ms:.0} ms after the last event, before the 500 ms idle timeout"
    );
    assert!(
        s.items.iter().any(|t| matches!(t.item, Item::Retry(_))),
        "the close carries a retry hint"
    );
    let after = scrape_until(admin, T, |a| {
        outcome_deltas(&before, a) == only("idle_timeout", 1.0)
    })
    .await;
    assert_eq!(outcome_deltas(&before, &after), only("idle_timeout", 1.0));
    assert_eq!(active(&after), 0.0);
    origin.wait_closed("/sse", T).await;
}

/// For the `upstream_errors_*` tests: waits until `/metrics` counts their SSE candidate (2xx)
/// and their plain request (5xx) since `before`, then returns that scrape and how much
/// `upstream_errors_total` moved by reason: (connect, timeout, reset, protocol).
async fn upstream_error_deltas(
    admin: SocketAddr,
    before: &Scrape,
) -> (Scrape, (f64, f64, f64, f64)) {
    let after = scrape_until(admin, T, |a| {
        delta(
            before,
            a,
            "sse_sidecar_requests_total",
            &[("kind", "sse"), ("code", "2xx")],
        ) >= 1.0
            && delta(
                before,
                a,
                "sse_sidecar_requests_total",
                &[("kind", "other"), ("code", "5xx")],
            ) >= 1.0
    })
    .await;
    let errs = |reason| {
        delta(
            before,
            &after,
            "sse_sidecar_upstream_errors_total",
            &[("reason", reason)],
        )
    };
    let by_reason = (
        errs("connect"),
        errs("timeout"),
        errs("reset"),
        errs("protocol"),
    );
    (after, by_reason)
}

/// Nothing listens on the app's port: a plain request gets 502, an SSE candidate its retry
/// stream, and each counts once in `upstream_errors_total{reason="connect"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_connect() {
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let sc = Sidecar::start(&dead).await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;

    let r = client::get(sc.addr, "/json", &[]).await;
    assert_eq!(r.status(), 502, "plain request to a dead app");
    let r = client::get(sc.addr, "/sse", &[ES]).await;
    assert_eq!(
        r.status(),
        200,
        "SSE candidate gets a retry stream (on_upstream_error: retry)"
    );

    let (after, errs) = upstream_error_deltas(admin, &before).await;
    assert_eq!(
        errs,
        (2.0, 0.0, 0.0, 0.0),
        "upstream_errors_total (connect, timeout, reset, protocol)"
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "sse_sidecar_requests_total",
            &[("kind", "other"), ("code", "5xx")]
        ),
        1.0
    );
    assert_eq!(outcome_deltas(&before, &after), only("upstream_error", 1.0));
    assert_eq!(active(&after), 0.0);
}

/// An app that accepts but never answers, under `--read-timeout 500ms`: a plain request gets
/// 504, an SSE candidate its retry stream, and each counts once in
/// `upstream_errors_total{reason="timeout"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_timeout() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--read-timeout", "500ms"])
        .start()
        .await;
    let admin = sc.metrics_addr.unwrap();
    let before = scrape(admin).await;

    let r = client::get(sc.addr, "/slow_headers?ms=4000", &[]).await;
    assert_eq!(r.status(), 504, "plain request to a header-less app");
    let r = client::get(sc.addr, "/slow_headers?ms=4000&sse=1", &[ES]).await;
    assert_eq!(
        r.status(),
        200,
        "SSE candidate gets a retry stream (on_upstream_error: retry)"
    );

    let (after, errs) = upstream_error_deltas(admin, &before).await;
    assert_eq!(
        errs,
        (0.0, 2.0, 0.0, 0.0),
        "upstream_errors_total (connect, timeout, reset, protocol)"
    );
    assert_eq!(active(&after), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Admin endpoints
// ---------------------------------------------------------------------------------------------

/// A listening socket on `port` (0: any) with SO_REUSEADDR, so the app can come back on the
/// same port right after closing.
fn app_listener(port: u16) -> tokio::net::TcpListener {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_reuseaddr(true).unwrap();
    sock.bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    sock.listen(128).unwrap()
}

/// Polls `GET path` on the admin listener until its status is `want`; returns the last
/// `(status, body)`.
async fn admin_until(
    admin: SocketAddr,
    path: &str,
    want: u16,
    deadline: Duration,
) -> (u16, String) {
    let end = Instant::now() + deadline;
    loop {
        let r = client::get(admin, path, &[]).await;
        let got = (r.status(), String::from_utf8_lossy(&r.body).into_owned());
        if got.0 == want || Instant::now() >= end {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz` is 200 while the app listens, 503 naming the refused upstream once its listener
/// closes (within the ≤ 1 s cache), 200 again when it listens on the same port; `/healthz`
/// stays 200 throughout; unknown paths are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_app_listener() {
    let app = app_listener(0);
    let app_addr = app.local_addr().unwrap();
    let sc = Sidecar::start(&format!("http://{app_addr}")).await;
    let admin = sc.metrics_addr.unwrap();

    let (status, body) = admin_until(admin, "/readyz", 200, T).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "/readyz with the app listening"
    );

    drop(app);
    let (status, body) = admin_until(admin, "/readyz", 503, T).await;
    assert_eq!(
        status, 503,
        "/readyz after the app's listener closed: {body:?}"
    );
    assert!(
        body.contains(&app_addr.to_string()) && body.contains("refused"),
        "503 body names the reason: {body:?}"
    );
    let r = client::get(admin, "/healthz", &[]).await;
    assert_eq!(r.status(), 200, "/healthz while the app is down");

    let _app = app_listener(app_addr.port());
    let (status, body) = admin_until(admin, "/readyz", 200, T).await;
    assert_eq!(status, 200, "/readyz once the app listens again: {body:?}");

    for path in ["/", "/nope", "/metricsx", "/readyz/extra"] {
        let r = client::get(admin, path, &[]).await;
        assert_eq!(r.status(), 404, "GET {path} on the admin listener");
    }
}

/// `/healthz` is 200; `sse_sidecar_build_info{version}` carries the crate version; the
/// process collector is there; and the proxy port does not serve `/metrics` (it goes to the
/// app).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_build_info_and_metrics_only_on_admin() {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let admin = sc.metrics_addr.unwrap();
    let r = client::get(admin, "/healthz", &[]).await;
    assert_eq!(r.status(), 200);

    let s = scrape(admin).await;
    assert_eq!(
        s.get(
            "sse_sidecar_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in ["process_resident_memory_bytes", "process_open_fds"] {
        assert!(s.get(name, &[]) > 0.0, "{name}");
    }
    // Clock-tick resolution: an idle process that just started may have used 0 s.
    assert!(s.get("process_cpu_seconds_total", &[]) >= 0.0);
    // Every sidecar family has HELP text and a TYPE.
    for (family, ty) in &s.types {
        if family.starts_with("sse_sidecar_") {
            assert!(
                s.helps.get(family).is_some_and(|h| !h.is_empty()),
                "HELP for {family}"
            );
            assert!(
                ["counter", "gauge", "histogram"].contains(&ty.as_str()),
                "{family} is a {ty}"
            );
        }
    }

    let r = client::get(sc.addr, "/metrics", &[]).await;
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains("sse_sidecar_"),
        "the proxy port must not serve metrics: {body}"
    );
    assert_eq!(
        origin.requests_to("/metrics").len(),
        1,
        "/metrics on the proxy port reached the app"
    );
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

/// What the clients saw in the access-log workload.
struct LogWorkload {
    events: usize,
    bytes: usize,
    heartbeats: usize,
}

/// One SSE stream with a heartbeat in it, then one plain request.
async fn log_workload(sc: &Sidecar) -> LogWorkload {
    let mut s = open_sse(sc.addr, "/sse?events=3&interval_ms=10&silence_ms=300").await;
    assert_eq!(s.read_to_end(T).await, Some(client::End::Complete));
    let r = client::get(sc.addr, "/json?size=10", &[]).await;
    assert_eq!(r.status(), 200);
    let w = LogWorkload {
        events: s.events().len(),
        bytes: s.resp.body.len(),
        heartbeats: heartbeats_seen(&s),
    };
    assert_eq!(w.events, 3);
    assert!(w.heartbeats >= 1, "the 300 ms pause got a heartbeat");
    w
}

/// Waits until stderr holds `n` lines matching `pred`; returns all of stderr.
async fn wait_log(sc: &Sidecar, what: &str, pred: impl Fn(&str) -> bool, n: usize) -> String {
    let end = Instant::now() + T;
    loop {
        let err = sc.stderr();
        if err.lines().filter(|l| pred(l)).count() >= n {
            return err;
        }
        assert!(
            Instant::now() < end,
            "no {what} in stderr within {T:?}:\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The access lines (text format) once stderr holds `n` of them, as fields, with all of
/// stderr for failure messages.
async fn text_access_lines(sc: &Sidecar, n: usize) -> (Vec<BTreeMap<String, String>>, String) {
    let is_access = |l: &str| {
        let l = strip_ansi(l);
        l.contains(" access: ") && (l.contains("stream ended") || l.contains(" request "))
    };
    let err = wait_log(sc, "access lines", is_access, n).await;
    let access = err
        .lines()
        .filter(|l| is_access(l))
        .map(|l| text_fields(&strip_ansi(l)))
        .collect();
    (access, err)
}

/// The access line for `path`.
fn line_for<'a>(
    access: &'a [BTreeMap<String, String>],
    path: &str,
    err: &str,
) -> &'a BTreeMap<String, String> {
    access
        .iter()
        .find(|f| f.get("path").map(String::as_str) == Some(path))
        .unwrap_or_else(|| panic!("no access line for {path}:\n{err}"))
}

/// `--log-format json`: every stderr line is one JSON object; the stream-end line carries
/// method, path, status, kind, duration_ms, events, bytes, heartbeats, outcome and upstream
/// with the values the client saw; the plain request's line carries method, path, status,
/// kind, duration_ms and upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_lines() {
    use serde_json::Value;
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--log-format", "json", "--heartbeat-interval", "100ms"])
        .env("RUST_LOG", "info")
        .start()
        .await;
    let w = log_workload(&sc).await;
    let err = wait_log(&sc, "two access lines", |l| l.contains("\"access\""), 2).await;

    let mut lines = Vec::new();
    for (i, line) in err.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {line:?}", i + 1));
        assert!(v.is_object(), "line {} is a JSON object: {line}", i + 1);
        lines.push(v);
    }
    let access: Vec<&Value> = lines.iter().filter(|v| v["target"] == "access").collect();
    let find = |path: &str| {
        access
            .iter()
            .find(|v| v["path"] == path)
            .copied()
            .unwrap_or_else(|| panic!("no access line for {path}:\n{err}"))
    };
    let upstream = origin.addr().to_string();

    let st = find("/sse");
    assert_eq!(st["level"], "INFO", "{st}");
    assert_eq!(st["method"], "GET", "{st}");
    assert_eq!(st["status"], 200, "{st}");
    assert_eq!(st["kind"], "sse", "{st}");
    assert_eq!(st["events"], w.events as u64, "{st}");
    assert_eq!(
        st["bytes"], w.bytes as u64,
        "bytes = body bytes the client got: {st}"
    );
    assert_eq!(st["heartbeats"], w.heartbeats as u64, "{st}");
    assert_eq!(st["outcome"], "completed", "{st}");
    assert_eq!(st["upstream"], upstream.as_str(), "{st}");
    let ms = st["duration_ms"].as_f64().unwrap_or(-1.0);
    assert!(
        (300.0..T.as_millis() as f64).contains(&ms),
        "duration_ms {ms}: {st}"
    );

    let rq = find("/json");
    assert_eq!(rq["level"], "INFO", "{rq}");
    assert_eq!(rq["method"], "GET", "{rq}");
    assert_eq!(rq["status"], 200, "{rq}");
    assert_eq!(rq["kind"], "other", "{rq}");
    assert_eq!(rq["upstream"], upstream.as_str(), "{rq}");
    let ms = rq["duration_ms"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.0..T.as_millis() as f64).contains(&ms),
        "duration_ms {ms}: {rq}"
    );
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` fields of a text log line (values unquoted).
fn text_fields(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(eq) = line[i..].find('=') else { break };
        let key_start = line[..i + eq].rfind(' ').map_or(0, |p| p + 1);
        let key = line[key_start..i + eq].to_string();
        let mut j = i + eq + 1;
        let value = if b.get(j) == Some(&b'"') {
            let mut v = String::new();
            j += 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    j += 1;
                }
                v.push(b[j] as char);
                j += 1;
            }
            j += 1;
            v
        } else {
            let e = line[j..].find(' ').map_or(b.len(), |p| j + p);
            let v = line[j..e].to_string();
            j = e;
            v
        };
        out.insert(key, value);
        i = j;
    }
    out
}

/// The default text format carries the same access-log fields, with the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_lines() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .args(&["--heartbeat-interval", "100ms"])
        .env("RUST_LOG", "info")
        .start()
        .await;
    let w = log_workload(&sc).await;
    let (access, err) = text_access_lines(&sc, 2).await;
    let find = |path: &str| line_for(&access, path, &err);
    let upstream = origin.addr().to_string();
    let want_stream = [
        ("method", "GET".to_string()),
        ("status", "200".into()),
        ("kind", "sse".into()),
        ("events", w.events.to_string()),
        ("bytes", w.bytes.to_string()),
        ("heartbeats", w.heartbeats.to_string()),
        ("outcome", "completed".into()),
        ("upstream", upstream.clone()),
    ];
    let st = find("/sse");
    for (k, v) in &want_stream {
        assert_eq!(st.get(*k), Some(v), "field {k} of the stream line {st:?}");
    }
    assert!(
        st.get("duration_ms")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some(),
        "{st:?}"
    );
    let rq = find("/json");
    for (k, v) in [
        ("method", "GET"),
        ("status", "200"),
        ("kind", "other"),
        ("upstream", upstream.as_str()),
    ] {
        assert_eq!(
            rq.get(k).map(String::as_str),
            Some(v),
            "field {k} of the request line {rq:?}"
        );
    }
    assert!(
        rq.get("duration_ms")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some(),
        "{rq:?}"
    );
    // stderr is a file here, as under a log collector: `grep outcome=completed` must work.
    let colored = err.lines().filter(|l| l.contains('\x1b')).count();
    assert_eq!(
        colored, 0,
        "{colored} stderr lines carry ANSI color codes although stderr is not a terminal"
    );
}

/// h2 requests the sidecar answers itself (an SSE stream, a `Max-Forwards: 0` OPTIONS) skip
/// pingora's proxy, and still get their access lines; a plain request, through it, too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_access_log_lines_on_both_paths() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .env("RUST_LOG", "info")
        .start()
        .await;
    let mut c = common::h2c::H2Conn::connect(sc.addr).await;
    let es = ("accept", "text/event-stream");
    let mut r = c
        .request("GET", "/sse?events=3&interval_ms=0", &[es], None)
        .await;
    while r.next_data(T).await.is_some() {}
    let mut r = c
        .request("OPTIONS", "/opts", &[("max-forwards", "0")], None)
        .await;
    assert_eq!(r.status(), 200);
    while r.next_data(T).await.is_some() {}
    let mut r = c.request("GET", "/json?size=10", &[], None).await;
    while r.next_data(T).await.is_some() {}
    let (access, err) = text_access_lines(&sc, 3).await;
    let find = |path: &str| line_for(&access, path, &err);
    let st = find("/sse");
    for (k, v) in [
        ("status", "200"),
        ("kind", "sse"),
        ("events", "3"),
        ("outcome", "completed"),
    ] {
        assert_eq!(st.get(k).map(String::as_str), Some(v), "{k}: {st:?}");
    }
    let op = find("/opts");
    assert_eq!(
        op.get("method").map(String::as_str),
        Some("OPTIONS"),
        "{op:?}"
    );
    assert_eq!(op.get("status").map(String::as_str), Some("200"), "{op:?}");
    let js = find("/json");
    assert_eq!(js.get("kind").map(String::as_str), Some("other"), "{js:?}");
    assert_eq!(js.get("status").map(String::as_str), Some("200"), "{js:?}");
    assert!(
        origin.requests_to("/opts").is_empty(),
        "OPTIONS reached the app"
    );
}

// ---------------------------------------------------------------------------------------------
// The shipped dashboard and alert rules against the live metrics
// ---------------------------------------------------------------------------------------------

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const DASHBOARD: &str = "examples/grafana/sse-sidecar-dashboard.json";
const ALERTS: &str = "examples/prometheus/alerts.yml";

/// What one PromQL expression refers to.
#[derive(Debug, Default)]
struct ExprRefs {
    /// Series names (`sse_sidecar_*`, `process_*`, `up`).
    metrics: BTreeSet<String>,
    /// `(label, values)` from `label="v"` / `label=~"a|b"` matchers with literal alternatives.
    matchers: Vec<(String, Vec<String>)>,
    /// Labels in `by (...)` / `without (...)`.
    grouping: BTreeSet<String>,
}

/// A light scan of a PromQL expression (enough to find what it names; not a parser).
fn expr_refs(expr: &str) -> ExprRefs {
    let mut r = ExprRefs::default();
    let b = expr.as_bytes();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            // Skip string literals (matcher values are read with their label below).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == b'$' {
            // A Grafana variable: skip its name.
            i += 1;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_') || (i > 0 && ident(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        let rest = expr[i..].trim_start();
        if word == "by" || word == "without" {
            if let Some(list) = rest.strip_prefix('(') {
                let list = &list[..list.find(')').unwrap_or(list.len())];
                r.grouping.extend(
                    list.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
            continue;
        }
        for op in ["=~", "!~", "!=", "="] {
            if let Some(v) = rest.strip_prefix(op) {
                if let Some(v) = v.trim_start().strip_prefix('"') {
                    let v = &v[..v.find('"').unwrap_or(v.len())];
                    if op == "=" || op == "=~" {
                        let alts: Vec<String> = v.split('|').map(str::to_string).collect();
                        if alts.iter().all(|a| !a.is_empty() && a.bytes().all(ident)) {
                            r.matchers.push((word.to_string(), alts));
                        }
                    }
                }
                break;
            }
        }
        if word.starts_with("sse_sidecar_") || word.starts_with("process_") || word == "up" {
            r.metrics.insert(word.to_string());
        }
    }
    r
}

/// Checks that an expression only names series, labels and label values the live scrape has.
/// `up` (made by Prometheus, not the sidecar) and the target labels `job`/`instance` are allowed.
fn check_expr_against(expr: &str, where_: &str, live: &Scrape) -> ExprRefs {
    let names = live.series_names();
    let refs = expr_refs(expr);
    assert!(
        !refs.metrics.is_empty(),
        "{where_}: names no metric: {expr}"
    );
    let sidecar_metrics: Vec<&String> = refs.metrics.iter().filter(|m| *m != "up").collect();
    for m in &sidecar_metrics {
        assert!(
            names.contains(*m),
            "{where_}: {m} is not exported by the sidecar (expr: {expr})"
        );
    }
    let label_ok = |label: &str| {
        ["job", "instance", "le", "version"].contains(&label)
            || sidecar_metrics
                .iter()
                .any(|m| !live.label_values(m, label).is_empty())
    };
    for label in &refs.grouping {
        assert!(
            label_ok(label),
            "{where_}: no metric in it has label {label:?}: {expr}"
        );
    }
    for (label, values) in &refs.matchers {
        if ["job", "instance"].contains(&label.as_str()) {
            continue;
        }
        let live_values: BTreeSet<String> = sidecar_metrics
            .iter()
            .flat_map(|m| live.label_values(m, label))
            .collect();
        for v in values {
            assert!(
                live_values.contains(v),
                "{where_}: {label}=\"{v}\" matches nothing (live values {live_values:?}): {expr}"
            );
        }
    }
    refs
}

/// A scrape of a freshly started sidecar.
async fn live_scrape() -> (Origin, Sidecar, Scrape) {
    let origin = Origin::start().await;
    let sc = Sidecar::start(&origin.url()).await;
    let s = scrape(sc.metrics_addr.unwrap()).await;
    (origin, sc, s)
}

/// The dashboard is a Grafana dashboard (schemaVersion ≥ 36, a Prometheus datasource
/// variable every panel uses, unique ids, panels inside the 24-column grid), every panel
/// query names only metrics, labels and label values a live `/metrics` exports, and the panels
/// the issue asks for are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_matches_live_metrics() {
    use serde_json::Value;
    let (_origin, _sc, live) = live_scrape().await;
    let text = std::fs::read_to_string(repo_file(DASHBOARD)).expect("read dashboard");
    let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));

    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus datasource variable");
    let ds_ref = format!("${{{}}}", ds_var["name"].as_str().unwrap());

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut all_metrics = BTreeSet::new();
    let mut exprs_by_metric: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all_exprs = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"],
            ds_ref.as_str(),
            "{title}: panel datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        let mut refids = BTreeSet::new();
        for t in targets {
            assert!(
                refids.insert(t["refId"].as_str().unwrap()),
                "{title}: refIds"
            );
            assert_eq!(
                t["datasource"]["uid"],
                ds_ref.as_str(),
                "{title}: query datasource"
            );
            let expr = t["expr"].as_str().expect("expr");
            let refs = check_expr_against(expr, &format!("panel {title:?}"), &live);
            for m in &refs.metrics {
                exprs_by_metric
                    .entry(m.clone())
                    .or_default()
                    .push(expr.to_string());
            }
            all_metrics.extend(refs.metrics);
            all_exprs.push((title.clone(), expr.to_string()));
        }
    }

    // The panels the issue asks for.
    let has = |metric: &str, needle: &str| {
        exprs_by_metric
            .get(metric)
            .is_some_and(|es| es.iter().any(|e| e.contains(needle)))
    };
    for (metric, needle, what) in [
        ("sse_sidecar_streams_active", "", "active streams"),
        ("sse_sidecar_events_total", "rate(", "events/s"),
        ("sse_sidecar_heartbeats_total", "rate(", "heartbeats/s"),
        (
            "sse_sidecar_streams_total",
            "by (outcome)",
            "stream outcomes",
        ),
        (
            "sse_sidecar_upstream_errors_total",
            "by (reason)",
            "upstream errors by reason",
        ),
        ("sse_sidecar_requests_total", "code", "requests by code"),
        (
            "sse_sidecar_event_delay_seconds_bucket",
            "histogram_quantile(0.5,",
            "event delay p50",
        ),
        (
            "sse_sidecar_event_delay_seconds_bucket",
            "histogram_quantile(0.99,",
            "event delay p99",
        ),
        (
            "sse_sidecar_time_to_first_event_seconds_bucket",
            "histogram_quantile(0.5,",
            "time to first event p50",
        ),
        (
            "sse_sidecar_time_to_first_event_seconds_bucket",
            "histogram_quantile(0.99,",
            "time to first event p99",
        ),
    ] {
        assert!(
            has(metric, needle),
            "no {what} panel ({metric} with {needle:?})"
        );
    }
    // Quantiles over a rate of buckets, aggregated by `le`.
    for (title, e) in &all_exprs {
        if e.contains("histogram_quantile") {
            assert!(
                e.contains("_bucket") && e.contains("rate(") && e.contains("by (le)"),
                "{title}: {e}"
            );
        }
    }

    // With promtool, every query must also be valid PromQL (Grafana variables filled in).
    if let Some(promtool) = promtool() {
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, e)) in all_exprs.iter().enumerate() {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:q{i}\n        expr: {}\n",
                serde_json::to_string(&e).unwrap()
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dashboard-rules.yml");
        std::fs::write(&f, &rules).unwrap();
        run_promtool(&promtool, &["check", "rules", f.to_str().unwrap()]);
    }
}

/// The `promtool` that `make test-deps` unpacks (scripts/promtool.sh), else one on PATH.
/// Without one the checks are skipped with a note, except in CI (`CI=true`), where `make
/// test` has fetched it and its absence is a failure rather than a silent pass.
fn promtool() -> Option<PathBuf> {
    let ours = repo_file("target/tools/bin/promtool");
    let on_path = || {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    };
    let found = if ours.is_file() {
        Some(ours)
    } else {
        on_path()
    };
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool not found in CI: `make test-deps` runs scripts/promtool.sh"
        );
        eprintln!("NOTE: promtool not found; its checks are skipped (scripts/promtool.sh)");
    }
    found
}

fn run_promtool(promtool: &PathBuf, args: &[&str]) -> String {
    let out = std::process::Command::new(promtool)
        .args(args)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The alerting rules parse as Prometheus rule groups, each rule has an expression, a `for`,
/// a severity and a summary, the stream-failure ratio, reconnect storm, upstream error and
/// sidecar-down alerts are there, and every expression names only metrics, labels and label
/// values a live `/metrics` exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_match_live_metrics() {
    use serde_yaml::Value;
    let (_origin, _sc, live) = live_scrape().await;
    let text = std::fs::read_to_string(repo_file(ALERTS)).expect("read alerts");
    let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{ALERTS}: {e}"));
    let groups = doc["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    let mut alerts = BTreeMap::new();
    for g in groups {
        assert!(g["name"].as_str().is_some(), "group name");
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_string();
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{name}: expr"));
            let f = r["for"].as_str().unwrap_or_else(|| panic!("{name}: for"));
            assert!(
                f.ends_with('m') || f.ends_with('s') || f.ends_with('h'),
                "{name}: for {f:?}"
            );
            let sev = r["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                ["warning", "critical"].contains(&sev),
                "{name}: severity {sev:?}"
            );
            assert!(
                r["annotations"]["summary"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            check_expr_against(expr, &format!("alert {name}"), &live);
            assert!(
                alerts.insert(name.clone(), expr.to_string()).is_none(),
                "{name} twice"
            );
        }
    }
    let expr_of = |name: &str| {
        alerts
            .get(name)
            .unwrap_or_else(|| panic!("no {name} alert in {ALERTS}: {:?}", alerts.keys()))
    };
    let ratio = expr_of("SseSidecarStreamFailureRatioHigh");
    for outcome in ["upstream_error", "idle_timeout", "slow_consumer"] {
        assert!(ratio.contains(outcome), "failure ratio counts {outcome}");
    }
    assert!(ratio.contains('/'), "it is a ratio");
    let storm = expr_of("SseSidecarReconnectStorm");
    assert!(
        storm.contains("sse_sidecar_streams_total") && storm.contains("avg_over_time"),
        "storm compares the stream rate with its usual level: {storm}"
    );
    assert!(expr_of("SseSidecarUpstreamErrors").contains("sse_sidecar_upstream_errors_total"));
    assert!(expr_of("SseSidecarDown").contains("up"));
    assert!(expr_of("SseSidecarH2Abuse").contains("sse_sidecar_h2_abuse_total"));
}

/// Unit tests for the alert expressions (`promtool test rules`): each alert fires on the
/// situation it is for and stays quiet on normal traffic. Annotations are stripped from a
/// copy of the rules (their templates are checked by `promtool check rules`). Needs promtool.
const ALERT_UNIT_TESTS: &str = r#"
evaluation_interval: 1m
tests:
  # 1/s completed + 0.5/s client_closed, then 0.1/s upstream_error + 0.05/s idle_timeout:
  # 9 % failures, firing after the 5m window plus `for: 10m`; 1 % is quiet.
  - interval: 1m
    input_series:
      - series: 'sse_sidecar_streams_total{job="sse",instance="a:9090",outcome="completed"}'
        values: '0+60x60'
      - series: 'sse_sidecar_streams_total{job="sse",instance="a:9090",outcome="client_closed"}'
        values: '0+30x60'
      - series: 'sse_sidecar_streams_total{job="sse",instance="a:9090",outcome="upstream_error"}'
        values: '0+0x29 0+6x30'
      - series: 'sse_sidecar_streams_total{job="sse",instance="a:9090",outcome="idle_timeout"}'
        values: '0+0x29 0+3x30'
      - series: 'sse_sidecar_streams_total{job="sse",instance="b:9090",outcome="slow_consumer"}'
        values: '0+1x60'
    alert_rule_test:
      - {eval_time: 28m, alertname: SseSidecarStreamFailureRatioHigh, exp_alerts: []}
      - {eval_time: 38m, alertname: SseSidecarStreamFailureRatioHigh, exp_alerts: []}
      - eval_time: 50m
        alertname: SseSidecarStreamFailureRatioHigh
        exp_alerts: [{exp_labels: {job: sse, severity: warning}}]
      - {eval_time: 50m, alertname: SseSidecarReconnectStorm, exp_alerts: []}
  # 2 streams/s for an hour, then 20/s: a storm. A steady 20/s is not.
  - interval: 1m
    input_series:
      - series: 'sse_sidecar_streams_total{job="sse",instance="a:9090",outcome="client_closed"}'
        values: '0+120x60 7200+1200x15'
      - series: 'sse_sidecar_streams_total{job="steady",instance="c:9090",outcome="client_closed"}'
        values: '0+1200x75'
    alert_rule_test:
      - {eval_time: 55m, alertname: SseSidecarReconnectStorm, exp_alerts: []}
      - eval_time: 70m
        alertname: SseSidecarReconnectStorm
        exp_alerts: [{exp_labels: {job: sse, severity: warning}}]
  # Connect errors at 0.2/s for 10 minutes; a single error is not an alert.
  - interval: 1m
    input_series:
      - series: 'sse_sidecar_upstream_errors_total{job="sse",instance="a:9090",reason="connect"}'
        values: '0+12x20'
      - series: 'sse_sidecar_upstream_errors_total{job="sse",instance="a:9090",reason="timeout"}'
        values: '0 1+0x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: SseSidecarUpstreamErrors
        exp_alerts: [{exp_labels: {job: sse, reason: connect, severity: warning}}]
  # Two ping floods a minute for 20 minutes: an attack; one burst of 5 malformed-request
  # closes is not.
  - interval: 1m
    input_series:
      - series: 'sse_sidecar_h2_abuse_total{job="sse",instance="a:9090",reason="ping_flood"}'
        values: '0+2x20'
      - series: 'sse_sidecar_h2_abuse_total{job="sse",instance="a:9090",reason="malformed_requests"}'
        values: '0 5+0x20'
    alert_rule_test:
      - {eval_time: 3m, alertname: SseSidecarH2Abuse, exp_alerts: []}
      - eval_time: 18m
        alertname: SseSidecarH2Abuse
        exp_alerts: [{exp_labels: {job: sse, reason: ping_flood, severity: warning}}]
  # A sidecar that stops answering scrapes; a target that never was a sidecar is not it.
  - interval: 1m
    input_series:
      - series: 'up{job="sse",instance="a:9090"}'
        values: '1x10 0x10'
      - series: 'sse_sidecar_build_info{job="sse",instance="a:9090",version="0.1.0"}'
        values: '1x10'
      - series: 'up{job="other",instance="z:9100"}'
        values: '0x20'
    alert_rule_test:
      - {eval_time: 10m, alertname: SseSidecarDown, exp_alerts: []}
      - eval_time: 15m
        alertname: SseSidecarDown
        exp_alerts: [{exp_labels: {job: sse, instance: "a:9090", severity: critical}}]
"#;

/// `promtool check rules` accepts the shipped alerts (expressions and annotation templates),
/// `promtool test rules` passes [`ALERT_UNIT_TESTS`], and `promtool check metrics` finds no
/// problem in a live scrape. Skipped, with a note, when promtool is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let alerts = repo_file(ALERTS);
    run_promtool(&promtool, &["check", "rules", alerts.to_str().unwrap()]);

    let dir = tempfile::tempdir().unwrap();
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&alerts).unwrap()).unwrap();
    for g in doc["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            r.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    let rules = dir.path().join("alerts.yml");
    std::fs::write(&rules, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let tests = dir.path().join("alerts_test.yml");
    std::fs::write(
        &tests,
        format!("rule_files: [alerts.yml]\n{ALERT_UNIT_TESTS}"),
    )
    .unwrap();
    run_promtool(&promtool, &["test", "rules", tests.to_str().unwrap()]);

    let (_origin, _sc, live) = live_scrape().await;
    let m = dir.path().join("metrics.txt");
    std::fs::write(&m, &live.text).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&m).unwrap())
        .output()
        .expect("run promtool check metrics");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics on a live scrape:\n{text}"
    );
}
