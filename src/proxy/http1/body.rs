//! The app's body as the lean relay decodes it: its framing and the bytes read but not yet
//! decoded. Everything of the app side but its socket, so the event loop can carry it.

use super::chunked::ChunkedDecoder;
use crate::proxy::upstream_error::{Failure, UpstreamError};
use bytes::{Bytes, BytesMut};

/// How the app frames its body.
#[derive(Debug)]
pub(crate) enum BodyKind {
    Chunked(ChunkedDecoder),
    Length(u64),
    /// Until the app closes the connection.
    Close,
}

/// The app's body framing and the bytes read but not yet decoded: everything of the app side
/// but its socket, so the event loop ([`super::engine`]) can carry it.
#[derive(Debug)]
pub(crate) struct Decode {
    pub(crate) body: BodyKind,
    /// Bytes read but not yet decoded (read with the header, or a previous read).
    pub(crate) pending: Bytes,
    pub(crate) method_head: bool,
    /// A failure met by the event loop, reported by the next [`LeanUp::next`].
    pub(crate) failed: Option<UpstreamError>,
}

impl Decode {
    /// A chunked body with nothing read yet.
    pub(crate) fn chunked() -> Decode {
        Decode {
            body: BodyKind::Chunked(ChunkedDecoder::default()),
            pending: Bytes::new(),
            method_head: false,
            failed: None,
        }
    }

    pub(crate) fn finished(&self) -> bool {
        self.method_head
            || match &self.body {
                BodyKind::Chunked(d) => d.is_done(),
                BodyKind::Length(left) => *left == 0,
                BodyKind::Close => false,
            }
    }

    /// Takes the payload out of `pending`.
    pub(crate) fn decode(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let input = std::mem::take(&mut self.pending);
        match &mut self.body {
            BodyKind::Close => Ok(Some(input)),
            BodyKind::Length(left) => {
                let take = (*left as usize).min(input.len());
                *left -= take as u64;
                Ok(Some(input.slice(..take)))
            }
            BodyKind::Chunked(decoder) => {
                let mut first: Option<Bytes> = None;
                let mut more: Option<BytesMut> = None;
                decoder
                    .decode(&input, |piece| match (&first, &mut more) {
                        (None, _) => first = Some(piece),
                        (Some(f), None) => {
                            let mut m = BytesMut::with_capacity(f.len() + piece.len());
                            m.extend_from_slice(f);
                            m.extend_from_slice(&piece);
                            more = Some(m);
                        }
                        (Some(_), Some(m)) => m.extend_from_slice(&piece),
                    })
                    .map_err(|e| UpstreamError::new(Failure::InvalidChunkedBody, e.to_string()))?;
                Ok(more.map(BytesMut::freeze).or(first))
            }
        }
    }
}
