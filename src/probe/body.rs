//! A response body on its way to events: the HTTP/1 framing (chunked, length, close), the
//! content coding (gzip, deflate), and the split into events.

use std::io::Write as _;

/// How the body is delimited, and where the decoder is in it.
pub(crate) enum Framing {
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk, or `None` when a size
    /// line is due.
    Chunked {
        left: Option<usize>,
    },
    Length(usize),
    Close,
}

impl Framing {
    /// From the response's status and framing headers.
    pub(crate) fn of(
        status: u16,
        transfer_encoding: Option<&str>,
        content_length: Option<&str>,
    ) -> Framing {
        let no_body = status == 204 || status == 304 || (100..200).contains(&status);
        if no_body {
            return Framing::Length(0);
        }
        let chunked = transfer_encoding.is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return Framing::Chunked { left: None };
        }
        match content_length.and_then(|v| v.trim().parse().ok()) {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }

    pub(crate) fn ends_at_close(&self) -> bool {
        matches!(self, Framing::Close)
    }

    /// Takes the body data out of `raw` (leaving an incomplete size line there), and whether
    /// the body's framed end was reached.
    pub(crate) fn take(&mut self, raw: &mut Vec<u8>) -> (Vec<u8>, bool) {
        match self {
            Framing::Close => (std::mem::take(raw), false),
            Framing::Length(left) => {
                let n = (*left).min(raw.len());
                *left -= n;
                let data: Vec<u8> = raw.drain(..n).collect();
                raw.clear();
                (data, *left == 0)
            }
            Framing::Chunked { left } => {
                let mut out = Vec::new();
                loop {
                    match left {
                        Some(0) => {
                            // The CRLF after a chunk's data.
                            if raw.len() < 2 {
                                return (out, false);
                            }
                            raw.drain(..2);
                            *left = None;
                        }
                        Some(n) => {
                            let take = (*n).min(raw.len());
                            out.extend(raw.drain(..take));
                            *n -= take;
                            if raw.is_empty() {
                                return (out, false);
                            }
                        }
                        None => {
                            let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
                                return (out, false);
                            };
                            let line = String::from_utf8_lossy(&raw[..eol]).into_owned();
                            let size = line.split(';').next().unwrap_or("").trim();
                            let size = usize::from_str_radix(size, 16).unwrap_or(0);
                            raw.drain(..eol + 2);
                            if size == 0 {
                                return (out, true);
                            }
                            *left = Some(size);
                        }
                    }
                }
            }
        }
    }
}

/// Undoes `Content-Encoding` (gzip, deflate) as bytes arrive; `br` and unknown codings are
/// passed through undecoded (their events cannot be read, which the report says).
pub(crate) enum Decoder {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Opaque,
}

impl Decoder {
    pub(crate) fn of(encoding: Option<&str>) -> Decoder {
        match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Decoder::Identity,
            Some("gzip") | Some("x-gzip") => {
                Decoder::Gzip(flate2::write::GzDecoder::new(Vec::new()))
            }
            Some("deflate") => Decoder::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            Some(_) => Decoder::Opaque,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<u8> {
        match self {
            Decoder::Identity => data.to_vec(),
            Decoder::Gzip(d) => {
                let _ = d.write_all(data).and_then(|_| d.flush());
                std::mem::take(d.get_mut())
            }
            Decoder::Deflate(d) => {
                let _ = d.write_all(data).and_then(|_| d.flush());
                std::mem::take(d.get_mut())
            }
            Decoder::Opaque => Vec::new(),
        }
    }
}

/// Splits decoded body bytes into events (WHATWG §9.2: lines, a blank line dispatches).
#[derive(Default)]
pub(crate) struct EventSplitter {
    line: Vec<u8>,
    data: String,
    kind: String,
    /// Bytes since the last dispatched event.
    bytes: usize,
}

impl EventSplitter {
    /// Feeds bytes; returns each event completed, as (bytes, data, event type).
    pub(crate) fn push(&mut self, text: &[u8]) -> Vec<(usize, String, String)> {
        let mut out = Vec::new();
        for &b in text {
            self.bytes += 1;
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            let line = line.strip_suffix('\r').unwrap_or(&line);
            self.line.clear();
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    let kind = std::mem::take(&mut self.kind);
                    out.push((std::mem::take(&mut self.bytes), data, kind));
                }
                self.kind.clear();
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                "event" => self.kind = value.to_string(),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let mut f = Framing::Chunked { left: None };
        let mut raw = b"5\r\nhel".to_vec();
        assert_eq!(f.take(&mut raw), (b"hel".to_vec(), false));
        raw.extend_from_slice(b"lo\r\n3;x=y\r\nabc\r\n0\r\n\r\n");
        assert_eq!(f.take(&mut raw), (b"loabc".to_vec(), true));
    }

    #[test]
    fn events_split_on_blank_lines_with_their_bytes() {
        let mut s = EventSplitter::default();
        assert!(s.push(b": comment\n\nid: 1\ndata: a").is_empty());
        let out = s.push(b"\ndata: b\r\n\r\nevent: done\ndata: x\n\n");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].1, "a\nb");
        assert_eq!(
            out[0].0,
            b": comment\n\nid: 1\ndata: a\ndata: b\r\n\r\n".len()
        );
        assert_eq!((out[1].1.as_str(), out[1].2.as_str()), ("x", "done"));
    }

    #[test]
    fn gzip_is_decoded_as_it_arrives() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"data: 1\n\n").unwrap();
        let wire = enc.finish().unwrap();
        let mut d = Decoder::of(Some("gzip"));
        let mut out = d.push(&wire[..5]);
        out.extend(d.push(&wire[5..]));
        assert_eq!(out, b"data: 1\n\n");
    }
}
