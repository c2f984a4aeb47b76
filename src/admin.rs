//! The admin listener: `/metrics`, `/healthz` and `/readyz` on their own
//! address, never on the proxy port.
//!
//! [`AdminService`] is a pingora [`BackgroundService`], so it runs inside the
//! pingora `Server` and gets its [`ShutdownWatch`]. The HTTP/1.1 server is
//! hand-written and deliberately small: GET/HEAD only, no request bodies, a
//! cap on the request head, a read timeout, keep-alive, and a cap on open
//! connections. Anything it does not understand gets a 4xx and the listener
//! keeps serving.
//!
//! - `GET /metrics`: the registry in the Prometheus text format.
//! - `GET /healthz`: 200 `ok` while the process runs.
//! - `GET /readyz`: 200 `ok` once the proxy listeners are bound and the app
//!   accepts TCP connections; 503 with the reason otherwise. From the moment
//!   shutdown starts it answers 503 `draining` (load balancers stop sending
//!   new streams) while the admin listener itself keeps serving until the
//!   process exits.
//!
//! ```text
//! curl -i http://127.0.0.1:9090/readyz
//! ```

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Largest request head accepted; probes and scrapers send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Process state `/readyz` reports on, shared with the rest of the sidecar.
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Not ready yet: listeners unbound, not draining.
    pub fn new() -> Self {
        Self::default()
    }

    /// The proxy listeners are bound; `/readyz` may now report ready.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// Shutdown has started: `/readyz` answers 503 `draining` from now on.
    /// The admin service calls this itself when its `ShutdownWatch` flips.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether [`set_listeners_bound`](Self::set_listeners_bound) was called.
    pub fn listeners_bound(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire)
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Timeouts and limits of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Time allowed for a request head to arrive, counted from the
    /// connection's start or the end of the previous response (keep-alive
    /// idle time included), and for writing a response.
    pub read_timeout: Duration,
    /// Timeout of the TCP connect `/readyz` makes to the app.
    pub upstream_connect_timeout: Duration,
    /// How long a `/readyz` upstream check result is reused, so probes
    /// never hammer the app.
    pub upstream_check_interval: Duration,
    /// Admin connections open at once; further ones are closed at accept.
    pub max_connections: usize,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            read_timeout: Duration::from_secs(10),
            // Below the 1 s default timeout of Kubernetes probes.
            upstream_connect_timeout: Duration::from_millis(500),
            upstream_check_interval: Duration::from_secs(1),
            max_connections: 64,
        }
    }
}

/// The admin listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the admin (metrics) listener on {addr}: {io}")]
pub struct BindError {
    /// The address that was asked for.
    pub addr: SocketAddr,
    /// What the OS said.
    pub io: io::Error,
}

/// `/metrics`, `/healthz` and `/readyz` as a pingora background service.
pub struct AdminService {
    /// Bound early (see [`AdminService::bind`]); taken by `start`.
    listener: Mutex<Option<std::net::TcpListener>>,
    local_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
}

/// What connection tasks need.
struct Shared {
    registry: Registry,
    readiness: Arc<Readiness>,
    upstream: SocketAddr,
    options: AdminOptions,
    /// Last upstream check: when it finished and what it found. An async
    /// mutex, so concurrent probes wait for one check instead of each
    /// connecting.
    upstream_check: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl AdminService {
    /// Binds the admin address now, so a busy port fails startup (or
    /// `check`) with a clear error instead of failing inside a service.
    ///
    /// `SO_REUSEPORT` lets a new process started with `--upgrade` bind the same admin address
    /// while the old one drains (pingora hands over only the proxy listeners).
    pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
        use socket2::{Domain, Socket, Type};
        let err = |io| BindError { addr, io };
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.bind(&addr.into()).map_err(err)?;
        socket.listen(128).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        // Required by tokio's `from_std` in `start`.
        listener.set_nonblocking(true).map_err(err)?;
        Ok(listener)
    }

