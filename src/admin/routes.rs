//! Which request gets which answer. hyper has parsed and framed the request; this decides the
//! status, the body and whether the connection stays open.
//!
//! Probes and scrapers are simple clients, so what hyper accepts but none of them sends (a
//! lower-case method, a target that is not a path) is a 400 that closes the connection, as a
//! request hyper cannot parse is.

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use prometheus::{Encoder, Registry, TextEncoder};

use super::readiness::ReadyCheck;

const TEXT: &str = "text/plain; charset=utf-8";

/// Every admin response has its whole body in hand.
pub(super) type Answer = Response<Full<Bytes>>;

/// The paths the admin listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Healthz,
    Readyz,
}

impl Endpoint {
    /// The endpoint at `path` (the query is not part of it).
    fn at(path: &str) -> Option<Self> {
        match path {
            "/metrics" => Some(Endpoint::Metrics),
            "/healthz" => Some(Endpoint::Healthz),
            "/readyz" => Some(Endpoint::Readyz),
            _ => None,
        }
    }
}

/// What the endpoints answer from: the metrics registry and the readiness check.
pub(super) struct Routes {
    registry: Registry,
    ready: ReadyCheck,
}

impl Routes {
    pub(super) fn new(registry: Registry, ready: ReadyCheck) -> Self {
        Routes { registry, ready }
    }

    /// The answer to `req`, with the `Connection` header saying whether the connection stays
    /// open (hyper closes it after a `Connection: close` answer).
    pub(super) async fn respond(&self, req: Request<Incoming>) -> Answer {
        if let Err(reason) = well_formed(&req) {
            let answer = text(StatusCode::BAD_REQUEST, format!("bad request: {reason}\n"));
            return with_connection(answer, false);
        }
        let keep_alive = keeps_alive(&req);
        let readable = matches!(*req.method(), Method::GET | Method::HEAD);
        // HEAD gets the GET answer: hyper sends its head, `Content-Length` included, and
        // drops the body.
        let answer = match Endpoint::at(req.uri().path()) {
            None => text(StatusCode::NOT_FOUND, "not found\n"),
            Some(_) if !readable => {
                let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                answer
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                answer
            }
            Some(Endpoint::Metrics) => self.metrics(),
            Some(Endpoint::Healthz) => text(StatusCode::OK, "ok"),
            Some(Endpoint::Readyz) => match self.ready.check().await {
                Ok(()) => text(StatusCode::OK, "ok"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why.to_string()),
            },
        };
        with_connection(answer, keep_alive)
    }

    /// The registry in the Prometheus text format.
    fn metrics(&self) -> Answer {
        let mut body = Vec::with_capacity(16 * 1024);
        match TextEncoder::new().encode(&self.registry.gather(), &mut body) {
            Ok(()) => answer(StatusCode::OK, prometheus::TEXT_FORMAT, body.into()),
            Err(e) => {
                tracing::error!(error = %e, "encoding /metrics failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        }
    }
}

/// Why hyper's request is not one the admin listener takes, for the 400 body.
fn well_formed(req: &Request<Incoming>) -> Result<(), &'static str> {
    // Methods are case-sensitive and every real one is upper-case: a lower-case one is a
    // broken client, not a method to answer 405 to.
    if !req
        .method()
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase())
    {
        return Err("malformed method");
    }
    // Origin form only: absolute form is for proxies and authority form for CONNECT.
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Err("request target must be a path");
    }
    Ok(())
}

/// Whether the connection stays open after answering `req`: hyper's rule (HTTP/1.1 unless
/// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`), except after a request
/// body, which the admin endpoints never read, so the stream cannot be reused.
fn keeps_alive(req: &Request<Incoming>) -> bool {
    if !req.body().is_end_stream() {
        return false;
    }
    let (mut close, mut keep_alive) = (false, false);
    let tokens = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    for token in tokens {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (req.version() == Version::HTTP_11 || keep_alive)
}

/// States the connection's fate in every answer (hyper states it only when it differs from
/// the version's default), so a client knows from the answer alone whether it may send
/// another request.
fn with_connection(mut answer: Answer, keep_alive: bool) -> Answer {
    let value = if keep_alive { "keep-alive" } else { "close" };
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static(value));
    answer
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    answer(status, TEXT, body.into())
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}
