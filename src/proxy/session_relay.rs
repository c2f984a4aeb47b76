//! The session relay: SSE candidates over h2 or TLS (and every candidate when the app speaks
//! https), relayed from pingora's client session (taken over in pingora's `request_filter`
//! for HTTP/1, before pingora's proxy for h2: see `SidecarApp`). The app is reached as the lean
//! relay reaches it (its exchange and body decoder) when it speaks plain HTTP/1.1, through
//! pingora's connector when it speaks https. pingora's proxy filters cannot write to the
//! client while the app is silent (heartbeats), notice the client leaving at once, or close at
//! an event boundary on drain, because they only run when the app's bytes arrive (DESIGN §3);
//! owning the exchange can.
//!
//! Flow: build the app's request → connect (one retry on a stale pooled connection) → read
//! the response head → a stream goes to [`crate::proxy::stream::run`], anything else is
//! passed through.

use crate::metrics::{Kind, Outcome};
use crate::proxy::answers::Answer;
use crate::proxy::candidate;
use crate::proxy::headers;
use crate::proxy::http1::socket::write_all;
use crate::proxy::lean::app::LeanApp;
use crate::proxy::lean::exchange::{self, ExchangeError};
use crate::proxy::resume::relay::{self as resume_relay, Lookup};
use crate::proxy::resume::store::{Attached, Entry};
use crate::proxy::shared::{Shared, StreamSlot};
use crate::proxy::stream::WriteError;
use crate::proxy::stream::{self, respond, AppBody, Body, Client, Ended, Progress, StreamSummary};
use crate::proxy::upstream_error::{Failure, Phase, UpstreamError};
use crate::proxy::upstream_request::{self, Forwarding};
use bytes::Bytes;
use h2::SendStream;
use pingora_core::protocols::http::client::HttpSession as AppSession;
use pingora_core::protocols::http::server::Session as ClientSession;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;
use std::time::Instant;

/// Request bodies up to this size are kept so the request can be retried on a fresh
/// connection when a pooled one turns out to be stale.
const RETRY_BUFFER: usize = 64 * 1024;

/// How a relayed request was answered, for its log line.
#[derive(Default)]
pub(crate) struct Answered {
    /// 0: nothing was written (the client left first).
    pub(crate) status: u16,
    pub(crate) kind: Option<Kind>,
    pub(crate) error: Option<String>,
    pub(crate) stream: Option<StreamSummary>,
    /// A resumed stream: the events replayed from its buffer.
    pub(crate) replayed: Option<u64>,
}

/// Relays one SSE candidate. Everything, failures included, is answered here.
pub(crate) async fn run(
    shared: &Arc<Shared>,
    session: &mut ClientSession,
    started: Instant,
) -> Answered {
    let mut s = match Box::pin(open(shared, session, started)).await {
        Opened::Answered(answered) => return answered,
        Opened::Streaming(s) => s,
    };
    let mut client = PingoraClient::new(session);
    let ended = stream::run(shared, &mut client, &mut s.app, s.progress).await;
    if ended.app_done {
        Box::pin(release(shared, s.app)).await;
    }
    finish_stream(session, s.status, ended, None)
}

/// What [`open`] did with a candidate.
pub(crate) enum Opened<'a> {
    /// Answered in full: a failure, a pass-through, a resumable stream, a stream whose client
    /// left before its head was written.
    Answered(Answered),
    /// An event stream whose head and opening block are written: [`Streaming`] relays the
    /// rest of the app's body.
    Streaming(Box<Streaming<'a>>),
}

/// An event stream whose head is written: all it needs for the rest of its life.
pub(crate) struct Streaming<'a> {
    app: App,
    progress: Progress,
    status: u16,
    _slot: StreamSlot<'a>,
}

