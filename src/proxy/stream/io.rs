//! The two sides of a relayed exchange as the stream code sees them, whatever carries them:
//! raw sockets (the lean relay) or pingora sessions (the session relay).

use crate::metrics::Outcome;
use crate::proxy::upstream_error::UpstreamError;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use std::future::Future;

/// Why a write to the client failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// No progress for the write timeout: the client stopped reading.
    Timeout,
    /// The client is gone.
    Closed,
}

impl WriteError {
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            WriteError::Timeout => Outcome::SlowConsumer,
            WriteError::Closed => Outcome::ClientClosed,
        }
    }
}

/// What follows a response head, which decides how the body is delimited for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Nothing: a `HEAD` answer, 204, 304, or `Content-Length: 0`.
    None,
    /// As many bytes as the head's `Content-Length` says.
    Length,
    /// An unknown length: the app's body is chunked or ends with its connection.
    Unknown,
    /// An event stream: open-ended, its head already carries the SSE policy.
    Stream,
}

/// The client side. Futures are `Send` (pingora runs the session relay in `async_trait`).
pub(crate) trait Client {
    /// Whether a body of unknown length goes out chunked (an HTTP/1.1 client); over HTTP/1.0
    /// it ends with the connection, over h2 with END_STREAM.
    fn chunked(&self) -> bool;
    /// Writes a response head, and `first` body bytes with it. `close`: the connection is not
    /// reused after this response.
    fn write_head(
        &mut self,
        head: ResponseHeader,
        body: Body,
        close: bool,
        first: Option<Bytes>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Writes `data` as body bytes and flushes it.
    fn send(&mut self, data: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Writes bytes already framed for the wire (see [`super::Unsent`]).
    fn send_raw(&mut self, wire: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Ends the response cleanly (terminating chunk, END_STREAM), writing `last` first.
    fn finish(
        &mut self,
        last: Option<Bytes>,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Resolves when the client has closed or reset. Cancel-safe.
    fn gone(&mut self) -> impl Future<Output = ()> + Send;
    /// Cuts the response without a clean end, so the client knows it is incomplete.
    fn abort(&mut self) -> impl Future<Output = ()> + Send;
    /// After [`Client::gone`]: the client ended this stream on purpose (an h2 RST_STREAM on a
    /// live connection: the page closed its EventSource), rather than losing its connection.
    fn cancelled(&self) -> bool {
        false
    }
}

/// The app's response body.
pub(crate) trait AppBody {
    /// The next body bytes, `None` at a clean end. Cancel-safe: no byte is lost when the
    /// future is dropped before it resolves.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, UpstreamError>> + Send;
}
