//! [`Guarded`]: an h2 connection's byte stream with the client's frames counted on the way
//! in ([`FrameGuard`]). Past a limit the connection ends with a GOAWAY (ENHANCE_YOUR_CALM)
//! the client can read, then a read error, which makes h2 reset every stream and pingora drop
//! the connection.
//!
//! The GOAWAY is written here, under h2, because pingora owns the `h2::server::Connection`
//! and gives us no handle to call `abrupt_shutdown` on. It may only go out between two of
//! h2's frames, so the frames h2 writes are followed too ([`FrameGuard::wrote`]); if h2 is mid-frame
//! when the flood is found, or the GOAWAY cannot be written within [`GOAWAY_LINGER`] (a client
//! that floods and does not read), the connection is closed without it.

use super::frames::{goaway, FrameGuard, ENHANCE_YOUR_CALM};
use crate::metrics::Metrics;
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest time from a flood found to the connection closed: writing the GOAWAY and waiting
/// for the client to close after reading it.
const GOAWAY_LINGER: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Calm {
    Open,
    /// Over a limit: the GOAWAY going out, within a deadline.
    Closing {
        frame: Vec<u8>,
        written: usize,
        step: Step,
        deadline: Pin<Box<tokio::time::Sleep>>,
    },
    Closed,
}

/// Where a [`Calm::Closing`] is.
#[derive(Debug)]
enum Step {
    Write,
    Flush,
    Shut,
    Drain,
}

/// An h2 connection's stream (h2c or TLS) under a [`FrameGuard`].
#[derive(Debug)]
pub(crate) struct Guarded {
    inner: Stream,
    /// Counts what the client sends, and follows what h2 writes.
    guard: FrameGuard,
    calm: Calm,
    /// Where a flood is counted (`sse_sidecar_h2_abuse_total`).
    metrics: Arc<Metrics>,
}

impl Guarded {
    pub(crate) fn new(inner: Stream, metrics: Arc<Metrics>) -> Guarded {
        Guarded {
            inner,
            guard: FrameGuard::new(),
            calm: Calm::Open,
            metrics,
        }
    }

    /// Drives the GOAWAY out: written, flushed, our side shut (FIN, or close_notify on TLS),
    /// then the client's bytes read and dropped until it closes too — a lingering close, so the
    /// kernel does not answer unread bytes with a RST that could discard the GOAWAY before the
    /// client reads it. Ready (always with an error, which ends the connection) once done, out
    /// of time, or not allowed.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let Calm::Closing {
                frame,
                written,
                step,
                deadline,
            } = &mut self.calm
            else {
                return Poll::Ready(closed());
            };
            if deadline.as_mut().poll(cx).is_ready() {
                self.calm = Calm::Closed;
                continue;
            }
            let inner = Pin::new(&mut self.inner);
            let done = match step {
                Step::Write => match ready!(inner.poll_write(cx, &frame[*written..])) {
                    Ok(n) if n > 0 => {
                        *written += n;
                        if *written == frame.len() {
                            *step = Step::Flush;
                        }
                        false
                    }
                    _ => true,
                },
                Step::Flush => {
                    *step = Step::Shut;
                    ready!(inner.poll_flush(cx)).is_err()
                }
                Step::Shut => {
                    *step = Step::Drain;
                    ready!(inner.poll_shutdown(cx)).is_err()
                }
                Step::Drain => {
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(inner.poll_read(cx, &mut buf)) {
                        Ok(()) => buf.filled().is_empty(),
                        Err(_) => true,
                    }
                }
            };
            if done {
                self.calm = Calm::Closed;
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "h2 connection closed: frame flood",
    )
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !matches!(this.calm, Calm::Open) {
            return this.poll_close(cx).map(Err);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let Err(flood) = this.guard.read(&buf.filled()[before..], Instant::now()) else {
            return Poll::Ready(Ok(()));
        };
        // h2 never sees the bytes that went over the limit.
        buf.set_filled(before);
        tracing::info!(target: "access", error = %flood, "h2 connection closed with GOAWAY ENHANCE_YOUR_CALM");
        this.metrics.h2_abuse(flood.kind.abuse());
        this.calm = if this.guard.between_frames() {
            let debug = format!("{} flood", flood.kind.name());
            Calm::Closing {
                frame: goaway(
                    this.guard.last_stream(),
                    ENHANCE_YOUR_CALM,
                    debug.as_bytes(),
                ),
                written: 0,
                step: Step::Write,
                deadline: Box::pin(tokio::time::sleep(GOAWAY_LINGER)),
            }
        } else {
            Calm::Closed
        };
        this.poll_close(cx).map(Err)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !matches!(this.calm, Calm::Open) {
            return this.poll_close(cx).map(Err);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.guard.wrote(&buf[..n], Instant::now());
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// === the rest of pingora's `IO`, passed through ===

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
