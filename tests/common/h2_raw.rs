//! HTTP/2 as raw frames, for clients the `h2` crate will not be: floods, header blocks that
//! never end, HPACK that expands. [`RawH2`] writes what a test builds and records every frame
//! the server sends back ([`Seen`]) in a reader task.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::task::JoinHandle;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
/// Error codes (RFC 9113 §7).
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A byte stream h2 can run on: TCP (h2c) or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `n` copies of one frame, for a flood.
pub fn repeated(one: &[u8], n: usize) -> Vec<u8> {
    one.repeat(n)
}

/// An HPACK string literal (no Huffman), lengths up to 126.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127);
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// A request's header block: `:method`, `:scheme` (https when `tls`), `:path`, `:authority`
/// `localhost`, then `accept: text/event-stream`. Literals without indexing, no Huffman.
pub fn request_block(method: &str, path: &str, tls: bool) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(match method {
        "GET" => 0x82,
        "POST" => 0x83,
        other => panic!("method {other}"),
    });
    b.push(if tls { 0x87 } else { 0x86 });
    // :path, name from the static table (index 4), value literal.
    b.push(0x04);
    hpack_str(&mut b, path.as_bytes());
    // :authority (index 1).
    b.push(0x01);
    hpack_str(&mut b, b"localhost");
    // accept (index 19).
    b.push(0x0f);
    b.push(19 - 15);
    hpack_str(&mut b, b"text/event-stream");
    b
}

/// What the server sent on a connection.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Frames by type (0..=9; others not counted).
    pub counts: [u64; 10],
    /// The GOAWAY, if any: last stream id, error code, debug data.
    pub goaway: Option<(u32, u32, String)>,
    /// RST_STREAM frames: stream, error code.
    pub resets: Vec<(u32, u32)>,
    /// Streams answered with a HEADERS frame, and its header block.
    pub answered: Vec<(u32, Vec<u8>)>,
    /// The server's SETTINGS parameters (identifier, value), from non-ACK frames.
    pub settings: Vec<(u16, u32)>,
    /// When the connection ended (EOF or error), from the connect.
    pub closed_after: Option<Duration>,
    /// What ended it: "eof" or the error.
    pub end: Option<String>,
}

/// A raw h2 client connection: preface and SETTINGS sent, the server's frames recorded.
pub struct RawH2 {
    writer: WriteHalf<BoxIo>,
    seen: Arc<Mutex<Seen>>,
    reader: JoinHandle<()>,
    pub started: Instant,
}

impl RawH2 {
    /// Sends the preface and an empty SETTINGS (and acknowledges the server's), and starts
    /// reading.
    pub async fn start(io: BoxIo) -> RawH2 {
        let (mut read, writer) = tokio::io::split(io);
        let started = Instant::now();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let reader = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match read.read(&mut chunk).await {
                    Ok(0) => {
                        let mut s = s.lock().unwrap();
                        s.end = Some("eof".into());
                        s.closed_after = Some(started.elapsed());
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let mut s = s.lock().unwrap();
                        s.end = Some(e.to_string());
                        s.closed_after = Some(started.elapsed());
                        return;
                    }
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                let mut s = s.lock().unwrap();
                while buf.len() - at >= 9 {
                    let h = &buf[at..at + 9];
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    if buf.len() - at < 9 + len {
                        break;
                    }
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let p = &buf[at + 9..at + 9 + len];
                    if (kind as usize) < s.counts.len() {
                        s.counts[kind as usize] += 1;
                    }
                    let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
                    match kind {
                        GOAWAY if len >= 8 => {
                            let debug = String::from_utf8_lossy(&p[8..]).into_owned();
                            s.goaway = Some((word(0) & 0x7fff_ffff, word(4), debug));
                        }
                        RST_STREAM if len >= 4 => s.resets.push((stream, word(0))),
                        HEADERS => s.answered.push((stream, p.to_vec())),
                        SETTINGS if flags & ACK == 0 => {
                            for c in p.chunks_exact(6) {
                                let id = u16::from_be_bytes([c[0], c[1]]);
                                let v = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
                                s.settings.push((id, v));
                            }
                        }
                        _ => {}
                    }
                    at += 9 + len;
                }
                buf.drain(..at);
            }
        });
        let mut raw = RawH2 {
            writer,
            seen,
            reader,
            started,
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(frame(SETTINGS, ACK, 0, &[]));
        raw.send(&hello).await.expect("h2 preface");
        raw
    }

    /// Writes `bytes` (5 s at most).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(Duration::from_secs(5), self.writer.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write blocked for 5 s",
            )),
        }
    }

    /// Writes `batch` again and again until `times` writes, a write error or the end of the
    /// connection; returns how many batches were written whole.
    pub async fn flood(&mut self, batch: &[u8], times: usize) -> usize {
        for i in 0..times {
            if self.seen().closed_after.is_some() || self.send(batch).await.is_err() {
                return i;
            }
        }
        times
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the server ends the connection, at most `deadline`; what it sent.
    pub async fn wait_closed(&self, deadline: Duration) -> Seen {
        self.wait_for(deadline, |s| s.closed_after.is_some()).await
    }

    /// Waits until what the server sent satisfies `done`, at most `deadline`; what it sent.
    pub async fn wait_for(&self, deadline: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
        let end = Instant::now() + deadline;
        loop {
            let seen = self.seen();
            if done(&seen) || Instant::now() >= end {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
