//! HTTP/1.1 body framing for the lean relay path: a streaming chunked decoder that hands out
//! zero-copy slices of what was read, and the chunk framing written downstream.

use bytes::{Buf, Bytes};

/// Longest chunk-size line (size, extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// Past the size: extensions or whitespace until LF.
    SizeRest {
        value: u64,
    },
    Data {
        left: u64,
    },
    /// Expecting the CRLF that ends a chunk's data.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    TrailerStart,
    TrailerLine,
    Done,
}

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkedError {
    #[error("invalid chunk size")]
    InvalidSize,
    #[error("chunk size line too long")]
    SizeLineTooLong,
    #[error("missing CRLF after chunk data")]
    MissingCrlf,
}

/// A streaming `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    line_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line_len: 0,
        }
    }
}

impl ChunkedDecoder {
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as belongs to the body, calling `data` with each payload
    /// slice (zero-copy). Returns how many bytes of `input` the body used; bytes after the end
    /// of the body are left for the caller.
    pub(crate) fn decode(
        &mut self,
        input: &Bytes,
        mut data: impl FnMut(Bytes),
    ) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        let len = input.len();
        while pos < len {
            let b = input[pos];
            match self.state {
                State::Size { value, digits } => {
                    if let Some(d) = hex(b) {
                        // 16 hex digits fill a u64; httparse (and so pingora) takes as many.
                        if digits >= 16 {
                            return Err(ChunkedError::InvalidSize);
                        }
                        self.state = State::Size {
                            value: value << 4 | u64::from(d),
                            digits: digits + 1,
                        };
                        pos += 1;
                    } else if digits == 0 {
                        return Err(ChunkedError::InvalidSize);
                    } else {
                        self.state = State::SizeRest { value };
                        self.line_len = 0;
                    }
                }
                State::SizeRest { value } => {
                    pos += 1;
                    if b == b'\n' {
                        self.state = if value == 0 {
                            State::TrailerStart
                        } else {
                            State::Data { left: value }
                        };
                    } else {
                        self.line_len += 1;
                        if self.line_len > MAX_SIZE_LINE {
                            return Err(ChunkedError::SizeLineTooLong);
                        }
                        // Only extensions (`;...`), whitespace and the CR may follow the size.
                        if self.line_len == 1 && !matches!(b, b';' | b' ' | b'\t' | b'\r') {
                            return Err(ChunkedError::InvalidSize);
                        }
                    }
                }
                State::Data { left } => {
                    let take = (left as usize).min(len - pos);
                    data(input.slice(pos..pos + take));
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                }
                State::DataCr => {
                    pos += 1;
                    self.state = match b {
                        b'\r' => State::DataLf,
                        // Tolerate a bare LF, as common HTTP/1 parsers do.
                        b'\n' => State::Size {
                            value: 0,
                            digits: 0,
                        },
                        _ => return Err(ChunkedError::MissingCrlf),
                    };
                }
                State::DataLf => {
                    pos += 1;
                    if b != b'\n' {
                        return Err(ChunkedError::MissingCrlf);
                    }
                    self.state = State::Size {
                        value: 0,
                        digits: 0,
                    };
                }
                State::TrailerStart => {
                    pos += 1;
                    match b {
                        b'\n' => self.state = State::Done,
                        b'\r' => {}
                        _ => {
                            self.state = State::TrailerLine;
                            self.line_len = 1;
                        }
                    }
                }
                State::TrailerLine => {
                    pos += 1;
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    } else {
                        self.line_len += 1;
                        if self.line_len > MAX_SIZE_LINE {
                            return Err(ChunkedError::SizeLineTooLong);
                        }
                    }
                }
                State::Done => return Ok(pos),
            }
        }
        Ok(pos)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The size line of one chunk (`1a\r\n`), rendered without allocating.
pub(crate) struct ChunkHead {
    buf: [u8; 18],
    len: u8,
}

