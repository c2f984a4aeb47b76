//! Hostile or broken HTTP/2 clients (issue 19), over real sockets with the `h2` crate: one
//! client's misbehaviour costs only its own stream.
//!
//! Run: `cargo test --release --test h2_hostile`

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Origin, Sidecar};
use tokio::net::TcpStream;

/// A stream whose h2 window the client never opens stalls alone: the connection's other
/// stream keeps flowing, and after `sse.write_timeout` the stalled stream is reset
/// (RST_STREAM — a client cannot mistake it for a finished stream, as it would an
/// END_STREAM) and counted as `slow_consumer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_stream_is_reset_and_its_neighbour_flows() {
    let origin = Origin::start().await;
    let sc = Sidecar::builder(&origin.url())
        .config("sse:\n  write_timeout: 1s\n")
        .start()
        .await;
    let tcp = TcpStream::connect(sc.addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(2048)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2c handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = |target: &str| {
        http::Request::builder()
            .uri(format!("http://{}{target}", sc.addr))
            .header("accept", "text/event-stream")
            .body(())
            .unwrap()
    };
    let mut send = send.ready().await.unwrap();
    let (slow, _) = send
        .send_request(request("/sse?events=2000&interval_ms=5&pad=1000"), true)
        .unwrap();
    let mut send = send.ready().await.unwrap();
    let (fast, _) = send
        .send_request(request("/sse?events=1000&interval_ms=10&n=2"), true)
        .unwrap();
    let mut slow = slow.await.expect("slow head").into_body();
    let mut fast = fast.await.expect("fast head").into_body();

    // The neighbour is read (and its window released) for 3 s: it must keep flowing.
    let started = Instant::now();
    let mut fast_bytes = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(1), fast.data()).await {
            Ok(Some(Ok(d))) => {
                fast_bytes += d.len();
                let _ = fast.flow_control().release_capacity(d.len());
            }
            other => panic!("the neighbour stream stopped: {other:?}"),
        }
    }
    assert!(
        fast_bytes > 5_000,
        "the neighbour got only {fast_bytes} bytes"
    );

    // The stalled stream: whatever its window let through, then a reset — not a clean end.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.data()).await {
            Ok(Some(Ok(_))) => continue, // read, never released
            Ok(Some(Err(e))) => break format!("error: {e} (reset: {})", e.is_reset()),
            Ok(None) => break "END_STREAM".to_string(),
            Err(_) => break "nothing within 10 s".to_string(),
        }
    };
    assert!(
        ended.contains("reset: true"),
        "the stalled stream ended with {ended}"
    );
    let slow_consumers = common::sidecar::metric_at(
        sc.metrics_addr.unwrap(),
        "sse_sidecar_streams_total{outcome=\"slow_consumer\"}",
    )
    .await;
    assert_eq!(slow_consumers, 1.0);
}
