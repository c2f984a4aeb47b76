//! A real, untuned nginx as a middlebox (issue 2 §6): `gzip on; gzip_types text/event-stream;
//! gzip_proxied any;` and default buffering. In front of the origin directly it holds the
//! stream back; in front of the sidecar the events still arrive one by one.
//!
//! Needs the Debian nginx package (`make test` installs it); set SSE_SIDECAR_SKIP_NGINX=1 to
//! skip on a machine without it.
//!
//! Run: `cargo test --test middlebox_nginx`

mod common;

use std::time::Duration;

use common::nginx::{nginx_binary, Nginx};
use common::sse::{self, Event, SseStream};
use common::{client, ms, Origin, Sidecar};

const UNTUNED_GZIP: &str = "gzip on; gzip_types text/event-stream; gzip_proxied any;";
const EVENTS: u64 = 5;
const STREAM: &str = "/sse?events=5&interval_ms=150";

/// Reads the stream through `addr` as a browser behind a proxy would ask for it.
async fn read_stream(addr: std::net::SocketAddr) -> (SseStream, Vec<(Event, u64)>) {
    let req = client::request(
        "GET",
        STREAM,
        &[("Accept", "text/event-stream"), ("Accept-Encoding", "gzip")],
        None,
    );
    let mut s = SseStream::new(client::send(addr, &req, "GET").await);
    let end = s.read_to_end(Duration::from_secs(8)).await;
    assert!(
        end.as_ref().is_some_and(client::End::is_clean),
        "stream did not end cleanly: {end:?}; head:\n{}",
        String::from_utf8_lossy(&s.resp.head.raw)
    );
    let ev = s.events();
    sse::assert_seqs(&ev, EVENTS, "events");
    (s, ev)
}

fn timeline(ev: &[(Event, u64)]) -> String {
    ev.iter()
        .map(|(e, at)| {
            format!(
                "seq {:?} sent {:.1} ms, arrived {:.1} ms",
                e.seq(),
                ms(e.t_ns().unwrap_or(0)),
                ms(*at)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Untuned gzip nginx holds an SSE stream from the origin until it ends, but passes the same
/// stream from the sidecar through one event at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untuned_nginx_holds_back_origin_but_not_sidecar() {
    let Some(bin) = nginx_binary() else {
        return;
    };
    let origin = Origin::start().await;

    // Control: nginx directly in front of the origin holds the events back.
    let direct = Nginx::start(&bin, origin.addr(), UNTUNED_GZIP, "").await;
    let (s, ev) = read_stream(direct.addr).await;
    let last_sent = ev.last().unwrap().0.t_ns().unwrap();
    let first_arrived = ev[0].1;
    assert!(
        first_arrived >= last_sent,
        "nginx -> origin: expected nginx to hold the first event until the stream ended, but it \
         arrived before the origin sent the last one (the control does not reproduce the \
         problem)\n{}\nhead:\n{}",
        timeline(&ev),
        String::from_utf8_lossy(&s.resp.head.raw)
    );
    drop(direct);

    // The same stream with the sidecar between nginx and the origin.
    let sc = Sidecar::start(&origin.url()).await;
    let via = Nginx::start(&bin, sc.addr, UNTUNED_GZIP, "").await;
    let (s, ev) = read_stream(via.addr).await;
    eprintln!(
        "nginx -> sidecar (content-encoding {:?}):\n{}",
        s.resp.head.header("content-encoding"),
        timeline(&ev)
    );
    sse::assert_each_before_next(&ev, "nginx -> sidecar -> origin");
}
