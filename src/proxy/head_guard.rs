//! The request-head guard in front of pingora's HTTP app: a client must send its whole request
//! header within `limits.header_read_timeout` and in at most [`MAX_HEAD`] bytes, and the head
//! must be unambiguous HTTP/1 (no request smuggling) — or the h2c preface.
//!
//! pingora only bounds each single read (60 s) and the header size (1 MiB), so a slowloris
//! client trickling a byte every 59 s holds a connection forever. This wrapper reads the head
//! itself under one deadline, then hands the bytes back to the stream (`rewind`) so pingora
//! parses exactly what the client sent. Because it knows whether the connection opened with
//! the h2 preface, it also routes h2c and HTTP/1 to two instances of the app: pingora's own h2c
//! sniffing reads 24 bytes and would hang on a shorter HTTP/1 request.
//!
//! TLS listeners are plain TCP listeners to pingora: a connection on one is handshaken first
//! ([`TlsAccept`]: within the same header timeout, off pingora's runtime). Every h2 connection,
//! h2c or TLS, is served by [`h2_conn::serve`], which wraps it in the frame-counting guard.

use crate::proxy::answers::Answer;
use crate::proxy::candidate::is_candidate;
use crate::proxy::h2_conn;
use crate::proxy::http1::request::{parse_request, Request};
use crate::proxy::lean::conn::ClientConn;
use crate::proxy::lean::workers::Workers;
use crate::proxy::shared::Shared;
use crate::proxy::tls_accept::{HandshakeError, TlsAccept};
use crate::proxy::tls_conn::{alpn, TlsConn, TlsIo};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Largest request head accepted; larger heads get `431`.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// How the h2c preface (`PRI * HTTP/2.0`) starts; no HTTP/1 method is `PRI`.
const H2C_START: &[u8] = b"PRI ";

/// How long a kept-alive connection may sit idle before its next request starts; for h2, with
/// no stream open (`h2_idle_timeout`), which also ends a header block that is never finished.
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

pub(crate) struct HeadGuard<A> {
    /// The event loops lean streams run on.
    pub(crate) workers: Workers,
    /// For routing SSE candidates to the lean HTTP/1 relay ([`crate::proxy::lean`]).
    pub(crate) shared: Arc<Shared>,
    /// The app for HTTP/1 (and TLS, where ALPN picks the protocol).
    pub(crate) h1: Arc<A>,
    /// The same app with h2c enabled, for connections that open with the h2 preface.
    pub(crate) h2c: Arc<A>,
    pub(crate) timeout: Duration,
    /// The TLS listeners, whose connections are handshaken first.
    pub(crate) tls: Option<TlsAccept>,
}