impl ChunkHead {
    pub(crate) fn new(size: usize) -> ChunkHead {
        let mut buf = [0u8; 18];
        let mut digits = [0u8; 16];
        let mut n = size;
        let mut i = 0;
        loop {
            digits[i] = b"0123456789abcdef"[n & 0xf];
            i += 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        for (k, d) in digits[..i].iter().rev().enumerate() {
            buf[k] = *d;
        }
        buf[i] = b'\r';
        buf[i + 1] = b'\n';
        ChunkHead {
            buf,
            len: (i + 2) as u8,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// Drops `n` bytes from the front of a list of buffers (after a partial vectored write).
pub(crate) fn advance(bufs: &mut [&[u8]], mut n: usize) {
    for b in bufs.iter_mut() {
        if n == 0 {
            break;
        }
        let take = n.min(b.len());
        b.advance(take);
        n -= take;
    }
}

/// The parts of one body write: a chunk's size line, its data and the CRLF, or (a body
/// delimited by length or by the connection's end) the data alone.
pub(crate) fn body_parts<'a>(head: &'a ChunkHead, data: &'a [u8], chunked: bool) -> [&'a [u8]; 3] {
    if chunked {
        [head.as_bytes(), data, b"\r\n"]
    } else {
        [data, &[], &[]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(parts: &[&[u8]]) -> Result<(Vec<u8>, bool, Vec<u8>), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for p in parts {
            let input = Bytes::copy_from_slice(p);
            let used = d.decode(&input, |b| out.extend_from_slice(&b))?;
            rest.extend_from_slice(&input[used..]);
        }
        Ok((out, d.is_done(), rest))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, done, rest) = decode_all(&[body]).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(decode_all(&[b"zz\r\n"]), Err(ChunkedError::InvalidSize));
        assert_eq!(
            decode_all(&[b"5\r\nhelloX"]),
            Err(ChunkedError::MissingCrlf)
        );
        assert_eq!(
            decode_all(&[b"ffffffffffffffffff\r\n"]),
            Err(ChunkedError::InvalidSize)
        );
        assert_eq!(decode_all(&[b"5x\r\n"]), Err(ChunkedError::InvalidSize));
    }

    /// A size of 16 hex digits (leading zeros, or the largest sizes) is read as httparse reads
    /// it; the decoder refused more than 15 (noticed while writing the chunked fuzz target's
    /// httparse-based reference decoder, which flags it).
    #[test]
    fn sizes_take_up_to_sixteen_digits() {
        let (out, done, _) = decode_all(&[b"000000000000000a\r\n0123456789\r\n0\r\n\r\n"]).unwrap();
        assert_eq!((out, done), (b"0123456789".to_vec(), true));
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(&Bytes::from_static(b"ffffffffffffffff\r\nab"), |_| {}),
            Ok(20)
        );
        assert_eq!(
            decode_all(&[b"00000000000000000a\r\n"]),
            Err(ChunkedError::InvalidSize)
        );
    }

    #[test]
    fn chunk_heads() {
        assert_eq!(ChunkHead::new(0).as_bytes(), b"0\r\n");
        assert_eq!(ChunkHead::new(26).as_bytes(), b"1a\r\n");
        assert_eq!(ChunkHead::new(65536).as_bytes(), b"10000\r\n");
        assert_eq!(
            ChunkHead::new(usize::MAX).as_bytes(),
            b"ffffffffffffffff\r\n"
        );
    }

    fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            wire.extend_from_slice(ChunkHead::new(c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        wire
    }

    proptest! {
        /// Any chunked encoding, split anywhere, decodes to the payload with nothing left over
        /// but the bytes after the body.
        #[test]
        fn round_trips_under_any_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut wire = encode(&chunks);
            let body_len = wire.len();
            wire.extend_from_slice(&tail);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
            points.sort_unstable();
            let mut parts = Vec::new();
            let mut prev = 0;
            for p in points { parts.push(&wire[prev..p]); prev = p; }
            parts.push(&wire[prev..]);
            let (out, done, rest) = decode_all(&parts).unwrap();
            prop_assert_eq!(out, chunks.concat());
            prop_assert!(done);
            prop_assert_eq!(rest, &wire[body_len..]);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&[&data]);
        }
    }
}
