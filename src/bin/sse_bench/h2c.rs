//! Just enough HTTP/2 (h2c, prior knowledge) for the client: one GET stream per
//! connection, DATA frames read and flow-controlled, SETTINGS and PING acked.
//!
//! Requests are HPACK-encoded with static-table names and plain (non-Huffman)
//! literals, which every server must accept. Responses are not fully decoded:
//! the status is read from the first field of the header block (the static
//! table's `:status 200` = 0x88, or a plain literal); other response headers,
//! content-type included, are skipped — decoding them needs Huffman tables.

use crate::parse::ProtoError;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The stream the client opens.
pub const STREAM: u32 = 1;
/// Our receive window, for the connection and the stream: the largest allowed.
const WINDOW: u32 = (1 << 31) - 1;
/// Give credit back once this much was consumed (half the window).
pub const CREDIT_EVERY: u64 = 1 << 30;
/// Largest frame we accept (the default SETTINGS_MAX_FRAME_SIZE; we never raise it).
pub const MAX_FRAME: usize = 16384;

fn frame_header(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// HPACK integer with an N-bit prefix; `first` carries the representation's high bits.
fn hpack_int(out: &mut Vec<u8>, prefix_bits: u32, first: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// Literal without indexing, name from the static table.
fn hpack_field(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
    hpack_int(out, 4, 0, name_index);
    hpack_str(out, value);
}

/// Everything the client sends first: preface, SETTINGS, connection credit and the GET.
pub fn request(authority: &str, path: &str, extra: &[(String, String)]) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static 2 and 6)
    hpack_field(&mut block, 4, path.as_bytes()); // :path
    hpack_field(&mut block, 1, authority.as_bytes()); // :authority
    hpack_field(&mut block, 19, b"text/event-stream"); // accept
    hpack_field(&mut block, 24, b"no-cache"); // cache-control
    for (name, value) in extra {
        block.push(0); // literal without indexing, new name
        hpack_str(&mut block, name.to_ascii_lowercase().as_bytes());
        hpack_str(&mut block, value.as_bytes());
    }

    let mut out = PREFACE.to_vec();
    frame_header(&mut out, 12, SETTINGS, 0, 0);
    out.extend_from_slice(&[0, 2, 0, 0, 0, 0]); // ENABLE_PUSH = 0
    out.extend_from_slice(&[0, 4]); // INITIAL_WINDOW_SIZE
    out.extend_from_slice(&WINDOW.to_be_bytes());
    out.extend_from_slice(&window_update(0, WINDOW - 65535));
    frame_header(
        &mut out,
        block.len(),
        HEADERS,
        END_STREAM | END_HEADERS,
        STREAM,
    );
    out.extend_from_slice(&block);
    out
}

pub fn window_update(stream: u32, increment: u32) -> [u8; 13] {
    let mut f = Vec::with_capacity(13);
    frame_header(&mut f, 4, WINDOW_UPDATE, 0, stream);
    f.extend_from_slice(&increment.to_be_bytes());
    f.try_into().unwrap()
}

pub fn settings_ack() -> [u8; 9] {
    let mut f = Vec::with_capacity(9);
    frame_header(&mut f, 0, SETTINGS, ACK, 0);
    f.try_into().unwrap()
}

