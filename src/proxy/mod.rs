//! The `ProxyHttp` implementation: classifies each request, hands SSE candidates to the
//! [`relay`], and lets pingora's normal proxy path carry everything else with the SSE header
//! policy applied to any event stream it meets.

pub mod codec;
pub mod drain;
pub mod engine;
pub mod h1;
pub mod head;
pub mod headers;
pub mod relay;
pub mod stream;
pub mod upstream_request;
pub mod workers;

use crate::config::Config;
use crate::metrics::{Kind, Metrics, Outcome, UpstreamErrorReason};
use async_trait::async_trait;
use bytes::Bytes;
use drain::Drain;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Process-wide state shared by every request.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The relay's own connection pool to the app (the normal path has pingora's).
    pub connector: Connector,
    pub peer: HttpPeer,
    /// The upstream address, for logs.
    pub upstream_addr: SocketAddr,
    pub open_block: Option<Bytes>,
    pub heartbeat_block: Bytes,
    pub drain: Drain,
    /// SSE candidates being relayed now, for `limits.max_streams`.
    pub relayed: Arc<std::sync::atomic::AtomicUsize>,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>, upstream_addr: SocketAddr) -> Shared {
        let mut peer = HttpPeer::new(
            upstream_addr,
            config.upstream.tls,
            config.upstream.host.clone(),
        );
        peer.options.connection_timeout = Some(config.timeouts.connect);
        peer.options.read_timeout = Some(config.timeouts.read);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        let sse = &config.sse;
        let open_block = crate::sse::open_block(
            sse.open_comment.as_deref(),
            sse.initial_padding,
            sse.retry.map(|d| d.as_millis() as u64),
        );
        let heartbeat_block = crate::sse::comment_block(&sse.heartbeat_comment);
        Shared {
            connector: Connector::new(None),
            peer,
            upstream_addr,
            open_block,
            heartbeat_block,
            drain: Drain::new(config.shutdown),
            relayed: Arc::default(),
            metrics,
            config,
        }
    }
}

impl Shared {
    /// The answer to an SSE request whose app could not be reached (`on_upstream_error:
    /// retry`): a header for a 200 event stream and a body naming the error with a jittered
    /// `retry:` hint. EventSource gives up for good on a non-200 answer, but reconnects after
    /// a 200 stream that ends — which is what a restarting app needs.
    pub(crate) fn upstream_error_stream(
        &self,
        what: &str,
        chunked: bool,
    ) -> Option<(ResponseHeader, Vec<u8>)> {
        let base = self.config.sse.retry.unwrap_or(self.config.shutdown.retry);
        let mut body = format!(": upstream error: {what}\n\n").into_bytes();
        body.extend_from_slice(&crate::sse::retry_block(self.drain.retry_ms(base)));
        let mut resp = ResponseHeader::build(200, Some(4)).ok()?;
        resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream")
            .ok()?;
        headers::apply_sse_policy(&mut resp, chunked);
        Some((resp, body))
    }
}

pub struct SidecarProxy {
    pub shared: Arc<Shared>,
}

/// Per-request state.
pub struct Ctx {
    pub(crate) started: Instant,
    /// The request went through the relay.
    relayed: bool,
    /// The response was an event stream.
    sse: bool,
    /// Status sent downstream, for the access log.
    status: u16,
    /// Set when the request ended on an upstream failure, for the access log.
    error: Option<String>,
    /// Stream counters, for the stream's log line.
    stream: Option<StreamSummary>,
    _in_flight: drain::InFlight,
}

/// What one SSE stream did, logged when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamSummary {
    pub events: u64,
    pub bytes: u64,
    pub heartbeats: u64,
    pub outcome: Option<Outcome>,
}

impl StreamSummary {
    /// A stream that ended before its loop ran (the client left during the header, or the app
    /// could not be reached): counted with its outcome like any other stream.
    pub(crate) fn ended_early(shared: &Shared, outcome: Outcome, bytes: u64) -> StreamSummary {
        shared.metrics.stream_finished(outcome, Duration::ZERO);
        StreamSummary {
            bytes,
            outcome: Some(outcome),
            ..Default::default()
        }
    }
}

