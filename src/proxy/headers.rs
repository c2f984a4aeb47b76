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
pub fn strip_request_hop_by_hop(req: &mut RequestHeader) {
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
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    for name in nominated(&resp.headers) {
        resp.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
}

/// Appends the client's address to `X-Forwarded-For` and sets `X-Forwarded-Proto`.
pub fn add_forwarding(req: &mut RequestHeader, client_ip: Option<std::net::IpAddr>, tls: bool) {
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
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| contains_ignore_ascii_case(v.as_bytes(), b"text/event-stream"))
}

/// Whether a response is an event stream: `text/event-stream`, any parameters, any case.
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
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

fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The SSE response policy: no caching or transforming proxies, no nginx buffering, no
/// length (the body is open-ended), and chunked framing when the client speaks HTTP/1.1.
pub fn apply_sse_policy(resp: &mut ResponseHeader, chunked: bool) {
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
