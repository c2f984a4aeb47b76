//! A raw HTTP/1.1 client: request bytes are written as given, the response head is parsed
//! by hand, and the body is read incrementally with arrival timestamps. Chunked framing is
//! decoded, and the raw bytes (head and body as received) are kept for framing assertions.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::now_ns;

/// Builds request bytes: `METHOD target HTTP/1.1`, `Host` (unless given), the headers, then
/// `Content-Length` and the body when `body` is `Some` (unless a framing header was given).
pub fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        r.push_str("Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !has("content-length") && !has("transfer-encoding") {
            r.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if let Some(b) = body {
        r.extend_from_slice(b);
    }
    r
}

/// Encodes `body` as chunked transfer coding with the given chunk size.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A parsed response head.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// The head as received, including the final CRLFCRLF.
    pub raw: Vec<u8>,
    pub at_ns: u64,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::common::header_values(&self.headers, name).next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::common::header_values(&self.headers, name).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Comma-separated list elements of every field line of `name`, trimmed and lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// How a body ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// Framing said it is complete: terminal chunk, Content-Length reached, or no body.
    Complete,
    /// Close-delimited body ended by the server closing (a normal end for that framing).
    Closed,
    /// The connection closed before the framing said the body was complete.
    Truncated,
    /// A read error (e.g. connection reset) or bad framing.
    Error(String),
}

impl End {
    /// `Complete` or `Closed`.
    pub fn is_clean(&self) -> bool {
        matches!(self, End::Complete | End::Closed)
    }
}

/// What [`Response::next`] returns.
#[derive(Debug)]
pub enum Piece {
    /// Decoded body bytes, with the arrival time of the read that completed them.
    Data(Vec<u8>, u64),
    End(End),
    Timeout,
}

/// What a [`Conn`] talks over.
pub enum Wire {
    Tcp(TcpStream),
    /// HTTP/1.1 over TLS (see `common::tls::tls_connect`).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Wire {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Wire::Tcp(s) => s.write_all(bytes).await,
            Wire::Tls(s) => s.write_all(bytes).await,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.read(buf).await,
            Wire::Tls(s) => s.read(buf).await,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Tcp(s) => s,
            Wire::Tls(s) => s.get_ref().0,
        }
    }
}

/// A connection to a server: TCP, or TLS over TCP.
pub struct Conn {
    pub stream: Wire,
    buf: Vec<u8>,
    last_read_ns: u64,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Like [`Conn::connect`], with the error returned (a test that counts failures).
    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<Conn> {
        Ok(Conn::from_stream(TcpStream::connect(addr).await?))
    }

    /// A client on a socket the test connected itself (options set before connecting).
    pub fn from_stream(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn::over(Wire::Tcp(stream))
    }

    /// A client on a TLS connection the test made.
    pub fn over_tls(stream: TlsStream<TcpStream>) -> Conn {
        let _ = stream.get_ref().0.set_nodelay(true);
        Conn::over(Wire::Tls(Box::new(stream)))
    }

    fn over(stream: Wire) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            last_read_ns: 0,
        }
    }

    /// Sends `bytes`; the error returned (see [`Conn::send`]).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("client write");
    }

    /// Reads into the buffer; `Ok(0)` is EOF. `Err` on timeout (`TimedOut`) or socket error.
    async fn fill(&mut self, timeout: Duration) -> std::io::Result<usize> {
        let mut tmp = vec![0u8; 65536];
        match tokio::time::timeout(timeout, self.stream.read(&mut tmp)).await {
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            Ok(Ok(n)) => {
                self.last_read_ns = now_ns();
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Reads a response head (skipping 1xx interim responses other than 101).
    pub async fn read_head(&mut self, timeout: Duration) -> Result<Head, String> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let pos = loop {
                if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p;
                }
                let left = end.saturating_duration_since(tokio::time::Instant::now());
                match self.fill(left).await {
                    Ok(0) => {
                        return Err(format!(
                            "connection closed before a response head (got {:?})",
                            super::show(&self.buf)
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        return Err(format!("no response head within {timeout:?}"))
                    }
                    Err(e) => return Err(format!("reading response head: {e}")),
                }
            };
            let raw: Vec<u8> = self.buf.drain(..pos + 4).collect();
            let text = String::from_utf8_lossy(&raw[..pos]).into_owned();
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut sp = status_line.splitn(3, ' ');
            let version = sp.next().unwrap_or_default().to_string();
            let status: u16 = sp
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let reason = sp.next().unwrap_or_default().to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.trim().to_string()))
                .collect();
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            return Ok(Head {
                version,
                status,
                reason,
                headers,
                raw,
                at_ns: self.last_read_ns,
            });
        }
    }

    /// Reads raw bytes (after a head: an upgraded connection) until `n` arrived or `timeout`.
    pub async fn read_at_least_raw(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let end = tokio::time::Instant::now() + timeout;
        while self.buf.len() < n {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.fill(left).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Closes with a FIN (normal close).
    pub fn close_fin(self) {
        drop(self.stream);
    }

    /// Closes with an RST (SO_LINGER 0).
    pub fn close_rst(self) {
        self.stream.tcp().set_zero_linger().unwrap();
        drop(self.stream);
    }
}

#[derive(Debug)]
enum Framing {
    None,
    Length(usize),
    Chunked(ChunkState),
    Close,
}

#[derive(Debug)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
}

/// A response being read.
pub struct Response {
    pub conn: Conn,
    pub head: Head,
    framing: Framing,
    /// Body bytes as received (chunked framing included).
    pub raw_body: Vec<u8>,
    /// Decoded body bytes received so far.
    pub body: Vec<u8>,
    /// Sizes of the chunks seen, in order (chunked responses).
    pub chunk_sizes: Vec<usize>,
    /// Set once the body has ended.
    pub end: Option<End>,
    /// How many raw buffer bytes were already appended to `raw_body`.
    consumed_raw: usize,
}

