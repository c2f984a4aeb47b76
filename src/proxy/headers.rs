//! Header policy: hop-by-hop handling (RFC 9110 §7.6.1), forwarding headers, and the SSE
//! response policy that makes every middlebox stream instead of buffer.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

/// Standard hop-by-hop fields. `Connection` may nominate more.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    // Credentials for this proxy, not the app (RFC 9110 §11.7); pingora's normal path strips
    // them too.
    "proxy-authorization",
    "proxy-authenticate",
];

/// Names of the fields the `Connection` header nominates, lowercased.
fn nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop fields from a request header, keeping the protected ones a client
/// must not be able to strip by nominating them (`Host`).
pub(crate) fn strip_request_hop_by_hop(req: &mut RequestHeader) {
    for name in nominated(&req.headers) {
        if name != header::HOST {
            req.remove_header(&name);
        }
    }
    for name in HOP_BY_HOP {
        req.remove_header(*name);
    }
}

/// Removes hop-by-hop fields from a response header.
pub(crate) fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    strip_hop_by_hop_but(resp, None);
}

/// For pingora's normal path, which frames the client's body by the app's
/// `Transfer-Encoding`: every hop-by-hop field but that one. A `101 Switching Protocols`
/// keeps them all (`Upgrade` and `Connection` are the handshake).
pub(crate) fn strip_response_hop_by_hop_keeping_framing(resp: &mut ResponseHeader) {
    if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop_but(resp, Some(header::TRANSFER_ENCODING));
    }
}

fn strip_hop_by_hop_but(resp: &mut ResponseHeader, keep: Option<HeaderName>) {
    for name in nominated(&resp.headers) {
        if Some(&name) != keep.as_ref() {
            resp.remove_header(&name);
        }
    }
    for name in HOP_BY_HOP {
        if keep.as_ref().is_none_or(|k| k != *name) {
            resp.remove_header(*name);
        }
    }
}

/// Appends the client's address to `X-Forwarded-For` and sets `X-Forwarded-Proto`.
pub(crate) fn add_forwarding(
    req: &mut RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    tls: bool,
) {
    if let Some(ip) = client_ip {
        let value = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        let _ = req.insert_header("x-forwarded-for", value);
    }
    let _ = req.insert_header("x-forwarded-proto", if tls { "https" } else { "http" });
}

/// Whether a header map's `Accept` asks for an event stream.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| contains_ignore_ascii_case(v.as_bytes(), b"text/event-stream"))
}

/// Whether an answer is a stream the relay carries: `text/event-stream`, a `2xx` that can
/// carry a body (not 204 or 205), to a method other than `HEAD`. Anything else — a `HEAD`
/// answer, a 204/205/304, a 404 that happens to carry the type — has no stream to relay and is
/// passed through as the app sent it: framing it as a stream would add a body where HTTP
/// forbids one, and EventSource gives up on a non-2xx answer anyway.
pub(crate) fn is_stream_response(method: &http::Method, resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    is_event_stream(resp)
        && (200..300).contains(&status)
        && status != 204
        && status != 205
        && method != http::Method::HEAD
}

/// Whether a response is an event stream: `text/event-stream`, any parameters, any case.
pub(crate) fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            let media = v
                .as_bytes()
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default();
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
        })
        .unwrap_or(false)
}

/// Whether a comma-separated field value lists `token` (any case, parameters ignored).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|item| {
        let name = item.split(|b| *b == b';').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(token)
    })
}

/// Whether the `Connection` field lists `option`.
pub(crate) fn connection_has(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), option.as_bytes()))
}

fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The SSE response policy: no caching or transforming proxies, no nginx buffering, no
/// length (the body is open-ended), and chunked framing when the client speaks HTTP/1.1.
pub(crate) fn apply_sse_policy(resp: &mut ResponseHeader, chunked: bool) {
    let mut directives: Vec<String> = resp
        .headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    for needed in ["no-cache", "no-transform"] {
        if !directives.iter().any(|d| d.eq_ignore_ascii_case(needed)) {
            directives.push(needed.to_string());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&directives.join(", ")) {
        let _ = resp.insert_header(header::CACHE_CONTROL, v);
    }
    let _ = resp.insert_header("x-accel-buffering", "no");
    resp.remove_header(&header::CONTENT_LENGTH);
    // The sidecar never compresses, and asked the app not to; a body the app compressed anyway
    // passes untouched with its Content-Encoding.
    if chunked {
        let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
    } else {
        resp.remove_header(&header::TRANSFER_ENCODING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_detection_ignores_case_and_params() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", "Text/Event-Stream; charset=utf-8")
            .unwrap();
        assert!(is_event_stream(&r));
        r.insert_header("content-type", "text/event-streams")
            .unwrap();
        assert!(!is_event_stream(&r));
    }

    #[test]
    fn only_bodied_2xx_answers_to_non_head_requests_are_streams() {
        let get = http::Method::GET;
        for (status, method, stream) in [
            (200, &get, true),
            (201, &get, true),
            (200, &http::Method::POST, true),
            (200, &http::Method::HEAD, false),
            (204, &get, false),
            (205, &get, false),
            (304, &get, false),
            (404, &get, false),
            (503, &get, false),
        ] {
            let mut r = ResponseHeader::build(status, None).unwrap();
            r.insert_header("content-type", "text/event-stream")
                .unwrap();
            assert_eq!(is_stream_response(method, &r), stream, "{method} {status}");
        }
        let plain = ResponseHeader::build(200, None).unwrap();
        assert!(!is_stream_response(&get, &plain));
    }

    #[test]
    fn tokens() {
        assert!(has_token(b"gzip, Trailers;q=0.5", b"trailers"));
        assert!(!has_token(b"gzip, trailersx", b"trailers"));
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("keep-alive"));
        h.append("connection", HeaderValue::from_static("Upgrade"));
        assert!(connection_has(&h, "upgrade") && !connection_has(&h, "close"));
    }

    #[test]
    fn cache_control_is_merged() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("cache-control", "private, No-Cache")
            .unwrap();
        r.insert_header("content-length", "10").unwrap();
        apply_sse_policy(&mut r, true);
        assert_eq!(
            r.headers.get("cache-control").unwrap(),
            "private, No-Cache, no-transform"
        );
        assert!(r.headers.get("content-length").is_none());
        assert_eq!(r.headers.get("transfer-encoding").unwrap(), "chunked");
        assert_eq!(r.headers.get("x-accel-buffering").unwrap(), "no");
    }

    #[test]
    fn nominated_headers_are_stripped_but_not_host() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "a").unwrap();
        req.insert_header("connection", "x-secret, host").unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("te", "trailers").unwrap();
        strip_request_hop_by_hop(&mut req);
        assert!(req.headers.get("x-secret").is_none());
        assert!(req.headers.get("te").is_none());
        assert!(req.headers.get("connection").is_none());
        assert_eq!(req.headers.get("host").unwrap(), "a");
    }
}
