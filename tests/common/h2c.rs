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
        let tcp = TcpStream::connect(addr).await.expect("h2c connect");
        H2Conn::handshake(addr, tcp).await
    }

    /// Like [`H2Conn::connect`], but [`H2Conn::close`] resets the TCP connection (RST, as a
    /// network failure would) instead of closing it with a FIN.
    pub async fn connect_resetting(addr: SocketAddr) -> H2Conn {
        let tcp = TcpStream::connect(addr).await.expect("h2c connect");
        tcp.set_zero_linger().unwrap();
        H2Conn::handshake(addr, tcp).await
    }

    async fn handshake(addr: SocketAddr, tcp: TcpStream) -> H2Conn {
        tcp.set_nodelay(true).unwrap();
        let (send, conn) = tokio::time::timeout(Duration::from_secs(5), h2::client::handshake(tcp))
            .await
            .expect("h2c handshake timed out")
            .expect("h2c handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn { addr, send, driver }
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
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, target));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap();
        let mut send = tokio::time::timeout(Duration::from_secs(5), self.send.clone().ready())
            .await
            .expect("h2 ready timed out")
            .expect("h2 ready");
        let (resp, mut stream) = send
            .send_request(req, body.is_none())
            .expect("h2 send_request");
        if let Some(body) = body {
            stream
                .send_data(Bytes::copy_from_slice(body), true)
                .expect("h2 send_data");
        }
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("h2 response head timed out")
            .expect("h2 response");
        let (parts, recv) = resp.into_parts();
        H2Response {
            parts,
            recv,
            send: stream,
            parser: Parser::new(),
            queue: VecDeque::new(),
            items: Vec::new(),
            body: Vec::new(),
            ended: false,
        }
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
            Ok(_) => {
                self.ended = true;
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
