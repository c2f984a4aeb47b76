//! The lean relay's exchange with the app: connect, send the request and its body, read the
//! response head. Everything before the client sees a byte of the answer.

use super::app::LeanApp;
use super::conn::ClientConn;
use crate::proxy::http1::body::Decode;
use crate::proxy::http1::chunked::{ChunkHead, ChunkedDecoder};
use crate::proxy::http1::request::{ReqBody, Request};
use crate::proxy::http1::response::{parse_response, MAX_RESPONSE_HEAD};
use crate::proxy::http1::socket::{read_some, timed_out, write_all};
use crate::proxy::shared::Shared;
use crate::proxy::upstream_error::{Failure, Phase, UpstreamError};
use crate::proxy::upstream_request::{upstream_request, BadRequest, Forwarding};
use bytes::{Bytes, BytesMut};
use pingora_http::{RequestHeader, ResponseHeader};
use std::io;
use std::net::IpAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Why the exchange ended before the app's head was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("client went away during the request")]
    Client,
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    #[error(transparent)]
    Upstream(UpstreamError),
}

/// The app's side after its response head has been read.
pub(crate) struct Exchange {
    pub(crate) head: ResponseHeader,
    pub(crate) app: LeanApp,
}

/// Connects, sends the request (and its body) and reads the response head.
pub(crate) async fn open_exchange(
    shared: &Shared,
    client: &mut ClientConn,
    req: &Request,
    buffered: &mut Bytes,
    client_ip: Option<IpAddr>,
) -> Result<Exchange, ExchangeError> {
    let cfg = &shared.config;
    let fwd = Forwarding {
        client_ip,
        tls: client.is_tls(),
        candidate: true,
        config: cfg,
    };
    let mut app_req = match upstream_request(&req.header, &fwd) {
        Ok(r) => r,
        Err(e) => {
            return Err(ExchangeError::BadRequest(e));
        }
    };
    if req.body == ReqBody::Chunked {
        let _ = app_req.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    let app = send_head(shared, &app_req).await?;
    if req.expect_continue && req.body != ReqBody::None {
        client
            .write_all(&[b"HTTP/1.1 100 Continue\r\n\r\n"], cfg.timeouts.read)
            .await
            .map_err(|_| ExchangeError::Client)?;
    }
    forward_request_body(shared, client, Some(&app), req.body, buffered).await?;
    let method_head = req.header.method == http::Method::HEAD;
    read_head(shared, app, method_head)
        .await
        .map_err(ExchangeError::Upstream)
}

/// Connects to the app and sends it `app_req`'s head. Shared by both relays when the app
/// speaks plain HTTP/1.1.
pub(crate) async fn send_head(
    shared: &Shared,
    app_req: &RequestHeader,
) -> Result<TcpStream, ExchangeError> {
    let cfg = &shared.config;
    let Some(wire) = pingora_core::protocols::http::v1::client::http_req_header_to_wire(app_req)
    else {
        return Err(ExchangeError::BadRequest(BadRequest::Target));
    };
    let connect = tokio::time::timeout(
        cfg.timeouts.connect,
        TcpStream::connect(shared.upstream_addr),
    );
    let app = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ExchangeError::Upstream(UpstreamError::from_io(
                &e,
                Phase::Connect,
            )))
        }
        Err(_) => {
            return Err(ExchangeError::Upstream(UpstreamError::new(
                Failure::ConnectTimeout,
                format!("connect: no answer within {:?}", cfg.timeouts.connect),
            )))
        }
    };
    let _ = app.set_nodelay(true);
    write_all(&app, &[&wire], cfg.timeouts.read)
        .await
        .map_err(|e| ExchangeError::Upstream(UpstreamError::from_io(&e, Phase::SendRequest)))?;
    Ok(app)
}