pub(crate) enum Head {
    /// The whole HTTP/1 head (and maybe more) was read.
    Complete(Vec<u8>),
    /// The connection opened with the h2c preface.
    H2c(Vec<u8>),
    Invalid(String),
    TooLarge,
    TimedOut,
    Closed,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for HeadGuard<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A TLS connection pingora answered, back for its next request.
        if stream.as_any().is::<TlsIo>() {
            let Ok(io) = stream.into_any().downcast::<TlsIo>() else {
                return None;
            };
            let (conn, rest) = io.into_parts();
            return self.route_tls(conn, rest, false, shutdown).await;
        }
        if !stream.as_any().is::<L4Stream>() {
            return self.h1.process_new(stream, shutdown).await;
        }
        let Ok(mut tcp) = stream.into_any().downcast::<L4Stream>() else {
            return None;
        };
        if let Some(tls) = &self.tls {
            if let Some(acceptor) = tls.acceptor(&tcp) {
                return self.accept_tls(tls, acceptor, *tcp, shutdown).await;
            }
        }
        // Boxed, as are the rejections and the TLS handshake: this future lives as long as the
        // connection (it awaits pingora's app below), and an inline read_head (its 2 KiB read
        // chunk) would make every connection, TLS ones included, carry ~3.8 KiB instead of a
        // few hundred bytes.
        let fresh = {
            use std::os::fd::AsRawFd;
            pingora_core::protocols::l4::ext::get_tcp_info(tcp.as_raw_fd())
                .is_ok_and(|i| i.tcpi_bytes_received == 0)
        };
        let head = Box::pin(read_head(
            &mut *tcp,
            HeadReader::default(),
            self.timeout,
            fresh,
        ))
        .await;
        match head {
            Head::Complete(bytes) => {
                if let Some(req) = self.lean_candidate(&bytes).map(Box::new) {
                    // The stream leaves pingora's connection task (and its buffers) for a
                    // lean task of its own; pingora's copy of the socket is closed on return.
                    if let Ok(sock) = detach(&tcp) {
                        self.spawn_lean(Leaving::Plain(sock), req, bytes, shutdown);
                        return None;
                    }
                }
                tcp.rewind(&bytes);
                self.h1.process_new(tcp, shutdown).await
            }
            Head::H2c(bytes) => {
                tcp.rewind(&bytes);
                h2_conn::serve(&self.h2c, tcp, shutdown, &self.shared.metrics).await;
                None
            }
            refused => {
                Box::pin(refuse(&mut *tcp, refused)).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

/// A connection on its way from pingora to the lean relay, not yet registered with the
/// runtime of the worker that will serve it.
enum Leaving {
    Plain(std::net::TcpStream),
    Tls(Box<TlsConn>),
}

impl Leaving {
    /// The connection, registered with this thread's runtime.
    fn arrive(self) -> std::io::Result<ClientConn> {
        match self {
            Leaving::Plain(sock) => tokio::net::TcpStream::from_std(sock).map(ClientConn::Plain),
            Leaving::Tls(mut tls) => {
                tls.get_mut().0.rehome()?;
                Ok(ClientConn::Tls(tls))
            }
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> HeadGuard<A> {
    /// The TLS handshake ([`TlsAccept::handshake`]) on a socket of our own; then an h2
    /// connection goes to pingora, and an HTTP/1 one is routed request by request
    /// ([`HeadGuard::route_tls`]).
    async fn accept_tls(
        self: &Arc<Self>,
        tls: &TlsAccept,
        acceptor: Arc<Acceptor>,
        tcp: L4Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let sock = match detach(&tcp) {
            Ok(sock) => sock,
            Err(e) => {
                tracing::debug!("TLS connection lost before its handshake: {e}");
                return None;
            }
        };
        drop(tcp);
        let conn = match Box::pin(tls.handshake(acceptor, sock)).await {
            Ok(conn) => conn,
            Err(e @ HandshakeError::TimedOut(_)) => {
                tracing::info!(target: "access", error = %e, "connection closed");
                return None;
            }
            Err(e) => {
                tracing::debug!("{e}");
                return None;
            }
        };
        if alpn(&conn) == Some(ALPN::H2) {
            let io = TlsIo::new(conn, Bytes::new()).ok()?;
            h2_conn::serve(&self.h1, Box::new(io), shutdown, &self.shared.metrics).await;
            return None;
        }
        self.route_tls(conn, Bytes::new(), true, shutdown).await
    }

    /// The next request on a TLS HTTP/1 connection (`rest`: its bytes already read), guarded
    /// as on plain TCP: a lean candidate leaves pingora for the lean relay, anything else goes
    /// to pingora's HTTP/1 app with its head handed back ([`TlsIo`]).
    async fn route_tls(
        self: &Arc<Self>,
        mut conn: Box<TlsConn>,
        rest: Bytes,
        first: bool,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut reader = HeadReader::default();
        let head = match reader.push(&rest) {
            Some(head) => head,
            None => Box::pin(read_head(&mut *conn, reader, self.timeout, first)).await,
        };
        match head {
            Head::Complete(bytes) => {
                if let Some(req) = self.lean_candidate(&bytes).map(Box::new) {
                    self.spawn_lean(Leaving::Tls(conn), req, bytes, shutdown);
                    return None;
                }
                let io = TlsIo::new(conn, Bytes::from(bytes)).ok()?;
                self.h1.process_new(Box::new(io), shutdown).await
            }
            Head::H2c(_) => {
                let why = "HTTP/2 over TLS is chosen by ALPN (h2), not by the preface";
                Box::pin(refuse(&mut *conn, Head::Invalid(why.into()))).await;
                None
            }
            refused => {
                Box::pin(refuse(&mut *conn, refused)).await;
                None
            }
        }
    }

    /// A request the lean relay takes: an SSE candidate over HTTP/1 to a plain-HTTP app.
    fn lean_candidate(&self, head: &[u8]) -> Option<Request> {
        if self.shared.config.upstream.tls {
            return None;
        }
        let req = parse_request(head)?;
        // A target whose authority disagrees with its Host is refused by pingora's path (400).
        pingora_core::protocols::http::authority::validate_request_authority(&req.header).ok()?;
        is_candidate(&self.shared, &req.header).then_some(req)
    }

    /// Starts a lean task for `conn`'s request on the least-loaded worker.
    fn spawn_lean(
        self: &Arc<Self>,
        conn: Leaving,
        req: Box<Request>,
        head: Vec<u8>,
        shutdown: &ShutdownWatch,
    ) {
        let this = self.clone();
        let shutdown = shutdown.clone();
        self.workers.spawn(move |open| async move {
            let _open = open;
            // Registered with the worker's own event loop.
            let Ok(conn) = conn.arrive() else {
                return;
            };
            this.serve_lean(conn, req, head, shutdown).await
        });
    }

    async fn serve_lean(
        self: Arc<Self>,
        conn: ClientConn,
        req: Box<Request>,
        head: Vec<u8>,
        shutdown: ShutdownWatch,
    ) {
        let rest = Bytes::copy_from_slice(&head[req.head_len..]);
        drop(head);
        let Some((conn, rest)) =
            crate::proxy::lean::serve::serve(&self.shared, conn, req, rest).await
        else {
            return;
        };
        // Kept alive: the next request on this connection is routed like a new one.
        let mut next = match conn {
            ClientConn::Plain(sock) => {
                let mut stream = L4Stream::from(sock);
                stream.rewind(&rest);
                Some(Box::new(stream) as Stream)
            }
            ClientConn::Tls(tls) => self.route_tls(tls, rest, false, &shutdown).await,
        };
        while let Some(s) = next {
            next = self.process_new(s, &shutdown).await;
        }
    }
}

/// A socket of our own for the connection pingora accepted (a `dup` of its descriptor).
fn detach(tcp: &L4Stream) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    // `tcp` is alive for this whole call.
    let sock = crate::sys::dup_socket(tcp.as_raw_fd())?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    Ok(sock)
}

/// Reads a request head from `io` into `head` (which may hold bytes already read). On a
/// kept-alive connection the clock starts at the first byte of the next request: idle
/// keep-alive is not a slowloris. A `fresh` connection (the client has sent nothing on it yet)
/// gets the header timeout from the start: a silent socket held for the idle limit is the
/// cheapest slowloris there is.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    mut head: HeadReader,
    timeout: Duration,
    fresh: bool,
) -> Head {
    let mut chunk = [0u8; 2048];
    let mut deadline = Instant::now()
        + if fresh || !head.is_empty() {
            timeout
        } else {
            KEEPALIVE_IDLE
        };
    loop {
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) if head.is_empty() => return Head::Closed,
            Err(_) => return Head::TimedOut,
            Ok(Err(_)) | Ok(Ok(0)) => return Head::Closed,
            Ok(Ok(n)) => n,
        };
        if head.is_empty() {
            deadline = Instant::now() + timeout;
        }
        if let Some(verdict) = head.push(&chunk[..n]) {
            return verdict;
        }
    }
}

/// The bytes of a request head as they arrive, and what they are once that can be told: the
/// socket-free part of [`read_head`], so that it can be tested (and fuzzed) with any split.
#[derive(Default)]
pub(crate) struct HeadReader {
    buf: Vec<u8>,
}

impl HeadReader {
    /// Nothing read yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the bytes of one read; `None` while the head is unfinished. Never returns
    /// [`Head::TimedOut`] or [`Head::Closed`], which only the socket can tell.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Option<Head> {
        if bytes.is_empty() {
            return None;
        }
        if self.buf.is_empty() {
            // A request starts with a method token; anything else (a TLS hello on the plain
            // port, binary garbage) is answered now rather than at the header timeout.
            if !bytes[0].is_ascii_alphabetic() {
                return Some(Head::Invalid("not an HTTP request".into()));
            }
        }
        let scan_from = self.buf.len().saturating_sub(3);
        let had = self.buf.len();
        self.buf.extend_from_slice(bytes);
        // The h2c preface is not an HTTP/1 head; pingora takes it from here. Its first four
        // bytes may come in more than one read.
        if had < H2C_START.len() && self.buf.starts_with(H2C_START) {
            return Some(Head::H2c(std::mem::take(&mut self.buf)));
        }
        if let Some(end) = head_end(&self.buf[scan_from..]) {
            // The read that brings the end may bring the head past the limit too.
            if scan_from + end > MAX_HEAD {
                return Some(Head::TooLarge);
            }
            let buf = std::mem::take(&mut self.buf);
            return Some(match check_head(&buf) {
                Ok(()) => Head::Complete(buf),
                Err(why) => Head::Invalid(why),
            });
        }
        if self.buf.len() > MAX_HEAD {
            return Some(Head::TooLarge);
        }
        None
    }
}

/// Rejects heads pingora or the app could read differently from us: malformed lines, and
/// the framing ambiguities request smuggling relies on (RFC 9112 §6.3).
pub(crate) fn check_head(bytes: &[u8]) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request head: {e}")),
    }
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length".into());
            }
            if content_length.is_some_and(|prev| prev != v) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err("repeated Transfer-Encoding header".into());
            }
            transfer_encoding = Some(h.value);
        }
    }
    if let Some(te) = transfer_encoding {
        if content_length.is_some() {
            return Err("both Content-Length and Transfer-Encoding".into());
        }
        let last = te.rsplit(|b| *b == b',').next().unwrap_or_default();
        if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding does not end with chunked".into());
        }
    }
    Ok(())
}

