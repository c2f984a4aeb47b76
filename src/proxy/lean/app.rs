//! The app's side of a lean stream: its socket and body decoder, read as an [`AppBody`].

use crate::proxy::http1::body::{BodyKind, Decode};
use crate::proxy::http1::socket::read_once;
use crate::proxy::stream::AppBody;
use crate::proxy::upstream_error::{Failure, Phase, UpstreamError};
use bytes::Bytes;
use std::io;
use tokio::net::TcpStream;

pub(crate) struct LeanApp {
    pub(crate) sock: TcpStream,
    pub(crate) dec: Decode,
}

impl LeanApp {
    /// The shape of the body that follows the app's head, for a pass-through.
    pub(crate) fn body(&self) -> crate::proxy::stream::Body {
        use crate::proxy::stream::Body;
        match self.dec.body {
            _ if self.dec.method_head => Body::None,
            BodyKind::Length(0) => Body::None,
            BodyKind::Length(_) => Body::Length,
            BodyKind::Chunked(_) | BodyKind::Close => Body::Unknown,
        }
    }
}

impl AppBody for LeanApp {
    async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if let Some(e) = self.dec.failed.take() {
            return Err(e);
        }
        let dec = &mut self.dec;
        loop {
            if !dec.pending.is_empty() && !dec.finished() {
                if let Some(data) = dec.decode()?.filter(|d| !d.is_empty()) {
                    return Ok(Some(data));
                }
            }
            if dec.finished() {
                return Ok(None);
            }
            let sock = &self.sock;
            if let Err(e) = std::future::poll_fn(|cx| sock.poll_read_ready(cx)).await {
                return Err(UpstreamError::from_io(&e, Phase::ReadBody));
            }
            match read_once(&self.sock) {
                Ok(data) if data.is_empty() => {
                    return match dec.body {
                        BodyKind::Close => {
                            dec.body = BodyKind::Length(0);
                            Ok(None)
                        }
                        _ => Err(UpstreamError::new(
                            Failure::ClosedMidBody,
                            "unexpected end of stream",
                        )),
                    };
                }
                Ok(data) => dec.pending = data,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(UpstreamError::from_io(&e, Phase::ReadBody)),
            }
        }
    }
}
