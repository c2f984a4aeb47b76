//! The client's side of a lean stream: its connection, and how the body written to it is
//! delimited, as a [`Client`].

use super::conn::ClientConn;
use crate::proxy::http1::chunked::{body_parts, ChunkHead};
use crate::proxy::http1::response::head_wire;
use crate::proxy::stream::{Body, Client, WriteError};
use bytes::Bytes;
use pingora_http::ResponseHeader;
use std::io;
use std::task::Poll;
use std::time::Duration;

/// The client side on its own connection (a raw socket, or TLS over one).
pub(crate) struct LeanClient<'a> {
    sock: &'a mut ClientConn,
    framing: Framing,
    write_timeout: Duration,
    /// Bytes from the client are its next request (finite responses), not a protocol error.
    pipelining: bool,
    /// An HTTP/1.1 client: bodies of unknown length go chunked.
    http11: bool,
    /// The client's connection may carry another request after this one.
    keepalive: bool,
}

/// How the body written to the client is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    /// `Content-Length` passed through from the app: bytes as they come, nothing at the end.
    Length,
    /// HTTP/1.0 or an app that closes: the end of the body is the end of the connection.
    Close,
}

impl<'a> LeanClient<'a> {
    /// A client whose response head is still to be written.
    pub(crate) fn new(
        sock: &'a mut ClientConn,
        http11: bool,
        keepalive: bool,
        write_timeout: Duration,
    ) -> LeanClient<'a> {
        LeanClient {
            sock,
            framing: Framing::Length,
            write_timeout,
            pipelining: true,
            http11,
            keepalive,
        }
    }

    /// The client of a stream whose head is written (one the event loop handed back).
    pub(crate) fn streaming(
        sock: &'a mut ClientConn,
        http11: bool,
        write_timeout: Duration,
    ) -> LeanClient<'a> {
        LeanClient {
            sock,
            framing: if http11 {
                Framing::Chunked
            } else {
                Framing::Close
            },
            write_timeout,
            pipelining: false,
            http11,
            keepalive: false,
        }
    }

    async fn write_parts(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        self.sock
            .write_all(parts, self.write_timeout)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => WriteError::Timeout,
                _ => WriteError::Closed,
            })
    }
}

impl Client for LeanClient<'_> {
    fn chunked(&self) -> bool {
        self.http11
    }

    async fn write_head(
        &mut self,
        mut head: ResponseHeader,
        body: Body,
        close: bool,
        first: Option<Bytes>,
    ) -> Result<(), WriteError> {
        self.framing = match body {
            Body::None | Body::Length => Framing::Length,
            Body::Unknown | Body::Stream if self.http11 => Framing::Chunked,
            Body::Unknown | Body::Stream => Framing::Close,
        };
        if body == Body::Unknown && self.http11 {
            let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
        if close || !self.keepalive || self.framing == Framing::Close {
            let _ = head.insert_header(http::header::CONNECTION, "close");
        }
        self.pipelining = body != Body::Stream;
        let wire = head_wire(&head);
        match first {
            None => self.write_parts(&[&wire]).await,
            Some(first) => {
                let size = ChunkHead::new(first.len());
                let [a, b, c] = body_parts(&size, &first, self.framing == Framing::Chunked);
                self.write_parts(&[&wire, a, b, c]).await
            }
        }
    }

    async fn send(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        let size = ChunkHead::new(data.len());
        self.write_parts(&body_parts(&size, &data, self.framing == Framing::Chunked))
            .await
    }

    async fn send_raw(&mut self, wire: Bytes) -> Result<(), WriteError> {
        self.write_parts(&[&wire]).await
    }

    async fn finish(&mut self, last: Option<Bytes>) -> Result<(), WriteError> {
        let last = last.unwrap_or_default();
        match self.framing {
            Framing::Chunked if last.is_empty() => self.write_parts(&[b"0\r\n\r\n"]).await,
            Framing::Chunked => {
                let size = ChunkHead::new(last.len());
                self.write_parts(&[size.as_bytes(), &last, b"\r\n0\r\n\r\n"])
                    .await
            }
            Framing::Length => self.write_parts(&[&last]).await,
            Framing::Close => {
                self.write_parts(&[&last]).await?;
                self.sock.shutdown().await;
                Ok(())
            }
        }
    }

    async fn gone(&mut self) {
        // Peek, never read: bytes that arrive may be the client's next request. Polled
        // readiness (not `peek().await`) keeps this future, held by every idle stream, tiny.
        let sock = &*self.sock;
        let pipelining = self.pipelining;
        std::future::poll_fn(|cx| {
            match sock.poll_peek(cx) {
                // Bytes from the client during a finite response: its next request.
                Poll::Ready(Ok(n)) if n > 0 && pipelining => Poll::Pending,
                // A close, a reset, or bytes where none may come: the client is done.
                Poll::Ready(_) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    async fn abort(&mut self) {
        // No terminating chunk: the client sees the body break off.
        self.sock.cut().await;
    }
}