/// Everything of a candidate up to its stream's steady state: the exchange with the app, and
/// every answer that is not a stream to relay (those are answered here, resumable streams
/// included). A future is as large as its largest state, for as long as it lives, so this one
/// is boxed by its callers and freed once the stream starts; each step in it is boxed too
/// (pingora's connector alone makes ~9 KiB).
pub(crate) async fn open<'a>(
    shared: &'a Arc<Shared>,
    session: &mut ClientSession,
    started: Instant,
) -> Opened<'a> {
    let Some(slot) = StreamSlot::take(shared) else {
        let mut client = PingoraClient::new(session);
        let _ = Box::pin(respond::answer(&mut client, Answer::over_limit(shared))).await;
        let why = format!(
            "limits.max_streams ({}) reached",
            shared.config.limits.max_streams
        );
        return Opened::Answered(Answered {
            status: 503,
            error: Some(why),
            ..Answered::default()
        });
    };
    let req = match app_request(shared, session) {
        Ok(req) => req,
        Err(e) => {
            let mut client = PingoraClient::new(session);
            let answer = Answer::plain(400, Some(&e.to_string()));
            let _ = Box::pin(respond::answer(&mut client, answer)).await;
            return Opened::Answered(Answered {
                status: 400,
                error: Some(e.to_string()),
                ..Answered::default()
            });
        }
    };
    // A resume is answered from the stream's log; the app sees nothing of it.
    if let Lookup::Resume(entry, attached) =
        Box::pin(resume_relay::lookup(shared, session.req_header())).await
    {
        return Opened::Answered(
            Box::pin(resumed(shared, session, started, entry, attached)).await,
        );
    }
    let exchanged = if shared.config.upstream.tls {
        Box::pin(exchange(shared, session, req)).await
    } else {
        Box::pin(exchange_plain(shared, session, req)).await
    };
    let (head, mut app) = match exchanged {
        Ok(answer) => answer,
        Err(Failed::Client(e)) => {
            return Opened::Answered(Answered {
                error: Some(format!("client error: {e}")),
                ..Answered::default()
            })
        }
        Err(Failed::App(e)) => return Opened::Answered(Box::pin(failed(shared, session, e)).await),
    };
    let status = head.status.as_u16();
    let stream = headers::is_stream_response(&session.req_header().method, &head);
    candidate::relayed(shared, session.req_header(), stream);
    if !stream {
        let body = app.body(&head);
        let mut client = PingoraClient::new(session);
        let result = Box::pin(respond::passthrough(
            shared,
            &mut client,
            &mut app,
            head,
            body,
        ))
        .await;
        if result.is_ok() {
            Box::pin(release(shared, app)).await;
        }
        return Opened::Answered(Answered {
            status,
            kind: Some(Kind::Other),
            error: result.err().map(|e| e.to_string()),
            ..Answered::default()
        });
    }

    app.no_read_timeout();
    let opened = resume_relay::open(shared, session.req_header(), &head);
    session.set_write_timeout(Some(shared.config.timeouts.sse_write));
    let mut client = PingoraClient::new(session);
    // A resumable stream: a producer reads the app into the stream's log, and this
    // connection is its first consumer.
    if let Some((entry, first)) = opened {
        let wrote_prefix = shared.open_block.is_some();
        resume_relay::spawn_producer(shared.clone(), entry.clone(), app, wrote_prefix);
        let ended =
            resume_relay::serve_client(shared, &mut client, &entry, &first, started, Ok(())).await;
        return Opened::Answered(finish_stream(session, status, ended, None));
    }
    match Box::pin(respond::start_stream(shared, &mut client, head)).await {
        Ok(prefix) => Opened::Streaming(Box::new(Streaming {
            app,
            progress: Progress::new(shared, started, prefix),
            status,
            _slot: slot,
        })),
        Err(_) => {
            session.set_keepalive(None);
            let summary = StreamSummary::ended_early(shared, Outcome::ClientClosed, 0);
            Opened::Answered(Answered {
                status,
                kind: Some(Kind::Sse),
                stream: Some(summary),
                ..Answered::default()
            })
        }
    }
}

/// A stream's answer for the log; a client connection whose stream did not end cleanly is
/// never reused.
fn finish_stream(
    session: &mut ClientSession,
    status: u16,
    ended: Ended,
    replayed: Option<u64>,
) -> Answered {
    if ended.summary.outcome != Some(Outcome::Completed) {
        session.set_keepalive(None);
    }
    streamed(status, ended, replayed)
}

/// A stream's answer for the log.
fn streamed(status: u16, ended: Ended, replayed: Option<u64>) -> Answered {
    Answered {
        status,
        kind: Some(Kind::Sse),
        error: ended.error,
        stream: Some(ended.summary),
        replayed,
    }
}

