//! Heartbeats against real middlebox idle timeouts (issue 3 §7): nginx (`proxy_read_timeout
//! 2s`, default buffering) and HAProxy (`timeout server 2s`) in front of the sidecar, an app
//! silent between two events. With heartbeats every 1 s both events arrive through the
//! middlebox; with heartbeats off the middlebox cuts the stream during the silence. Both halves
//! are asserted for each middlebox, so the first cannot pass merely because the middlebox never
//! enforces its timeout.
//!
//! The app is silent for 10 s; here it is silent for 5 s ([`SILENCE_MS`]) against a
//! 2 s middlebox timeout (still 2.5 times it, and 5 heartbeats), to keep the suite short.
//!
//! Each test starts its own nginx or HAProxy from a temp dir with its own config, on free
//! loopback ports, in the foreground; killed on drop, logs printed when a test fails. Needs the
//! Debian nginx and haproxy packages (`make test` installs them); set
//! SSE_SIDECAR_SKIP_MIDDLEBOX=1 to skip on a machine without them.
//!
//! Run: `cargo test --release --test middlebox_timeouts`

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::client::{self, End};
use common::haproxy::{binary, Haproxy};
use common::nginx::Nginx;
use common::sse::{self, SseStream};
use common::{ms, show, Origin, Sidecar};

/// How long the app is silent between its two events.
const SILENCE_MS: u64 = 5000;
const MS: u64 = 1_000_000;
/// The middleboxes' idle timeout toward the sidecar.
const MB_TIMEOUT_MS: u64 = 2000;

fn stream_target() -> String {
    format!("/sse?events=2&interval_ms={SILENCE_MS}")
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nginx,
    Haproxy,
}

/// A running middlebox; the guard keeps the process alive.
struct Middlebox {
    addr: SocketAddr,
    _nginx: Option<Nginx>,
    _haproxy: Option<Haproxy>,
}

impl Kind {
    fn binary(self) -> Option<PathBuf> {
        binary(match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        })
    }
}

async fn middlebox(kind: Kind, bin: &PathBuf, sidecar: SocketAddr) -> Middlebox {
    match kind {
        Kind::Nginx => {
            let n = Nginx::start(
                bin,
                sidecar,
                "",
                &format!("proxy_read_timeout {MB_TIMEOUT_MS}ms;"),
            )
            .await;
            Middlebox {
                addr: n.addr,
                _nginx: Some(n),
                _haproxy: None,
            }
        }
        Kind::Haproxy => {
            let h = Haproxy::start(bin, sidecar, MB_TIMEOUT_MS).await;
            Middlebox {
                addr: h.addr,
                _nginx: None,
                _haproxy: Some(h),
            }
        }
    }
}

/// Origin, sidecar with `--heartbeat-interval heartbeat`, the middlebox in front, and the
/// stream opened through it (head read). `None` when the middlebox is skipped.
async fn open(kind: Kind, heartbeat: &str) -> Option<(Origin, Sidecar, Middlebox, SseStream)> {
    let bin = kind.binary()?;
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .metrics_off()
        .args(&["--threads", "1", "--heartbeat-interval", heartbeat])
        .start()
        .await;
    let mb = middlebox(kind, &bin, sc.addr).await;
    let req = client::request(
        "GET",
        &stream_target(),
        &[("Accept", "text/event-stream")],
        None,
    );
    let s = SseStream::new(client::send(mb.addr, &req, "GET").await);
    assert_eq!(
        s.resp.status(),
        200,
        "{kind:?} answered: {}",
        show(&s.resp.head.raw)
    );
    Some((origin, sc, mb, s))
}

