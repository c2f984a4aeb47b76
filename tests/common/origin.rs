//! A scriptable HTTP/1.1 origin (the "app" behind the sidecar), run inside the test process.
//!
//! Behaviour is chosen per request by path and query; every response may add headers with
//! `h=Name:Value` (repeatable) and most take `status=NNN`.
//!
//! | path | what it does |
//! |---|---|
//! | `/sse`, and any path under `/sse/` | an event stream, see below |
//! | `/json?size=N&gzip=1\|auto&chunked=1&ct=...` | [`json_body`]`(N)`; gzip'd with `Content-Encoding: gzip` when `gzip=1`, or `auto` and the request accepts gzip |
//! | `/echo?chunked=1` | the request body back; `X-Echo-Method`, `X-Echo-Chunked` headers |
//! | `/big?size=N&chunked=1` | [`big_body`]`(N)` (default 1 MiB), Content-Length or chunked |
//! | `/status/NNN` | status NNN with body `status NNN\n` (none for 1xx/204/304) |
//! | `/slow_headers?ms=N&sse=1` | waits N ms before the response head; `sse=1` answers an event stream |
//! | `/reset` | resets the connection (RST) instead of answering |
//! | `/close` | closes the connection (FIN) instead of answering |
//!
//! `/sse` parameters (defaults in brackets): `events` [3], `interval_ms` [50] between events,
//! `first_ms` [0] before the first event, `silence_ms` [0] extra pause after event number
//! `silence_after` [1], `le=lf|crlf|cr` [lf], `split=1` writes each event in two writes
//! `split_ms` [20] apart, `id=1` adds `id: N`, `pad=N` adds N bytes to each event's data,
//! `bom=1` starts the body with a UTF-8 BOM, `gzip=1|auto` compresses (sync flush per event), `framing=chunked|close` [chunked],
//! `ct` [text/event-stream], `cc` (a Cache-Control value), `last_event=NAME` gives the last
//! event an `event: NAME` line (an LLM answer's `done`), `end=done|hold|cut|reset` [done]:
//! `hold` stays silent (up to 60 s) until the peer closes, `cut` closes without the last chunk,
//! `reset` sends RST. Each event is `data: {"seq":N,"t_ns":T}` with N from 1 and T =
//! [`now_ns`](super::now_ns) when its first byte was written.
//!
//! The origin records every request ([`RequestRecord`]) and watches the read side while it
//! pauses, so a peer closing during a silent stream is seen at once.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::now_ns;

mod bodies;
mod records;

pub use bodies::{big_body, json_body};
use bodies::{reason, StreamGz};
use records::{matches, param, param_u64, summary, Records};
pub use records::{split_target, RequestRecord};

#[derive(Default)]
struct State {
    requests: Mutex<Records>,
    tasks: Mutex<Vec<AbortHandle>>,
    next_conn: AtomicUsize,
    open_conns: AtomicUsize,
}

impl State {
    /// Applies `f` to request `id`'s record, unless the record was dropped (see
    /// [`Origin::keep_latest`]).
    fn update(&self, id: usize, f: impl FnOnce(&mut RequestRecord)) {
        if let Some(r) = self.requests.lock().unwrap().get_mut(id) {
            f(r);
        }
    }
}