#[async_trait]
impl ProxyHttp for SidecarProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            relayed: false,
            sse: false,
            status: 0,
            error: None,
            stream: None,
            _in_flight: self.shared.drain.in_flight(),
        }
    }

    /// SSE candidates (an `Accept` asking for an event stream, or a configured SSE path) are
    /// taken over here by the relay, which owns the whole exchange; everything else continues
    /// down pingora's normal path.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if upstream_request::answers_itself(session.req_header()) {
            // `Max-Forwards: 0` on TRACE or OPTIONS: this hop is the final recipient.
            let (resp, body) = final_recipient_answer(session.req_header())?;
            ctx.status = resp.status.as_u16();
            session.set_keepalive(None);
            let ds = &mut session.downstream_session;
            ds.write_response_header(Box::new(resp)).await?;
            ds.write_response_body(body, true).await?;
            return Ok(true);
        }
        if !is_candidate(&self.shared.config, session.req_header()) {
            return Ok(false);
        }
        ctx.relayed = true;
        relay::run(&self.shared, session, ctx).await;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.shared.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        let default_host = self.shared.config.upstream.authority();
        let fwd = upstream_request::Forwarding {
            client_ip: client_ip(session),
            tls: is_tls(session),
            candidate: false,
            default_host: &default_host,
        };
        upstream_request::prepare(session.req_header(), req, &fwd)
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))
    }

    /// An event stream met on the normal path (its request gave no hint) still gets the SSE
    /// header policy and no compression; it cannot get heartbeats.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        if headers::is_stream_response(&session.req_header().method, resp) {
            ctx.sse = true;
            let chunked = session.req_header().version == http::Version::HTTP_11;
            headers::apply_sse_policy(resp, chunked);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let mut what = "";
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if *e.esource() == pingora_error::ErrorSource::Upstream
                || is_upstream_error(e.etype()) =>
            {
                let (reason, code, phrase) = classify_upstream_error(e.etype());
                self.shared.metrics.upstream_error(reason);
                ctx.error = Some(format!("{phrase}: {e}"));
                what = phrase;
                code
            }
            _ => match e.etype() {
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::WriteTimedout => 0,
                _ => 400,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let body = if what.is_empty() {
                format!("{}\n", status_text(code))
            } else {
                format!("{}: {what}\n", status_text(code))
            };
            let body = Bytes::from(body);
            let _ = relay::write_plain(session, code, body).await;
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None => ctx.status,
        };
        let kind = if ctx.sse { Kind::Sse } else { Kind::Other };
        if status > 0 {
            self.shared.metrics.request(kind, status);
        }
        let req = session.req_header();
        let error = ctx
            .error
            .as_deref()
            .map(str::to_string)
            .or_else(|| e.map(|e| e.to_string()));
        access_log(
            &self.shared,
            req.method.as_str(),
            req.uri.path(),
            status,
            kind,
            ctx.started,
            ctx.stream.as_ref(),
            error.as_deref(),
        );
    }
}

/// The access-log line: one per request, and one per SSE stream at its end.
#[allow(clippy::too_many_arguments)]
pub(crate) fn access_log(
    shared: &Shared,
    method: &str,
    path: &str,
    status: u16,
    kind: Kind,
    started: Instant,
    stream: Option<&StreamSummary>,
    error: Option<&str>,
) {
    // Microsecond precision, printed without float noise.
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    let upstream = shared.upstream_addr;
    match stream {
        Some(s) => info!(
            target: "access",
            method = %method,
            path = %path,
            status,
            kind = %kind.as_str(),
            duration_ms,
            events = s.events,
            bytes = s.bytes,
            heartbeats = s.heartbeats,
            outcome = %s.outcome.map_or("unknown", Outcome::as_str),
            upstream = %upstream,
            error = error.unwrap_or(""),
            "stream ended"
        ),
        None => info!(
            target: "access",
            method = %method,
            path = %path,
            status,
            kind = %kind.as_str(),
            duration_ms,
            upstream = %upstream,
            error = error.unwrap_or(""),
            "request"
        ),
    }
    if let Some(err) = error.filter(|_| status >= 500) {
        warn!(status, upstream = %upstream, "upstream failure: {err}");
    }
}

