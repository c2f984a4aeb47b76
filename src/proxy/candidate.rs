//! Which requests are SSE candidates, and what the answers teach: the one place that decides
//! whether a request goes to a relay, for the head guard (lean relay) and for pingora's
//! `request_filter` (session relay), and that keeps the learned routes (`sse.learn`, see
//! [`LearnedRoutes`](crate::proxy::learned_routes::LearnedRoutes)) up to date from what the
//! app answered.

use crate::proxy::headers;
use crate::proxy::shared::Shared;
use pingora_http::RequestHeader;
use tracing::info;

/// Why a request is an SSE candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Candidate {
    /// Its `Accept` names `text/event-stream`, or its path is under `sse.paths`.
    Asked,
    /// Only because an earlier request to its route was answered with an event stream.
    Learned,
}

/// Whether a request is an SSE candidate, and why. A protocol upgrade (WebSocket) and the
/// methods that never open a stream (`OPTIONS`, `TRACE`, `CONNECT`) are not, whatever they
/// carry, nor is the probe stream's path while the probe is enabled: they go down pingora's normal path, which passes an upgrade through to the app.
pub(crate) fn candidacy(shared: &Shared, req: &RequestHeader) -> Option<Candidate> {
    // The probe stream is the sidecar's own answer, given in `request_filter` whatever the
    // protocol; the lean relay only forwards.
    if !eligible(req) || shared.config.is_probe_path(req.uri.path()) {
        return None;
    }
    if asked(shared, req) {
        return Some(Candidate::Asked);
    }
    let learned = shared.config.sse.learn && shared.learned.contains(&req.method, req.uri.path());
    learned.then_some(Candidate::Learned)
}

/// Whether a request is an SSE candidate (see [`candidacy`]).
pub(crate) fn is_candidate(shared: &Shared, req: &RequestHeader) -> bool {
    candidacy(shared, req).is_some()
}

fn eligible(req: &RequestHeader) -> bool {
    use http::Method;
    let never = [Method::OPTIONS, Method::TRACE, Method::CONNECT];
    !never.contains(&req.method) && !req.headers.contains_key(http::header::UPGRADE)
}

fn asked(shared: &Shared, req: &RequestHeader) -> bool {
    let path = req.uri.path();
    // A resumable path's streams must go through a relay: only a relay can keep them.
    headers::accepts_event_stream(&req.headers)
        || shared.config.is_sse_path(path)
        || shared.config.is_resume_path(path)
}

/// A relay has the app's answer to a candidate: if the candidate was one only because its
/// route was learned, a stream keeps the route and anything else counts towards forgetting it.
pub(crate) fn relayed(shared: &Shared, req: &RequestHeader, stream: bool) {
    if !shared.config.sse.learn || !eligible(req) || asked(shared, req) {
        return;
    }
    let path = req.uri.path();
    if let Some(route) = shared.learned.answered(&req.method, path, stream) {
        shared.metrics.learned_routes_changed(-1);
        info!(
            route = %route,
            "forgot a learned SSE route: it answered without an event stream {} times in a row",
            crate::proxy::learned_routes::MISSES_TO_FORGET
        );
    }
}

/// pingora's normal path met an event stream: the request was not a candidate, so the stream
/// went through unprepared (the app saw `Accept-Encoding`; no heartbeats). Learns its route so
/// that the next request to it is relayed.
pub(crate) fn unprepared_stream(shared: &Shared, req: &RequestHeader) {
    if !shared.config.sse.learn || !eligible(req) {
        return;
    }
    if let Some(new) = shared.learned.learn(&req.method, req.uri.path()) {
        if !new.evicted {
            shared.metrics.learned_routes_changed(1);
        }
        info!(
            route = %new.route,
            "learned an SSE route: its requests are relayed as event streams from now on; \
             to make that permanent, add it to the configuration: sse.paths: [\"{}\"]",
            new.prefix
        );
    }
}