/// The in-process origin. Dropping it stops it and closes its connections; [`Origin::stop`]
/// and [`Origin::restart`] crash and restart it on the same address.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Origin {
    /// Binds 127.0.0.1:0 and starts serving on the current tokio runtime.
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("origin bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        serve(listener, &state);
        Origin { addr, state }
    }

    /// Stops the app as a crash would: the listener and every connection close at once
    /// (connections are dropped, a FIN each). [`Self::restart`] brings it back.
    pub fn stop(&self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Serves again on the same address after [`Self::stop`], keeping the records.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("origin rebind {}: {e}", self.addr));
        serve(listener, &self.state);
    }

    /// Keeps only the latest `limit` request records (at most twice that between trims), so a
    /// test that makes requests for minutes does not grow without bound; `requests()` then
    /// sees only those.
    pub fn keep_latest(&self, limit: usize) {
        self.state.requests.lock().unwrap().limit = Some(limit);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests.lock().unwrap().kept.clone()
    }

    /// Runs `f` on the requests seen so far without copying them (for polling a stream whose
    /// recorded body is large).
    pub fn inspect<T>(&self, f: impl FnOnce(&[RequestRecord]) -> T) -> T {
        f(&self.state.requests.lock().unwrap().kept)
    }

    /// Requests whose path (without query) or whole target equals `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| matches(r, path))
            .collect()
    }

    /// Connections currently open to the origin.
    pub fn open_connections(&self) -> usize {
        self.state.open_conns.load(Ordering::SeqCst)
    }

    /// Waits for the first request matching `path` (see [`Self::requests_to`]).
    pub async fn wait_request(&self, path: &str, deadline: Duration) -> RequestRecord {
        super::wait_for(deadline, &format!("origin request to {path}"), || {
            self.requests_to(path).into_iter().next()
        })
        .await
    }

    /// Waits until the connection of the latest request matching `path` has closed; returns that
    /// request's record. Panics (listing what the origin saw) after `deadline`.
    pub async fn wait_closed(&self, path: &str, deadline: Duration) -> RequestRecord {
        let ok = super::try_eventually(deadline, || {
            self.requests_to(path)
                .last()
                .is_some_and(|r| r.closed_ns.is_some())
        })
        .await;
        if !ok {
            panic!(
                "origin: connection for {path} not closed within {deadline:?}; requests: {:#?}",
                self.requests_to(path)
                    .iter()
                    .map(summary)
                    .collect::<Vec<_>>()
            );
        }
        self.requests_to(path).pop().unwrap()
    }
}

/// Accepts on `listener` until [`Origin::stop`], each connection in a task of its own.
fn serve(listener: TcpListener, state: &Arc<State>) {
    let st = state.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn_id = st.next_conn.fetch_add(1, Ordering::SeqCst);
            let st2 = st.clone();
            let h = tokio::spawn(async move {
                let _open = OpenConn::count(&st2);
                serve_conn(st2.clone(), stream, peer, conn_id).await;
            });
            let mut tasks = st.tasks.lock().unwrap();
            // Forget finished connections now and then: a long test makes many.
            if tasks.len() >= 1024 && tasks.len().is_power_of_two() {
                tasks.retain(|t| !t.is_finished());
            }
            tasks.push(h.abort_handle());
        }
    });
    state.tasks.lock().unwrap().push(accept.abort_handle());
}

/// Counts a connection as open until dropped, also when [`Origin::stop`] aborts its task.
struct OpenConn(Arc<State>);

