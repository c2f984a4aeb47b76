//! The lean HTTP/1 relay: SSE candidates on plain-TCP HTTP/1.x connections, relayed on raw
//! sockets in a task of their own.
//!
//! Why a second path: a stream held inside pingora's HTTP machinery costs ~60 KiB of memory
//! (a 64 KiB body buffer per upstream response, a 13 KiB boxed proxy future, a 10 KiB boxed
//! filter future, a 9 KiB connection task — measured with massif) and passes every chunk
//! through pingora's framing. Here a running stream is a 368-byte record in a per-core epoll
//! loop ([`super::engine`]) plus a parked task of a few hundred bytes; reads go into the loop's
//! shared buffer, writes are one `sendmsg` per chunk. Whatever the loop does not handle itself
//! goes back to the task and the stream loop ([`super::stream::run`]) the pingora path uses.
//!
//! h2, TLS and an `https` upstream keep using the pingora path ([`super::relay`]).

use super::codec::{ChunkHead, ChunkedDecoder};
use super::engine::{Engine, Lane};
use super::stream::{Downstream, Ended, Progress, UpstreamBody, UpstreamError, WriteError};
use super::upstream_request::{upstream_request, Forwarding};
use super::{access_log, headers, status_text, Shared, StreamSlot, StreamSummary};
use crate::config::OnUpstreamError;
use crate::metrics::{Kind, Outcome, UpstreamErrorReason};
use bytes::{Bytes, BytesMut};
use pingora_http::{RequestHeader, ResponseHeader};
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Largest response head accepted from the app.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Upstream read size; the buffer lives only until its bytes are written downstream.
const READ_SIZE: usize = 64 * 1024;

/// A parsed request head, ready for the relay.
pub struct Request {
    pub header: RequestHeader,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub body: ReqBody,
    pub keepalive: bool,
    pub expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqBody {
    None,
    Length(u64),
    Chunked,
}

/// Parses a request head (already checked by [`super::head`]) into a pingora header, so the
/// header policy code is shared with the pingora path. `None` means "let pingora handle it".
pub fn parse_request(head: &[u8]) -> Option<Request> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let version = req.version?;
    let mut header =
        RequestHeader::build(req.method?, req.path?.as_bytes(), Some(req.headers.len())).ok()?;
    header.set_version(if version == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    });
    let mut body = ReqBody::None;
    let mut keepalive = version == 1;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if n > 0 {
                body = ReqBody::Length(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = ReqBody::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keepalive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keepalive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            continue;
        }
        header.append_header(name.to_string(), h.value).ok()?;
    }
    Some(Request {
        header,
        head_len,
        body,
        keepalive,
        expect_continue,
    })
}

/// Relays one SSE candidate. Returns the client connection and any bytes already read past
/// this request when the connection can carry another request.
///
/// The task running this lives as long as the stream, so its future is kept small: the
/// request, the exchange with the app and every error path run in a boxed [`setup`] whose
/// memory is freed before the stream starts; only [`Live`] and the stream loop stay.
pub async fn serve(
    shared: &Shared,
    ds: TcpStream,
    req: Box<Request>,
    buffered: Bytes,
) -> Option<(TcpStream, Bytes)> {
    let started = Instant::now();
    let _in_flight = shared.drain.in_flight();
    let Some(_slot) = StreamSlot::take(shared) else {
        Box::pin(over_limit(shared, ds, &req, started)).await;
        return None;
    };
    let live = match Box::pin(setup(shared, ds, req, buffered, started)).await {
        Setup::Done(next) => return next,
        Setup::Stream(live) => live,
    };
    // The task's state stays small while the event loop carries the stream: everything big
    // is boxed or travels in the loop's record (each value a match binds here would otherwise
    // get its own room in this future for the stream's whole life).
    let progress = Progress::new(shared, started, shared.open_block.is_some());
    let Live { ds, up, meta } = *live;
    let next = match Engine::current() {
        Some(engine) => park(shared, &engine, ds, up, meta.client_chunked, progress),
        None => Ok(Next::Here(Box::new(Resumed { ds, up, progress }))),
    };
    let resumed = match next {
        Ok(Next::Here(r)) => Ok(r),
        Ok(Next::Loop(back)) => resume(shared, back.await),
        Err(ended) => Err(ended),
    };
    let (mut ended, ds) = match resumed {
        Ok(r) => Box::pin(run_stream(shared, r, meta.client_chunked)).await,
        Err(ended) => (ended, None),
    };
    ended.summary.bytes += meta.prefix_bytes;
    shared.metrics.request(Kind::Sse, meta.status);
    access_log(
        shared,
        &meta.log.method,
        &meta.log.path,
        meta.status,
        Kind::Sse,
        started,
        Some(&ended.summary),
        ended.error.as_deref(),
    );
    let clean = ended.summary.outcome == Some(Outcome::Completed);
    let ds = ds.filter(|_| clean && meta.keepalive && meta.client_chunked)?;
    Some((ds, meta.buffered))
}

