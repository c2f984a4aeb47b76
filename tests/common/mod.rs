//! Test harness shared by the integration tests.
//!
//! Everything runs over real sockets on 127.0.0.1, bound on port 0:
//!
//! - [`origin::Origin`]: a scriptable SSE/HTTP origin inside the test process. Its behaviour
//!   is chosen per request by path and query (see the module doc) and it records what it saw:
//!   request headers and body, the bytes it sent, when the response started and when its
//!   connection closed. It can be stopped and restarted on its address (an app restart).
//! - [`raw_origin::RawOrigin`]: an origin whose connections are handled by a test's own
//!   closure, for bytes the scriptable origin cannot send.
//! - [`sidecar::Sidecar`]: the real `sse-sidecar` binary on free ports, killed on drop, its
//!   stderr printed when a test fails.
//! - [`process::Process`]: any other child process a test starts, killed on drop, its log
//!   printed when the test fails; its RSS and open fds from /proc.
//! - [`client`]: a raw HTTP/1.1 client that writes request bytes itself and reads the body
//!   incrementally with arrival timestamps, keeping the raw bytes for framing assertions.
//! - [`sse`]: a WHATWG event-stream parser for the client side, plus a streaming reader that
//!   combines the client, optional gzip decoding and the parser.
//! - [`h2c`]: an HTTP/2 prior-knowledge client (the `h2` crate).
//! - [`h2_raw`]: HTTP/2 as raw frames, for the floods and malformed clients `h2` won't be.
//! - [`haproxy`]: a real HAProxy with a given `timeout server`, and the lookup of middlebox
//!   binaries.
//! - [`nginx`]: a real nginx started from a temp prefix, as an untuned middlebox.
//! - [`node`]: the Node scripts of tests/browser/: where they are, whether their packages are
//!   installed, and the switch that skips them.
//! - [`cutter`]: a TCP proxy that resets its connections on a schedule (a flaky network).
//! - [`redis`]: a real `redis-server` on a free port, stopped and restarted at will.
//! - [`resume`]: opening, resuming and checking resumed streams.
//! - [`tls`]: a sidecar with a TLS listener, its self-signed certificate, a rustls client.
//! - [`rng`]: a small seeded PRNG (jitter, the soak's churn).
//!
//! Times are nanoseconds since one process-wide epoch ([`now_ns`]), so the origin's stamp in an
//! event and the client's arrival time can be subtracted.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod cutter;
pub mod h2_raw;
pub mod h2c;
pub mod haproxy;
pub mod middlebox;
pub mod nginx;
pub mod node;
pub mod origin;
pub mod process;
pub mod raw_origin;
pub mod redis;
pub mod resume;
pub mod rng;
pub mod sidecar;
pub mod sse;
pub mod tls;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use origin::Origin;
pub use sidecar::Sidecar;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the harness's epoch (shared by origin, client and tests).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Milliseconds, for messages.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Polls `cond` every 5 ms until it holds or `deadline` passes; panics with `what` then.
pub async fn eventually<F: FnMut() -> bool>(deadline: Duration, what: &str, mut cond: F) {
    if !try_eventually(deadline, &mut cond).await {
        panic!("timed out after {deadline:?} waiting for: {what}");
    }
}

/// Like [`eventually`] but returns whether the condition held in time.
pub async fn try_eventually<F: FnMut() -> bool>(deadline: Duration, mut cond: F) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn wait_for<T, F: FnMut() -> Option<T>>(deadline: Duration, what: &str, mut f: F) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound on port 0, then released), never one this test process
/// was handed before: the kernel may give a just-released port out again at once, and a test
/// that asks for two (a proxy listener and a metrics listener) must not get the same twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port on 127.0.0.1 that this test process has not used yet in 1000 tries");
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: std::net::SocketAddr, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Gzip-compresses `data` in one go (for expected values).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Gunzips a complete gzip member.
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Bytes shown escaped, for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(600) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 600 {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

/// The values of header `name` (case-insensitive) in a recorded list of (name, value) pairs.
pub fn header_values<'a, 'n>(
    headers: &'a [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