impl OpenConn {
    fn count(state: &Arc<State>) -> OpenConn {
        state.open_conns.fetch_add(1, Ordering::SeqCst);
        OpenConn(state.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Why a connection ended from the origin's point of view.
#[derive(Debug)]
enum Gone {
    Eof,
    Reset(String),
    WriteErr(String),
    Bad(String),
}

impl Gone {
    fn reason(&self) -> String {
        match self {
            Gone::Eof => "eof".into(),
            Gone::Reset(e) => format!("read error: {e}"),
            Gone::WriteErr(e) => format!("write error: {e}"),
            Gone::Bad(e) => format!("bad request: {e}"),
        }
    }
}

struct Parsed {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    Length,
    Chunked,
    Close,
}

struct Conn {
    id: usize,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
    state: Arc<State>,
    reqs: Vec<usize>,
    /// Close with an RST instead of a FIN.
    rst: bool,
}

async fn serve_conn(state: Arc<State>, stream: TcpStream, peer: SocketAddr, id: usize) {
    let (rd, wr) = stream.into_split();
    let mut c = Conn {
        id,
        rd,
        wr,
        buf: Vec::new(),
        state,
        reqs: Vec::new(),
        rst: false,
    };
    let reason = loop {
        let req = match c.read_request(peer).await {
            Ok(Some(r)) => r,
            Ok(None) => break Gone::Eof.reason(),
            Err(g) => break g.reason(),
        };
        match handle(&mut c, req).await {
            Ok(true) => continue,
            Ok(false) if c.rst => break "origin reset".to_string(),
            Ok(false) => {
                let _ = c.wr.shutdown().await;
                break "origin closed".to_string();
            }
            Err(g) => break g.reason(),
        }
    };
    if c.rst {
        // Dropping a write half sends a FIN first; reunite so the close is only an RST.
        if let Ok(s) = c.rd.reunite(c.wr) {
            let _ = s.set_zero_linger();
        }
    }
    let t = now_ns();
    for &r in &c.reqs {
        c.state.update(r, |rec| {
            if rec.closed_ns.is_none() {
                rec.closed_ns = Some(t);
                rec.close_reason = Some(reason.clone());
            }
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), Gone> {
        let mut tmp = [0u8; 16384];
        match self.rd.read(&mut tmp).await {
            Ok(0) => Err(Gone::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) => Err(Gone::Reset(e.to_string())),
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, Gone> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line = self.buf[..p].to_vec();
                self.buf.drain(..p + 2);
                return Ok(line);
            }
            if self.buf.len() > 65536 {
                return Err(Gone::Bad("line too long".into()));
            }
            self.fill().await?;
        }
    }

    async fn read_n(&mut self, n: usize) -> Result<Vec<u8>, Gone> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one request (head and body) and records it. `None`: clean EOF between requests.
    async fn read_request(&mut self, peer: SocketAddr) -> Result<Option<(usize, Parsed)>, Gone> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > 65536 {
                return Err(Gone::Bad("head too large".into()));
            }
            match self.fill().await {
                Ok(()) => {}
                Err(Gone::Eof) if self.buf.is_empty() => return Ok(None),
                Err(g) => return Err(g),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let mut parts = first.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Gone::Bad(format!("request line {first:?}")));
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let p = Parsed {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
        };
        let (path, query) = split_target(&p.target);
        let id = self.state.requests.lock().unwrap().push(RequestRecord {
            conn: self.id,
            peer: Some(peer),
            method: p.method.clone(),
            target: p.target.clone(),
            path,
            query,
            version: p.version.clone(),
            headers: p.headers.clone(),
            received_ns: now_ns(),
            ..Default::default()
        });
        self.reqs.push(id);
        let hv = |name: &str| {
            p.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        if hv("expect").is_some_and(|v| v == "100-continue") {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let mut body = Vec::new();
        let chunked = hv("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        if chunked {
            loop {
                let line = self.read_line().await?;
                let line = String::from_utf8_lossy(&line);
                let size_s = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_s, 16)
                    .map_err(|_| Gone::Bad(format!("chunk size {line:?}")))?;
                if size == 0 {
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                body.extend(self.read_n(size).await?);
                if !self.read_line().await?.is_empty() {
                    return Err(Gone::Bad("chunk not followed by CRLF".into()));
                }
            }
        } else if let Some(cl) = hv("content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| Gone::Bad(format!("content-length {cl:?}")))?;
            body = self.read_n(n).await?;
        }
        self.state.update(id, |r| {
            r.body = body;
            r.body_chunked = chunked;
        });
        Ok(Some((id, p)))
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), Gone> {
        self.wr
            .write_all(b)
            .await
            .map_err(|e| Gone::WriteErr(e.to_string()))
    }

    /// Sleeps for `d` while watching the read side, so a peer closing is seen at once.
    async fn pause(&mut self, d: Duration) -> Result<(), Gone> {
        let until = tokio::time::Instant::now() + d;
        let mut tmp = [0u8; 4096];
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                r = self.rd.read(&mut tmp) => match r {
                    Ok(0) => return Err(Gone::Eof),
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                    Err(e) => return Err(Gone::Reset(e.to_string())),
                },
            }
        }
    }

    async fn head(
        &mut self,
        id: usize,
        status: u16,
        headers: &[(String, String)],
    ) -> Result<(), Gone> {
        let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in headers {
            h.push_str(&format!("{n}: {v}\r\n"));
        }
        h.push_str("\r\n");
        self.write(h.as_bytes()).await?;
        self.state
            .update(id, |r| r.response_started_ns = Some(now_ns()));
        Ok(())
    }

    async fn part(&mut self, id: usize, framing: Framing, data: &[u8]) -> Result<(), Gone> {
        if data.is_empty() {
            return Ok(());
        }
        if framing == Framing::Chunked {
            let mut b = format!("{:x}\r\n", data.len()).into_bytes();
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n");
            self.write(&b).await?;
        } else {
            self.write(data).await?;
        }
        self.state
            .update(id, |r| r.body_sent.extend_from_slice(data));
        Ok(())
    }

    async fn end(&mut self, id: usize, framing: Framing) -> Result<(), Gone> {
        if framing == Framing::Chunked {
            self.write(b"0\r\n\r\n").await?;
        }
        self.state
            .update(id, |r| r.response_done_ns = Some(now_ns()));
        Ok(())
    }
}

/// Handles one request; `Ok(true)` keeps the connection for the next one.
async fn handle(c: &mut Conn, (id, p): (usize, Parsed)) -> Result<bool, Gone> {
    let (path, q) = split_target(&p.target);
    let hv = |name: &str| {
        p.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let http10 = p.version == "HTTP/1.0";
    let keep_alive = !http10 && !hv("connection").is_some_and(|v| v.contains("close"));
    let head_only = p.method == "HEAD";
    let mut headers: Vec<(String, String)> = vec![("Server".into(), "test-origin".into())];
    for (k, v) in &q {
        if k == "h" {
            if let Some((n, val)) = v.split_once(':') {
                headers.push((n.trim().into(), val.trim().into()));
            }
        }
    }
    let status = param_u64(&q, "status", 200) as u16;
    let wants_gzip = |q: &[(String, String)]| match param(q, "gzip") {
        Some("1") => true,
        Some("auto") => hv("accept-encoding").is_some_and(|v| v.contains("gzip")),
        _ => false,
    };

    // Sends a complete body with Content-Length (or chunked when asked).
    macro_rules! simple {
        ($status:expr, $ct:expr, $body:expr, $chunked:expr) => {{
            let body: Vec<u8> = $body;
            let chunked = $chunked && !http10;
            if let Some(ct) = $ct {
                headers.push(("Content-Type".into(), ct));
            }
            let framing = if chunked {
                headers.push(("Transfer-Encoding".into(), "chunked".into()));
                Framing::Chunked
            } else {
                let no_body = $status == 204 || $status == 304 || $status < 200;
                if !no_body {
                    headers.push(("Content-Length".into(), body.len().to_string()));
                }
                Framing::Length
            };
            if !keep_alive {
                headers.push(("Connection".into(), "close".into()));
            }
            c.head(id, $status, &headers).await?;
            if !head_only {
                for piece in body.chunks(65536) {
                    c.part(id, framing, piece).await?;
                }
                c.end(id, framing).await?;
            }
            Ok(keep_alive)
        }};
    }

    match path.as_str() {
        "/sse" => sse(c, id, &q, headers, http10, keep_alive, wants_gzip(&q)).await,
        "/json" => {
            let mut body = json_body(param_u64(&q, "size", 0) as usize);
            if wants_gzip(&q) {
                body = super::gzip(&body);
                headers.push(("Content-Encoding".into(), "gzip".into()));
                headers.push(("Vary".into(), "Accept-Encoding".into()));
            }
            headers.push(("ETag".into(), "\"v1\"".into()));
            headers.push(("Set-Cookie".into(), "a=1; Path=/".into()));
            headers.push(("Set-Cookie".into(), "b=2; Path=/".into()));
            let ct = param(&q, "ct").unwrap_or("application/json").to_string();
            simple!(status, Some(ct), body, param(&q, "chunked") == Some("1"))
        }
        "/echo" => {
            let (body, was_chunked) = {
                let mut reqs = c.state.requests.lock().unwrap();
                reqs.get_mut(id)
                    .map(|r| (r.body.clone(), r.body_chunked))
                    .unwrap_or_default()
            };
            headers.push(("X-Echo-Method".into(), p.method.clone()));
            headers.push((
                "X-Echo-Chunked".into(),
                if was_chunked { "1" } else { "0" }.into(),
            ));
            simple!(
                status,
                Some("application/octet-stream".to_string()),
                body,
                param(&q, "chunked") == Some("1")
            )
        }
        "/big" => {
            let body = big_body(param_u64(&q, "size", 1 << 20) as usize);
            simple!(
                status,
                Some("application/octet-stream".to_string()),
                body,
                param(&q, "chunked") == Some("1")
            )
        }
        "/slow_headers" => {
            c.pause(Duration::from_millis(param_u64(&q, "ms", 5000)))
                .await?;
            if param(&q, "sse") == Some("1") {
                return sse(c, id, &q, headers, http10, keep_alive, false).await;
            }
            simple!(
                status,
                Some("text/plain".to_string()),
                b"slow\n".to_vec(),
                false
            )
        }
        "/reset" => {
            c.rst = true;
            Ok(false)
        }
        "/close" => Ok(false),
        _ if path.starts_with("/sse/") => {
            sse(c, id, &q, headers, http10, keep_alive, wants_gzip(&q)).await
        }
        _ if path.starts_with("/status/") => {
            let st: u16 = path["/status/".len()..].parse().unwrap_or(500);
            headers.push(("X-Origin-Status".into(), st.to_string()));
            let body = if st == 204 || st == 304 || st < 200 {
                Vec::new()
            } else {
                format!("status {st}\n").into_bytes()
            };
            simple!(st, Some("text/plain".to_string()), body, false)
        }
        _ => simple!(
            404,
            Some("text/plain".to_string()),
            b"no such path\n".to_vec(),
            false
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn sse(
    c: &mut Conn,
    id: usize,
    q: &[(String, String)],
    mut headers: Vec<(String, String)>,
    http10: bool,
    keep_alive: bool,
    gzip: bool,
) -> Result<bool, Gone> {
    let events = param_u64(q, "events", 3);
    let interval = Duration::from_millis(param_u64(q, "interval_ms", 50));
    let first = Duration::from_millis(param_u64(q, "first_ms", 0));
    let silence = Duration::from_millis(param_u64(q, "silence_ms", 0));
    let silence_after = param_u64(q, "silence_after", 1);
    let split = param(q, "split") == Some("1");
    let split_pause = Duration::from_millis(param_u64(q, "split_ms", 20));
    let le: &[u8] = match param(q, "le") {
        Some("crlf") => b"\r\n",
        Some("cr") => b"\r",
        _ => b"\n",
    };
    let with_id = param(q, "id") == Some("1");
    let pad = param_u64(q, "pad", 0) as usize;
    let bom = param(q, "bom") == Some("1");
    let end = param(q, "end").unwrap_or("done").to_string();
    let last_event = param(q, "last_event").map(str::to_string);
    let framing = if http10 || param(q, "framing") == Some("close") {
        Framing::Close
    } else {
        Framing::Chunked
    };
    headers.push((
        "Content-Type".into(),
        param(q, "ct").unwrap_or("text/event-stream").into(),
    ));
    if let Some(cc) = param(q, "cc") {
        headers.push(("Cache-Control".into(), cc.into()));
    }
    if gzip {
        headers.push(("Content-Encoding".into(), "gzip".into()));
    }
    match framing {
        Framing::Chunked => headers.push(("Transfer-Encoding".into(), "chunked".into())),
        _ => headers.push(("Connection".into(), "close".into())),
    }
    let keep_alive = keep_alive && framing == Framing::Chunked;
    c.head(id, param_u64(q, "status", 200) as u16, &headers)
        .await?;
    let mut gz = gzip.then(StreamGz::new);
    c.pause(first).await?;
    for seq in 1..=events {
        let t = now_ns();
        let mut ev = Vec::new();
        if seq == 1 && bom {
            ev.extend_from_slice(b"\xEF\xBB\xBF");
        }
        if with_id {
            ev.extend_from_slice(format!("id: {seq}").as_bytes());
            ev.extend_from_slice(le);
        }
        if let Some(name) = last_event.as_deref().filter(|_| seq == events) {
            ev.extend_from_slice(format!("event: {name}").as_bytes());
            ev.extend_from_slice(le);
        }
        ev.extend_from_slice(format!(r#"data: {{"seq":{seq},"t_ns":{t}"#).as_bytes());
        if pad > 0 {
            ev.extend_from_slice(format!(r#","pad":"{}""#, "p".repeat(pad)).as_bytes());
        }
        ev.push(b'}');
        ev.extend_from_slice(le);
        ev.extend_from_slice(le);
        let pieces: Vec<&[u8]> = if split {
            let (a, b) = ev.split_at(ev.len() / 2);
            vec![a, b]
        } else {
            vec![&ev]
        };
        c.state.update(id, |r| r.events_sent.push((seq, t)));
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                c.pause(split_pause).await?;
            }
            let out = match gz.as_mut() {
                Some(g) => g.push(piece),
                None => piece.to_vec(),
            };
            c.part(id, framing, &out).await?;
        }
        if seq < events {
            c.pause(interval).await?;
        }
        if seq == silence_after && !silence.is_zero() {
            c.pause(silence).await?;
        }
    }
    match end.as_str() {
        "hold" => {
            c.pause(Duration::from_secs(60)).await?;
        }
        "cut" => return Ok(false),
        "reset" => {
            c.rst = true;
            return Ok(false);
        }
        _ => {}
    }
    if let Some(g) = gz {
        let tail = g.finish();
        c.part(id, framing, &tail).await?;
    }
    c.end(id, framing).await?;
    Ok(keep_alive)
}
