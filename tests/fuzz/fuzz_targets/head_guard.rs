//! The request-head guard (`HeadReader`, `check_head()`, as `read_head()`
//! runs them) and the lean relay's request parser (`parse_request()`):
//! - any read split gets the same verdict as one read of the same bytes;
//! - a head let through is one httparse reads completely, no longer than
//!   `MAX_HEAD`, and `check_head()` accepts it; the guard never lets through
//!   what httparse rejects;
//! - the guard recognises every complete head httparse reads (it never waits
//!   for more bytes, to time out on, after a whole head);
//! - what `parse_request()` makes of a head let through agrees with it: the
//!   same head length, and the body framing `check_head()` validated.
//!
//! Input: a seed byte for the read splits (`sse_sidecar_fuzz::cuts`; with
//! its top bit set, a header line of about `MAX_HEAD` bytes is put after the
//! request line, so heads straddle the limit, and the bytes arrive in the
//! guard's own 2048-byte reads), then the client's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_sidecar::fuzzing::{
    check_head, guard_head, parse_request, HeadVerdict, RequestBody, MAX_HEAD,
};
use sse_sidecar_fuzz::split;

/// httparse's reading of `bytes`: `Some(head length)` for a complete head.
fn httparse_head(bytes: &[u8]) -> Result<Option<usize>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    Ok(match req.parse(bytes)? {
        httparse::Status::Complete(n) => Some(n),
        httparse::Status::Partial => None,
    })
}

/// A verdict with only the bytes of the head kept (how much more was read
/// with it depends on the split).
fn normalise(v: HeadVerdict) -> HeadVerdict {
    match v {
        HeadVerdict::Complete(b) => {
            let n = httparse_head(&b).ok().flatten().unwrap_or(b.len());
            HeadVerdict::Complete(b[..n].to_vec())
        }
        HeadVerdict::H2c(_) => HeadVerdict::H2c(Vec::new()),
        v => v,
    }
}

/// The body framing `check_head()` validated: `Content-Length` or chunked.
fn framing(head: &[u8]) -> RequestBody {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(head);
    let mut body = RequestBody::None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = RequestBody::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(0) => {}
                Some(n) => body = RequestBody::Length(n),
                None => return RequestBody::None, // too long for u64: parse_request passes
            }
        }
    }
    body
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let padded;
    let (bytes, reads) = if seed & 0x80 != 0 {
        // A long header line right after the request line.
        let at = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| p + 1);
        let len = MAX_HEAD - 600 + usize::from(seed & 0x7f) * 8;
        let mut v = Vec::with_capacity(bytes.len() + len + 16);
        v.extend_from_slice(&bytes[..at]);
        v.extend_from_slice(b"X-Pad: ");
        v.resize(v.len() + len, b'a');
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(&bytes[at..]);
        padded = v;
        (&padded[..], padded.chunks(2048).collect::<Vec<_>>())
    } else {
        (bytes, split(bytes, seed))
    };

    let whole = guard_head([bytes]);
    let parts = guard_head(reads.iter().copied());
    assert_eq!(
        normalise(parts.clone()),
        normalise(whole.clone()),
        "split {:?}",
        reads.iter().map(|r| r.len()).collect::<Vec<_>>()
    );

    for verdict in [&whole, &parts] {
        let HeadVerdict::Complete(buf) = verdict else {
            continue;
        };
        let n = match httparse_head(buf) {
            Ok(Some(n)) => n,
            other => panic!("let through a head httparse reads as {other:?}"),
        };
        assert!(n <= MAX_HEAD, "let through a head of {n} bytes");
        assert_eq!(check_head(buf), Ok(()));
        if let Some(req) = parse_request(buf) {
            assert_eq!(req.head_len, n, "parse_request's head length");
            assert_eq!(req.body, framing(&buf[..n]), "parse_request's body framing");
        }
    }

    // A complete head is never left waiting.
    let h1 = bytes.first().is_some_and(u8::is_ascii_alphabetic) && !bytes.starts_with(b"PRI ");
    if let (true, Ok(Some(n))) = (h1, httparse_head(bytes)) {
        if n <= MAX_HEAD {
            assert_ne!(
                whole,
                HeadVerdict::Unfinished,
                "a complete head of {n} bytes left waiting"
            );
        }
    }
});
