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
///
/// A future is as large as its largest state, for as long as it lives: every step before the
/// stream and after it (connecting, above all: pingora's connector makes that ~9 KiB) is
/// boxed, so a stream's steady state is not charged for them (it was ~20 KiB a stream).
pub(crate) async fn run(
    shared: &Arc<Shared>,
    session: &mut ClientSession,
    started: Instant,
) -> Answered {
    let Some(_slot) = StreamSlot::take(shared) else {
        let mut client = PingoraClient::new(session);
        let _ = Box::pin(respond::answer(&mut client, Answer::over_limit(shared))).await;
        let why = format!(
            "limits.max_streams ({}) reached",
            shared.config.limits.max_streams
        );
        return Answered {
            status: 503,
            error: Some(why),
            ..Answered::default()
        };
    };
    let req = match app_request(shared, session) {
        Ok(req) => req,
        Err(e) => {
            let mut client = PingoraClient::new(session);
            let answer = Answer::plain(400, Some(&e.to_string()));
            let _ = Box::pin(respond::answer(&mut client, answer)).await;
            return Answered {
                status: 400,
                error: Some(e.to_string()),
                ..Answered::default()
            };
        }
    };
    // A resume is answered from the stream's log; the app sees nothing of it.
    if let Lookup::Resume(entry, attached) =
        Box::pin(resume_relay::lookup(shared, session.req_header())).await
    {
        return Box::pin(resumed(shared, session, started, entry, attached)).await;
    }
    let exchanged = if shared.config.upstream.tls {
        Box::pin(exchange(shared, session, req)).await
    } else {
        Box::pin(exchange_plain(shared, session, req)).await
    };
    let (head, mut app) = match exchanged {
        Ok(answer) => answer,
        Err(Failed::Client(e)) => {
            return Answered {
                error: Some(format!("client error: {e}")),
                ..Answered::default()
            }
        }
        Err(Failed::App(e)) => return Box::pin(failed(shared, session, e)).await,
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
        return Answered {
            status,
            kind: Some(Kind::Other),
            error: result.err().map(|e| e.to_string()),
            ..Answered::default()
        };
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
        return finish_stream(session, status, ended, None);
    }
    let ended = match Box::pin(respond::start_stream(shared, &mut client, head)).await {
        Ok(prefix) => {
            let p = Progress::new(shared, started, prefix);
            Some(stream::run(shared, &mut client, &mut app, p).await)
        }
        Err(_) => None,
    };
    let Some(ended) = ended else {
        session.set_keepalive(None);
        let summary = StreamSummary::ended_early(shared, Outcome::ClientClosed, 0);
        return Answered {
            status,
            kind: Some(Kind::Sse),
            stream: Some(summary),
            ..Answered::default()
        };
    };
    if ended.app_done {
        Box::pin(release(shared, app)).await;
    }
    finish_stream(session, status, ended, None)
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
    Answered {
        status,
        kind: Some(Kind::Sse),
        error: ended.error,
        stream: Some(ended.summary),
        replayed,
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
            App::Pingora(app) => app
                .read_response_body()
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
