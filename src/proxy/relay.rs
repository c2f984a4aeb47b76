//! The SSE relay: owns the whole exchange for SSE candidates so that it can write downstream
//! while the app is silent (heartbeats), notice the client leaving at once, and close streams
//! at event boundaries on drain. pingora's `ProxyHttp` filters can do none of these, because
//! they only run when upstream bytes arrive (DESIGN §3).
//!
//! Flow: build the upstream request → connect with pingora's own connector (one retry on a
//! stale pooled connection) → read the response header → an event stream goes to
//! [`stream_loop`], anything else is passed through unchanged.

use super::stream::{Downstream, UpstreamBody, UpstreamError, WriteError};
use super::upstream_request::{self, Forwarding};
use super::{
    classify_upstream_error, headers, status_text, Ctx, Shared, StreamSlot, StreamSummary,
};
use crate::config::OnUpstreamError;
use crate::metrics::Outcome;
use bytes::Bytes;
use pingora_core::protocols::http::client::HttpSession as Upstream;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// Request bodies up to this size are kept so the request can be retried on a fresh
/// connection when a pooled one turns out to be stale.
const RETRY_BUFFER: usize = 64 * 1024;

/// Relays one SSE candidate request. Everything, including failures, is answered here.
pub(crate) async fn run(shared: &Shared, session: &mut Session, ctx: &mut Ctx) {
    let Some(_slot) = StreamSlot::take(shared) else {
        // Over `limits.max_streams`: shed load before touching the app.
        ctx.status = 503;
        ctx.error = Some(format!(
            "limits.max_streams ({}) reached",
            shared.config.limits.max_streams
        ));
        let retry_after = shared.config.shutdown.retry.as_secs().max(1);
        let _ = write_status(
            session,
            503,
            Bytes::from("503 Service Unavailable: too many open streams\n"),
            &[("retry-after", retry_after.to_string())],
        )
        .await;
        return;
    };
    let req = match app_request(shared, session) {
        Ok(req) => req,
        Err(e) => {
            ctx.status = 400;
            ctx.error = Some(e.to_string());
            let _ = write_plain(session, 400, Bytes::from("400 Bad Request\n")).await;
            return;
        }
    };
    let up = match exchange(shared, session, &req).await {
        Ok(up) => up,
        Err(e) => return upstream_failed(shared, session, ctx, &e).await,
    };
    let Some(resp) = up.response_header().cloned() else {
        let e = Error::explain(ErrorType::H1Error, "no response header");
        return upstream_failed(shared, session, ctx, &e).await;
    };
    ctx.status = resp.status.as_u16();
    if headers::is_stream_response(&session.req_header().method, &resp) {
        ctx.sse = true;
        stream(shared, session, ctx, up, resp).await;
    } else {
        passthrough(shared, session, ctx, up, resp).await;
    }
}

/// The request as the app should see it (see [`upstream_request::prepare`]).
fn app_request(shared: &Shared, session: &Session) -> Result<RequestHeader> {
    let default_host = shared.config.upstream.authority();
    let fwd = Forwarding {
        client_ip: super::client_ip(session),
        tls: super::is_tls(session),
        candidate: true,
        default_host: &default_host,
    };
    upstream_request::upstream_request(session.req_header(), &fwd)
        .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))
}

