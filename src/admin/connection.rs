//! One admin connection: hyper's HTTP/1 server on the accepted socket, set up for a port that
//! only probes and scrapers should use but anything on the network may reach.
//!
//! hyper bounds the request head and the time it may take to arrive. Two things it leaves to
//! the socket, and [`AdminSocket`] adds them: a write that makes no progress (a client that
//! stopped reading) fails instead of holding one of the few connection slots forever, and
//! closing lingers. Closing over unread input (a request body the endpoints never read) makes
//! the kernel reset the connection: the client's remaining writes fail, and a client that
//! gives up on a failed write never reads the answer waiting for it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::routes::Routes;

/// Largest request head accepted (hyper's smallest read buffer); probes and scrapers send a
/// few hundred bytes. A longer head gets a 431.
pub(super) const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Input discarded at most while closing, and for how long.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Serves requests on `stream` until the client closes, a timeout fires, or an answer closes
/// the connection. `io_timeout` bounds the wait for each request head (from the connection's
/// start or the previous answer, so keep-alive idle time counts) and each stalled write.
pub(super) async fn serve(stream: TcpStream, routes: Arc<Routes>, io_timeout: Duration) {
    let service = service_fn(move |req| {
        let routes = Arc::clone(&routes);
        async move { Ok::<_, Infallible>(routes.respond(req).await) }
    });
    let socket = TokioIo::new(AdminSocket::new(stream, io_timeout));
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(io_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(socket, service)
        .await;
    if let Err(e) = served {
        // A client that sent garbage, stalled or left: nothing the operator can act on.
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// The accepted socket with a write-stall timeout and a lingering close.
struct AdminSocket {
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed while a write waits for the client to read.
    write_stall: Option<Pin<Box<Sleep>>>,
    /// Set once closing has started.
    closing: Option<Linger>,
}

/// A close in progress: our FIN is sent; input is discarded until the client closes too.
struct Linger {
    deadline: Pin<Box<Sleep>>,
    discarded: usize,
}

impl AdminSocket {
    fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        AdminSocket {
            stream,
            write_timeout,
            write_stall: None,
            closing: None,
        }
    }

    /// Passes a write's progress through, failing it once it has been pending for
    /// `write_timeout`.
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stall = None;
            return poll;
        }
        let limit = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for AdminSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdminSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_stall(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch_stall(cx, poll)
    }

    /// FIN first, then discard input until the client closes too, for at most
    /// [`LINGER_BYTES`] and [`LINGER_TIME`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let AdminSocket {
            stream, closing, ..
        } = self.get_mut();
        let linger = match closing {
            Some(linger) => linger,
            None => {
                ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
                closing.insert(Linger {
                    deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                    discarded: 0,
                })
            }
        };
        let mut sink = [0u8; 4096];
        while linger.discarded < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                // The client closed (or reset) its side: done.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => linger.discarded += buf.filled().len(),
                // Nothing to read yet: wait for input or the deadline, whichever comes first.
                Poll::Pending => return linger.deadline.as_mut().poll(cx).map(Ok),
            }
        }
        Poll::Ready(Ok(()))
    }
}
