//! The one place where a client's request becomes the request the app sees, for every path:
//! the lean HTTP/1 relay, the session relay and pingora's normal path. An app behind the
//! sidecar relies on an intermediary's duties (RFC 9110 §7.6, RFC 9112 §3.2, RFC 9113 §8.2.3)
//! being done the same way whichever path a request took.

use super::headers;
use crate::config::Config;
use http::header::{self, HeaderValue};
use http::{Method, Version};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// What the builder needs to know about the connection a request came on.
pub(crate) struct Forwarding<'a> {
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) tls: bool,
    /// An SSE candidate: `Accept-Encoding` is removed so the app never compresses the stream.
    pub(crate) candidate: bool,
    /// For the upstream's authority (the `Host` of a request that named none) and
    /// `resume.paths` (where the sidecar's `Last-Event-ID`s become the app's own).
    pub(crate) config: &'a Config,
}

impl Forwarding<'_> {
    /// For a request that came through pingora's listener.
    pub(crate) fn of<'a>(
        session: &pingora_core::protocols::http::ServerSession,
        candidate: bool,
        config: &'a Config,
    ) -> Forwarding<'a> {
        Forwarding {
            client_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            candidate,
            config,
        }
    }
}

/// A request that cannot be forwarded as it is.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadRequest {
    #[error("the request target's authority is not a valid Host value")]
    Authority,
    #[error("the request target cannot be forwarded in origin-form")]
    Target,
}

/// The request as the app should see it (see [`prepare`]).
pub(crate) fn upstream_request(
    client: &RequestHeader,
    fwd: &Forwarding<'_>,
) -> Result<RequestHeader, BadRequest> {
    let mut req = client.clone();
    prepare(client, &mut req, fwd)?;
    Ok(req)
}

/// Rewrites `req` — a copy of the client's request `client`, which pingora's normal path may
/// already have sanitised — into what the app sees:
///
/// - hop-by-hop fields removed, except a WebSocket handshake (passed through untouched) and
///   `TE: trailers` (the only transfer coding an intermediary may pass on);
/// - `Cookie` fields joined into one with `"; "` (HTTP/2 browsers send one field per cookie);
/// - the target in origin-form, `Host` from an absolute-form target or `:authority`, and the
///   upstream's authority when the request named none;
/// - `Max-Forwards` decremented on `TRACE` and `OPTIONS` (zero is answered before, see
///   [`answers_itself`]);
/// - on a resumable path, a `Last-Event-ID` of the sidecar's replaced by the app's own id
///   inside it, or removed when the app had none: the app only ever sees its own ids;
/// - `X-Forwarded-For`/`-Proto` added; `Accept-Encoding` removed for SSE candidates;
/// - HTTP/1.1.
pub(crate) fn prepare(
    client: &RequestHeader,
    req: &mut RequestHeader,
    fwd: &Forwarding<'_>,
) -> Result<(), BadRequest> {
    let upgrade = websocket_upgrade(req);
    let trailers = te_has_trailers(client);
    headers::strip_request_hop_by_hop(req);
    let mut connection: Vec<&str> = Vec::new();
    if let Some(protocol) = upgrade {
        let _ = req.insert_header(header::UPGRADE, protocol);
        connection.push("upgrade");
    }
    if trailers {
        let _ = req.insert_header(header::TE, "trailers");
        connection.push("te");
    }
    if !connection.is_empty() {
        let _ = req.insert_header(header::CONNECTION, connection.join(", "));
    }
    join_cookies(req);
    origin_form(req)?;
    if !req.headers.contains_key(header::HOST) {
        let _ = req.insert_header(header::HOST, fwd.config.upstream.authority());
    }
    if let Some(n) = max_forwards(req).filter(|n| *n > 0) {
        let _ = req.insert_header(header::MAX_FORWARDS, (n - 1).to_string());
    }
    if fwd.config.is_resume_path(client.uri.path()) {
        app_last_event_id(req);
    }
    headers::add_forwarding(req, fwd.client_ip, fwd.tls);
    if fwd.candidate {
        req.remove_header(&header::ACCEPT_ENCODING);
    }
    req.set_version(Version::HTTP_11);
    Ok(())
}

/// Replaces a `Last-Event-ID` of the sidecar's with the app's own id it carries.
fn app_last_event_id(req: &mut RequestHeader) {
    const LAST_EVENT_ID: &str = "last-event-id";
    let Some(value) = req.headers.get(LAST_EVENT_ID) else {
        return;
    };
    let Some(id) = crate::sse::resume_id::ResumeId::parse(value.as_bytes()) else {
        return;
    };
    match id.app_id.and_then(|app| HeaderValue::from_bytes(app).ok()) {
        Some(app) => {
            let _ = req.insert_header(LAST_EVENT_ID, app);
        }
        None => {
            req.remove_header(LAST_EVENT_ID);
        }
    }
}