impl Response {
    /// Reads the head from `conn`; `method` decides whether a body follows.
    pub async fn read(mut conn: Conn, method: &str, timeout: Duration) -> Result<Response, String> {
        let head = conn.read_head(timeout).await?;
        let framing = if method == "HEAD" || head.status == 204 || head.status == 304 {
            Framing::None
        } else if head
            .tokens("transfer-encoding")
            .iter()
            .any(|t| t == "chunked")
        {
            Framing::Chunked(ChunkState::Size)
        } else if let Some(cl) = head.header("content-length") {
            Framing::Length(
                cl.parse()
                    .map_err(|_| format!("bad content-length {cl:?}"))?,
            )
        } else {
            Framing::Close
        };
        let end = matches!(framing, Framing::None | Framing::Length(0)).then_some(End::Complete);
        Ok(Response {
            conn,
            head,
            framing,
            raw_body: Vec::new(),
            body: Vec::new(),
            chunk_sizes: Vec::new(),
            end,
            consumed_raw: 0,
        })
    }

    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// Decodes what is buffered; returns decoded bytes and whether the body is complete.
    fn decode(&mut self) -> Result<(Vec<u8>, bool), String> {
        let buf = &mut self.conn.buf;
        self.raw_body.extend_from_slice(&buf[self.consumed_raw..]);
        let mut out = Vec::new();
        let done = match &mut self.framing {
            Framing::None => true,
            Framing::Close => {
                out.append(buf);
                false
            }
            Framing::Length(left) => {
                let n = (*left).min(buf.len());
                out.extend(buf.drain(..n));
                *left -= n;
                *left == 0
            }
            Framing::Chunked(st) => loop {
                match st {
                    ChunkState::Size => {
                        let Some(p) = buf.windows(2).position(|w| w == b"\r\n") else {
                            break false;
                        };
                        let line = String::from_utf8_lossy(&buf[..p]).into_owned();
                        buf.drain(..p + 2);
                        let size_s = line.split(';').next().unwrap_or("").trim();
                        let n = usize::from_str_radix(size_s, 16)
                            .map_err(|_| format!("bad chunk size line {line:?}"))?;
                        self.chunk_sizes.push(n);
                        *st = if n == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(n)
                        };
                    }
                    ChunkState::Data(left) => {
                        if buf.is_empty() {
                            break false;
                        }
                        let n = (*left).min(buf.len());
                        out.extend(buf.drain(..n));
                        *left -= n;
                        if *left == 0 {
                            *st = ChunkState::DataEnd;
                        }
                    }
                    ChunkState::DataEnd => {
                        if buf.len() < 2 {
                            break false;
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(format!(
                                "chunk data not followed by CRLF: {:?}",
                                super::show(&buf[..buf.len().min(20)])
                            ));
                        }
                        buf.drain(..2);
                        *st = ChunkState::Size;
                    }
                    ChunkState::Trailers => {
                        let Some(p) = buf.windows(2).position(|w| w == b"\r\n") else {
                            break false;
                        };
                        buf.drain(..p + 2);
                        if p == 0 {
                            break true;
                        }
                    }
                }
            },
        };
        self.consumed_raw = buf.len();
        self.body.extend_from_slice(&out);
        Ok((out, done))
    }

    /// Waits up to `timeout` for more body bytes or the end of the body.
    pub async fn next(&mut self, timeout: Duration) -> Piece {
        if let Some(e) = &self.end {
            return Piece::End(e.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (out, done) = match self.decode() {
                Ok(v) => v,
                Err(e) => {
                    self.end = Some(End::Error(e.clone()));
                    return Piece::End(End::Error(e));
                }
            };
            if done {
                self.end = Some(End::Complete);
            }
            if !out.is_empty() {
                return Piece::Data(out, self.conn.last_read_ns);
            }
            if done {
                return Piece::End(End::Complete);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.conn.fill(left).await {
                Ok(0) => {
                    let e = match self.framing {
                        Framing::Close => End::Closed,
                        _ => End::Truncated,
                    };
                    self.end = Some(e.clone());
                    return Piece::End(e);
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Piece::Timeout,
                Err(e) => {
                    let e = End::Error(e.to_string());
                    self.end = Some(e.clone());
                    return Piece::End(e);
                }
            }
        }
    }

    /// Reads until the body ends or `timeout` passes; returns how it ended (`None`: timeout).
    pub async fn read_to_end(&mut self, timeout: Duration) -> Option<End> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Piece::Data(..) => {}
                Piece::End(e) => return Some(e),
                Piece::Timeout => return None,
            }
        }
    }

    /// Reads at least `n` body bytes (or until the end / timeout).
    pub async fn read_at_least(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.body.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Piece::Data(..) => {}
                _ => break,
            }
        }
        self.body.len()
    }

    /// Gives the connection back for another request (after a complete body).
    pub fn into_conn(self) -> Conn {
        self.conn
    }
}

/// Connects, sends `req` and reads the head.
pub async fn send(addr: SocketAddr, req: &[u8], method: &str) -> Response {
    let mut conn = Conn::connect(addr).await;
    conn.send(req).await;
    Response::read(conn, method, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{method} via {addr}: {e}"))
}

/// A complete exchange: sends the request, reads the whole response (deadline 10 s).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut r = send(addr, &request(method, target, headers, body), method).await;
    if r.read_to_end(Duration::from_secs(10)).await.is_none() {
        panic!("{method} {target} via {addr}: body did not end within 10 s");
    }
    r
}

/// `GET target` with the given headers, read to the end.
pub async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    exchange(addr, "GET", target, headers, None).await
}
