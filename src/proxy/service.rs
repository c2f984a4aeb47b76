//! The HTTP app and the `ProxyHttp` implementation, for every request that reaches pingora's
//! HTTP machinery (h2c, TLS, and plain HTTP/1 that is not an SSE candidate): answers a
//! `Max-Forwards: 0` itself, hands SSE candidates to the session relay (an h2 one without
//! pingora's proxy at all, see [`SidecarApp`]), and lets pingora's normal proxy path carry
//! everything else, with the app's request built by the same builder as the relays'
//! and the SSE header policy applied to any event stream met there (whose route is then
//! learned, see [`candidate`]).

use crate::metrics::Kind;
use crate::proxy::access_log;
use crate::proxy::answers::Answer;
use crate::proxy::candidate::{self, is_candidate};
use crate::proxy::drain;
use crate::proxy::headers;
use crate::proxy::probe_stream;
use crate::proxy::session_relay::{self, PingoraClient};
use crate::proxy::shared::Shared;
use crate::proxy::stream::{respond, StreamSummary};
use crate::proxy::upstream_error::UpstreamError;
use crate::proxy::upstream_request::{self, Forwarding};
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, HttpProxy, ProxyHttp, Session};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// A request the sidecar answers itself, without the app's proxy path.
#[derive(Clone, Copy)]
enum TakeOver {
    /// `Max-Forwards: 0` on TRACE or OPTIONS: this hop is the final recipient.
    FinalRecipient,
    /// The probe stream (`probe.*`).
    Probe,
    /// An SSE candidate: the session relay owns the whole exchange.
    Relay,
}

pub(crate) struct SidecarProxy {
    /// For as long as the process: an h2 stream's steady state borrows it across the two
    /// futures of [`SidecarApp::relay_h2`].
    pub(crate) shared: &'static Arc<Shared>,
}

/// Per-request state, for the access log.
pub(crate) struct Ctx {
    started: Instant,
    /// What the answer was, for the access log and `sse_sidecar_requests_total`.
    kind: Kind,
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

impl Ctx {
    /// How the session relay answered.
    fn answered(&mut self, answered: session_relay::Answered) {
        self.status = answered.status;
        self.kind = answered.kind.unwrap_or(Kind::Other);
        self.error = answered.error;
        self.stream = answered.stream;
        self.replayed = answered.replayed;
    }
}

#[async_trait]
impl ProxyHttp for SidecarProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            kind: Kind::Other,
            status: 0,
            error: None,
            stream: None,
            replayed: None,
            _in_flight: self.shared.drain.in_flight(),
        }
    }

    /// What the sidecar answers itself ([`SidecarProxy::takes_over`]) is answered here;
    /// everything else continues down pingora's normal path.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(what) = self.takes_over(session.req_header()) else {
            return Ok(false);
        };
        self.take_over(what, session, ctx).await;
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
        let fwd = Forwarding::of(session, false, &self.shared.config);
        upstream_request::prepare(session.req_header(), req, &fwd)
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()))
    }

    /// An event stream met on the normal path (its request gave no hint) still gets the SSE
    /// header policy, without the app's hop-by-hop fields; it cannot get heartbeats, and the
    /// app may have compressed it. It is counted as `sse_unlearned`, and its route is learned
    /// so the next request to it is relayed.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        let req = session.req_header();
        // Hop-by-hop fields describe the app's connection, not the client's (`Keep-Alive:
        // timeout=5` from Node); pingora writes its own `Connection` for the client's hop.
        headers::strip_response_hop_by_hop_keeping_framing(resp);
        if headers::is_stream_response(&req.method, resp) {
            ctx.kind = Kind::SseUnlearned;
            headers::apply_sse_policy(resp, req.version == http::Version::HTTP_11);
            candidate::unprepared_stream(self.shared, req);
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
            let mut client = PingoraClient::new(&mut session.downstream_session);
            let _ = respond::answer(&mut client, Answer::plain(code, why.as_deref())).await;
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.log(session, e, ctx);
    }
}

impl SidecarProxy {
    /// Whether the sidecar answers this request itself, and how.
    fn takes_over(&self, req: &RequestHeader) -> Option<TakeOver> {
        if upstream_request::answers_itself(req) {
            Some(TakeOver::FinalRecipient)
        } else if probe_stream::is_probe(self.shared, req) {
            Some(TakeOver::Probe)
        } else if is_candidate(self.shared, req) {
            Some(TakeOver::Relay)
        } else {
            None
        }
    }

    /// Answers a request the sidecar [`SidecarProxy::takes_over`]: from pingora's
    /// `request_filter` for HTTP/1, from [`SidecarApp`] for h2.
    async fn take_over(&self, what: TakeOver, session: &mut ServerSession, ctx: &mut Ctx) {
        match what {
            TakeOver::FinalRecipient => {
                let answer = Answer::final_recipient(session.req_header());
                ctx.status = answer.head.status.as_u16();
                let mut client = PingoraClient::new(session);
                let _ = Box::pin(respond::answer(&mut client, answer)).await;
            }
            TakeOver::Probe => {
                let req = session.req_header().clone();
                session.set_write_timeout(Some(self.shared.config.timeouts.sse_write));
                let mut client = PingoraClient::new(session);
                // Boxed, like every step around a relayed stream: this future lives as long
                // as the stream and is as large as its largest state (see session_relay::run).
                let served = Box::pin(probe_stream::serve(self.shared, &mut client, &req)).await;
                ctx.status = served.status;
                ctx.error = served.error;
            }
            TakeOver::Relay => {
                let answered = session_relay::run(self.shared, session, ctx.started).await;
                ctx.answered(answered);
            }
        }
    }