/// Where the blank line that ends a head ends in `bytes`, if they contain one: the length of
/// the head. As httparse reads heads, a line ends with CRLF or a bare LF, so the head ends at
/// an LF followed by `LF` or `CR LF` (`\r\n\r\n`, `\n\n`, and the mixed `\r\n\n`, `\n\r\n`).
fn head_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes).find_map(|i| match &bytes[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Answers a head that will not be relayed: `400`, `408` or `431`, then closes.
async fn refuse<W: AsyncWrite + Unpin>(io: &mut W, head: Head) {
    let (status, why) = match head {
        Head::Invalid(why) => (400, why),
        Head::TooLarge => (431, "request header over 64 KiB".into()),
        Head::TimedOut => (408, "request header not received in time".into()),
        Head::Complete(_) | Head::H2c(_) | Head::Closed => return,
    };
    let wire = Answer::plain(status, Some(&why)).h1_wire();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(&wire).await;
        let _ = io.flush().await;
        let _ = io.shutdown().await;
    })
    .await;
    tracing::info!(target: "access", status, error = %why, "request rejected");
}

#[cfg(test)]
mod tests {
    use super::{check_head, head_end, Head, HeadReader, MAX_HEAD};

    #[test]
    fn smuggling_shapes_are_rejected() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert!(check_head(ok).is_ok());
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(check_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn finds_head_end_in_both_styles() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nbody\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    }

