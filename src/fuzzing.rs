//! The byte parsers the fuzz targets in `tests/fuzz/` drive, which are otherwise private to
//! the crate: the request-head guard and the lean relay's request parser, and the chunked
//! decoder (alone and as the relay's [`Decode`] uses it). The SSE framer and the resume ids
//! are public already ([`crate::sse`]).
//!
//! Thin wrappers only: each calls the one implementation the proxy runs and turns its result
//! into plain data a target can compare. Not a stable API (hidden from the docs).

use crate::proxy::head_guard::{self, Head, HeadReader};
use crate::proxy::http1::body::Decode;
use crate::proxy::http1::chunked::ChunkedDecoder;
use crate::proxy::http1::request::{self, ReqBody};
use bytes::Bytes;

/// Largest request head the guard lets through.
pub const MAX_HEAD: usize = head_guard::MAX_HEAD;

/// What the head guard made of a client's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// A whole HTTP/1 head that passed `check_head()`: the bytes read (the head, maybe more).
    Complete(Vec<u8>),
    /// The h2c preface: the bytes read.
    H2c(Vec<u8>),
    /// Answered `400` with this reason.
    Invalid(String),
    /// Answered `431`.
    TooLarge,
    /// Still waiting for the rest of the head.
    Unfinished,
}

/// Feeds the head guard `reads`, one socket read each, as `read_head()` does.
pub fn guard_head<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> HeadVerdict {
    let mut reader = HeadReader::default();
    for read in reads {
        match reader.push(read) {
            None => {}
            Some(Head::Complete(b)) => return HeadVerdict::Complete(b),
            Some(Head::H2c(b)) => return HeadVerdict::H2c(b),
            Some(Head::Invalid(why)) => return HeadVerdict::Invalid(why),
            Some(Head::TooLarge) => return HeadVerdict::TooLarge,
            Some(Head::TimedOut | Head::Closed) => unreachable!("only a socket times out"),
        }
    }
    HeadVerdict::Unfinished
}

/// `check_head()`: whether the head guard lets a complete head through.
pub fn check_head(head: &[u8]) -> Result<(), String> {
    head_guard::check_head(head)
}

/// How the lean relay reads a request body, as `parse_request()` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// What `parse_request()` made of a head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub method: String,
    pub path: String,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub body: RequestBody,
    pub keepalive: bool,
    pub expect_continue: bool,
}

/// `parse_request()`, the lean relay's request parser; `None` leaves the request to pingora.
pub fn parse_request(head: &[u8]) -> Option<ParsedRequest> {
    let req = request::parse_request(head)?;
    Some(ParsedRequest {
        method: req.header.method.to_string(),
        path: req.header.uri.to_string(),
        head_len: req.head_len,
        body: match req.body {
            ReqBody::None => RequestBody::None,
            ReqBody::Length(n) => RequestBody::Length(n),
            ReqBody::Chunked => RequestBody::Chunked,
        },
        keepalive: req.keepalive,
        expect_continue: req.expect_continue,
    })
}

/// The streaming chunked decoder (`ChunkedDecoder`).
#[derive(Debug, Clone, Default)]
pub struct Chunked(ChunkedDecoder);

impl Chunked {
    /// Decodes what of `input` belongs to the body, handing each payload slice to `data`;
    /// returns how many bytes of `input` the body used.
    pub fn decode(&mut self, input: &Bytes, data: impl FnMut(Bytes)) -> Result<usize, String> {
        self.0.decode(input, data).map_err(|e| e.to_string())
    }

    /// The last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// A chunked body as the lean relay's event loop decodes it (`Decode::decode()`).
#[derive(Debug)]
pub struct ChunkedBody(Decode);

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody(Decode::chunked())
    }
}

impl ChunkedBody {
    /// One read from the app: the payload it completes, if any.
    pub fn push(&mut self, read: Bytes) -> Result<Option<Bytes>, String> {
        self.0.pending = read;
        self.0.decode().map_err(|e| e.to_string())
    }

    /// The body has ended.
    pub fn finished(&self) -> bool {
        self.0.finished()
    }
}
