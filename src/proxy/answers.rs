//! Every answer the sidecar makes up itself instead of relaying the app's: errors, limits, the
//! final-recipient answer to `Max-Forwards: 0`, and the `retry` stream for an app that cannot
//! be reached. Built here once; [`crate::proxy::stream::respond`] writes them to either
//! relay's client, and [`Answer::h1_wire`] to a raw socket.

use crate::config::OnUpstreamError;
use crate::metrics::Kind;
use crate::proxy::headers;
use crate::proxy::http1::response::head_wire;
use crate::proxy::shared::Shared;
use crate::proxy::upstream_error::UpstreamError;
use bytes::Bytes;
use http::header;
use pingora_http::{RequestHeader, ResponseHeader};

/// A complete answer: head and body.
pub(crate) struct Answer {
    pub(crate) head: ResponseHeader,
    pub(crate) body: Bytes,
    /// The client connection is not reused afterwards.
    pub(crate) close: bool,
    /// An event stream (its head has the SSE policy; no `Content-Length`).
    pub(crate) stream: bool,
}

/// `"{code} {reason}"`, e.g. `"502 Bad Gateway"`.
pub(crate) fn status_line(code: u16) -> String {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{code} {reason}")
}

impl Answer {
    /// A one-line plain-text answer, `"{code} {reason}[: why]\n"`; the connection closes.
    pub(crate) fn plain(code: u16, why: Option<&str>) -> Answer {
        let text = match why {
            Some(why) => format!("{}: {why}\n", status_line(code)),
            None => format!("{}\n", status_line(code)),
        };
        Answer::fixed(code, "text/plain; charset=utf-8", Bytes::from(text), true)
    }

    fn fixed(code: u16, content_type: &str, body: Bytes, close: bool) -> Answer {
        let mut head = ResponseHeader::build(code, Some(4)).expect("a valid status");
        let _ = head.insert_header(header::CONTENT_TYPE, content_type);
        let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
        let _ = head.insert_header(header::CACHE_CONTROL, "no-store");
        Answer {
            head,
            body,
            close,
            stream: false,
        }
    }

    /// `limits.max_streams` reached: shed load before touching the app.
    pub(crate) fn over_limit(shared: &Shared) -> Answer {
        let mut a = Answer::plain(503, Some("too many open streams"));
        let retry_after = shared.config.shutdown.retry.as_secs().max(1);
        let _ = a
            .head
            .insert_header(header::RETRY_AFTER, retry_after.to_string());
        a
    }

    /// This hop as the final recipient of a `TRACE` or `OPTIONS` with `Max-Forwards: 0`
    /// (RFC 9110 §9.3.7, §9.3.8): `OPTIONS` gets the methods it would forward; `TRACE` gets
    /// its request reflected as `message/http`, without the credentials it carried.
    pub(crate) fn final_recipient(req: &RequestHeader) -> Answer {
        if req.method != http::Method::TRACE {
            let mut a = Answer::fixed(200, "text/plain; charset=utf-8", Bytes::new(), true);
            let allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";
            let _ = a.head.insert_header(header::ALLOW, allow);
            return a;
        }
        let mut echo = b"TRACE ".to_vec();
        echo.extend_from_slice(req.raw_path());
        echo.extend_from_slice(b" HTTP/1.1\r\n");
        let secret = [
            header::COOKIE,
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ];
        for (name, value) in &req.headers {
            if !secret.contains(name) {
                echo.extend_from_slice(name.as_str().as_bytes());
                echo.extend_from_slice(b": ");
                echo.extend_from_slice(value.as_bytes());
                echo.extend_from_slice(b"\r\n");
            }
        }
        echo.extend_from_slice(b"\r\n");
        Answer::fixed(200, "message/http", Bytes::from(echo), true)
    }

    /// The app failed before any response header, per `sse.on_upstream_error`: a 502/504
    /// naming the failure, or (`retry`, the default) a 200 event stream that names it and ends
    /// with a jittered `retry:` hint. EventSource gives up for good on a non-200 answer, but
    /// reconnects after a 200 stream that ends — which is what a restarting app needs.
    /// `chunked`: the client takes a chunked body.
    pub(crate) fn upstream_failure(shared: &Shared, e: &UpstreamError, chunked: bool) -> Answer {
        let failure = e.failure.to_string();
        match shared.config.sse.on_upstream_error {
            OnUpstreamError::Status => Answer::plain(e.failure.status(), Some(&failure)),
            OnUpstreamError::Retry => {
                let base = shared
                    .config
                    .sse
                    .retry
                    .unwrap_or(shared.config.shutdown.retry);
                let mut body = format!(": upstream error: {failure}\n\n").into_bytes();
                body.extend_from_slice(&crate::sse::retry_block(shared.drain.retry_ms(base)));
                let mut head = ResponseHeader::build(200, Some(4)).expect("a valid status");
                let _ = head.insert_header(header::CONTENT_TYPE, "text/event-stream");
                headers::apply_sse_policy(&mut head, chunked);
                Answer {
                    head,
                    body: Bytes::from(body),
                    close: true,
                    stream: true,
                }
            }
        }
    }

    /// The `kind` label this answer is counted under.
    pub(crate) fn kind(&self) -> Kind {
        if self.stream {
            Kind::Sse
        } else {
            Kind::Other
        }
    }

    /// Head and body as HTTP/1.1 bytes, for a raw socket (a fixed-length answer only).
    pub(crate) fn h1_wire(&self) -> Vec<u8> {
        debug_assert!(!self.stream);
        let mut head = self.head.clone();
        if self.close {
            let _ = head.insert_header(header::CONNECTION, "close");
        }
        let mut wire = head_wire(&head);
        wire.extend_from_slice(&self.body);
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_answers_are_complete_http1_messages() {
        let wire = Answer::plain(431, Some("request header over 64 KiB")).h1_wire();
        let text = String::from_utf8(wire).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        let body = "431 Request Header Fields Too Large: request header over 64 KiB\n";
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
        assert!(text
            .to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", body.len())));
        assert!(text.to_ascii_lowercase().contains("connection: close\r\n"));
    }

    #[test]
    fn trace_reflects_the_request_without_credentials() {
        let mut req = RequestHeader::build("TRACE", b"/a?b", None).unwrap();
        req.append_header("Max-Forwards", "0").unwrap();
        req.append_header("Cookie", "s=1").unwrap();
        req.append_header("Authorization", "Bearer x").unwrap();
        let a = Answer::final_recipient(&req);
        let echo = String::from_utf8(a.body.to_vec()).unwrap();
        assert_eq!(echo, "TRACE /a?b HTTP/1.1\r\nmax-forwards: 0\r\n\r\n");
        assert_eq!(a.head.headers.get("content-type").unwrap(), "message/http");
        let options = RequestHeader::build("OPTIONS", b"*", None).unwrap();
        assert!(Answer::final_recipient(&options)
            .head
            .headers
            .contains_key("allow"));
    }
}