pub fn ping_ack(data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(17);
    frame_header(&mut f, 8, PING, ACK, 0);
    f.extend_from_slice(data);
    f
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA on our stream; `flow_len` is the whole frame payload (padding counts for flow control).
    Data {
        payload: &'a [u8],
        flow_len: usize,
        end_stream: bool,
    },
    /// HEADERS on our stream (the first fragment of the block).
    Headers {
        block: &'a [u8],
        end_stream: bool,
    },
    /// The server's SETTINGS (not an ACK): must be acked.
    Settings,
    /// A PING (not an ACK): must be answered with its 8 bytes.
    Ping(&'a [u8]),
    RstStream(u32),
    GoAway(u32),
    /// Anything else (WINDOW_UPDATE, acks, other streams): ignored.
    Other,
}

/// Parses one frame off the front of `buf`: `None` while incomplete.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, ProtoError> {
    if buf.len() < 9 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError("h2 frame larger than SETTINGS_MAX_FRAME_SIZE"));
    }
    if buf.len() < 9 + len {
        return Ok(None);
    }
    let (ty, flags) = (buf[3], buf[4]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    let p = &buf[9..9 + len];
    let frame = match (ty, stream) {
        (DATA, STREAM) => Frame::Data {
            payload: unpad(p, flags)?,
            flow_len: len,
            end_stream: flags & END_STREAM != 0,
        },
        (HEADERS, STREAM) => {
            let mut block = unpad(p, flags)?;
            if flags & PRIORITY != 0 {
                block = block
                    .get(5..)
                    .ok_or(ProtoError("h2 HEADERS priority cut short"))?;
            }
            Frame::Headers {
                block,
                end_stream: flags & END_STREAM != 0,
            }
        }
        (SETTINGS, 0) if flags & ACK == 0 => Frame::Settings,
        (PING, 0) if flags & ACK == 0 && len == 8 => Frame::Ping(p),
        (RST_STREAM, STREAM) if len == 4 => {
            Frame::RstStream(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        }
        (GOAWAY, 0) if len >= 8 => Frame::GoAway(u32::from_be_bytes([p[4], p[5], p[6], p[7]])),
        _ => Frame::Other,
    };
    Ok(Some((frame, 9 + len)))
}

fn unpad(p: &[u8], flags: u8) -> Result<&[u8], ProtoError> {
    if flags & PADDED == 0 {
        return Ok(p);
    }
    let pad = *p
        .first()
        .ok_or(ProtoError("h2 padded frame without pad length"))? as usize;
    if pad >= p.len() {
        return Err(ProtoError("h2 padding longer than the frame"));
    }
    Ok(&p[1..p.len() - pad])
}

/// The response status from the start of a header block, when it can be read
/// without Huffman decoding (servers send `:status 200` as static index 8).
pub fn status_of(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    // Dynamic table size updates (001xxxxx) may precede the first field.
    while i < block.len() && block[i] & 0xe0 == 0x20 {
        i += 1;
        if block[i - 1] & 0x1f == 0x1f {
            while i < block.len() && block[i] & 0x80 != 0 {
                i += 1;
            }
            i += 1;
        }
    }
    let b = *block.get(i)?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if (0x88..=0x8e).contains(&b) {
        return Some(STATIC[(b - 0x88) as usize]);
    }
    // A literal whose name is static index 8 (:status), value not Huffman-coded.
    // 0x48: with incremental indexing (6-bit prefix); 0x08 / 0x18: without / never indexed.
    if !matches!(b, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len_byte = *block.get(i + 1)?;
    if len_byte & 0x80 != 0 {
        return None;
    }
    let value = block.get(i + 2..i + 2 + len_byte as usize)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers() {
        let mut v = vec![];
        hpack_int(&mut v, 5, 0, 10);
        assert_eq!(v, [10]);
        v.clear();
        hpack_int(&mut v, 5, 0, 1337); // RFC 7541 C.1.2
        assert_eq!(v, [31, 154, 10]);
        v.clear();
        hpack_int(&mut v, 4, 0, 19);
        assert_eq!(v, [0x0f, 0x04]);
    }

    #[test]
    fn request_starts_with_preface_and_ends_with_get() {
        let r = request("127.0.0.1:8080", "/stream?rate=10", &[]);
        assert!(r.starts_with(PREFACE));
        let mut rest = &r[PREFACE.len()..];
        let mut kinds = vec![];
        while let Some((f, used)) = parse_frame(rest).unwrap() {
            kinds.push((rest[3], rest[4], f == Frame::Settings));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            kinds,
            [
                (SETTINGS, 0, true),
                (WINDOW_UPDATE, 0, false),
                (HEADERS, END_STREAM | END_HEADERS, false)
            ]
        );
    }

    #[test]
    fn frames_and_status() {
        let mut wire = vec![];
        frame_header(&mut wire, 1, HEADERS, END_HEADERS, STREAM);
        wire.push(0x88);
        frame_header(&mut wire, 8, DATA, PADDED, STREAM);
        wire.extend_from_slice(&[2, b'd', b'a', b't', b'a', b'!', 0, 0]);
        let (f, n) = parse_frame(&wire).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Headers {
                block: &[0x88],
                end_stream: false
            }
        );
        let (f, m) = parse_frame(&wire[n..]).unwrap().unwrap();
        assert_eq!(
            f,
            Frame::Data {
                payload: b"data!",
                flow_len: 8,
                end_stream: false
            }
        );
        assert_eq!(n + m, wire.len());
        assert_eq!(parse_frame(&wire[..5]).unwrap(), None);
        assert_eq!(status_of(&[0x88]), Some(200));
        assert_eq!(status_of(&[0x3f, 0xe1, 0x1f, 0x8d]), Some(404));
        assert_eq!(status_of(&[0x08, 3, b'5', b'0', b'2']), Some(502));
        assert_eq!(status_of(&[0x48, 0x82, 0x64, 0x02]), None); // Huffman-coded
    }
}
