//! An HTTP/2 cleartext client with prior knowledge (the `h2` crate).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::sse::{Event, Item, Parser, Timed};

/// One h2c connection. [`H2Conn::close`] drops the TCP connection (FIN, or RST when made by
/// [`H2Conn::connect_resetting`]).
pub struct H2Conn {
    pub addr: SocketAddr,
    send: SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

impl H2Conn {
    /// Connects and performs the HTTP/2 handshake (connection preface, no upgrade).
    pub async fn connect(addr: SocketAddr) -> H2Conn {
        H2Conn::try_connect(addr, false)
            .await
            .unwrap_or_else(|e| panic!("h2c connect {addr}: {e}"))
    }

    /// Like [`H2Conn::connect`], but [`H2Conn::close`] resets the TCP connection (RST, as a
    /// network failure would) instead of closing it with a FIN.
    pub async fn connect_resetting(addr: SocketAddr) -> H2Conn {
        H2Conn::try_connect(addr, true)
            .await
            .unwrap_or_else(|e| panic!("h2c connect {addr}: {e}"))
    }

    /// [`H2Conn::connect`] (`resetting`: [`H2Conn::connect_resetting`]) with the error
    /// returned, for a test that counts failures.
    pub async fn try_connect(addr: SocketAddr, resetting: bool) -> Result<H2Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if resetting {
            tcp.set_zero_linger().map_err(|e| e.to_string())?;
        }
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(tcp))
            .await
            .map_err(|_| "h2c handshake timed out".to_string())?
            .map_err(|e| format!("h2c handshake: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn { addr, send, driver })
    }

    /// Sends a request; returns the response head, its body stream and the request stream
    /// (for `send_reset`). `body: None` ends the request stream with the headers.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> H2Response {
        self.try_request(method, target, headers, body)
            .await
            .unwrap_or_else(|e| panic!("h2 {method} {target}: {e}"))
    }

    /// [`H2Conn::request`] with the error returned (a refused stream, a connection gone).
    /// Takes `&self`: requests on one connection may be made from several tasks.
    pub async fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<H2Response, String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, target));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).map_err(|e| e.to_string())?;
        let mut send = tokio::time::timeout(Duration::from_secs(5), self.send.clone().ready())
            .await
            .map_err(|_| "h2 ready timed out".to_string())?
            .map_err(|e| format!("h2 ready: {e}"))?;
        let (resp, mut stream) = send
            .send_request(req, body.is_none())
            .map_err(|e| format!("h2 send_request: {e}"))?;
        if let Some(body) = body {
            stream
                .send_data(Bytes::copy_from_slice(body), true)
                .map_err(|e| format!("h2 send_data: {e}"))?;
        }
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .map_err(|_| "h2 response head timed out".to_string())?
            .map_err(|e| format!("h2 response: {e}"))?;
        let (parts, recv) = resp.into_parts();
        Ok(H2Response {
            parts,
            recv,
            send: stream,
            parser: Parser::new(),
            queue: VecDeque::new(),
            items: Vec::new(),
            body: Vec::new(),
            ended: false,
            error: None,
        })
    }

    /// Drops the connection from a shared handle (the driver stops; FIN, or RST for a
    /// resetting connection); its streams end with an error.
    pub fn kill(&self) {
        self.driver.abort();
    }

    /// Whether the connection's driver has stopped (the server closed it, or an error).
    pub fn is_closed(&self) -> bool {
        self.driver.is_finished()
    }

    /// Drops the connection: the TCP socket is closed (FIN; RST for a resetting connection).
    pub fn close(self) {
        self.driver.abort();
        drop(self.send);
    }
}

/// A response on an h2 stream, readable as raw data or as SSE items.
pub struct H2Response {
    pub parts: http::response::Parts,
    recv: RecvStream,
    /// The request side of the stream; `send.send_reset(h2::Reason::CANCEL)` resets it.
    pub send: SendStream<Bytes>,
    parser: Parser,
    queue: VecDeque<Timed>,
    pub items: Vec<Timed>,
    pub body: Vec<u8>,
    pub ended: bool,
    /// Why the stream ended, when it was not END_STREAM (a reset, the connection gone).
    pub error: Option<String>,
}

impl H2Response {
    pub fn status(&self) -> u16 {
        self.parts.status.as_u16()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Next DATA payload within `timeout`; `None` at end of stream, error or timeout.
    pub async fn next_data(&mut self, timeout: Duration) -> Option<(Bytes, u64)> {
        match tokio::time::timeout(timeout, self.recv.data()).await {
            Ok(Some(Ok(d))) => {
                let _ = self.recv.flow_control().release_capacity(d.len());
                self.body.extend_from_slice(&d);
                Some((d, super::now_ns()))
            }
            Ok(r) => {
                self.ended = true;
                self.error = r.and_then(|r| r.err()).map(|e| e.to_string());
                None
            }
            Err(_) => None,
        }
    }

    /// Next SSE item within `timeout`.
    pub async fn next_item(&mut self, timeout: Duration) -> Option<Timed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = self.queue.pop_front() {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (d, at) = self.next_data(left).await?;
            let items = self.parser.feed(&d, at);
            self.items.extend(items.iter().cloned());
            self.queue.extend(items);
        }
    }

    /// Next SSE event within `timeout`, with its arrival time.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<(Event, u64)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Timed {
                item: Item::Event(e),
                at_ns,
            } = self.next_item(left).await?
            {
                return Some((e, at_ns));
            }
        }
    }

    /// Resets the stream (RST_STREAM CANCEL) while keeping the connection.
    pub fn reset(&mut self) {
        self.send.send_reset(h2::Reason::CANCEL);
    }
}
