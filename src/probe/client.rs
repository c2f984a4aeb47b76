//! Opens a stream the way a browser's `EventSource` does and records what arrives, and when:
//! the response head, every event with its arrival time (wall clock, so probe events can be
//! set against their send stamps), and how the stream ended. HTTP/1.1 on plain TCP.
//!
//! The body is decoded here (chunked framing; gzip and deflate, since a box that compresses
//! the stream is one of the things to find) and split into events; the analysis only sees
//! [`Observation`].

use super::body::{Decoder, EventSplitter, Framing};
use super::schedule::{parse_stamp, Stamp};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why the probe could not run: the exit status is 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("bad URL {0:?}: expected http[s]://host[:port]/path")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP/2: {0}")]
    H2(String),
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

/// Where to connect and what to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Host name or IP, without brackets.
    pub(crate) host: String,
    /// `host:port` to connect to.
    pub(crate) addr: String,
    /// The `Host` header / `:authority`.
    pub(crate) authority: String,
    /// Path and query.
    pub(crate) path: String,
}

/// `http[s]://host[:port]/path?query`.
pub(crate) fn parse_url(url: &str) -> Result<Target, ProbeError> {
    let bad = || ProbeError::Url(url.to_string());
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
        _ => (authority, None),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Target {
        tls,
        host,
        addr,
        authority: authority.to_string(),
        path,
    })
}

/// The request headers a browser's EventSource sends, plus the user's.
pub(crate) fn request_headers(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        ("accept", "text/event-stream"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cache-control", "no-cache"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.push((
        "user-agent".into(),
        format!("sse-sidecar-probe/{}", env!("CARGO_PKG_VERSION")),
    ));
    h.extend(extra.iter().cloned());
    h
}

/// Collects what arrives into an [`Observation`], for either protocol.
pub(crate) struct Recorder {
    started: Instant,
    obs: Observation,
    decoder: Decoder,
    events: EventSplitter,
}

impl Recorder {
    pub(crate) fn new(started: Instant) -> Recorder {
        Recorder {
            started,
            obs: Observation::default(),
            decoder: Decoder::Identity,
            events: EventSplitter::default(),
        }
    }

    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// The response head arrived.
    pub(crate) fn head(&mut self, version: &str, status: u16, headers: Vec<(String, String)>) {
        self.obs.http_version = version.to_string();
        self.obs.status = status;
        self.obs.headers = headers;
        self.obs.headers_ms = self.ms();
        self.decoder = Decoder::of(self.obs.header("content-encoding"));
    }

    pub(crate) fn observation(&self) -> &Observation {
        &self.obs
    }

    /// `wire` bytes arrived, carrying `data` (the body without its transfer framing).
    pub(crate) fn body(&mut self, wire: usize, data: &[u8]) {
        let now = self.ms();
        self.obs.first_byte_ms.get_or_insert(now);
        self.obs.last_byte_ms = Some(now);
        self.obs.body_bytes += wire;
        let text = self.decoder.push(data);
        let wall = wall_ms();
        for (bytes, data, kind) in self.events.push(&text) {
            self.obs.events.push(Arrival {
                at_ms: now,
                wall_ms: wall,
                bytes,
                stamp: parse_stamp(&data),
                done: kind == "done",
            });
        }
    }

    pub(crate) fn end(mut self, end: End) -> Observation {
        self.obs.end = Some(end);
        self.obs.end_ms = self.ms();
        self.obs.end_wall_ms = wall_ms();
        self.obs
    }
}

/// How a read error ended the stream.
pub(crate) fn io_end(e: &std::io::Error) -> End {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset => End::Reset,
        // rustls: the peer closed without close_notify, i.e. a bare FIN under TLS.
        std::io::ErrorKind::UnexpectedEof => End::Fin,
        _ => End::Error(e.to_string()),
    }
}

/// HTTP/1.1 over `sock`.
pub(crate) async fn h1<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    target: &Target,
    headers: &[(String, String)],
    deadline: tokio::time::Instant,
    timeout: Duration,
    mut rec: Recorder,
) -> Result<Observation, ProbeError> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n",
        target.path, target.authority
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let write = async {
        sock.write_all(req.as_bytes()).await?;
        sock.flush().await
    };
    write
        .await
        .map_err(|e| ProbeError::Connect(target.addr.clone(), e))?;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let body_start = loop {
        let n = match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Err(_) => return Err(ProbeError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ProbeError::Head(e.to_string())),
            Ok(Ok(0)) => return Err(ProbeError::Head("connection closed".into())),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut parsed = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut parsed);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = resp
                    .headers
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_ascii_lowercase(), v)
                    })
                    .collect();
                let version = format!("HTTP/1.{}", resp.version.unwrap_or(1));
                rec.head(&version, resp.code.unwrap_or(0), headers);
                break len;
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(ProbeError::Head(format!("malformed response head: {e}"))),
        }
    };
    let obs = rec.observation();
    let mut framing = Framing::of(
        obs.status,
        obs.header("transfer-encoding"),
        obs.header("content-length"),
    );
    let mut pending = buf.split_off(body_start);
    loop {
        if !pending.is_empty() {
            let wire = pending.len();
            let (data, done) = framing.take(&mut pending);
            rec.body(wire, &data);
            if done {
                return Ok(rec.end(End::Clean));
            }
        } else if matches!(framing, Framing::Length(0)) {
            return Ok(rec.end(End::Clean));
        }
        let end = match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
            Err(_) => End::Timeout,
            Ok(Ok(0)) if framing.ends_at_close() => End::Clean,
            Ok(Ok(0)) => End::Fin,
            Ok(Ok(n)) => {
                pending.extend_from_slice(&chunk[..n]);
                continue;
            }
            Ok(Err(e)) => io_end(&e),
        };
        return Ok(rec.end(end));
    }
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_target() {
        let t = parse_url("http://127.0.0.1:8080/_p?x=1").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.authority.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080")
        );
        assert_eq!((t.path.as_str(), t.tls), ("/_p?x=1", false));
        let t = parse_url("https://example.com?a=b").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.as_str(), t.tls),
            ("example.com:443", "/?a=b", true)
        );
        let t = parse_url("https://[::1]:8443/p").unwrap();
        assert_eq!((t.host.as_str(), t.addr.as_str()), ("::1", "[::1]:8443"));
        for bad in ["ftp://x/", "http://", "http://u@h/", "http://h:port/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
