//! Opens a stream the way a browser's `EventSource` does and records what arrives, and when:
//! the response head, every event with its arrival time (wall clock, so probe events can be
//! set against their send stamps), and how the stream ended. HTTP/1.1 on plain TCP.
//!
//! The body is decoded here (chunked framing; gzip and deflate, since a box that compresses
//! the stream is one of the things to find) and split into events; the analysis only sees
//! [`Observation`].

use super::schedule::{parse_stamp, Stamp};
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the probe could not run: the exit status is 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("bad URL {0:?}: expected http://host[:port]/path")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("connection failed before a response head: {0}")]
    Head(String),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
}

/// How the stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The body ended as its framing says (last chunk, `Content-Length` reached).
    Clean,
    /// The connection closed (FIN) with no framed end: a cut, unless the body is delimited
    /// by the close (HTTP/1.0 style).
    Fin,
    /// The connection was reset.
    Reset,
    /// Another read error.
    Error(String),
    /// The probe's own `--timeout` ran out while the stream was open.
    Timeout,
}

/// One event as it arrived.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Arrival {
    /// Milliseconds since the request was sent.
    pub(crate) at_ms: f64,
    /// Wall clock at arrival, unix milliseconds.
    pub(crate) wall_ms: f64,
    /// Decoded bytes of the event block, comments before it included.
    pub(crate) bytes: usize,
    /// Its stamp, when it is a probe event.
    pub(crate) stamp: Option<Stamp>,
    /// `event: done`.
    pub(crate) done: bool,
}

/// Everything recorded about one stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observation {
    pub(crate) http_version: String,
    pub(crate) status: u16,
    /// Every response header, names lowercased, in order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) headers_ms: f64,
    /// First body byte, if any.
    pub(crate) first_byte_ms: Option<f64>,
    pub(crate) events: Vec<Arrival>,
    /// Raw body bytes received.
    pub(crate) body_bytes: usize,
    /// When the last body byte arrived.
    pub(crate) last_byte_ms: Option<f64>,
    pub(crate) end: Option<End>,
    pub(crate) end_ms: f64,
    /// Wall clock at the end, unix milliseconds.
    pub(crate) end_wall_ms: f64,
}

impl Observation {
    /// The first value of header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `http://host[:port]/path?query` → (`host:port`, `Host` value, target).
fn split_url(url: &str) -> Result<(String, String, String), ProbeError> {
    let bad = || ProbeError::Url(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']') && p.parse::<u16>().is_ok());
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_string(), target))
}

/// Opens `url` with the browser's headers plus `extra`, and records the stream until it ends
/// or `timeout` (from the request) runs out.
pub(crate) async fn observe(
    url: &str,
    extra: &[(String, String)],
    timeout: Duration,
) -> Result<Observation, ProbeError> {
    let (addr, host, target) = split_url(url)?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut sock = tokio::time::timeout_at(deadline, TcpStream::connect(&addr))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
        .map_err(|e| ProbeError::Connect(addr.clone(), e))?;
    let _ = sock.set_nodelay(true);
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         Accept-Encoding: gzip, deflate, br\r\nCache-Control: no-cache\r\n\
         User-Agent: sse-sidecar-probe/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes())
        .await
        .map_err(|e| ProbeError::Connect(addr.clone(), e))?;
    let ms = |at: Instant| at.duration_since(started).as_secs_f64() * 1000.0;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut obs = Observation::default();
    // The head.
    let body_start = loop {
        let n = match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Err(_) => return Err(ProbeError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ProbeError::Head(e.to_string())),
            Ok(Ok(0)) => return Err(ProbeError::Head("connection closed".into())),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                obs.status = resp.code.unwrap_or(0);
                obs.http_version = format!("HTTP/1.{}", resp.version.unwrap_or(1));
                obs.headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), v)
                    })
                    .collect();
                obs.headers_ms = ms(Instant::now());
                break len;
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(ProbeError::Head(format!("malformed response head: {e}"))),
        }
    };
    let mut framing = Framing::of(&obs);
    let mut decoder = Decoder::of(obs.header("content-encoding"));
    let mut events = EventSplitter::default();
    let mut pending = buf.split_off(body_start);
    let mut finished = false;
    loop {
        if !pending.is_empty() {
            let now = Instant::now();
            obs.first_byte_ms.get_or_insert(ms(now));
            obs.last_byte_ms = Some(ms(now));
            obs.body_bytes += pending.len();
            let (data, done) = framing.take(&mut pending);
            let text = decoder.push(&data);
            let wall = wall_ms();
            for (bytes, data, kind) in events.push(&text) {
                obs.events.push(Arrival {
                    at_ms: ms(now),
                    wall_ms: wall,
                    bytes,
                    stamp: parse_stamp(&data),
                    done: kind == "done",
                });
            }
            if done {
                finished = true;
            }
        }
        if finished {
            obs.end = Some(End::Clean);
            break;
        }
        let read = tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await;
        match read {
            Err(_) => {
                obs.end = Some(End::Timeout);
                break;
            }
            Ok(Ok(0)) => {
                obs.end = Some(if framing.ends_at_close() {
                    End::Clean
                } else {
                    End::Fin
                });
                break;
            }
            Ok(Ok(n)) => pending.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                obs.end = Some(End::Reset);
                break;
            }
            Ok(Err(e)) => {
                obs.end = Some(End::Error(e.to_string()));
                break;
            }
        }
    }
    obs.end_ms = ms(Instant::now());
    obs.end_wall_ms = wall_ms();
    Ok(obs)
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// How the body is delimited, and where the decoder is in it.
enum Framing {
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk, or `None` when a size
    /// line is due.
    Chunked {
        left: Option<usize>,
    },
    Length(usize),
    Close,
}