/// Whether the sidecar must answer this request itself as its final recipient: a `TRACE` or
/// `OPTIONS` whose `Max-Forwards` is 0 (RFC 9110 §7.6.2).
pub(crate) fn answers_itself(req: &RequestHeader) -> bool {
    max_forwards(req) == Some(0)
}

/// `Max-Forwards` of a `TRACE` or `OPTIONS` request (other methods ignore it).
fn max_forwards(req: &RequestHeader) -> Option<u64> {
    if req.method != Method::TRACE && req.method != Method::OPTIONS {
        return None;
    }
    let value = req.headers.get(header::MAX_FORWARDS)?;
    std::str::from_utf8(value.as_bytes())
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `Upgrade` value of an HTTP/1.1 WebSocket handshake (`Connection: upgrade`,
/// `Upgrade: websocket`), which must reach the app untouched.
fn websocket_upgrade(req: &RequestHeader) -> Option<HeaderValue> {
    if req.version != Version::HTTP_11 || !headers::connection_has(&req.headers, "upgrade") {
        return None;
    }
    let upgrade = req.headers.get(header::UPGRADE)?;
    headers::has_token(upgrade.as_bytes(), b"websocket").then(|| upgrade.clone())
}

/// Whether the client's `TE` accepts trailers (`TE: trailers`, gRPC's requirement).
fn te_has_trailers(client: &RequestHeader) -> bool {
    client
        .headers
        .get_all(header::TE)
        .iter()
        .any(|v| headers::has_token(v.as_bytes(), b"trailers"))
}

/// Joins several `Cookie` fields into one (RFC 9113 §8.2.3: an HTTP/2 client may split its
/// cookies; an app reading only the first line would lose the rest).
fn join_cookies(req: &mut RequestHeader) {
    let values: Vec<&[u8]> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.len() < 2 {
        return;
    }
    let joined = values.join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        let _ = req.insert_header(header::COOKIE, value);
    }
}

/// Puts the target in origin-form (RFC 9112 §3.2.1) and takes `Host` from the authority an
/// absolute-form target or an h2 `:authority` carried. Whether that authority agrees with a
/// `Host` the client also sent is checked on the way in (pingora's
/// `validate_request_authority`); here the target's authority wins, as RFC 9112 §3.2.2 says.
fn origin_form(req: &mut RequestHeader) -> Result<(), BadRequest> {
    let (authority, path): (Vec<u8>, Vec<u8>) = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute {
            authority,
            path_and_query,
            ..
        } => (authority.to_vec(), path_and_query.to_vec()),
        RawTargetAuthority::AmbiguousAuthority => return Err(BadRequest::Target),
        RawTargetAuthority::None => match req.uri.authority() {
            Some(a) => (a.as_str().as_bytes().to_vec(), req.raw_path().to_vec()),
            None => return Ok(()),
        },
    };
    let path = match path.first() {
        None => b"/".to_vec(),
        Some(b'/') => path,
        Some(_) => [&b"/"[..], &path].concat(),
    };
    let host = HeaderValue::from_bytes(&authority).map_err(|_| BadRequest::Authority)?;
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(BadRequest::Authority);
    }
    req.set_raw_path(&path).map_err(|_| BadRequest::Target)?;
    let _ = req.insert_header(header::HOST, host);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream `app:3000`, every path resumable.
    fn config() -> &'static Config {
        static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        CONFIG.get_or_init(|| {
            Config::from_yaml("upstream: http://app:3000\nresume: {paths: [/]}\n").unwrap()
        })
    }

    fn fwd(candidate: bool) -> Forwarding<'static> {
        Forwarding {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            tls: false,
            candidate,
            config: config(),
        }
    }

    fn build(method: &str, target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, target, None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn values<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn cookies_are_joined_in_order() {
        let client = build(
            "GET",
            b"/",
            &[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2; c=3")],
        );
        let req = upstream_request(&client, &fwd(false)).unwrap();
        assert_eq!(values(&req, "cookie"), vec!["a=1; b=2; c=3"]);
        let one = upstream_request(&build("GET", b"/", &[("cookie", "a=1")]), &fwd(false));
        assert_eq!(values(&one.unwrap(), "cookie"), vec!["a=1"]);
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host_from_the_target() {
        let client = build("GET", b"http://example.com:8080/a/b?q=1", &[("host", "x")]);
        let req = upstream_request(&client, &fwd(false)).unwrap();
        assert_eq!(req.raw_path(), b"/a/b?q=1");
        assert_eq!(values(&req, "host"), vec!["example.com:8080"]);
        let bare = upstream_request(&build("GET", b"http://example.com", &[]), &fwd(false));
        assert_eq!(bare.unwrap().raw_path(), b"/");
        let query = upstream_request(&build("GET", b"http://example.com?x", &[]), &fwd(false));
        assert_eq!(query.unwrap().raw_path(), b"/?x");
        let userinfo = build("GET", b"http://u@example.com/", &[]);
        assert!(upstream_request(&userinfo, &fwd(false)).is_err());
    }

    #[test]
    fn origin_form_keeps_its_host_or_gets_the_upstreams() {
        let req = upstream_request(&build("GET", b"/x", &[("host", "h")]), &fwd(false)).unwrap();
        assert_eq!(
            (req.raw_path(), values(&req, "host")),
            (&b"/x"[..], vec!["h"])
        );
        let req = upstream_request(&build("GET", b"/x", &[]), &fwd(false)).unwrap();
        assert_eq!(values(&req, "host"), vec!["app:3000"]);
    }

    #[test]
    fn max_forwards_is_decremented_on_trace_and_options_only() {
        for (method, sent, want) in [
            ("OPTIONS", "3", "2"),
            ("TRACE", "1", "0"),
            ("GET", "3", "3"),
            ("OPTIONS", "junk", "junk"),
        ] {
            let client = build(method, b"/", &[("max-forwards", sent)]);
            let req = upstream_request(&client, &fwd(false)).unwrap();
            assert_eq!(values(&req, "max-forwards"), vec![want], "{method} {sent}");
        }
        assert!(answers_itself(&build(
            "OPTIONS",
            b"*",
            &[("max-forwards", "0")]
        )));
        assert!(answers_itself(&build(
            "TRACE",
            b"/",
            &[("max-forwards", " 0")]
        )));
        assert!(!answers_itself(&build(
            "GET",
            b"/",
            &[("max-forwards", "0")]
        )));
        assert!(!answers_itself(&build("TRACE", b"/", &[])));
    }

    #[test]
    fn only_te_trailers_passes() {
        let client = build(
            "GET",
            b"/",
            &[("te", "gzip, trailers;q=0.5"), ("connection", "te")],
        );
        let req = upstream_request(&client, &fwd(false)).unwrap();
        assert_eq!(values(&req, "te"), vec!["trailers"]);
        assert_eq!(values(&req, "connection"), vec!["te"]);
        let client = build("GET", b"/", &[("te", "gzip"), ("connection", "te")]);
        let req = upstream_request(&client, &fwd(false)).unwrap();
        assert!(values(&req, "te").is_empty() && values(&req, "connection").is_empty());
    }

    #[test]
    fn websocket_handshake_passes_other_upgrades_do_not() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ];
        let req = upstream_request(&build("GET", b"/ws", &ws), &fwd(false)).unwrap();
        assert_eq!(values(&req, "upgrade"), vec!["websocket"]);
        assert_eq!(values(&req, "connection"), vec!["upgrade"]);
        assert_eq!(values(&req, "sec-websocket-key"), vec!["k"]);
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ];
        let req = upstream_request(&build("GET", b"/", &h2c), &fwd(false)).unwrap();
        assert!(values(&req, "upgrade").is_empty() && values(&req, "connection").is_empty());
    }

    #[test]
    fn the_app_only_sees_its_own_last_event_ids() {
        let ours = "AAAAAAAAAAAAAAAAAAAAAA.7.app-42";
        let req = upstream_request(&build("GET", b"/", &[("last-event-id", ours)]), &fwd(false));
        assert_eq!(values(&req.unwrap(), "last-event-id"), vec!["app-42"]);
        let bare = "AAAAAAAAAAAAAAAAAAAAAA.7";
        let req = upstream_request(&build("GET", b"/", &[("last-event-id", bare)]), &fwd(false));
        assert!(values(&req.unwrap(), "last-event-id").is_empty());
        let theirs = upstream_request(&build("GET", b"/", &[("last-event-id", "42")]), &fwd(false));
        assert_eq!(values(&theirs.unwrap(), "last-event-id"), vec!["42"]);
        let plain = Config::from_yaml("upstream: http://app:3000\n").unwrap();
        let off = Forwarding {
            config: &plain,
            ..fwd(false)
        };
        let req = upstream_request(&build("GET", b"/", &[("last-event-id", ours)]), &off);
        assert_eq!(values(&req.unwrap(), "last-event-id"), vec![ours]);
    }

    #[test]
    fn candidates_lose_accept_encoding_and_everyone_gets_forwarding() {
        let client = build("GET", b"/", &[("accept-encoding", "gzip, br")]);
        let req = upstream_request(&client, &fwd(true)).unwrap();
        assert!(values(&req, "accept-encoding").is_empty());
        assert_eq!(values(&req, "x-forwarded-for"), vec!["10.0.0.1"]);
        assert_eq!(values(&req, "x-forwarded-proto"), vec!["http"]);
        let req = upstream_request(&client, &fwd(false)).unwrap();
        assert_eq!(values(&req, "accept-encoding"), vec!["gzip, br"]);
    }
}