    /// The h2c preface goes to h2c however its first bytes are split over reads; the guard
    /// took a preface whose first read was shorter than `PRI ` for an HTTP/1 head, which
    /// httparse then refused (`400`) (found by the head_guard fuzz target).
    #[test]
    fn the_h2c_preface_is_recognised_in_any_reads() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for size in 1..=preface.len() {
            assert!(
                matches!(read_in(preface, size), Some(Head::H2c(_))),
                "reads of {size}"
            );
        }
        assert!(matches!(
            read_in(b"PRIX / HTTP/1.1\r\n\r\n", 1),
            Some(Head::Complete(_))
        ));
    }

    /// A head whose last line ends with a bare LF and whose blank line is CRLF is complete,
    /// as httparse (and so pingora) reads it; the guard waited for more and answered `408`
    /// at the header timeout (found by the head_guard fuzz target).
    #[test]
    fn mixed_line_ends_complete_a_head() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\r\n\n"), Some(25));
        let head = b"GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\n\r\n";
        for size in [1, 2, 3, head.len()] {
            assert!(
                matches!(read_in(head, size), Some(Head::Complete(_))),
                "reads of {size}"
            );
        }
    }

    /// Reads `wire` in reads of `size` bytes, as `read_head()` does.
    fn read_in(wire: &[u8], size: usize) -> Option<Head> {
        let mut reader = HeadReader::default();
        wire.chunks(size).find_map(|read| reader.push(read))
    }

    /// A head longer than `MAX_HEAD` is refused even when its end comes in the read that takes
    /// it past the limit (found by the head_guard fuzz target: with 2048-byte reads, heads up
    /// to 2 KiB over the limit were let through), and a head of exactly `MAX_HEAD` is not.
    #[test]
    fn the_head_limit_holds_whatever_the_reads() {
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        for size in [1, 2048, 4096, MAX_HEAD + 4096] {
            let over = head(MAX_HEAD + 1);
            assert!(
                matches!(read_in(&over, size), Some(Head::TooLarge)),
                "reads of {size}"
            );
            let at = head(MAX_HEAD);
            assert!(
                matches!(read_in(&at, size), Some(Head::Complete(_))),
                "reads of {size}"
            );
        }
    }
}