/// Where a stream goes after its head is written.
enum Next {
    /// Stays in this task: no event loop on this thread (a test calling [`serve`] directly).
    Here(Box<Resumed>),
    /// Into the event loop, until it hands the stream back.
    Loop(tokio::sync::oneshot::Receiver<Box<Lane>>),
}

/// Hands the stream to this thread's event loop ([`super::engine`]), which carries it for as
/// long as it only relays events and heartbeats.
fn park(
    shared: &Shared,
    engine: &Engine,
    ds: TcpStream,
    up: LeanUp,
    chunked: bool,
    progress: Progress,
) -> Result<Next, Ended> {
    // Out of tokio's reactor (a socket in two epoll sets would wake both threads).
    let LeanUp { sock, dec } = up;
    match (ds.into_std(), sock.into_std()) {
        (Ok(ds), Ok(sock)) => {
            let (lane, back) = Lane::new(ds, sock, dec, chunked, progress);
            match engine.submit(lane) {
                Ok(()) => Ok(Next::Loop(back)),
                // The loop is gone: the stream stays here.
                Err(lane) => resume(shared, Ok(lane)).map(Next::Here),
            }
        }
        (Err(e), _) | (_, Err(e)) => Err(moved_badly(shared, progress, &e)),
    }
}

/// The stream as the event loop handed it back, registered with this task's reactor again.
fn resume(
    shared: &Shared,
    back: Result<Box<Lane>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Box<Resumed>, Ended> {
    // The loop hands back every stream it takes; a dropped sender means its thread died.
    let Ok(lane) = back else {
        return Err(Ended {
            summary: StreamSummary::ended_early(shared, Outcome::ClientClosed, 0),
            error: Some("the event loop thread stopped".into()),
            upstream_done: false,
        });
    };
    let lane = *lane;
    let dec = lane.dec;
    match (TcpStream::from_std(lane.ds), TcpStream::from_std(lane.up)) {
        (Ok(ds), Ok(sock)) => Ok(Box::new(Resumed {
            ds,
            up: LeanUp { sock, dec },
            progress: lane.progress,
        })),
        (Err(e), _) | (_, Err(e)) => Err(moved_badly(shared, lane.progress, &e)),
    }
}

/// The rest of the stream in this task's stream loop; the client connection comes back for
/// the caller to reuse or drop.
async fn run_stream(shared: &Shared, r: Box<Resumed>, chunked: bool) -> (Ended, Option<TcpStream>) {
    let Resumed {
        mut ds,
        mut up,
        progress,
    } = *r;
    let mut down = LeanDown {
        sock: &mut ds,
        framing: Framing::sse(chunked),
        write_timeout: shared.config.timeouts.sse_write,
        pipelining: false,
    };
    let ended = super::stream::run(shared, &mut down, &mut up, progress, None).await;
    (ended, Some(ds))
}

fn moved_badly(shared: &Shared, progress: Progress, e: &io::Error) -> Ended {
    progress.end(
        shared,
        Outcome::ClientClosed,
        Some(format!("moving the stream to or from the event loop: {e}")),
    )
}

/// A stream whose response head is written: its sockets and what its task keeps for the end.
struct Live {
    ds: TcpStream,
    up: LeanUp,
    meta: Meta,
}

/// What the task keeps for the stream's log line and the connection's reuse.
struct Meta {
    buffered: Bytes,
    log: Box<LogFields>,
    status: u16,
    prefix_bytes: u64,
    client_chunked: bool,
    keepalive: bool,
}

/// A stream ready for the stream loop: its sockets and where it stands.
struct Resumed {
    ds: TcpStream,
    up: LeanUp,
    progress: Progress,
}

struct LogFields {
    method: String,
    path: String,
}

enum Setup {
    /// Answered (an error, a pass-through, a stream that failed to start): the connection to
    /// reuse, if any.
    Done(Option<(TcpStream, Bytes)>),
    /// The response head and opening block are written: run the stream.
    Stream(Box<Live>),
}

async fn over_limit(shared: &Shared, mut ds: TcpStream, req: &Request, started: Instant) {
    let retry_after = shared.config.shutdown.retry.as_secs().max(1).to_string();
    let _ = write_simple(
        &mut ds,
        503,
        "text/plain; charset=utf-8",
        b"503 Service Unavailable: too many open streams\n",
        &[("Retry-After", &retry_after)],
    )
    .await;
    let why = format!(
        "limits.max_streams ({}) reached",
        shared.config.limits.max_streams
    );
    shared.metrics.request(Kind::Other, 503);
    access_log(
        shared,
        req.header.method.as_str(),
        req.header.uri.path(),
        503,
        Kind::Other,
        started,
        None,
        Some(&why),
    );
}

/// Everything before the stream loop: the exchange with the app, the response head, and
/// every answer that is not a stream.
async fn setup(
    shared: &Shared,
    mut ds: TcpStream,
    req: Box<Request>,
    mut buffered: Bytes,
    started: Instant,
) -> Setup {
    let log = Box::new(LogFields {
        method: req.header.method.to_string(),
        path: req.header.uri.path().to_string(),
    });
    let client_chunked = req.header.version == http::Version::HTTP_11;
    let done =
        |status: u16, kind: Kind, stream: Option<&super::StreamSummary>, err: Option<&str>| {
            if status > 0 {
                shared.metrics.request(kind, status);
            }
            access_log(
                shared,
                &log.method,
                &log.path,
                status,
                kind,
                started,
                stream,
                err,
            );
        };

    let client_ip = ds.peer_addr().ok().map(|a| a.ip());
    let mut up = match open_exchange(shared, &mut ds, &req, &mut buffered, client_ip).await {
        Ok(up) => up,
        Err(Failure::Client) => {
            done(
                0,
                Kind::Other,
                None,
                Some("client went away during the request"),
            );
            return Setup::Done(None);
        }
        Err(Failure::Upstream(e)) => {
            let (status, kind, summary) =
                upstream_failed(shared, &mut ds, client_chunked, &e).await;
            let why = format!("{}: {}", e.what, e.detail);
            done(status, kind, summary.as_ref(), Some(&why));
            return Setup::Done(None);
        }
    };
    let status = up.head.status.as_u16();
    let keepalive = req.keepalive;
    // A leftover slice would pin the whole read buffer for the stream's lifetime.
    let buffered = compact(buffered);

    if !headers::is_stream_response(&req.header.method, &up.head) {
        // Not an event stream (a 401, a JSON error): pass it through unchanged.
        let result = passthrough(shared, &mut ds, &mut up, &req, client_chunked).await;
        done(
            status,
            Kind::Other,
            None,
            result.as_ref().err().map(String::as_str),
        );
        let reuse = result.is_ok() && keepalive && client_chunked;
        return Setup::Done(reuse.then_some((ds, buffered)));
    }

    let Exchange {
        head: mut resp,
        body,
    } = up;
    headers::strip_response_hop_by_hop(&mut resp);
    headers::apply_sse_policy(&mut resp, client_chunked);
    if !client_chunked || !keepalive {
        let _ = resp.insert_header(http::header::CONNECTION, "close");
    }
    // The header and the opening block leave in one write.
    let mut head = response_wire(&resp);
    let mut prefix_bytes = 0;
    if let Some(open) = &shared.open_block {
        head.extend_from_slice(&chunk_head(open.len(), client_chunked));
        head.extend_from_slice(open);
        head.extend_from_slice(crlf(client_chunked));
        prefix_bytes = open.len() as u64;
    }
    let timeout = shared.config.timeouts.sse_write;
    if let Err(e) = write_all(&ds, &[&head], timeout).await {
        let outcome = if e.kind() == io::ErrorKind::TimedOut {
            Outcome::SlowConsumer
        } else {
            Outcome::ClientClosed
        };
        let summary = super::StreamSummary::ended_early(shared, outcome, 0);
        done(status, Kind::Sse, Some(&summary), None);
        return Setup::Done(None);
    }
    shared.metrics.stream_bytes_written(prefix_bytes);
    Setup::Stream(Box::new(Live {
        ds,
        up: body,
        meta: Meta {
            buffered,
            log,
            status,
            prefix_bytes,
            client_chunked,
            keepalive,
        },
    }))
}

enum Failure {
    Client,
    Upstream(UpstreamError),
}

pub(super) fn upstream_error(e: &io::Error, phase: &'static str) -> UpstreamError {
    let (reason, what) = match e.kind() {
        io::ErrorKind::TimedOut => (
            UpstreamErrorReason::Timeout,
            "upstream did not answer within the read timeout",
        ),
        io::ErrorKind::ConnectionRefused => (
            UpstreamErrorReason::Connect,
            "upstream refused the connection",
        ),
        io::ErrorKind::InvalidData => (
            UpstreamErrorReason::Protocol,
            "upstream sent an invalid response",
        ),
        _ if phase == "connect" => (UpstreamErrorReason::Connect, "upstream unreachable"),
        _ => (
            UpstreamErrorReason::Reset,
            "upstream closed the connection before answering",
        ),
    };
    UpstreamError {
        reason,
        what,
        detail: format!("{phase}: {e}"),
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// The app's side after its response head has been read.
struct Exchange {
    head: ResponseHeader,
    body: LeanUp,
}

/// Connects, sends the request (and its body) and reads the response head.
async fn open_exchange(
    shared: &Shared,
    ds: &mut TcpStream,
    req: &Request,
    buffered: &mut Bytes,
    client_ip: Option<IpAddr>,
) -> Result<Exchange, Failure> {
    let cfg = &shared.config;
    let default_host = cfg.upstream.authority();
    let fwd = Forwarding {
        client_ip,
        tls: false,
        candidate: true,
        default_host: &default_host,
    };
    let mut up_req = match upstream_request(&req.header, &fwd) {
        Ok(r) => r,
        Err(e) => {
            let e = io::Error::new(io::ErrorKind::InvalidInput, e);
            return Err(Failure::Upstream(upstream_error(&e, "request")));
        }
    };
    if req.body == ReqBody::Chunked {
        let _ = up_req.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    let Some(wire) = pingora_core::protocols::http::v1::client::http_req_header_to_wire(&up_req)
    else {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "request cannot be forwarded");
        return Err(Failure::Upstream(upstream_error(&e, "request")));
    };

    let connect = tokio::time::timeout(
        cfg.timeouts.connect,
        TcpStream::connect(shared.upstream_addr),
    );
    let up = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Upstream(upstream_error(&e, "connect"))),
        Err(_) => {
            return Err(Failure::Upstream(UpstreamError {
                reason: UpstreamErrorReason::Timeout,
                what: "upstream connect timed out",
                detail: format!("connect: no answer within {:?}", cfg.timeouts.connect),
            }))
        }
    };
    let _ = up.set_nodelay(true);
    let io = |e: io::Error| Failure::Upstream(upstream_error(&e, "sending the request"));
    write_all(&up, &[&wire], cfg.timeouts.read)
        .await
        .map_err(io)?;

    if req.expect_continue && req.body != ReqBody::None {
        write_all(ds, &[b"HTTP/1.1 100 Continue\r\n\r\n"], cfg.timeouts.read)
            .await
            .map_err(|_| Failure::Client)?;
    }
    forward_request_body(shared, ds, &up, req.body, buffered).await?;

    // The response head, under the normal read timeout.
    let deadline = tokio::time::Instant::now() + cfg.timeouts.read;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        let read = tokio::time::timeout_at(deadline, read_some(&up, &mut head, 4096)).await;
        match read {
            Err(_) => {
                return Err(Failure::Upstream(upstream_error(
                    &timed_out("no response header"),
                    "reading the response header",
                )))
            }
            Ok(Err(e)) => {
                return Err(Failure::Upstream(upstream_error(
                    &e,
                    "reading the response header",
                )))
            }
            Ok(Ok(0)) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the response header",
                );
                return Err(Failure::Upstream(upstream_error(
                    &e,
                    "reading the response header",
                )));
            }
            Ok(Ok(_)) => {}
        }
        match parse_response(&head) {
            Ok(Some((resp, len, body))) => {
                if resp.status.is_informational() {
                    let _ = head.split_to(len);
                    continue;
                }
                // Copied out so the header buffer is freed now, not when the body ends.
                let pending = compact(head.split_off(len).freeze());
                return Ok(Exchange {
                    head: resp,
                    body: LeanUp {
                        sock: up,
                        dec: Decode {
                            body,
                            pending,
                            method_head: req.header.method == http::Method::HEAD,
                            failed: None,
                        },
                    },
                });
            }
            Ok(None) if head.len() > MAX_RESPONSE_HEAD => {
                let e = io::Error::new(io::ErrorKind::InvalidData, "response header over 64 KiB");
                return Err(Failure::Upstream(upstream_error(
                    &e,
                    "reading the response header",
                )));
            }
            Ok(None) => {}
            Err(why) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, why);
                return Err(Failure::Upstream(upstream_error(
                    &e,
                    "reading the response header",
                )));
            }
        }
    }
}

