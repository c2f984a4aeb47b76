//! The client's connection on the lean relay: a plain TCP socket, or a TLS connection
//! ([`TlsConn`]). The relay reads the request body and writes the answer through it; only a
//! plain socket can be parked in the event loop, whose writes are raw `sendmsg` calls.

use crate::proxy::http1::socket::{read_some, timed_out, write_all, Parts};
use crate::proxy::tls_conn::TlsConn;
use bytes::BytesMut;
use std::io;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) enum ClientConn {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

impl ClientConn {
    /// Over TLS: the app is told `X-Forwarded-Proto: https`.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, ClientConn::Tls(_))
    }

    fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            ClientConn::Plain(tcp) => Ok(tcp),
            ClientConn::Tls(tls) => tls.get_ref().0.tcp(),
        }
    }

    pub(crate) fn peer_ip(&self) -> Option<IpAddr> {
        self.tcp().ok()?.peer_addr().ok().map(|a| a.ip())
    }

    /// Reads what is available (at most `max` bytes) into `buf`; 0 at end of stream.
    pub(crate) async fn read_some(&mut self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        match self {
            ClientConn::Plain(tcp) => read_some(tcp, buf, max).await,
            ClientConn::Tls(tls) => {
                buf.reserve(max);
                tls.read_buf(buf).await
            }
        }
    }

    /// Writes every byte of `parts` and flushes them, waiting at most `timeout` for the client
    /// to make room each time its socket is full (over TLS, for the whole write).
    pub(crate) async fn write_all(&mut self, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
        match self {
            ClientConn::Plain(tcp) => write_all(tcp, parts, timeout).await,
            // Boxed: the plain write's future is part of every idle stream's.
            ClientConn::Tls(tls) => Box::pin(write_tls(tls, parts, timeout)).await,
        }
    }

    /// Ends the connection's sending side (over TLS, after a close_notify).
    pub(crate) async fn shutdown(&mut self) {
        match self {
            ClientConn::Plain(tcp) => {
                let _ = tcp.shutdown().await;
            }
            ClientConn::Tls(tls) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
            }
        }
    }

    /// Ends the connection's sending side without a clean close: over TLS, no close_notify
    /// (the client may not be reading, and the break is the message), just the TCP FIN.
    pub(crate) async fn cut(&mut self) {
        match self {
            ClientConn::Plain(tcp) => {
                let _ = tcp.shutdown().await;
            }
            ClientConn::Tls(tls) => {
                if let Ok(tcp) = tls.get_ref().0.tcp() {
                    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
                }
            }
        }
    }

    /// Whether bytes from the client are waiting, without reading them: `Ready(Ok(0))` at
    /// its end of stream. Over TLS this looks at the socket: any record (a close_notify,
    /// the next request) counts.
    pub(crate) fn poll_peek(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let tcp = match self.tcp() {
            Ok(tcp) => tcp,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        tcp.poll_peek(cx, &mut buf)
    }
}

async fn write_tls(tls: &mut TlsConn, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let mut parts = Parts::new(parts);
    let write = async {
        while !parts.is_done() {
            let (slices, len) = parts.slices();
            // rustls seals the slices of one call into as few records as it can.
            match tls.write_vectored(&slices[..len]).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                written => parts.wrote(written),
            }
        }
        tls.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("write made no progress")),
    }
}