/// The rest of an h2 stream whose head is written, on the stream's own send half
/// ([`take_h2_send`]): pingora's server session (680 bytes, the request's and the response's
/// header maps, its body reader) is dropped before, and a stream holds only what it needs.
///
/// `s` is unboxed in a block of its own, which frees the box before the stream starts.
pub(crate) fn relay_h2<'a>(
    shared: &'a Shared,
    send: SendStream<Bytes>,
    s: Box<Streaming<'a>>,
) -> impl std::future::Future<Output = Answered> + Send + 'a {
    // Not an `async fn`, which would keep `send` twice (see `stream::run`).
    let mut client = H2Client {
        send,
        write_timeout: shared.config.timeouts.sse_write,
        cancelled: false,
        ended: false,
    };
    async move {
        let Streaming {
            mut app,
            progress,
            status,
            _slot,
        } = {
            let s = s;
            *s
        };
        let ended = stream::run(shared, &mut client, &mut app, progress).await;
        if ended.app_done {
            Box::pin(release(shared, app)).await;
        }
        streamed(status, ended, None)
    }
}

/// The send half of an h2 request's stream once its response head is written; `None` over
/// HTTP/1.
pub(crate) fn take_h2_send(session: &mut ClientSession) -> Option<SendStream<Bytes>> {
    match session {
        ClientSession::H2(h2) => h2.take_response_body_writer(),
        _ => None,
    }
}

/// A client resumes a stream: its head again, then the events after its id, then live.
async fn resumed(
    shared: &Shared,
    session: &mut ClientSession,
    started: Instant,
    entry: Arc<Entry>,
    attached: Attached,
) -> Answered {
    let status = entry.head.status.as_u16();
    // The resuming request's body (a POST resumed by a POST) is not for the app.
    let timeout = shared.config.timeouts.read;
    let discarded = tokio::time::timeout(timeout, async {
        while let Some(_chunk) = session.read_request_body().await? {}
        Ok::<(), Box<Error>>(())
    })
    .await;
    let ready = match discarded {
        Ok(Ok(())) => Ok(()),
        _ => Err(WriteError::Closed),
    };
    session.set_write_timeout(Some(shared.config.timeouts.sse_write));
    let mut client = PingoraClient::new(session);
    let ended =
        resume_relay::serve_client(shared, &mut client, &entry, &attached, started, ready).await;
    finish_stream(session, status, ended, Some(attached.replayed))
}

/// The app failed before answering.
async fn failed(shared: &Shared, session: &mut ClientSession, e: UpstreamError) -> Answered {
    let mut client = PingoraClient::new(session);
    let (status, kind, stream) = respond::upstream_failed(shared, &mut client, &e).await;
    Answered {
        status,
        kind: Some(kind),
        error: Some(e.to_string()),
        stream,
        replayed: None,
    }
}

/// Back to the connector's pool: the app's body ended cleanly. A plain connection of our own
/// is closed, as the lean relay's are.
async fn release(shared: &Shared, app: App) {
    if let App::Pingora(app) = app {
        let idle = shared.peer.options.idle_timeout;
        shared
            .connector
            .release_http_session(*app, &shared.peer, idle)
            .await;
    }
}

/// The request as the app should see it (see [`upstream_request::prepare`]).
fn app_request(
    shared: &Shared,
    session: &ClientSession,
) -> Result<RequestHeader, upstream_request::BadRequest> {
    let fwd = Forwarding::of(session, true, &shared.config);
    upstream_request::upstream_request(session.req_header(), &fwd)
}

/// Why the exchange ended before the app's head was read.
enum Failed {
    /// Reading the client's request body failed: the client went away.
    Client(Box<Error>),
    App(UpstreamError),
}

fn app_failed(e: Box<Error>) -> Failed {
    Failed::App(UpstreamError::from_pingora(&e))
}

/// The app's side of a relayed request.
enum App {
    /// An https app: pingora's connector, TLS and pool.
    Pingora(Box<AppSession>),
    /// A plain HTTP/1.1 app: the lean relay's own socket and body decoder, which hold a few
    /// hundred bytes where pingora's upstream session holds a 64 KiB body buffer per stream.
    Lean(LeanApp),
}