impl Framing {
    fn of(obs: &Observation) -> Framing {
        let no_body = obs.status == 204 || obs.status == 304 || (100..200).contains(&obs.status);
        if no_body {
            return Framing::Length(0);
        }
        let chunked = obs
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return Framing::Chunked { left: None };
        }
        match obs
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
        {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }

    fn ends_at_close(&self) -> bool {
        matches!(self, Framing::Close)
    }

    /// Takes the body data out of `raw` (leaving an incomplete size line there), and whether
    /// the body's framed end was reached.
    fn take(&mut self, raw: &mut Vec<u8>) -> (Vec<u8>, bool) {
        match self {
            Framing::Close => (std::mem::take(raw), false),
            Framing::Length(left) => {
                let n = (*left).min(raw.len());
                *left -= n;
                let data: Vec<u8> = raw.drain(..n).collect();
                raw.clear();
                (data, *left == 0)
            }
            Framing::Chunked { left } => {
                let mut out = Vec::new();
                loop {
                    match left {
                        Some(0) => {
                            // The CRLF after a chunk's data.
                            if raw.len() < 2 {
                                return (out, false);
                            }
                            raw.drain(..2);
                            *left = None;
                        }
                        Some(n) => {
                            let take = (*n).min(raw.len());
                            out.extend(raw.drain(..take));
                            *n -= take;
                            if raw.is_empty() {
                                return (out, false);
                            }
                        }
                        None => {
                            let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
                                return (out, false);
                            };
                            let line = String::from_utf8_lossy(&raw[..eol]).into_owned();
                            let size = line.split(';').next().unwrap_or("").trim();
                            let size = usize::from_str_radix(size, 16).unwrap_or(0);
                            raw.drain(..eol + 2);
                            if size == 0 {
                                return (out, true);
                            }
                            *left = Some(size);
                        }
                    }
                }
            }
        }
    }
}

/// Undoes `Content-Encoding` (gzip, deflate) as bytes arrive; `br` and unknown codings are
/// passed through undecoded (their events cannot be read, which the report says).
enum Decoder {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Opaque,
}

impl Decoder {
    fn of(encoding: Option<&str>) -> Decoder {
        match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Decoder::Identity,
            Some("gzip") | Some("x-gzip") => {
                Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new()))
            }
            Some("deflate") => Decoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            Some(_) => Decoder::Opaque,
        }
    }

    fn push(&mut self, data: &[u8]) -> Vec<u8> {
        match self {
            Decoder::Identity => data.to_vec(),
            Decoder::Gzip(d) => {
                let _ = d.write_all(data).and_then(|_| d.flush());
                std::mem::take(d.get_mut())
            }
            Decoder::Deflate(d) => {
                let _ = d.write_all(data).and_then(|_| d.flush());
                std::mem::take(d.get_mut())
            }
            Decoder::Opaque => Vec::new(),
        }
    }
}

/// Splits decoded body bytes into events (WHATWG §9.2: lines, a blank line dispatches).
#[derive(Default)]
struct EventSplitter {
    line: Vec<u8>,
    data: String,
    kind: String,
    /// Bytes since the last dispatched event.
    bytes: usize,
}

impl EventSplitter {
    /// Feeds bytes; returns each event completed, as (bytes, data, event type).
    fn push(&mut self, text: &[u8]) -> Vec<(usize, String, String)> {
        let mut out = Vec::new();
        for &b in text {
            self.bytes += 1;
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            let line = line.strip_suffix('\r').unwrap_or(&line);
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    let kind = std::mem::take(&mut self.kind);
                    out.push((std::mem::take(&mut self.bytes), data, kind));
                }
                self.kind.clear();
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                "event" => self.kind = value.to_string(),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_target() {
        let (a, h, t) = split_url("http://127.0.0.1:8080/_p?x=1").unwrap();
        assert_eq!(
            (a.as_str(), h.as_str(), t.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/_p?x=1")
        );
        let (a, _, t) = split_url("http://example.com").unwrap();
        assert_eq!((a.as_str(), t.as_str()), ("example.com:80", "/"));
        assert!(split_url("ftp://x/").is_err());
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let mut f = Framing::Chunked { left: None };
        let mut raw = b"5\r\nhel".to_vec();
        assert_eq!(f.take(&mut raw), (b"hel".to_vec(), false));
        raw.extend_from_slice(b"lo\r\n3;x=y\r\nabc\r\n0\r\n\r\n");
        assert_eq!(f.take(&mut raw), (b"loabc".to_vec(), true));
    }

    #[test]
    fn events_split_on_blank_lines_with_their_bytes() {
        let mut s = EventSplitter::default();
        assert!(s.push(b": comment\n\nid: 1\ndata: a").is_empty());
        let out = s.push(b"\ndata: b\r\n\r\nevent: done\ndata: x\n\n");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1, "a\nb");
        assert_eq!(
            out[0].0,
            b": comment\n\nid: 1\ndata: a\ndata: b\r\n\r\n".len()
        );
        assert_eq!((out[1].1.as_str(), out[1].2.as_str()), ("x", "done"));
    }

    #[test]
    fn gzip_is_decoded_as_it_arrives() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"data: 1\n\n").unwrap();
        let wire = enc.finish().unwrap();
        let mut d = Decoder::of(Some("gzip"));
        let mut out = d.push(&wire[..5]);
        out.extend(d.push(&wire[5..]));
        assert_eq!(out, b"data: 1\n\n");
    }
}