    /// The request's access log line and counters.
    fn log(&self, session: &ServerSession, e: Option<&Error>, ctx: &Ctx) {
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None => ctx.status,
        };
        let req = session.req_header();
        self.log_line(req.method.as_str(), req.uri.path(), status, e, ctx);
    }

    /// An h2 request answered through pingora's session: its log line, then END_STREAM if the
    /// answer has not sent it (an RST_STREAM if it wrote no head).
    async fn answered_h2(&self, session: ServerSession, ctx: &Ctx) {
        self.log(&session, None, ctx);
        let _ = session.finish().await;
    }

    fn log_line(&self, method: &str, path: &str, status: u16, e: Option<&Error>, ctx: &Ctx) {
        let error = ctx.error.clone().or_else(|| e.map(|e| e.to_string()));
        access_log::Entry {
            method,
            path,
            status,
            kind: ctx.kind,
            started: ctx.started,
            stream: ctx.stream.as_ref(),
            error: error.as_deref(),
            replayed: ctx.replayed,
        }
        .record(self.shared);
    }
}

/// The HTTP app pingora serves connections with: pingora's proxy ([`SidecarProxy`] under
/// `HttpProxy`), except for h2 requests the sidecar takes over, which are answered here
/// without it. pingora's proxy keeps a ~13.7 KiB future per request for as long as the
/// request lasts (every state of its proxy path, cache included); an SSE stream over h2
/// needs none of it. (HTTP/1 requests go through it: their head is read inside it.)
pub(crate) struct SidecarApp {
    pub(crate) proxy: Arc<HttpProxy<SidecarProxy>>,
    pub(crate) sidecar: SidecarProxy,
}

/// An h2 stream whose head is written, on its way from [`session_relay::open`] to
/// [`session_relay::relay_h2`]: what its log line needs, and its send half.
struct H2Tail {
    ctx: Ctx,
    method: http::Method,
    path: String,
    send: h2::SendStream<bytes::Bytes>,
    streaming: Box<session_relay::Streaming<'static>>,
}

impl SidecarApp {
    /// A candidate over h2, in two futures: everything up to the stream's head, which owns
    /// pingora's server session and is freed with it once the head is written; then the
    /// stream on its h2 send half ([`session_relay::relay_h2`]). A future is as large as its
    /// largest state for as long as it lives: in one future, the session and every step of
    /// the exchange were ~5.2 KiB a stream.
    fn relay_h2(
        self: Arc<Self>,
        mut session: ServerSession,
    ) -> impl std::future::Future<Output = Option<ReusedHttpStream>> + Send + 'static {
        let shared = self.sidecar.shared;
        let open = Box::pin(async move {
            let mut ctx = self.sidecar.new_ctx();
            match session_relay::open(shared, &mut session, ctx.started).await {
                session_relay::Opened::Answered(answered) => {
                    ctx.answered(answered);
                    self.sidecar.answered_h2(session, &ctx).await;
                    None
                }
                session_relay::Opened::Streaming(streaming) => {
                    let send = session_relay::take_h2_send(&mut session)?;
                    let req = session.req_header();
                    Some((
                        self,
                        Box::new(H2Tail {
                            ctx,
                            method: req.method.clone(),
                            path: req.uri.path().to_string(),
                            send,
                            streaming,
                        }),
                    ))
                }
            }
        });
        async move {
            if let Some((this, tail)) = open.await {
                Box::pin(this.stream_h2(tail)).await;
            }
            None
        }
    }

    /// The second step of [`SidecarApp::relay_h2`]: the stream, then its log line.
    async fn stream_h2(self: Arc<Self>, tail: Box<H2Tail>) {
        // Moved out of its box in a block of its own, so the box is freed now, not when the
        // stream ends.
        let H2Tail {
            mut ctx,
            method,
            path,
            send,
            streaming,
        } = {
            let tail = tail;
            *tail
        };
        let answered = session_relay::relay_h2(self.sidecar.shared, send, streaming).await;
        ctx.answered(answered);
        self.sidecar
            .log_line(method.as_str(), &path, ctx.status, None, &ctx);
    }
}

#[async_trait]
impl HttpServerApp for SidecarApp {
    /// Written out rather than `async`: the future returned is pingora's proxy's own, or one
    /// of ours sized for what it answers (see [`SidecarApp::relay_h2`]).
    fn process_new_http<'a, 'b, 't>(
        self: &'a Arc<Self>,
        session: ServerSession,
        shutdown: &'b ShutdownWatch,
    ) -> Pin<Box<dyn std::future::Future<Output = Option<ReusedHttpStream>> + Send + 't>>
    where
        'a: 't,
        'b: 't,
        Self: 't,
    {
        // An h2 request's head is read before the app sees it; an HTTP/1 session has not read
        // its request yet, so is_http2() must come first. CONNECT is left to pingora, which
        // refuses it.
        let direct = if session.is_http2() && session.req_header().method != http::Method::CONNECT {
            self.sidecar.takes_over(session.req_header())
        } else {
            None
        };
        match direct {
            None => self.proxy.process_new_http(session, shutdown),
            Some(TakeOver::Relay) => Box::pin(self.clone().relay_h2(session)),
            Some(what) => Box::pin(async move {
                let mut session = session;
                let mut ctx = self.sidecar.new_ctx();
                self.sidecar.take_over(what, &mut session, &mut ctx).await;
                self.sidecar.answered_h2(session, &ctx).await;
                None
            }),
        }
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.proxy.h2_options()
    }
}