/// A copy of `b` that does not keep a larger buffer alive.
fn compact(b: Bytes) -> Bytes {
    if b.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&b)
    }
}

/// Streams the request body from the client to the app, re-framed.
async fn forward_request_body(
    shared: &Shared,
    ds: &mut TcpStream,
    up: &TcpStream,
    body: ReqBody,
    buffered: &mut Bytes,
) -> Result<(), Failure> {
    let timeout = shared.config.timeouts.read;
    let to_app = |e: io::Error| Failure::Upstream(upstream_error(&e, "sending the request body"));
    let mut decoder = ChunkedDecoder::default();
    let mut left = match body {
        ReqBody::None => return Ok(()),
        ReqBody::Length(n) => n,
        ReqBody::Chunked => u64::MAX,
    };
    loop {
        if buffered.is_empty() {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            match tokio::time::timeout(timeout, read_some(ds, &mut buf, 16 * 1024)).await {
                Ok(Ok(n)) if n > 0 => *buffered = buf.freeze(),
                _ => return Err(Failure::Client),
            }
        }
        if body == ReqBody::Chunked {
            let mut pieces: Vec<Bytes> = Vec::new();
            let used = decoder
                .decode(buffered, |b| pieces.push(b))
                .map_err(|_| Failure::Client)?;
            *buffered = buffered.slice(used..);
            for p in pieces {
                let head = ChunkHead::new(p.len());
                write_all(up, &[head.as_bytes(), &p, b"\r\n"], timeout)
                    .await
                    .map_err(to_app)?;
            }
            if decoder.is_done() {
                return write_all(up, &[b"0\r\n\r\n"], timeout)
                    .await
                    .map_err(to_app);
            }
        } else {
            let take = (left as usize).min(buffered.len());
            let piece = buffered.split_to(take);
            write_all(up, &[&piece], timeout).await.map_err(to_app)?;
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
        }
    }
}

