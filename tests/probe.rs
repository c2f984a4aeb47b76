//! `sse-sidecar probe` against real boxes on loopback (issue 17 part 2): the sidecar serves
//! its probe stream (`probe.enabled`), a real nginx or HAProxy sits in front of it, and the
//! probe command, run as users run it, must name what the box does to the stream: nothing
//! (`ok`), buffering (`buffered`, with the burst size), compression, or an idle cut
//! (`cut_idle`, with `idle_cutoff_s`). Also: the probe path's token, its stream limit, and
//! the path reaching the app while the probe is disabled.
//!
//! nginx and HAProxy are started by the tests on free ports (see `common::nginx`,
//! `common::haproxy`); set SSE_SIDECAR_SKIP_NGINX=1 / SSE_SIDECAR_SKIP_MIDDLEBOX=1 to skip
//! them on a machine without the packages.
//!
//! Run: `cargo test --release --test probe`

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::haproxy::{binary, Haproxy};
use common::nginx::{nginx_binary, Nginx};
use common::sidecar::run_cli;
use common::{Origin, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROBE: &str = "/_sse-sidecar/probe";
const ENABLED: &str = "probe:\n  enabled: true\n";
/// nginx with its defaults (proxy_buffering on, HTTP/1.0 to the upstream), told to ignore
/// the sidecar's `X-Accel-Buffering: no`.
const BUFFERING: &str = "proxy_ignore_headers X-Accel-Buffering;";

/// What one `sse-sidecar probe --json` run gave.
struct Probed {
    code: i32,
    json: serde_json::Value,
    stderr: String,
}

impl Probed {
    fn kinds(&self) -> Vec<String> {
        self.json["verdict"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|f| f["kind"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}; {:#}; stderr: {}",
            self.code, self.json, self.stderr
        )
    }
}

/// Runs `sse-sidecar probe URL --json ARGS...` to completion (20 s at most).
async fn probe(url: String, args: &[&str]) -> Probed {
    let mut all: Vec<String> = vec!["probe".into(), url, "--json".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_cli(&refs, &[])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Probed {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sidecar(origin: &Origin, yaml: &str) -> Sidecar {
    Sidecar::builder(&origin.url())
        .metrics_off()
        .config(yaml)
        .start()
        .await
}

fn url(addr: SocketAddr, target: &str) -> String {
    format!("http://{addr}{target}")
}

/// Nothing in front of the sidecar: every event arrives on its own and the verdict is `ok`
/// (exit 0).
#[tokio::test]
async fn nothing_in_front_is_ok() {
    let origin = Origin::start().await;
    let sc = sidecar(&origin, ENABLED).await;
    let p = probe(url(sc.addr, PROBE), &["--silences", "1s"]).await;
    assert_eq!(p.code, 0, "{p}");
    assert_eq!(p.kinds(), vec!["ok"], "{p}");
    assert_eq!(p.json["events"], 21, "10 + 10 events and done: {p}");
    assert_eq!(p.json["max_burst_events"], 1, "{p}");
    assert_eq!(p.json["http_version"], "HTTP/1.1", "{p}");
    assert!(p.json["idle_cutoff_s"].is_null(), "{p}");
    assert!(origin.requests().is_empty(), "the probe reached the app");
}

/// An untuned nginx that ignores `X-Accel-Buffering` holds the stream: `buffered`, with the
/// burst size, and nginx named as the likely box (exit 1).
#[tokio::test]
async fn a_buffering_nginx_is_found_with_its_burst() {
    let Some(bin) = nginx_binary() else { return };
    let origin = Origin::start().await;
    let sc = sidecar(&origin, ENABLED).await;
    let nginx = Nginx::start(&bin, sc.addr, "", BUFFERING).await;
    let p = probe(url(nginx.addr, PROBE), &["--silences", "1s"]).await;
    assert_eq!(p.code, 1, "{p}");
    assert!(p.kinds().contains(&"buffered".to_string()), "{p}");
    let burst = p.json["max_burst_events"].as_u64().unwrap_or(0);
    assert!(burst >= 3, "burst of {burst} events: {p}");
    eprintln!(
        "measured: untuned nginx delivers bursts of {burst} events ({} bytes), bursts {}",
        p.json["max_burst_bytes"], p.json["bursts"]
    );
    let detail = p.json["verdict"].to_string();
    assert!(detail.contains("nginx"), "the box is not named: {p}");
}

/// nginx with `proxy_read_timeout 2s` cuts the stream 2 s into a 5 s silence: `cut_idle`
/// with `idle_cutoff_s` about 2.
#[tokio::test]
async fn nginx_read_timeout_is_an_idle_cut_of_two_seconds() {
    let Some(bin) = nginx_binary() else { return };
    let origin = Origin::start().await;
    let sc = sidecar(&origin, ENABLED).await;
    let nginx = Nginx::start(&bin, sc.addr, "", "proxy_read_timeout 2s;").await;
    let p = probe(url(nginx.addr, PROBE), &["--silences", "5s"]).await;
    assert_eq!(p.code, 1, "{p}");
    assert!(p.kinds().contains(&"cut_idle".to_string()), "{p}");
    let cutoff = p.json["idle_cutoff_s"].as_f64().expect("a cutoff");
    eprintln!(
        "measured: nginx proxy_read_timeout 2s cut at {cutoff} s; bursts {}, delays {}",
        p.json["bursts"], p.json["delays_ms"]
    );
    assert!((1.5..3.0).contains(&cutoff), "cutoff {cutoff} s: {p}");
    assert_eq!(p.json["cut_silence_s"], 5.0, "{p}");
}

/// HAProxy with `timeout server 2s` cuts the stream 2 s into a 5 s silence: `cut_idle` with
/// `idle_cutoff_s` about 2.
#[tokio::test]
async fn haproxy_server_timeout_is_an_idle_cut_of_two_seconds() {
    let Some(bin) = binary("haproxy") else { return };
    let origin = Origin::start().await;
    let sc = sidecar(&origin, ENABLED).await;
    let haproxy = Haproxy::start(&bin, sc.addr, 2000).await;
    let p = probe(url(haproxy.addr, PROBE), &["--silences", "5s"]).await;
    assert_eq!(p.code, 1, "{p}");
    assert!(p.kinds().contains(&"cut_idle".to_string()), "{p}");
    let cutoff = p.json["idle_cutoff_s"].as_f64().expect("a cutoff");
    eprintln!("measured: haproxy timeout server 2s cut at {cutoff} s");
    assert!((1.5..3.0).contains(&cutoff), "cutoff {cutoff} s: {p}");
}

/// nginx compressing event streams (and ignoring `X-Accel-Buffering`): `compressed` or
/// `buffered`.
#[tokio::test]
async fn a_compressing_nginx_is_found() {
    let Some(bin) = nginx_binary() else { return };
    let origin = Origin::start().await;
    let sc = sidecar(&origin, ENABLED).await;
    let gzip = "gzip on; gzip_min_length 0; gzip_types text/event-stream;";
    let nginx = Nginx::start(&bin, sc.addr, gzip, BUFFERING).await;
    let p = probe(url(nginx.addr, PROBE), &["--silences", "1s"]).await;
    assert_eq!(p.code, 1, "{p}");
    let kinds = p.kinds();
    assert!(
        kinds.contains(&"compressed".to_string()) || kinds.contains(&"buffered".to_string()),
        "{p}"
    );
    eprintln!(
        "measured: gzip nginx: {kinds:?}, Content-Encoding {}, largest burst {} events",
        p.json["headers"]["content-encoding"], p.json["max_burst_events"]
    );
}

/// An app's own stream (not a probe stream) behind the buffering nginx: its events arrive
/// together, `buffered`.
#[tokio::test]
async fn a_plain_app_stream_behind_a_buffering_box_is_buffered() {
    let Some(bin) = nginx_binary() else { return };
    let origin = Origin::start().await;
    let sc = sidecar(&origin, "").await;
    let nginx = Nginx::start(&bin, sc.addr, "", BUFFERING).await;
    let target = "/sse?events=10&interval_ms=100";
    let p = probe(url(nginx.addr, target), &["--silences", ""]).await;
    assert_eq!(p.code, 1, "{p}");
    assert!(p.kinds().contains(&"buffered".to_string()), "{p}");
    assert_eq!(p.json["probe_stream"], false, "{p}");
    eprintln!(
        "measured: app stream behind untuned nginx: bursts {}",
        p.json["bursts"]
    );
    // The same stream without the box arrives one by one.
    let direct = probe(url(sc.addr, target), &["--silences", ""]).await;
    assert_eq!(direct.kinds(), vec!["ok"], "{direct}");
    assert_eq!(direct.json["events"], 10, "{direct}");
}

/// With `probe.token` set, a probe without `?token=` gets 401 (`error_status`, exit 1), and
/// with the token it streams.
#[tokio::test]
async fn the_token_is_required() {
    let origin = Origin::start().await;
    let sc = sidecar(&origin, "probe:\n  enabled: true\n  token: s3cret\n").await;
    let p = probe(url(sc.addr, PROBE), &["--silences", ""]).await;
    assert_eq!(p.json["status"], 401, "{p}");
    assert_eq!(p.kinds(), vec!["error_status"], "{p}");
    assert_eq!(p.code, 1, "{p}");
    let wrong = probe(
        url(sc.addr, &format!("{PROBE}?token=nope")),
        &["--silences", ""],
    )
    .await;
    assert_eq!(wrong.json["status"], 401, "{wrong}");
    let ok = probe(
        url(sc.addr, &format!("{PROBE}?token=s3cret")),
        &["--silences", ""],
    )
    .await;
    assert_eq!(ok.json["status"], 200, "{ok}");
    assert_eq!(ok.code, 0, "{ok}");
    assert!(origin.requests().is_empty(), "the probe reached the app");
}

/// Past `probe.max_streams` open probe streams, the next gets 503.
#[tokio::test]
async fn past_max_streams_is_503() {
    let origin = Origin::start().await;
    let sc = sidecar(&origin, "probe:\n  enabled: true\n  max_streams: 1\n").await;
    // One probe stream held open through a 10 s silence.
    let mut held = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let req = format!(
        "GET {PROBE}?events=1&silences=10s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    );
    held.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"seq\":1") {
        let n = tokio::time::timeout_at(deadline, held.read(&mut buf))
            .await
            .expect("the first probe's first event within 5 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let p = probe(url(sc.addr, PROBE), &["--silences", ""]).await;
    assert_eq!(p.json["status"], 503, "{p}");
    assert_eq!(p.code, 1, "{p}");
    drop(held);
}

/// A probe stream in a long silence does not hold up a shutdown: on SIGTERM the sidecar cuts
/// it at once and exits, well before its 30 s drain window ends.
#[tokio::test]
async fn a_probe_does_not_hold_the_drain() {
    let origin = Origin::start().await;
    let yaml = format!("{ENABLED}shutdown:\n  drain_window: 30s\n");
    let mut sc = sidecar(&origin, &yaml).await;
    let mut held = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let req = format!("GET {PROBE}?events=1&silences=5m HTTP/1.1\r\nHost: x\r\n\r\n");
    held.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\"seq\":1") {
        let n = tokio::time::timeout_at(deadline, held.read(&mut buf))
            .await
            .expect("the probe's first event within 5 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    sc.sigterm();
    let exited = sc.wait_exit(Duration::from_secs(8)).await;
    assert!(exited.is_some(), "the sidecar still runs 8 s after SIGTERM");
}

/// With the probe disabled (the default), its path is an ordinary path of the app.
#[tokio::test]
async fn disabled_probe_path_reaches_the_app() {
    let origin = Origin::start().await;
    let sc = sidecar(&origin, "").await;
    let p = probe(url(sc.addr, PROBE), &["--silences", "", "--timeout", "5s"]).await;
    assert_ne!(p.code, 2, "{p}");
    let seen = origin.requests_to(PROBE);
    assert_eq!(seen.len(), 1, "the app did not see the probe path");
}

/// A connection refused is a connection error (exit 2), and a bad flag a usage error (2).
#[tokio::test]
async fn connection_and_usage_errors_exit_2() {
    let port = common::free_port();
    let p = probe(
        format!("http://127.0.0.1:{port}{PROBE}"),
        &["--silences", ""],
    )
    .await;
    assert_eq!(p.code, 2, "{p}");
    assert!(p.stderr.contains("cannot connect"), "{p}");
    let bad = probe(format!("http://127.0.0.1:{port}/"), &["--silences", "soon"]).await;
    assert_eq!(bad.code, 2, "{bad}");
}

/// Over TLS the probe offers h2 as a browser does: against the sidecar's TLS listener it
/// speaks HTTP/2 (ALPN), and the probe stream arrives one event at a time (`ok`).
#[tokio::test]
async fn over_tls_the_probe_speaks_http2() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let yaml = format!(
        "listen:\n  - addr: \"{addr}\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n{ENABLED}",
        cert.display(),
        key.display()
    );
    let conf = dir.path().join("sse-sidecar.yaml");
    std::fs::write(&conf, &yaml).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let child = common::sidecar::command()
        .arg("--config")
        .arg(&conf)
        .args(["--upstream", &origin.url(), "--metrics-listen", "off"])
        .env("SSE_SIDECAR_PID_FILE", dir.path().join("pid"))
        .env("SSE_SIDECAR_UPGRADE_SOCK", dir.path().join("upgrade.sock"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn sse-sidecar");
    let mut sc = common::process::Process::new("sse-sidecar (TLS)", child, stderr_path);
    sc.wait_listening(addr, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("https://127.0.0.1:{}{PROBE}", addr.port());
    let cacert = cert.display().to_string();
    let p = probe(url, &["--silences", "", "--cacert", &cacert]).await;
    assert_eq!(p.json["http_version"], "HTTP/2", "{p}");
    assert_eq!(p.kinds(), vec!["ok"], "{p}");
    assert_eq!(p.json["events"], 11, "{p}");
    assert_eq!(p.code, 0, "{p}");
    // Without the certificate trusted, the handshake fails: a connection error.
    let untrusted = probe(
        format!("https://127.0.0.1:{}{PROBE}", addr.port()),
        &["--silences", ""],
    )
    .await;
    assert_eq!(untrusted.code, 2, "{untrusted}");
    assert!(untrusted.stderr.contains("TLS"), "{untrusted}");
}