impl App {
    /// The shape of the body after `head`, for a pass-through.
    fn body(&mut self, head: &ResponseHeader) -> Body {
        match self {
            App::Lean(app) => app.body(),
            App::Pingora(app) => {
                if app.response_done() {
                    Body::None
                } else if head.headers.contains_key(http::header::CONTENT_LENGTH) {
                    Body::Length
                } else {
                    Body::Unknown
                }
            }
        }
    }

    /// The stream loop enforces the idle timeout, from the last read: pingora's per-read
    /// timeout would restart whenever a heartbeat wakes the loop. (Ours has none.)
    fn no_read_timeout(&mut self) {
        if let App::Pingora(app) = self {
            app.set_read_timeout(None);
        }
    }
}

impl AppBody for App {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match self {
            // Boxed: pingora's read is ~200 bytes more in every stream's future.
            App::Pingora(app) => Box::pin(app.read_response_body())
                .await
                .map_err(|e| UpstreamError::from_pingora(&e)),
            App::Lean(app) => app.next().await,
        }
    }
}

/// How a request body goes to the app: as it came with a `Content-Length`, else chunked (the
/// client's own framing, if any, is a hop-by-hop matter and was removed). Returns whether it
/// is chunked.
fn frame_body(req: &mut RequestHeader, has_body: bool) -> bool {
    let chunked = has_body && !req.headers.contains_key(http::header::CONTENT_LENGTH);
    if chunked {
        let _ = req.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    chunked
}

/// With a plain app: connects, sends the request and its body (re-framed: as it came with a
/// `Content-Length`, else chunked) and reads the response head, as the lean relay does.
async fn exchange_plain(
    shared: &Shared,
    session: &mut ClientSession,
    mut req: RequestHeader,
) -> Result<(ResponseHeader, App), Failed> {
    let has_body = !session.is_body_empty();
    let chunked = frame_body(&mut req, has_body);
    let method_head = req.method == http::Method::HEAD;
    let app = exchange::send_head(shared, &req)
        .await
        .map_err(|e| match e {
            ExchangeError::Upstream(e) => Failed::App(e),
            // The request was checked by `app_request`; a target that still cannot be written
            // is the app's request failing.
            e => Failed::App(UpstreamError::new(Failure::InvalidResponse, e.to_string())),
        })?;
    let timeout = shared.config.timeouts.read;
    let to_app = |e: std::io::Error| Failed::App(UpstreamError::from_io(&e, Phase::SendBody));
    if has_body {
        while let Some(piece) = session.read_request_body().await.map_err(Failed::Client)? {
            exchange::send_body_piece(&app, chunked, &piece, timeout)
                .await
                .map_err(to_app)?;
        }
        if chunked {
            write_all(&app, &[exchange::LAST_CHUNK], timeout)
                .await
                .map_err(to_app)?;
        }
    }
    let exchanged = exchange::read_head(shared, app, method_head)
        .await
        .map_err(Failed::App)?;
    Ok((exchanged.head, App::Lean(exchanged.app)))
}

/// With an https app: connects through pingora's connector (one retry on a stale pooled
/// connection), sends the request and reads the response header.
async fn exchange(
    shared: &Shared,
    session: &mut ClientSession,
    mut req: RequestHeader,
) -> Result<(ResponseHeader, App), Failed> {
    let has_body = !session.is_body_empty();
    frame_body(&mut req, has_body);
    // Read the start of the body first, so a stale pooled connection can be retried.
    let mut buffered: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let mut body_done = !has_body;
    while !body_done && size < RETRY_BUFFER {
        match session.read_request_body().await.map_err(Failed::Client)? {
            Some(chunk) => {
                size += chunk.len();
                buffered.push(chunk);
            }
            None => body_done = true,
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut app, reused) = shared
            .connector
            .get_http_session(&shared.peer)
            .await
            .map_err(app_failed)?;
        app.set_read_timeout(Some(shared.config.timeouts.read));
        app.set_write_timeout(Some(shared.config.timeouts.read));
        match send(&mut app, session, &req, &buffered, body_done).await {
            Ok(()) => {
                let Some(head) = app.response_header().cloned() else {
                    let e = UpstreamError::new(Failure::InvalidResponse, "no response header");
                    return Err(Failed::App(e));
                };
                return Ok((head, App::Pingora(Box::new(app))));
            }
            // A pooled connection the app already closed: one retry, as pingora's proxy does,
            // and only while the whole body is still in hand.
            Err(Failed::App(e)) if reused && attempt == 1 && body_done => {
                tracing::debug!("retrying on a fresh connection after a stale pooled one: {e}");
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send(
    app: &mut AppSession,
    ds: &mut ClientSession,
    req: &RequestHeader,
    buffered: &[Bytes],
    body_done: bool,
) -> Result<(), Failed> {
    app.write_request_header(Box::new(req.clone()))
        .await
        .map_err(app_failed)?;
    for chunk in buffered {
        app.write_request_body(chunk.clone(), false)
            .await
            .map_err(app_failed)?;
    }
    if !body_done {
        while let Some(chunk) = ds.read_request_body().await.map_err(Failed::Client)? {
            app.write_request_body(chunk, false)
                .await
                .map_err(app_failed)?;
        }
    }
    app.finish_request_body().await.map_err(app_failed)?;
    // Informational responses (100 Continue, 103 Early Hints) are skipped.
    for _ in 0..8 {
        app.read_response_header().await.map_err(app_failed)?;
        match app.response_header() {
            Some(r) if r.status.is_informational() && r.status.as_u16() != 101 => continue,
            _ => return Ok(()),
        }
    }
    let e = Error::explain(ErrorType::H1Error, "too many informational responses");
    Err(app_failed(e))
}

/// A pingora downstream session (HTTP/1.1, h2, TLS) as the client side.
pub(crate) struct PingoraClient<'a> {
    session: &'a mut ClientSession,
    /// The client reset its h2 stream on a live connection.
    cancelled: bool,
}

impl<'a> PingoraClient<'a> {
    pub(crate) fn new(session: &'a mut ClientSession) -> PingoraClient<'a> {
        PingoraClient {
            session,
            cancelled: false,
        }
    }
}

#[allow(clippy::boxed_local)]
fn write_error(e: Box<Error>) -> WriteError {
    // Boxed as pingora returns it; `map_err` hands it over whole.
    match e.etype() {
        ErrorType::WriteTimedout => WriteError::Timeout,
        _ => WriteError::Closed,
    }
}

impl Client for PingoraClient<'_> {
    fn chunked(&self) -> bool {
        self.session.req_header().version == http::Version::HTTP_11
    }

    async fn write_head(
        &mut self,
        mut head: ResponseHeader,
        body: Body,
        close: bool,
        first: Option<Bytes>,
    ) -> Result<(), WriteError> {
        let chunked = self.chunked();
        if body == Body::Unknown && chunked {
            let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
        if close || (body == Body::Stream && !chunked) {
            // HTTP/1.0 ends a stream with the connection.
            self.session.set_keepalive(None);
        }
        self.session
            .write_response_header(Box::new(head))
            .await
            .map_err(write_error)?;
        match first {
            Some(first) => self.send(first).await,
            None => Ok(()),
        }
    }

    async fn send(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.session
            .write_response_body(data, false)
            .await
            .map_err(write_error)
    }

    /// Never called: only the lean relay's event loop leaves bytes unsent.
    async fn send_raw(&mut self, wire: Bytes) -> Result<(), WriteError> {
        self.send(wire).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> Result<(), WriteError> {
        self.session
            .write_response_body(last.unwrap_or_default(), true)
            .await
            .map_err(write_error)
    }

    async fn gone(&mut self) {
        // h2: RST_STREAM on a live connection (`Ok`: the page closed its EventSource) or the
        // connection's end (`Err`).
        if let Some(closed) = self.session.watch_h2_stream_close() {
            self.cancelled = closed.await.is_ok();
            return;
        }
        // Returns only on a close, a reset or unexpected bytes (all: the client is done).
        let _ = self.session.read_body_or_idle(true).await;
    }

    fn cancelled(&self) -> bool {
        self.cancelled
    }

    async fn abort(&mut self) {
        self.session.shutdown().await;
    }
}

/// An h2 stream's send half, its head written, as the client side: what [`PingoraClient`]
/// does over h2, without pingora's session around it.
struct H2Client {
    send: SendStream<Bytes>,
    write_timeout: std::time::Duration,
    /// The client reset the stream on a live connection.
    cancelled: bool,
    /// END_STREAM is sent.
    ended: bool,
}

impl H2Client {
    /// Sends `data` as DATA frames within the client's flow-control window, as pingora's h2
    /// body writer does (END_STREAM on the last one when `end`).
    async fn write(&mut self, mut data: Bytes, end: bool) -> Result<(), WriteError> {
        if self.ended {
            return Ok(());
        }
        loop {
            let take = match data.len() {
                0 => 0,
                want => match self.capacity(want) {
                    // Boxed: an event that fits the window (nearly all of them) needs no timer,
                    // and this future, part of every stream's, stays small.
                    0 => Box::pin(self.wait_window(want)).await?,
                    cap => cap,
                },
            };
            let piece = data.split_to(take);
            let last = data.is_empty();
            self.send
                .send_data(piece, last && end)
                .map_err(|_| WriteError::Closed)?;
            if last {
                self.ended = end;
                return Ok(());
            }
        }
    }

    /// The flow-control capacity the stream has now for up to `want` bytes.
    fn capacity(&mut self, want: usize) -> usize {
        self.send.reserve_capacity(want);
        self.send.capacity().min(want)
    }

    /// Waits for the client's window to open, at most the write timeout each time it is full.
    async fn wait_window(&mut self, want: usize) -> Result<usize, WriteError> {
        loop {
            let send = &mut self.send;
            let window = std::future::poll_fn(|cx| send.poll_capacity(cx));
            match tokio::time::timeout(self.write_timeout, window).await {
                Err(_) => return Err(WriteError::Timeout),
                Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) => return Err(WriteError::Closed),
            }
            match self.capacity(want) {
                0 => {}
                cap => return Ok(cap),
            }
        }
    }
}

impl Client for H2Client {
    fn chunked(&self) -> bool {
        false
    }

    /// The head went out through pingora's session before the stream moved here.
    async fn write_head(
        &mut self,
        _head: ResponseHeader,
        _body: Body,
        _close: bool,
        _first: Option<Bytes>,
    ) -> Result<(), WriteError> {
        Err(WriteError::Closed)
    }

    async fn send(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        self.write(data, false).await
    }

    async fn send_raw(&mut self, wire: Bytes) -> Result<(), WriteError> {
        self.send(wire).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> Result<(), WriteError> {
        self.write(last.unwrap_or_default(), true).await
    }

    async fn gone(&mut self) {
        // RST_STREAM on a live connection (`Ok`: the page closed its EventSource) or the
        // connection's end (`Err`).
        let send = &mut self.send;
        let reset = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
        self.cancelled = reset.is_ok();
    }

    fn cancelled(&self) -> bool {
        self.cancelled
    }

    async fn abort(&mut self) {
        // As pingora's session does: no END_STREAM, an RST_STREAM.
        if !self.ended {
            self.send.send_reset(h2::Reason::INTERNAL_ERROR);
            self.ended = true;
        }
    }
}

#[cfg(test)]
mod size_tests {
    //! An idle h2 stream holds the future [`relay_h2`] returns for its whole life (beside
    //! pingora's task and h2's own stream state): its size is most of what the stream costs,
    //! and what keeps TLS+h2 under HAProxy's memory per stream. The budget fails a change that
    //! grows it by accident.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::proxy::http1::body::Decode;

    #[tokio::test]
    async fn an_h2_streams_future_stays_within_budget() {
        let config = Config::from_yaml("").unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let shared = Arc::new(Shared::new(config, metrics, "127.0.0.1:9".parse().unwrap()));

        // A real h2 stream's send half, over an in-memory connection.
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            send
        });
        let (mut client, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(conn);
        let (_resp, _body) = client.send_request(http::Request::new(()), true).unwrap();
        let send = server.await.unwrap();

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let streaming = Box::new(Streaming {
            app: App::Lean(LeanApp {
                sock,
                dec: Decode::chunked(),
            }),
            progress: Progress::new(&shared, Instant::now(), 0),
            status: 200,
            _slot: StreamSlot::take(&shared).unwrap(),
        });
        let fut = relay_h2(&shared, send, streaming);
        let size = std::mem::size_of_val(&fut);
        println!("relay_h2 future: {size} bytes (budget 1104)");
        assert!(
            size <= 1104,
            "relay_h2's future is {size} bytes, over its budget of 1104"
        );
    }
}
