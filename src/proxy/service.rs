//! The `ProxyHttp` implementation, for every request that reaches pingora's HTTP machinery
//! (h2c, TLS, and plain HTTP/1 that is not an SSE candidate): answers a `Max-Forwards: 0`
//! itself, hands SSE candidates to the session relay, and lets pingora's normal proxy path
//! carry everything else, with the app's request built by the same builder as the relays'
//! and the SSE header policy applied to any event stream met there.

use crate::config::Config;
use crate::metrics::Kind;
use crate::proxy::access_log;
use crate::proxy::answers::Answer;
use crate::proxy::drain;
use crate::proxy::headers;
use crate::proxy::session_relay::{self, PingoraClient};
use crate::proxy::shared::Shared;
use crate::proxy::stream::{respond, StreamSummary};
use crate::proxy::upstream_error::UpstreamError;
use crate::proxy::upstream_request::{self, Forwarding};
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct SidecarProxy {
    pub(crate) shared: Arc<Shared>,
}

/// Per-request state, for the access log.
pub(crate) struct Ctx {
    started: Instant,
    /// The answer was a stream.
    sse: bool,
    /// Status sent to the client.
    status: u16,
    /// Set when the request ended on a failure.
    error: Option<String>,
    /// A stream's counters, for its log line.
    stream: Option<StreamSummary>,
    /// A resumed stream: the events replayed.
    replayed: Option<u64>,
    _in_flight: drain::InFlight,
}

#[async_trait]
impl ProxyHttp for SidecarProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            sse: false,
            status: 0,
            error: None,
            stream: None,
            replayed: None,
            _in_flight: self.shared.drain.in_flight(),
        }
    }

    /// A `Max-Forwards: 0` on TRACE or OPTIONS is answered here (this hop is its final
    /// recipient); SSE candidates are taken over by the session relay, which owns the whole
    /// exchange; everything else continues down pingora's normal path.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if upstream_request::answers_itself(session.req_header()) {
            let answer = Answer::final_recipient(session.req_header());
            ctx.status = answer.head.status.as_u16();
            let mut client = PingoraClient(&mut session.downstream_session);
            let _ = respond::answer(&mut client, answer).await;
            return Ok(true);
        }
        if !is_candidate(&self.shared.config, session.req_header()) {
            return Ok(false);
        }
        let answered = session_relay::run(&self.shared, session, ctx.started).await;
        ctx.status = answered.status;
        ctx.sse = answered.kind == Some(Kind::Sse);
        ctx.error = answered.error;
        ctx.stream = answered.stream;
        ctx.replayed = answered.replayed;
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
        let resume_path = self
            .shared
            .config
            .is_resume_path(session.req_header().uri.path());
        let fwd = Forwarding::of(session, false, &default_host, resume_path);
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
        let mut why = None;
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ if UpstreamError::caused_by_app(e) => {
                let failure = UpstreamError::from_pingora(e);
                self.shared.metrics.upstream_error(failure.failure.reason());
                ctx.error = Some(failure.to_string());
                why = Some(failure.failure.to_string());
                failure.failure.status()
            }
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::WriteTimedout => 0,
            _ => 400,
        };
        if code > 0 && session.response_written().is_none() {
            let mut client = PingoraClient(&mut session.downstream_session);
            let _ = respond::answer(&mut client, Answer::plain(code, why.as_deref())).await;
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
        let req = session.req_header();
        let error = ctx.error.clone().or_else(|| e.map(|e| e.to_string()));
        access_log::Entry {
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            kind: if ctx.sse { Kind::Sse } else { Kind::Other },
            started: ctx.started,
            stream: ctx.stream.as_ref(),
            error: error.as_deref(),
            replayed: ctx.replayed,
        }
        .record(&self.shared);
    }
}

/// Whether a request is an SSE candidate: its `Accept` asks for an event stream, or its path
/// is under `sse.paths` or `resume.paths`. A protocol upgrade (WebSocket) and the methods that never open a
/// stream (`OPTIONS`, `TRACE`, `CONNECT`) are not, whatever they carry: they go down
/// pingora's normal path, which passes an upgrade through to the app.
pub(crate) fn is_candidate(config: &Config, req: &RequestHeader) -> bool {
    use http::Method;
    let never = [Method::OPTIONS, Method::TRACE, Method::CONNECT];
    if never.contains(&req.method) || req.headers.contains_key(http::header::UPGRADE) {
        return false;
    }
    let path = req.uri.path();
    // A resumable path's streams must go through a relay: only a relay can keep them.
    headers::accepts_event_stream(&req.headers)
        || config.is_sse_path(path)
        || config.is_resume_path(path)
}