/// Connects, sends the request and reads the response header.
async fn exchange(shared: &Shared, session: &mut Session, req: &RequestHeader) -> Result<Upstream> {
    let has_body = !session.downstream_session.is_body_empty();
    let mut req = req.clone();
    if has_body
        && !req.headers.contains_key(http::header::CONTENT_LENGTH)
        && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        req.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    // Read the start of the body first, so a stale pooled connection can be retried.
    let mut buffered: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let mut body_done = !has_body;
    while !body_done && size < RETRY_BUFFER {
        match session.downstream_session.read_request_body().await? {
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
        let (mut up, reused) = shared.connector.get_http_session(&shared.peer).await?;
        up.set_read_timeout(Some(shared.config.timeouts.read));
        up.set_write_timeout(Some(shared.config.timeouts.read));
        match send(&mut up, session, &req, &buffered, body_done).await {
            Ok(()) => return Ok(up),
            // A pooled connection the app already closed: one retry, as pingora's proxy does,
            // and only while the whole body is still in hand.
            Err(e) if reused && attempt == 1 && body_done => {
                tracing::debug!("retrying on a fresh connection after stale pooled one: {e}");
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send(
    up: &mut Upstream,
    session: &mut Session,
    req: &RequestHeader,
    buffered: &[Bytes],
    body_done: bool,
) -> Result<()> {
    up.write_request_header(Box::new(req.clone())).await?;
    for chunk in buffered {
        up.write_request_body(chunk.clone(), false).await?;
    }
    if !body_done {
        while let Some(chunk) = session.downstream_session.read_request_body().await? {
            up.write_request_body(chunk, false).await?;
        }
    }
    up.finish_request_body().await?;
    // Informational responses (100 Continue, 103 Early Hints) are skipped.
    for _ in 0..8 {
        up.read_response_header().await?;
        match up.response_header() {
            Some(r) if r.status.is_informational() && r.status.as_u16() != 101 => continue,
            _ => return Ok(()),
        }
    }
    Error::e_explain(ErrorType::H1Error, "too many informational responses")
}

/// The app failed before any response header: answer per `sse.on_upstream_error`.
async fn upstream_failed(shared: &Shared, session: &mut Session, ctx: &mut Ctx, e: &Error) {
    let (reason, code, what) = classify_upstream_error(e.etype());
    if matches!(e.esource(), pingora_error::ErrorSource::Downstream) {
        // The client went away while we were still sending its request.
        ctx.error = Some(format!("client error: {e}"));
        return;
    }
    shared.metrics.upstream_error(reason);
    ctx.error = Some(format!("{what}: {e}"));
    match shared.config.sse.on_upstream_error {
        OnUpstreamError::Status => {
            ctx.status = code;
            let body = Bytes::from(format!("{}: {what}\n", status_text(code)));
            let _ = write_plain(session, code, body).await;
        }
        OnUpstreamError::Retry => {
            // EventSource gives up for good on a non-200 answer; a 200 stream that ends makes
            // it reconnect after `retry`, which is what a restarting app needs.
            ctx.status = 200;
            ctx.sse = true;
            let chunked = session.req_header().version == http::Version::HTTP_11;
            let Some((resp, body)) = shared.upstream_error_stream(what, chunked) else {
                return;
            };
            if !chunked {
                session.set_keepalive(None);
            }
            let ds = &mut session.downstream_session;
            if ds.write_response_header(Box::new(resp)).await.is_ok() {
                let _ = ds.write_response_body(Bytes::from(body), true).await;
            }
            ctx.stream = Some(StreamSummary::ended_early(
                shared,
                Outcome::UpstreamError,
                0,
            ));
        }
    }
}

/// Writes a short plain-text response (errors).
pub(crate) async fn write_plain(session: &mut Session, code: u16, body: Bytes) -> Result<()> {
    write_status(session, code, body, &[]).await
}

async fn write_status(
    session: &mut Session,
    code: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(3 + extra.len()))?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session.set_keepalive(None);
    let ds = &mut session.downstream_session;
    ds.write_response_header(Box::new(resp)).await?;
    ds.write_response_body(body, true).await
}

/// A non-SSE answer to an SSE candidate (a 401, a JSON error): passed through unchanged,
/// while still noticing a client that leaves.
async fn passthrough(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    mut up: Upstream,
    mut resp: ResponseHeader,
) {
    headers::strip_response_hop_by_hop(&mut resp);
    let ds = &mut session.downstream_session;
    if !resp.headers.contains_key(http::header::CONTENT_LENGTH)
        && ds.req_header().version == http::Version::HTTP_11
        && !up.response_done()
    {
        let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    if ds.write_response_header(Box::new(resp)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            // The client left: drop the upstream connection (never pooled).
            _ = ds.read_body_or_idle(true) => {
                ctx.error = Some("client closed the connection".into());
                return;
            }
            chunk = up.read_response_body() => match chunk {
                Ok(Some(data)) => {
                    if ds.write_response_body(data, false).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let (reason, _, what) = classify_upstream_error(e.etype());
                    shared.metrics.upstream_error(reason);
                    ctx.error = Some(format!("{what}: {e}"));
                    ds.shutdown().await;
                    return;
                }
            }
        }
    }
    let _ = ds.write_response_body(Bytes::new(), true).await;
    shared
        .connector
        .release_http_session(up, &shared.peer, shared.peer.options.idle_timeout)
        .await;
}

/// Runs one event stream over pingora sessions: header policy, then the shared loop.
async fn stream(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
    mut up: Upstream,
    mut resp: ResponseHeader,
) {
    headers::strip_response_hop_by_hop(&mut resp);
    let chunked = session.req_header().version == http::Version::HTTP_11;
    headers::apply_sse_policy(&mut resp, chunked);
    if !chunked {
        session.set_keepalive(None);
    }
    // The idle timeout is enforced by the loop, measured from the last upstream read:
    // pingora's per-read timeout would restart whenever a heartbeat wakes the loop.
    up.set_read_timeout(None);
    let ds = &mut session.downstream_session;
    ds.set_write_timeout(Some(shared.config.timeouts.sse_write));
    if ds.write_response_header(Box::new(resp)).await.is_err() {
        ctx.stream = Some(StreamSummary::ended_early(shared, Outcome::ClientClosed, 0));
        session.set_keepalive(None);
        return;
    }
    let ended = super::stream::run(
        shared,
        &mut PingoraDown { ds },
        &mut PingoraUp { up: &mut up },
        super::stream::Progress::new(shared, ctx.started, shared.open_block.is_some()),
        shared.open_block.clone(),
    )
    .await;
    if ended.upstream_done {
        shared
            .connector
            .release_http_session(up, &shared.peer, shared.peer.options.idle_timeout)
            .await;
    }
    if ended.summary.outcome != Some(Outcome::Completed) {
        // Never reuse a client connection whose stream did not end cleanly.
        session.set_keepalive(None);
    }
    ctx.error = ended.error.or(ctx.error.take());
    ctx.stream = Some(ended.summary);
}

/// A pingora downstream session (HTTP/1.1, h2, TLS) as the loop's client side.
struct PingoraDown<'a> {
    ds: &'a mut pingora_core::protocols::http::server::Session,
}

fn write_error(e: &Error) -> WriteError {
    match e.etype() {
        ErrorType::WriteTimedout => WriteError::Timeout,
        _ => WriteError::Closed,
    }
}

impl Downstream for PingoraDown<'_> {
    async fn send(&mut self, data: Bytes) -> std::result::Result<(), WriteError> {
        self.ds
            .write_response_body(data, false)
            .await
            .map_err(|e| write_error(&e))
    }

    /// Never called: only the lean relay's event loop leaves bytes unsent.
    async fn send_raw(&mut self, wire: Bytes) -> std::result::Result<(), WriteError> {
        self.send(wire).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> std::result::Result<(), WriteError> {
        self.ds
            .write_response_body(last.unwrap_or_default(), true)
            .await
            .map_err(|e| write_error(&e))
    }

    async fn gone(&mut self) {
        // Returns only on a close, a reset or unexpected bytes (all: the client is done).
        let _ = self.ds.read_body_or_idle(true).await;
    }

    async fn abort(&mut self) {
        self.ds.shutdown().await;
    }
}

/// A pingora upstream client session as the loop's app side.
struct PingoraUp<'a> {
    up: &'a mut Upstream,
}

impl UpstreamBody for PingoraUp<'_> {
    async fn next(&mut self) -> std::result::Result<Option<Bytes>, UpstreamError> {
        self.up.read_response_body().await.map_err(|e| {
            let (reason, _, what) = classify_upstream_error(e.etype());
            UpstreamError {
                reason,
                what,
                detail: e.to_string(),
            }
        })
    }
}