/// Parses a response head; `Ok(None)` while incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHeader, usize, BodyKind)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let code = resp.code.ok_or("no status code")?;
    let mut head =
        ResponseHeader::build(code, Some(resp.headers.len())).map_err(|e| e.to_string())?;
    if let Some(reason) = resp.reason.filter(|r| !r.is_empty()) {
        let _ = head.set_reason_phrase(Some(reason));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|prev| prev != n) {
                return Err("conflicting Content-Length".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .trim_ascii()
                .to_ascii_lowercase()
                .ends_with(b"chunked");
        }
        head.append_header(h.name.to_string(), h.value)
            .map_err(|e| e.to_string())?;
    }
    let body = if matches!(code, 204 | 304) || (100..200).contains(&code) {
        BodyKind::Length(0)
    } else if chunked {
        BodyKind::Chunked(ChunkedDecoder::default())
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::Close
    };
    Ok(Some((head, len, body)))
}

/// The head as HTTP/1.1 bytes.
fn response_wire(resp: &ResponseHeader) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(256);
    let reason = resp
        .get_reason_phrase()
        .or_else(|| resp.status.canonical_reason())
        .unwrap_or("");
    buf.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", resp.status.as_u16()).as_bytes());
    resp.header_to_h1_wire(&mut buf);
    buf.extend_from_slice(b"\r\n");
    buf.to_vec()
}