    /// Serves on `listener` (from [`AdminService::bind`]): `registry` at
    /// `/metrics`, and `/readyz` from `readiness` plus a TCP connect to
    /// `upstream`.
    pub fn new(
        listener: std::net::TcpListener,
        registry: Registry,
        upstream: SocketAddr,
        readiness: Arc<Readiness>,
    ) -> Self {
        AdminService {
            local_addr: listener.local_addr().ok(),
            listener: Mutex::new(Some(listener)),
            shared: Shared::new(registry, readiness, upstream, AdminOptions::default()),
        }
    }

    /// Replaces the default timeouts and limits.
    pub fn with_options(self, options: AdminOptions) -> Self {
        let old = &self.shared;
        let shared = Shared::new(
            old.registry.clone(),
            Arc::clone(&old.readiness),
            old.upstream,
            options,
        );
        AdminService { shared, ..self }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let std_listener = match self.listener.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(std_listener) = std_listener else {
            tracing::error!("admin service started twice; the second start does nothing");
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable; /metrics and probes are off");
                return;
            }
        };
        if let Some(addr) = self.local_addr {
            tracing::info!(%addr, "admin listener serving /metrics, /healthz, /readyz");
        }

        let shared = &self.shared;
        let connections = Arc::new(Semaphore::new(shared.options.max_connections));
        // The watch may already be set if the server is stopping as we start.
        if *shutdown.borrow_and_update() {
            shared.readiness.set_draining();
        }
        let mut watching_shutdown = true;
        loop {
            tokio::select! {
                // Shutdown started: report draining, but keep serving so
                // probes and the last scrapes get answers until exit.
                changed = shutdown.changed(), if watching_shutdown => match changed {
                    Ok(()) => {
                        if *shutdown.borrow_and_update() {
                            shared.readiness.set_draining();
                        }
                    }
                    // The server is gone; nothing will ever flip it.
                    Err(_) => watching_shutdown = false,
                },
                // A new admin connection: serve it on its own task, or close
                // it at once when too many are open.
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            tracing::debug!(%peer, "too many admin connections; closing");
                            continue;
                        };
                        let shared = Arc::clone(shared);
                        tokio::spawn(async move {
                            serve_connection(&shared, stream).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning on it.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// A response, written as one buffer.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            allow: false,
        }
    }
}

/// Serves requests on one connection until the client closes, a timeout
/// fires, or a request rules out keep-alive.
async fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let read_timeout = shared.options.read_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head_len = match timeout(read_timeout, read_head(&mut stream, &mut buf)).await {
            Ok(Ok(Some(n))) => n,
            // Closed between requests, or gave up mid-head: nothing to answer.
            Ok(Ok(None)) | Ok(Err(HeadError::Io)) | Err(_) => return,
            Ok(Err(HeadError::TooLarge)) => {
                let resp = Response::text(431, "request head too large\n");
                return final_response(stream, &resp, false, read_timeout).await;
            }
            Ok(Err(HeadError::NotHttp)) => {
                let resp = Response::text(400, "bad request: not HTTP/1\n");
                return final_response(stream, &resp, false, read_timeout).await;
            }
        };
        let (resp, head_only, keep_alive) = match parse_head(&buf[..head_len]) {
            Ok(req) => {
                let resp = route(shared, req.method, req.path).await;
                (resp, req.method == "HEAD", req.keep_alive)
            }
            Err(reason) => (
                Response::text(400, format!("bad request: {reason}\n")),
                false,
                false,
            ),
        };
        // Keep what follows the head: a pipelined next request.
        buf.drain(..head_len);
        if !keep_alive {
            return final_response(stream, &resp, head_only, read_timeout).await;
        }
        if write_response(&mut stream, &resp, head_only, true, read_timeout)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Writes a `Connection: close` response and closes.
async fn final_response(
    mut stream: TcpStream,
    resp: &Response,
    head_only: bool,
    write_timeout: Duration,
) {
    if write_response(&mut stream, resp, head_only, false, write_timeout)
        .await
        .is_ok()
    {
        lingering_close(stream).await;
    }
}

/// Closes after a final response without losing it: closing a socket with
/// unread input (a rejected head, an unread body) makes the kernel send RST,
/// which can destroy the response before the client reads it. So: FIN first,
/// then discard input briefly until the client closes too.
async fn lingering_close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(Duration::from_secs(1), drain).await;
}

