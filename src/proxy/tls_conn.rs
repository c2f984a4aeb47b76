//! A client's TLS connection as the sidecar holds it once the handshake is done
//! ([`TlsConn`]): tokio-rustls over a socket of our own ([`Sock`]) that can move to the
//! runtime that serves it, and, for pingora, [`TlsIo`], the same connection as pingora's
//! `IO` with the bytes the head guard read handed back first.
//!
//! pingora's own TLS stream cannot be taken apart, so a TLS HTTP/1 request the lean relay
//! takes would keep pingora's connection task and its buffers for the stream's whole life;
//! with the connection ours, an SSE candidate over TLS leaves pingora as one over plain TCP
//! does (see `HeadGuard::accept_tls()`).

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS connection from a client, its handshake done.
pub(crate) type TlsConn = tokio_rustls::server::TlsStream<Sock>;

/// The TCP socket under a [`TlsConn`]: registered with the reactor of the runtime that uses
/// it, and moved to another one with [`Sock::rehome`] (a socket polled by another thread's
/// reactor would be woken through that thread).
#[derive(Debug)]
pub(crate) struct Sock(Option<TcpStream>);

fn moved() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket lost while moving it")
}

impl Sock {
    /// Registers `tcp` with this thread's runtime.
    pub(crate) fn new(tcp: std::net::TcpStream) -> io::Result<Sock> {
        Ok(Sock(Some(TcpStream::from_std(tcp)?)))
    }

    pub(crate) fn tcp(&self) -> io::Result<&TcpStream> {
        self.0.as_ref().ok_or_else(moved)
    }

    /// Moves the socket's registration to the runtime this is called on.
    pub(crate) fn rehome(&mut self) -> io::Result<()> {
        let tcp = self.0.take().ok_or_else(moved)?.into_std()?;
        self.0 = Some(TcpStream::from_std(tcp)?);
        Ok(())
    }

    /// Polls the socket with `f`; an error if it was lost while moving.
    fn poll<T>(
        &mut self,
        f: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.0.as_mut() {
            Some(tcp) => f(Pin::new(tcp)),
            None => Poll::Ready(Err(moved())),
        }
    }
}

impl AsyncRead for Sock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll(|tcp| tcp.poll_read(cx, buf))
    }
}

impl AsyncWrite for Sock {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll(|tcp| tcp.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll(|tcp| tcp.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll(|tcp| tcp.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll(|tcp| tcp.poll_shutdown(cx))
    }
}

/// The protocol the client and the sidecar agreed on by ALPN (the listeners offer `h2` and
/// `http/1.1` only); `None` when the client sent no ALPN, which pingora takes as HTTP/1.
pub(crate) fn alpn(tls: &TlsConn) -> Option<ALPN> {
    match tls.get_ref().1.alpn_protocol()? {
        b"h2" => Some(ALPN::H2),
        b"http/1.1" => Some(ALPN::H1),
        _ => None,
    }
}

/// A [`TlsConn`] as pingora's `IO`: what pingora's HTTP/1 and h2 servers read and write, with
/// the digests they log and forward (`X-Forwarded-Proto` is `https` when there is an
/// [`SslDigest`]).
#[derive(Debug)]
pub(crate) struct TlsIo {
    tls: Box<TlsConn>,
    /// Read before the connection's own bytes: a head the guard read, handed back.
    rewound: Bytes,
    ssl: Arc<SslDigest>,
    socket: Option<Arc<SocketDigest>>,
    established: SystemTime,
    fd: UniqueIDType,
}

impl TlsIo {
    /// `tls`, registered with this thread's runtime, whose next reads return `rewound` first.
    pub(crate) fn new(mut tls: Box<TlsConn>, rewound: Bytes) -> io::Result<TlsIo> {
        tls.get_mut().0.rehome()?;
        let fd = tls.get_ref().0.tcp()?.as_raw_fd();
        let conn = tls.get_ref().1;
        let name = |s: Option<&'static str>| s.unwrap_or("unknown");
        let ssl = SslDigest::new(
            name(
                conn.negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str()),
            ),
            name(conn.protocol_version().and_then(|v| v.as_str())),
            None,
            None,
            Vec::new(),
        );
        Ok(TlsIo {
            tls,
            rewound,
            ssl: Arc::new(ssl),
            socket: Some(Arc::new(SocketDigest::from_raw_fd(fd))),
            established: SystemTime::now(),
            fd,
        })
    }
}

impl TlsIo {
    /// The connection back, with what is left of the bytes handed back.
    pub(crate) fn into_parts(self) -> (Box<TlsConn>, Bytes) {
        (self.tls, self.rewound)
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.rewound.is_empty() {
            let n = this.rewound.len().min(buf.remaining());
            buf.put_slice(&this.rewound[..n]);
            this.rewound.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tls).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TlsIo {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut *self.tls).await;
    }
}

impl UniqueID for TlsIo {
    fn id(&self) -> UniqueIDType {
        self.fd
    }
}

impl Ssl for TlsIo {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.ssl.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        alpn(&self.tls)
    }
}

impl GetTimingDigest for TlsIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..Default::default()
        })]
    }
}

impl GetProxyDigest for TlsIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket.clone()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket = Some(Arc::new(digest));
    }
}

impl Peek for TlsIo {}