fn chunk_head(len: usize, chunked: bool) -> Vec<u8> {
    if chunked {
        ChunkHead::new(len).as_bytes().to_vec()
    } else {
        Vec::new()
    }
}

fn crlf(chunked: bool) -> &'static [u8] {
    if chunked {
        b"\r\n"
    } else {
        b""
    }
}

/// A non-SSE answer, passed through with the client still watched.
async fn passthrough(
    shared: &Shared,
    ds: &mut TcpStream,
    up: &mut Exchange,
    req: &Request,
    client_chunked: bool,
) -> Result<(), String> {
    let mut resp = up.head.clone();
    headers::strip_response_hop_by_hop(&mut resp);
    let has_body = !matches!(up.body.dec.body, BodyKind::Length(0)) && !up.body.dec.method_head;
    let rechunk = has_body && !matches!(up.body.dec.body, BodyKind::Length(_)) && client_chunked;
    if rechunk {
        let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    if !req.keepalive || (!client_chunked && !matches!(up.body.dec.body, BodyKind::Length(_))) {
        let _ = resp.insert_header(http::header::CONNECTION, "close");
    }
    let framing = if rechunk {
        Framing::Chunked
    } else if matches!(up.body.dec.body, BodyKind::Length(_)) || !has_body {
        Framing::Length
    } else {
        Framing::Close
    };
    let mut down = LeanDown {
        sock: ds,
        framing,
        write_timeout: shared.config.timeouts.read,
        pipelining: true,
    };
    down.write_parts(&[&response_wire(&resp)])
        .await
        .map_err(|_| "client went away".to_string())?;
    if !has_body {
        return Ok(());
    }
    while !up.body.dec.finished() || !up.body.dec.pending.is_empty() {
        tokio::select! {
            biased;
            _ = down.gone() => return Err("client closed the connection".into()),
            chunk = tokio::time::timeout(shared.config.timeouts.read, up.body.next()) => match chunk {
                Err(_) => {
                    shared.metrics.upstream_error(UpstreamErrorReason::Timeout);
                    return Err("upstream body stalled past the read timeout".into());
                }
                Ok(Ok(Some(data))) => down.send(data).await.map_err(|_| "client went away".to_string())?,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    shared.metrics.upstream_error(e.reason);
                    down.abort().await;
                    return Err(format!("{}: {}", e.what, e.detail));
                }
            }
        }
    }
    down.finish(None)
        .await
        .map_err(|_| "client went away".to_string())
}

