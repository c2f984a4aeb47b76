//! What the origin records for each request, and reading a request target.

use std::net::SocketAddr;

/// What the origin saw and did for one request.
#[derive(Clone, Default)]
pub struct RequestRecord {
    pub id: usize,
    /// Connection number (same number = same upstream connection, i.e. reuse).
    pub conn: usize,
    pub peer: Option<SocketAddr>,
    pub method: String,
    /// The request target as written on the request line.
    pub target: String,
    /// The target without its query.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub version: String,
    /// Request headers in order, names as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_chunked: bool,
    pub received_ns: u64,
    pub response_started_ns: Option<u64>,
    pub response_done_ns: Option<u64>,
    /// The payload bytes written (after content coding, before chunked framing).
    pub body_sent: Vec<u8>,
    /// `(seq, t_ns)` for each SSE event written.
    pub events_sent: Vec<(u64, u64)>,
    /// When the origin saw its connection close (EOF, reset, write error, or its own close).
    pub closed_ns: Option<u64>,
    pub close_reason: Option<String>,
}

impl std::fmt::Debug for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRecord")
            .field("id", &self.id)
            .field("conn", &self.conn)
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body", &super::super::show(&self.body))
            .field("body_chunked", &self.body_chunked)
            .field("received_ns", &self.received_ns)
            .field("response_started_ns", &self.response_started_ns)
            .field("response_done_ns", &self.response_done_ns)
            .field("body_sent", &super::super::show(&self.body_sent))
            .field("events_sent", &self.events_sent)
            .field("closed_ns", &self.closed_ns)
            .field("close_reason", &self.close_reason)
            .finish()
    }
}

impl RequestRecord {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::common::header_values(&self.headers, name).next()
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::common::header_values(&self.headers, name).collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }
}

pub(super) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub(super) fn param_u64(q: &[(String, String)], name: &str, default: u64) -> u64 {
    param(q, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The records kept: all of them, or the latest `limit` (a long-running test).
#[derive(Default)]
pub(super) struct Records {
    pub(super) kept: Vec<RequestRecord>,
    /// Records dropped from the front; `kept[0]` has id `dropped`.
    dropped: usize,
    pub(super) limit: Option<usize>,
}

impl Records {
    pub(super) fn push(&mut self, mut rec: RequestRecord) -> usize {
        let id = self.dropped + self.kept.len();
        rec.id = id;
        self.kept.push(rec);
        // Drop in batches, so that keeping a limit costs one move per `limit` requests.
        if let Some(limit) = self.limit.filter(|&l| self.kept.len() >= 2 * l.max(1)) {
            let n = self.kept.len() - limit;
            self.kept.drain(..n);
            self.dropped += n;
        }
        id
    }

    pub(super) fn get_mut(&mut self, id: usize) -> Option<&mut RequestRecord> {
        self.kept.get_mut(id.checked_sub(self.dropped)?)
    }
}

pub(super) fn matches(r: &RequestRecord, path: &str) -> bool {
    r.path == path || r.target == path
}

pub(super) fn summary(r: &RequestRecord) -> String {
    format!(
        "#{} conn {} {} {} started={:?} closed={:?} ({:?}) events={}",
        r.id,
        r.conn,
        r.method,
        r.target,
        r.response_started_ns,
        r.closed_ns,
        r.close_reason,
        r.events_sent.len()
    )
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a request target into path and decoded query pairs.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    (path.to_string(), query)
}
