//! Parsing a client's request head (already checked by the head guard) for the lean relay,
//! into a pingora `RequestHeader` so that header policy code is shared with the session paths.

use pingora_http::RequestHeader;

/// A parsed request head, ready for the relay.
pub(crate) struct Request {
    pub(crate) header: RequestHeader,
    /// Bytes of the head, including the blank line.
    pub(crate) head_len: usize,
    pub(crate) body: ReqBody,
    pub(crate) keepalive: bool,
    pub(crate) expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqBody {
    None,
    Length(u64),
    Chunked,
}

/// Parses a request head. `None` means "let pingora handle it".
pub(crate) fn parse_request(head: &[u8]) -> Option<Request> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let version = req.version?;
    let mut header =
        RequestHeader::build(req.method?, req.path?.as_bytes(), Some(req.headers.len())).ok()?;
    header.set_version(if version == 0 {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    });
    let mut body = ReqBody::None;
    let mut keepalive = version == 1;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if n > 0 {
                body = ReqBody::Length(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = ReqBody::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keepalive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keepalive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            continue;
        }
        header.append_header(name.to_string(), h.value).ok()?;
    }
    Some(Request {
        header,
        head_len,
        body,
        keepalive,
        expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let head: &[u8] = b"POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nbody";
        let r = parse_request(head).unwrap();
        assert_eq!(r.body, ReqBody::Length(12));
        assert!(!r.keepalive);
        assert!(r.expect_continue);
        assert!(r.header.headers.get("expect").is_none());
        assert_eq!(r.head_len, head.len() - "body".len());
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keepalive);
    }
}