enum HeadError {
    TooLarge,
    /// The first byte cannot start an HTTP/1 request (TLS, HTTP/2 without a
    /// request line, random bytes): answer at once instead of waiting out
    /// the read timeout.
    NotHttp,
    Io,
}

/// Reads until `buf` holds a complete request head; returns its length
/// (terminator included), or `None` if the peer closed before sending a byte.
/// Bytes after the head (a pipelined request) stay in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, HeadError> {
    let mut scanned = 0;
    loop {
        if let Some(end) = find_head_end(buf, scanned) {
            return Ok(Some(end));
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        // The terminator may straddle reads: rescan the last 3 bytes.
        scanned = buf.len().saturating_sub(3);
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_HEAD_BYTES - buf.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err(HeadError::Io),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // A method is upper-case letters; blank lines before it are allowed.
        if !matches!(buf[0], b'A'..=b'Z' | b'\r' | b'\n') {
            return Err(HeadError::NotHttp);
        }
    }
}

/// End of the head: after the first blank line (`\r\n\r\n`, or a bare `\n\n`
/// from lenient clients), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The parts of a request the admin server acts on.
#[derive(Debug, PartialEq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    keep_alive: bool,
}

/// Parses a request head; the error says what was wrong, for the 400 body.
fn parse_head(head: &[u8]) -> Result<Request<'_>, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    // RFC 9112 §2.2: ignore blank lines before the request line.
    let head = head.trim_start_matches(['\r', '\n']);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or("empty request")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method");
    }
    if !target.starts_with('/') {
        return Err("request target must be a path");
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version"),
    };
    let mut close = false;
    let mut keep_alive = false;
    let mut has_body = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("malformed header name");
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let len: u64 = value.parse().map_err(|_| "invalid content-length")?;
            has_body |= len > 0;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Request {
        method,
        path,
        // Request bodies are never read, so after one the stream cannot be
        // reused: answer and close.
        keep_alive: !has_body && if http11 { !close } else { keep_alive },
    })
}

async fn route(shared: &Shared, method: &str, path: &str) -> Response {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut resp = Response::text(405, "method not allowed\n");
        resp.allow = true;
        return resp;
    }
    match path {
        "/metrics" => metrics(&shared.registry),
        "/healthz" => Response::text(200, "ok"),
        _ => match shared.check_ready().await {
            Ok(()) => Response::text(200, "ok"),
            Err(reason) => Response::text(503, reason),
        },
    }
}

fn metrics(registry: &Registry) -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(16 * 1024);
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => Response {
            status: 200,
            content_type: prometheus::TEXT_FORMAT,
            body,
            allow: false,
        },
        Err(e) => {
            tracing::error!(error = %e, "encoding /metrics failed");
            Response::text(500, "cannot encode metrics\n")
        }
    }
}

impl Shared {
    fn new(
        registry: Registry,
        readiness: Arc<Readiness>,
        upstream: SocketAddr,
        options: AdminOptions,
    ) -> Arc<Self> {
        Arc::new(Shared {
            registry,
            readiness,
            upstream,
            options,
            upstream_check: tokio::sync::Mutex::new(None),
        })
    }

    /// `Ok` when ready, else why not (the 503 body).
    async fn check_ready(&self) -> Result<(), String> {
        if self.readiness.is_draining() {
            return Err("draining".into());
        }
        if !self.readiness.listeners_bound() {
            return Err("proxy listeners not bound yet".into());
        }
        self.upstream_accepts().await
    }