/// The app failed before any response header: answer per `sse.on_upstream_error`.
async fn upstream_failed(
    shared: &Shared,
    ds: &mut TcpStream,
    client_chunked: bool,
    e: &UpstreamError,
) -> (u16, Kind, Option<super::StreamSummary>) {
    shared.metrics.upstream_error(e.reason);
    let code = match e.reason {
        UpstreamErrorReason::Timeout => 504,
        _ => 502,
    };
    match shared.config.sse.on_upstream_error {
        OnUpstreamError::Status => {
            let body = format!("{}: {}\n", status_text(code), e.what);
            let _ = write_simple(ds, code, "text/plain; charset=utf-8", body.as_bytes(), &[]).await;
            (code, Kind::Other, None)
        }
        OnUpstreamError::Retry => {
            let Some((mut resp, body)) = shared.upstream_error_stream(e.what, client_chunked)
            else {
                return (0, Kind::Other, None);
            };
            let _ = resp.insert_header(http::header::CONNECTION, "close");
            let mut down = LeanDown {
                sock: ds,
                framing: Framing::sse(client_chunked),
                write_timeout: shared.config.timeouts.sse_write,
                pipelining: false,
            };
            let head = response_wire(&resp);
            let size = chunk_head(body.len(), client_chunked);
            let _ = down
                .write_parts(&[&head, &size, &body, crlf(client_chunked)])
                .await;
            let _ = down.finish(None).await;
            let summary = super::StreamSummary::ended_early(
                shared,
                Outcome::UpstreamError,
                body.len() as u64,
            );
            (200, Kind::Sse, Some(summary))
        }
    }
}

/// A complete small response (errors, limits).
async fn write_simple(
    ds: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        status_text(code),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    write_all(ds, &[head.as_bytes(), body], Duration::from_secs(5)).await
}

/// Reads what is available (at most `max` bytes) into `buf`; 0 at end of stream.
async fn read_some(sock: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    loop {
        sock.readable().await?;
        match sock.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Writes every byte of `parts` (one `sendmsg` when the socket takes it all), waiting at most
/// `timeout` for the socket to make progress each time it is full.
async fn write_all(sock: &TcpStream, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let mut bufs: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for p in parts.iter().filter(|p| !p.is_empty()).take(4) {
        bufs[n] = p;
        n += 1;
    }
    let mut first = 0;
    loop {
        if try_write(sock, &mut bufs[..n], &mut first)? {
            return Ok(());
        }
        // The socket is full: a slow client. Boxed, so the common path's future stays small.
        Box::pin(wait_writable(sock, timeout)).await?;
    }
}

/// Writes what the socket takes now; `Ok(true)` when everything is written.
fn try_write(sock: &TcpStream, bufs: &mut [&[u8]], first: &mut usize) -> io::Result<bool> {
    let n = bufs.len();
    while *first < n {
        let slices: [IoSlice; 4] = std::array::from_fn(|i| {
            IoSlice::new(bufs.get(*first + i).copied().unwrap_or_default())
        });
        match send_vectored(sock, &slices[..n - *first]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => super::codec::advance(&mut bufs[*first..], written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
        while *first < n && bufs[*first].is_empty() {
            *first += 1;
        }
    }
    Ok(true)
}

/// `sendmsg` rather than `writev` (what `TcpStream::try_write_vectored` uses): a socket write
/// through the VFS layer costs an fd position lock and the VFS checks on every event.
fn send_vectored(sock: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sock.try_io(tokio::io::Interest::WRITABLE, || {
        sendmsg(socket2::SockRef::from(sock), bufs)
    })
}

async fn wait_writable(sock: &TcpStream, timeout: Duration) -> io::Result<()> {
    let writable = std::future::poll_fn(|cx| sock.poll_write_ready(cx));
    match tokio::time::timeout(timeout, writable).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("write made no progress")),
    }
}

/// The client side on a raw socket.
struct LeanDown<'a> {
    sock: &'a mut TcpStream,
    framing: Framing,
    write_timeout: Duration,
    /// Bytes from the client are its next request (finite responses), not a protocol error.
    pipelining: bool,
}

/// How the body written to the client is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    /// `Content-Length` passed through from the app: bytes as they come, nothing at the end.
    Length,
    /// HTTP/1.0 or an app that closes: the end of the body is the end of the connection.
    Close,
}

impl Framing {
    fn sse(client_chunked: bool) -> Framing {
        if client_chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    }
}

impl LeanDown<'_> {
    async fn write_parts(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        write_all(self.sock, parts, self.write_timeout)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => WriteError::Timeout,
                _ => WriteError::Closed,
            })
    }
}

