//! The app's response head for the lean relay: parsing it (with the body framing it
//! announces) and writing a head as HTTP/1.1 bytes.

use super::body::BodyKind;
use super::chunked::ChunkedDecoder;
use bytes::BytesMut;
use pingora_http::ResponseHeader;

/// Largest response head accepted from the app.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Parses a response head; `Ok(None)` while incomplete.
pub(crate) fn parse_response(
    buf: &[u8],
) -> Result<Option<(ResponseHeader, usize, BodyKind)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let code = resp.code.ok_or("no status code")?;
    let mut head =
        ResponseHeader::build(code, Some(resp.headers.len())).map_err(|e| e.to_string())?;
    if let Some(reason) = resp.reason.filter(|r| !r.is_empty()) {
        let _ = head.set_reason_phrase(Some(reason));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|prev| prev != n) {
                return Err("conflicting Content-Length".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .trim_ascii()
                .to_ascii_lowercase()
                .ends_with(b"chunked");
        }
        head.append_header(h.name.to_string(), h.value)
            .map_err(|e| e.to_string())?;
    }
    let body = if matches!(code, 204 | 304) || (100..200).contains(&code) {
        BodyKind::Length(0)
    } else if chunked {
        BodyKind::Chunked(ChunkedDecoder::default())
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::Close
    };
    Ok(Some((head, len, body)))
}

/// The head as HTTP/1.1 bytes.
pub(crate) fn head_wire(resp: &ResponseHeader) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(256);
    let reason = resp
        .get_reason_phrase()
        .or_else(|| resp.status.canonical_reason())
        .unwrap_or("");
    buf.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", resp.status.as_u16()).as_bytes());
    resp.header_to_h1_wire(&mut buf);
    buf.extend_from_slice(b"\r\n");
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads() {
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        let (h, len, body) = parse_response(resp).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(len, resp.len() - "5\r\n".len());
        assert!(matches!(body, BodyKind::Chunked(_)));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Len")
            .unwrap()
            .is_none());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
    }
}