/// Reads the app's response head (informational ones skipped) under the read timeout; what
/// follows it is the body, read by the returned [`LeanApp`].
pub(crate) async fn read_head(
    shared: &Shared,
    app: TcpStream,
    method_head: bool,
) -> Result<Exchange, UpstreamError> {
    let deadline = tokio::time::Instant::now() + shared.config.timeouts.read;
    let mut head = BytesMut::with_capacity(1024);
    loop {
        let read = tokio::time::timeout_at(deadline, read_some(&app, &mut head, 4096)).await;
        match read {
            Err(_) => {
                return Err(UpstreamError::from_io(
                    &timed_out("no response header"),
                    Phase::ReadHead,
                ))
            }
            Ok(Err(e)) => return Err(UpstreamError::from_io(&e, Phase::ReadHead)),
            Ok(Ok(0)) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the response header",
                );
                return Err(UpstreamError::from_io(&e, Phase::ReadHead));
            }
            Ok(Ok(_)) => {}
        }
        match parse_response(&head) {
            Ok(Some((resp, len, body))) => {
                if resp.status.is_informational() {
                    let _ = head.split_to(len);
                    continue;
                }
                // Copied out so the header buffer is freed now, not when the body ends.
                let pending = compact(head.split_off(len).freeze());
                return Ok(Exchange {
                    head: resp,
                    app: LeanApp {
                        sock: app,
                        dec: Decode {
                            body,
                            pending,
                            method_head,
                            failed: None,
                        },
                    },
                });
            }
            Ok(None) if head.len() > MAX_RESPONSE_HEAD => {
                let e = io::Error::new(io::ErrorKind::InvalidData, "response header over 64 KiB");
                return Err(UpstreamError::from_io(&e, Phase::ReadHead));
            }
            Ok(None) => {}
            Err(why) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, why);
                return Err(UpstreamError::from_io(&e, Phase::ReadHead));
            }
        }
    }
}

/// A copy of `b` that does not keep a larger buffer alive.
pub(crate) fn compact(b: Bytes) -> Bytes {
    if b.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&b)
    }
}

/// Streams the request body from the client to the app, re-framed; with no app (a resume,
/// which the app never sees) reads it to its end and drops it.
pub(crate) async fn forward_request_body(
    shared: &Shared,
    client: &mut ClientConn,
    app: Option<&TcpStream>,
    body: ReqBody,
    buffered: &mut Bytes,
) -> Result<(), ExchangeError> {
    let timeout = shared.config.timeouts.read;
    let to_app =
        |e: io::Error| ExchangeError::Upstream(UpstreamError::from_io(&e, Phase::SendBody));
    let mut decoder = ChunkedDecoder::default();
    let mut left = match body {
        ReqBody::None => return Ok(()),
        ReqBody::Length(n) => n,
        ReqBody::Chunked => u64::MAX,
    };
    loop {
        if buffered.is_empty() {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            match tokio::time::timeout(timeout, client.read_some(&mut buf, 16 * 1024)).await {
                Ok(Ok(n)) if n > 0 => *buffered = buf.freeze(),
                _ => return Err(ExchangeError::Client),
            }
        }
        if body == ReqBody::Chunked {
            let mut pieces: Vec<Bytes> = Vec::new();
            let used = decoder
                .decode(buffered, |b| pieces.push(b))
                .map_err(|_| ExchangeError::Client)?;
            *buffered = buffered.slice(used..);
            let Some(app) = app else {
                if decoder.is_done() {
                    return Ok(());
                }
                continue;
            };
            for p in pieces {
                send_body_piece(app, true, &p, timeout)
                    .await
                    .map_err(to_app)?;
            }
            if decoder.is_done() {
                return write_all(app, &[LAST_CHUNK], timeout).await.map_err(to_app);
            }
        } else {
            let take = (left as usize).min(buffered.len());
            let piece = buffered.split_to(take);
            if let Some(app) = app {
                send_body_piece(app, false, &piece, timeout)
                    .await
                    .map_err(to_app)?;
            }
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
        }
    }
}

/// The last chunk of a chunked request body (no trailers).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes one piece of a request body to the app: as it is, or framed as one chunk. An empty
/// piece writes nothing (as a chunk it would end the body).
pub(crate) async fn send_body_piece(
    app: &TcpStream,
    chunked: bool,
    piece: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    if chunked {
        let head = ChunkHead::new(piece.len());
        write_all(app, &[head.as_bytes(), piece, b"\r\n"], timeout).await
    } else {
        write_all(app, &[piece], timeout).await
    }
}