/// Whether a request is an SSE candidate: its `Accept` asks for an event stream, or its path
/// is under `sse.paths`. A protocol upgrade (WebSocket) and the methods that never open a
/// stream (`OPTIONS`, `TRACE`, `CONNECT`) are not, whatever they carry: they go down
/// pingora's normal path, which passes an upgrade through to the app.
pub(crate) fn is_candidate(config: &Config, req: &RequestHeader) -> bool {
    use http::Method;
    let never = [Method::OPTIONS, Method::TRACE, Method::CONNECT];
    if never.contains(&req.method) || req.headers.contains_key(http::header::UPGRADE) {
        return false;
    }
    headers::accepts_event_stream(&req.headers) || config.is_sse_path(req.uri.path())
}

/// The answer of this hop as the final recipient of a TRACE or OPTIONS (RFC 9110 §9.3.7,
/// §9.3.8): OPTIONS gets the methods it would forward; TRACE gets its request reflected as
/// `message/http`, without the credentials it carried.
fn final_recipient_answer(req: &RequestHeader) -> Result<(ResponseHeader, Bytes)> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    let body = if req.method == http::Method::TRACE {
        let mut echo = b"TRACE ".to_vec();
        echo.extend_from_slice(req.raw_path());
        echo.extend_from_slice(b" HTTP/1.1\r\n");
        let secret = ["cookie", "authorization", "proxy-authorization"];
        for (name, value) in &req.headers {
            if !secret.contains(&name.as_str()) {
                echo.extend_from_slice(name.as_str().as_bytes());
                echo.extend_from_slice(b": ");
                echo.extend_from_slice(value.as_bytes());
                echo.extend_from_slice(b"\r\n");
            }
        }
        echo.extend_from_slice(b"\r\n");
        resp.insert_header(http::header::CONTENT_TYPE, "message/http")?;
        Bytes::from(echo)
    } else {
        resp.insert_header(
            http::header::ALLOW,
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE",
        )?;
        Bytes::new()
    };
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    Ok((resp, body))
}

/// Holds one of the `limits.max_streams` slots while a candidate is relayed.
pub(crate) struct StreamSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> StreamSlot<'a> {
    pub(crate) fn take(shared: &'a Shared) -> Option<StreamSlot<'a>> {
        use std::sync::atomic::Ordering;
        let prev = shared.relayed.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(&shared.relayed);
        (prev < shared.config.limits.max_streams).then_some(slot)
    }
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

pub(crate) fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

pub(crate) fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn is_upstream_error(t: &ErrorType) -> bool {
    matches!(
        t,
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::SocketError
    )
}

/// Maps an upstream failure to its metric reason, the status to answer, and a log phrase.
pub(crate) fn classify_upstream_error(t: &ErrorType) -> (UpstreamErrorReason, u16, &'static str) {
    use ErrorType::*;
    match t {
        ConnectTimedout | TLSHandshakeTimedout => (
            UpstreamErrorReason::Timeout,
            504,
            "upstream connect timed out",
        ),
        ReadTimedout | WriteTimedout => (
            UpstreamErrorReason::Timeout,
            504,
            "upstream did not answer within the read timeout",
        ),
        ConnectRefused => (
            UpstreamErrorReason::Connect,
            502,
            "upstream refused the connection",
        ),
        ConnectNoRoute | ConnectError | SocketError | BindError | TLSHandshakeFailure
        | InvalidCert | HandshakeError | TLSWantX509Lookup | ConnectProxyFailure => {
            (UpstreamErrorReason::Connect, 502, "upstream unreachable")
        }
        ConnectionClosed | ReadError | WriteError => (
            UpstreamErrorReason::Reset,
            502,
            "upstream closed the connection before answering",
        ),
        _ => (
            UpstreamErrorReason::Protocol,
            502,
            "upstream sent an invalid response",
        ),
    }
}

pub(crate) fn status_text(code: u16) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{code} {reason}")
}