/// Heartbeats every 1 s through `kind` with a 2 s idle timeout: both events arrive, the
/// second after the app's full silence, and the stream ends normally.
async fn heartbeats_keep_the_stream(kind: Kind) {
    let Some((origin, _sc, _mb, mut s)) = open(kind, "1s").await else {
        return;
    };
    let end = s
        .read_to_end(Duration::from_millis(SILENCE_MS + 5000))
        .await;
    let ev = s.events();
    let hbs: Vec<u64> = s
        .comments()
        .into_iter()
        .filter(|(c, _)| c == " ")
        .map(|(_, at)| at)
        .collect();
    let what = format!(
        "{kind:?}: ended {end:?}, events {:?}, heartbeats at {:?} ms; body {}",
        ev.iter()
            .map(|(e, at)| (e.seq(), format!("{:.0}", ms(*at))))
            .collect::<Vec<_>>(),
        hbs.iter()
            .map(|t| format!("{:.0}", ms(*t)))
            .collect::<Vec<_>>(),
        show(&s.bytes)
    );
    sse::assert_seqs(&ev, 2, &what);
    assert!(
        end.as_ref().is_some_and(End::is_clean),
        "the stream ended cleanly after the app's last event: {what}"
    );
    // The client, too, went through more than the middlebox's timeout without an app byte.
    // (Not the full silence: HAProxy delivered event 1 ~200 ms late, its Nagle/delayed-ACK.)
    let (t1, t2) = (ev[0].1, ev[1].1);
    assert!(
        t2 - t1 >= (MB_TIMEOUT_MS + 1000) * MS,
        "the gap between the events exceeded the middlebox timeout: {what}"
    );
    // 5 s of silence at 1 s: about 4-5 heartbeats; 3 is enough to show they came through.
    let between = hbs.iter().filter(|&&t| t > t1 && t < t2).count();
    assert!(
        between >= 3,
        "heartbeats reached the client through {kind:?}: {what}"
    );
    let rec = origin.wait_request("/sse", Duration::from_secs(1)).await;
    assert_eq!(rec.events_sent.len(), 2, "the app sent both events");
}

/// Heartbeats off (`--heartbeat-interval 0s`): during the app's silence the middlebox's 2 s
/// idle timeout ends the stream; the client never gets the second event.
async fn without_heartbeats_the_stream_is_cut(kind: Kind) {
    let Some((origin, _sc, _mb, mut s)) = open(kind, "0s").await else {
        return;
    };
    let end = s
        .read_to_end(Duration::from_millis(SILENCE_MS + 5000))
        .await;
    let ended_at = common::now_ns();
    let ev = s.events();
    let what = format!(
        "{kind:?}: ended {end:?}, events {:?}; body {}",
        ev.iter()
            .map(|(e, at)| (e.seq(), format!("{:.0}", ms(*at))))
            .collect::<Vec<_>>(),
        show(&s.bytes)
    );
    assert!(end.is_some(), "the middlebox ended the stream: {what}");
    sse::assert_seqs(&ev, 1, &what);
    assert!(
        s.comments().iter().all(|(c, _)| c == " ok"),
        "no heartbeats with --heartbeat-interval 0s: {what}"
    );
    // The cut is the middlebox's idle timeout: no earlier than it after the last byte, and
    // before the app would have sent event 2.
    let t1 = ev[0].1;
    let after = (ended_at - t1) / MS;
    assert!(
        (MB_TIMEOUT_MS - 500..SILENCE_MS).contains(&after),
        "stream ended {after} ms after event 1; want about {MB_TIMEOUT_MS} ms: {what}"
    );
    // The cut reached the app: the sidecar saw the middlebox leave and closed upstream.
    let rec = origin.wait_closed("/sse", Duration::from_secs(3)).await;
    assert_eq!(
        rec.events_sent.len(),
        1,
        "the app's connection closed before its second event: {rec:?}"
    );
}

/// nginx `proxy_read_timeout 2s`, heartbeats at 1 s: every event arrives through nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_read_timeout_defeated_by_heartbeats() {
    heartbeats_keep_the_stream(Kind::Nginx).await;
}

/// nginx `proxy_read_timeout 2s`, heartbeats off: nginx cuts the stream during the silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_read_timeout_cuts_without_heartbeats() {
    without_heartbeats_the_stream_is_cut(Kind::Nginx).await;
}

/// HAProxy `timeout server 2s`, heartbeats at 1 s: every event arrives through HAProxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_timeout_defeated_by_heartbeats() {
    heartbeats_keep_the_stream(Kind::Haproxy).await;
}

/// HAProxy `timeout server 2s`, heartbeats off: HAProxy cuts the stream during the silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_timeout_cuts_without_heartbeats() {
    without_heartbeats_the_stream_is_cut(Kind::Haproxy).await;
}