    /// Whether the app accepts TCP connections, checked at most once per
    /// `upstream_check_interval`.
    async fn upstream_accepts(&self) -> Result<(), String> {
        let mut cache = self.upstream_check.lock().await;
        if let Some((at, result)) = cache.as_ref() {
            if at.elapsed() < self.options.upstream_check_interval {
                return result.clone();
            }
        }
        let addr = self.upstream;
        let limit = self.options.upstream_connect_timeout;
        let result = match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(_conn)) => Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                Err(format!("upstream {addr} refused connection"))
            }
            Ok(Err(e)) => Err(format!("upstream {addr} not reachable: {e}")),
            Err(_) => Err(format!(
                "upstream {addr} did not accept a connection within {}ms",
                limit.as_millis()
            )),
        };
        *cache = Some((Instant::now(), result.clone()));
        result
    }
}

async fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
    write_timeout: Duration,
) -> io::Result<()> {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.content_type,
        resp.body.len(),
    );
    if resp.allow {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    // One write, so Nagle never holds a second small segment back.
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    match timeout(write_timeout, stream.write_all(&out)).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::sync::watch;

    /// Patience for conditions the tests wait on.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A running admin service on 127.0.0.1:0.
    struct Harness {
        addr: SocketAddr,
        readiness: Arc<Readiness>,
        /// `None` once dropped, as when the pingora server goes away.
        shutdown: Option<watch::Sender<bool>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn start(upstream: SocketAddr, options: AdminOptions) -> Harness {
        let registry = Registry::new();
        // The registry keeps the registered collectors alive.
        let _metrics = Metrics::new(&registry).unwrap();
        let listener = AdminService::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let readiness = Arc::new(Readiness::new());
        let svc = AdminService::new(listener, registry, upstream, readiness.clone())
            .with_options(options);
        let addr = svc.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { svc.start(rx).await });
        Harness {
            addr,
            readiness,
            shutdown: Some(tx),
            task,
        }
    }

    fn fast_checks() -> AdminOptions {
        AdminOptions {
            upstream_check_interval: Duration::from_millis(20),
            ..AdminOptions::default()
        }
    }

    /// A parsed response: status, lower-cased head, body.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    /// Sends raw bytes on a fresh connection and reads until the server closes.
    async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        timeout(PATIENCE, s.read_to_end(&mut out))
            .await
            .expect("server did not close the connection")
            .unwrap();
        out
    }

    fn parse_reply(bytes: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("no response head");
        let status = head[9..12].parse().unwrap();
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    async fn get(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        parse_reply(&raw(addr, req.as_bytes()).await)
    }

    /// Polls `/readyz` until its status is `want`; returns the last reply.
    async fn wait_readyz(addr: SocketAddr, want: u16) -> Reply {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = get(addr, "GET", "/readyz").await;
            if r.status == want {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz stayed {} ({:?}), wanted {want}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An address nothing listens on (bound, then released).
    fn dead_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// `/metrics` serves every sidecar metric, each with HELP and TYPE lines,
    /// plus the process collector, in the Prometheus text format.
    #[tokio::test]
    async fn metrics_lists_every_metric() {
        let h = start(dead_addr(), AdminOptions::default());
        let r = get(h.addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(
            r.head.contains("content-type: text/plain; version=0.0.4"),
            "{}",
            r.head
        );
        let families = [
            ("sse_sidecar_streams_active", "gauge"),
            ("sse_sidecar_streams_total", "counter"),
            ("sse_sidecar_events_total", "counter"),
            ("sse_sidecar_stream_bytes_total", "counter"),
            ("sse_sidecar_heartbeats_total", "counter"),
            ("sse_sidecar_event_delay_seconds", "histogram"),
            ("sse_sidecar_time_to_first_event_seconds", "histogram"),
            ("sse_sidecar_upstream_silence_seconds", "histogram"),
            ("sse_sidecar_stream_duration_seconds", "histogram"),
            ("sse_sidecar_requests_total", "counter"),
            ("sse_sidecar_upstream_errors_total", "counter"),
            ("sse_sidecar_build_info", "gauge"),
        ];
        let body = format!("\n{}", r.body);
        for (name, kind) in families {
            assert!(
                body.contains(&format!("\n# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                body.contains(&format!("\n# TYPE {name} {kind}\n")),
                "no TYPE {kind} for {name}"
            );
        }
        assert!(r
            .body
            .contains("sse_sidecar_streams_total{outcome=\"slow_consumer\"} 0\n"));
        assert!(r
            .body
            .contains("sse_sidecar_requests_total{code=\"5xx\",kind=\"sse\"} 0\n"));
        assert!(r
            .body
            .contains("sse_sidecar_upstream_errors_total{reason=\"protocol\"} 0\n"));
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(r.body.contains(&format!("# TYPE {name} ")), "no {name}");
        }
        let len: usize = r
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.body.len());
    }

    /// `/healthz` is 200 `ok`; HEAD gets the same head and no body.
    #[tokio::test]
    async fn healthz_and_head() {
        let h = start(dead_addr(), AdminOptions::default());
        let r = get(h.addr, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = get(h.addr, "HEAD", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert!(r.head.contains("content-length: 2\r\n"), "{}", r.head);
        let r = get(h.addr, "HEAD", "/metrics").await;
        assert_eq!((r.status, r.body.as_str()), (200, ""));
    }

    /// `/readyz` waits for the listeners, follows the app's listener going
    /// away and coming back, and names the reason in 503 bodies.
    #[tokio::test]
    async fn readyz_follows_upstream() {
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app_addr = app.local_addr().unwrap();
        let h = start(app_addr, fast_checks());

        let r = get(h.addr, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("listeners not bound"), "{}", r.body);

        h.readiness.set_listeners_bound();
        let r = wait_readyz(h.addr, 200).await;
        assert_eq!(r.body, "ok");

        drop(app);
        let r = wait_readyz(h.addr, 503).await;
        assert_eq!(r.body, format!("upstream {app_addr} refused connection"));

        // The app restarts on the same port.
        let _app = std::net::TcpListener::bind(app_addr).unwrap();
        wait_readyz(h.addr, 200).await;
    }

    /// With the default 1 s interval, a burst of probes connects to the app
    /// once, not once per probe.
    #[tokio::test]
    async fn readyz_upstream_check_is_cached() {
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h = start(app.local_addr().unwrap(), AdminOptions::default());
        h.readiness.set_listeners_bound();
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(get(h.addr, "GET", "/readyz").await.status, 200);
        }
        let elapsed = started.elapsed();
        // Count the connections the probes made (they sit in the backlog).
        let mut accepted = 0u64;
        while let Ok(Ok(_)) = timeout(Duration::from_millis(200), app.accept()).await {
            accepted += 1;
        }
        assert!(accepted >= 1);
        assert!(
            accepted <= elapsed.as_secs() + 1,
            "{accepted} upstream connects in {elapsed:?}"
        );
    }

    /// `set_draining()` and the pingora shutdown watch both turn `/readyz`
    /// into 503 `draining`, while everything else keeps being served.
    #[tokio::test]
    async fn draining_is_not_ready_but_keeps_serving() {
        let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let h = start(app.local_addr().unwrap(), fast_checks());
        h.readiness.set_listeners_bound();
        wait_readyz(h.addr, 200).await;
        h.readiness.set_draining();
        let r = get(h.addr, "GET", "/readyz").await;
        assert_eq!((r.status, r.body.as_str()), (503, "draining"));

        let h2 = start(app.local_addr().unwrap(), fast_checks());
        h2.readiness.set_listeners_bound();
        wait_readyz(h2.addr, 200).await;
        h2.shutdown.as_ref().unwrap().send(true).unwrap();
        let r = wait_readyz(h2.addr, 503).await;
        assert_eq!(r.body, "draining");
        assert!(h2.readiness.is_draining());
        assert_eq!(get(h2.addr, "GET", "/healthz").await.status, 200);
        assert_eq!(get(h2.addr, "GET", "/metrics").await.status, 200);
        // The pingora server dropping its sender must not stop the service.
        let mut h2 = h2;
        drop(h2.shutdown.take());
        assert_eq!(get(h2.addr, "GET", "/healthz").await.status, 200);
        assert_eq!(wait_readyz(h2.addr, 503).await.body, "draining");
    }

    /// Unknown paths are 404, other methods on known paths 405.
    #[tokio::test]
    async fn unknown_path_and_method() {
        let h = start(dead_addr(), AdminOptions::default());
        let r = get(h.addr, "GET", "/nope").await;
        assert_eq!(r.status, 404);
        let r = get(h.addr, "GET", "/metrics/extra").await;
        assert_eq!(r.status, 404);
        let r = get(h.addr, "POST", "/metrics").await;
        assert_eq!(r.status, 405);
        assert!(r.head.contains("allow: get, head"), "{}", r.head);
        // A query string does not change the route.
        assert_eq!(get(h.addr, "GET", "/healthz?verbose=1").await.status, 200);
    }

    /// Garbage gets a 400 and a closed connection; the server keeps serving.
    #[tokio::test]
    async fn garbage_gets_400_and_server_survives() {
        let h = start(dead_addr(), AdminOptions::default());
        for garbage in [
            // A TLS ClientHello start: rejected at the first byte, not after the read timeout.
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz HTTP/9.9\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
            b"get /healthz HTTP/1.1\r\n\r\n",
        ] {
            let r = parse_reply(&raw(h.addr, garbage).await);
            assert_eq!(r.status, 400, "for {garbage:?}");
            assert!(r.head.contains("connection: close"));
        }
        // Oversized heads are refused without reading them forever.
        let mut big = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 100, b'a');
        let r = parse_reply(&raw(h.addr, &big).await);
        assert_eq!(r.status, 431);
        assert_eq!(get(h.addr, "GET", "/healthz").await.status, 200);
    }

    /// Keep-alive and pipelining: several requests on one connection, each
    /// answered in order; HTTP/1.0 closes by default.
    #[tokio::test]
    async fn keep_alive_and_pipelining() {
        let h = start(dead_addr(), AdminOptions::default());
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nHEAD /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        timeout(PATIENCE, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let statuses: Vec<&str> = text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &text[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "200", "404"], "{text}");
        assert_eq!(text.matches("keep-alive").count(), 2);

        // HTTP/1.0 without keep-alive: one answer, then close (read_to_end returns).
        let r = parse_reply(&raw(h.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }

    /// A client that never finishes its head is disconnected after the read timeout.
    #[tokio::test]
    async fn stalled_client_is_cut_off() {
        let options = AdminOptions {
            read_timeout: Duration::from_millis(200),
            ..AdminOptions::default()
        };
        let h = start(dead_addr(), options);
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        let n = timeout(PATIENCE, s.read_to_end(&mut out))
            .await
            .expect("stalled connection was never closed");
        assert!(n.is_ok() && out.is_empty(), "{out:?}");
    }

    /// Binding a busy address fails with the address in the message.
    #[test]
    fn bind_error_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = AdminService::bind(addr).unwrap_err();
        assert_eq!(err.io.kind(), io::ErrorKind::AddrInUse);
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
    }

    /// The head parser's keep-alive and path rules.
    #[test]
    fn parse_head_rules() {
        fn p(s: &str) -> Result<Request<'_>, &'static str> {
            parse_head(s.as_bytes())
        }
        assert_eq!(
            p("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Request {
                method: "GET",
                path: "/metrics",
                keep_alive: true
            })
        );
        assert!(
            !p("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!p("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            p("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !p("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !p("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(p("GET / HTTP/1.1\n\n").unwrap().keep_alive);
        assert_eq!(
            p("\r\nGET /healthz HTTP/1.1\r\n\r\n").unwrap().path,
            "/healthz"
        );
        assert!(p("GET  / HTTP/1.1\r\n\r\n").is_err());
        assert!(p("GET / HTTP/1.1\r\n bad: x\r\n\r\n").is_err());
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }
}