impl Downstream for LeanDown<'_> {
    async fn send(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        let head = ChunkHead::new(data.len());
        self.write_parts(&body_parts(&head, &data, self.framing == Framing::Chunked))
            .await
    }

    async fn send_raw(&mut self, wire: Bytes) -> Result<(), WriteError> {
        self.write_parts(&[&wire]).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> Result<(), WriteError> {
        let last = last.unwrap_or_default();
        match self.framing {
            Framing::Chunked if last.is_empty() => self.write_parts(&[b"0\r\n\r\n"]).await,
            Framing::Chunked => {
                let head = ChunkHead::new(last.len());
                self.write_parts(&[head.as_bytes(), &last, b"\r\n0\r\n\r\n"])
                    .await
            }
            Framing::Length => self.write_parts(&[&last]).await,
            Framing::Close => {
                self.write_parts(&[&last]).await?;
                let _ = tokio::io::AsyncWriteExt::shutdown(self.sock).await;
                Ok(())
            }
        }
    }

    async fn gone(&mut self) {
        // Peek, never read: bytes that arrive may be the client's next request. Polled
        // readiness (not `peek().await`) keeps this future, held by every idle stream, tiny.
        let sock = &*self.sock;
        let pipelining = self.pipelining;
        std::future::poll_fn(|cx| {
            let mut probe = [0u8; 1];
            let mut buf = tokio::io::ReadBuf::new(&mut probe);
            match sock.poll_peek(cx, &mut buf) {
                // Bytes from the client during a finite response: its next request.
                Poll::Ready(Ok(n)) if n > 0 && pipelining => Poll::Pending,
                // A close, a reset, or bytes where none may come: the client is done.
                Poll::Ready(_) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    async fn abort(&mut self) {
        // No terminating chunk: the client sees the body break off.
        let _ = tokio::io::AsyncWriteExt::shutdown(self.sock).await;
    }
}

/// How the app frames its body.
#[derive(Debug)]
enum BodyKind {
    Chunked(ChunkedDecoder),
    Length(u64),
    /// Until the app closes the connection.
    Close,
}

/// The app side on a raw socket.
struct LeanUp {
    sock: TcpStream,
    dec: Decode,
}

/// The app's body framing and the bytes read but not yet decoded: everything of the app side
/// but its socket, so the event loop ([`super::engine`]) can carry it.
#[derive(Debug)]
pub(super) struct Decode {
    body: BodyKind,
    /// Bytes read but not yet decoded (read with the header, or a previous read).
    pub(super) pending: Bytes,
    method_head: bool,
    /// A failure met by the event loop, reported by the next [`LeanUp::next`].
    pub(super) failed: Option<UpstreamError>,
}

impl Decode {
    /// A chunked body with nothing read yet.
    #[cfg(test)]
    pub(super) fn chunked() -> Decode {
        Decode {
            body: BodyKind::Chunked(ChunkedDecoder::default()),
            pending: Bytes::new(),
            method_head: false,
            failed: None,
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.method_head
            || match &self.body {
                BodyKind::Chunked(d) => d.is_done(),
                BodyKind::Length(left) => *left == 0,
                BodyKind::Close => false,
            }
    }

    /// Takes the payload out of `pending`.
    pub(super) fn decode(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let input = std::mem::take(&mut self.pending);
        match &mut self.body {
            BodyKind::Close => Ok(Some(input)),
            BodyKind::Length(left) => {
                let take = (*left as usize).min(input.len());
                *left -= take as u64;
                Ok(Some(input.slice(..take)))
            }
            BodyKind::Chunked(decoder) => {
                let mut first: Option<Bytes> = None;
                let mut more: Option<BytesMut> = None;
                decoder
                    .decode(&input, |piece| match (&first, &mut more) {
                        (None, _) => first = Some(piece),
                        (Some(f), None) => {
                            let mut m = BytesMut::with_capacity(f.len() + piece.len());
                            m.extend_from_slice(f);
                            m.extend_from_slice(&piece);
                            more = Some(m);
                        }
                        (Some(_), Some(m)) => m.extend_from_slice(&piece),
                    })
                    .map_err(|e| UpstreamError {
                        reason: UpstreamErrorReason::Protocol,
                        what: "upstream sent an invalid chunked body",
                        detail: e.to_string(),
                    })?;
                Ok(more.map(BytesMut::freeze).or(first))
            }
        }
    }
}

impl UpstreamBody for LeanUp {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if let Some(e) = self.dec.failed.take() {
            return Err(e);
        }
        let dec = &mut self.dec;
        loop {
            if !dec.pending.is_empty() && !dec.finished() {
                if let Some(data) = dec.decode()?.filter(|d| !d.is_empty()) {
                    return Ok(Some(data));
                }
            }
            if dec.finished() {
                return Ok(None);
            }
            let sock = &self.sock;
            if let Err(e) = std::future::poll_fn(|cx| sock.poll_read_ready(cx)).await {
                return Err(upstream_error(&e, "reading the body"));
            }
            match read_once(&self.sock) {
                Ok(data) if data.is_empty() => {
                    return match dec.body {
                        BodyKind::Close => {
                            dec.body = BodyKind::Length(0);
                            Ok(None)
                        }
                        _ => Err(UpstreamError {
                            reason: UpstreamErrorReason::Reset,
                            what: "upstream closed the connection mid-body",
                            detail: "unexpected end of stream".into(),
                        }),
                    };
                }
                Ok(data) => dec.pending = data,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(upstream_error(&e, "reading the body")),
            }
        }
    }
}

thread_local! {
    /// Every upstream read lands here first (see [`recv_copy`]); only the bytes read are copied
    /// out. Streams hold no read buffer while idle, and a read costs a small allocation, not a
    /// 64 KiB one.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_SIZE]);
}

/// One `recv` of at most [`READ_SIZE`] bytes through this thread's scratch buffer: the bytes
/// read (empty at end of stream). The tokio relay and the event loop both read this way.
pub(super) fn recv_copy(sock: socket2::SockRef<'_>) -> io::Result<Bytes> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let n = io::Read::read(&mut &*sock, &mut scratch)?;
        Ok(Bytes::copy_from_slice(&scratch[..n]))
    })
}

/// The parts of one body write: a chunk's size line, its data and the CRLF, or (a body
/// delimited by length or by the connection's end) the data alone.
pub(super) fn body_parts<'a>(head: &'a ChunkHead, data: &'a [u8], chunked: bool) -> [&'a [u8]; 3] {
    if chunked {
        [head.as_bytes(), data, b"\r\n"]
    } else {
        [data, &[], &[]]
    }
}

/// One `sendmsg` (not `writev`: see [`send_vectored`]); never raises SIGPIPE.
pub(super) fn sendmsg(sock: socket2::SockRef<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sock.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

/// One read from a ready socket: the bytes read (empty at end of stream), or `WouldBlock`.
///
/// A short read means the socket's receive queue is empty, so readiness is cleared right
/// away (by reporting `WouldBlock` to tokio) instead of by a second read that returns EAGAIN:
/// one system call per event instead of two.
fn read_once(sock: &TcpStream) -> io::Result<Bytes> {
    let mut got: Option<Bytes> = None;
    let result = sock.try_io(tokio::io::Interest::READABLE, || {
        let data = recv_copy(socket2::SockRef::from(sock))?;
        let short = !data.is_empty() && data.len() < READ_SIZE;
        got = Some(data);
        if short {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (got, result) {
        (Some(data), _) => Ok(data),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let head: &[u8] = b"POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nbody";
        let r = parse_request(head).unwrap();
        assert_eq!(r.body, ReqBody::Length(12));
        assert!(!r.keepalive);
        assert!(r.expect_continue);
        assert!(r.header.headers.get("expect").is_none());
        assert_eq!(r.head_len, head.len() - "body".len());
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keepalive);
    }

    #[test]
    fn parses_response_heads() {
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        let (h, len, body) = parse_response(resp).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(len, resp.len() - "5\r\n".len());
        assert!(matches!(body, BodyKind::Chunked(_)));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len")
            .unwrap()
            .is_none());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    /// Prints the sizes of the per-stream futures (run with --nocapture).
    #[tokio::test]
    async fn future_sizes() {
        let config = Config::from_yaml("").unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let shared = Shared::new(config, metrics, "127.0.0.1:9".parse().unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let req = parse_request(b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        println!("Request: {}", std::mem::size_of::<Request>());
        println!("RequestHeader: {}", std::mem::size_of::<RequestHeader>());
        let fut = serve(&shared, a, Box::new(req), Bytes::new());
        println!("serve future: {}", std::mem::size_of_val(&fut));
        drop(fut);
        let mut sock = b;
        let mut down = LeanDown {
            sock: &mut sock,
            framing: Framing::Chunked,
            write_timeout: Duration::from_secs(1),
            pipelining: false,
        };
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut up = LeanUp {
            sock: c,
            dec: Decode {
                body: BodyKind::Close,
                pending: Bytes::new(),
                method_head: false,
                failed: None,
            },
        };
        println!("LeanUp: {}", std::mem::size_of::<LeanUp>());
        {
            let f = down.send(Bytes::new());
            println!("send future: {}", std::mem::size_of_val(&f));
        }
        {
            let f = down.gone();
            println!("gone future: {}", std::mem::size_of_val(&f));
        }
        {
            let f = up.next();
            println!("next future: {}", std::mem::size_of_val(&f));
        }
        let p = super::super::stream::Progress::new(&shared, Instant::now(), true);
        let f = super::super::stream::run(&shared, &mut down, &mut up, p, None);
        println!("stream::run future: {}", std::mem::size_of_val(&f));
        println!("Sleep: {}", std::mem::size_of::<tokio::time::Sleep>());
        println!("Progress: {}", std::mem::size_of::<Progress>());
        println!("Lane: {}", std::mem::size_of::<Lane>());
    }
}
