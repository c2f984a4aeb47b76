//! `sse-bench origin`: a deliberately cheap HTTP/1.1 SSE origin.
//!
//! One task per connection, hand-written request parsing, each event built in
//! a stack buffer and written with a single `write` (the socket is almost
//! always writable, so `write_all` completes in one syscall). Routes:
//!
//! - `/stream?rate=R[&count=N]`: `data: <t_ns>\n\n` R times a second (first
//!   event right after the headers); after N events the response ends.
//! - `/ticker`: joins the shared fan-out ticker; every tick writes the same
//!   event, stamped once, to all subscribers.
//! - `/idle[?hello=1]`: headers (with `hello=1`, then one comment), then silence until the
//!   client leaves. The comment is for nginx over h2, which sends a response's HEADERS only
//!   with its first body bytes: without one, the client never sees the stream open.
//! - `/bulk?size=B`: B-byte events (`data: <t_ns, 20 digits> xxx…\n\n`) as fast
//!   as the reader takes them.
//! - `/`, `/health`: `200 ok` (keep-alive), for readiness probes.
//!
//! `t_ns` is CLOCK_MONOTONIC in nanoseconds (see `sys::now_ns`).

use crate::sys::now_ns;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

pub struct OriginOpts {
    pub listen: SocketAddr,
    pub fanout_interval: Duration,
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n";
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

pub async fn run(opts: OriginOpts) -> io::Result<()> {
    let sock = if opts.listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(opts.listen)?;
    // Capacity runs connect thousands of streams in a few seconds.
    let listener = sock.listen(8192)?;
    eprintln!(
        "sse-bench origin: listening on {} (fan-out tick {:?})",
        listener.local_addr()?,
        opts.fanout_interval
    );

    let (tick_tx, tick_rx) = watch::channel(Bytes::new());
    tokio::spawn(ticker(tick_tx, opts.fanout_interval));

    let mut last_err_report: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let rx = tick_rx.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, rx).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, report at most once a second.
                if last_err_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    eprintln!("sse-bench origin: accept: {e}");
                    last_err_report = Some(Instant::now());
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Stamps one event per tick; subscribers write the very same bytes.
async fn ticker(tx: watch::Sender<Bytes>, every: Duration) {
    let mut iv = interval(every);
    iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut ev = [0u8; 64];
    loop {
        iv.tick().await;
        let n = event_chunk(&mut ev, now_ns());
        tx.send_replace(Bytes::copy_from_slice(&ev[..n]));
    }
}

#[derive(Debug, PartialEq)]
enum Route {
    Health,
    NotFound,
    Stream { rate: f64, count: Option<u64> },
    Ticker,
    Idle { hello: bool },
    Bulk { size: usize },
}

impl Route {
    fn parse(head: &[u8]) -> Route {
        let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n');
        let line = &head[..line_end.unwrap_or(head.len())];
        let mut parts = line.split(|&b| b == b' ');
        let (Some(_method), Some(target)) = (parts.next(), parts.next()) else {
            return Route::NotFound;
        };
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, &b""[..]),
        };
        let param = |name: &[u8]| -> Option<&str> {
            query.split(|&b| b == b'&').find_map(|kv| {
                let eq = kv.iter().position(|&b| b == b'=')?;
                (&kv[..eq] == name)
                    .then(|| std::str::from_utf8(&kv[eq + 1..]).ok())
                    .flatten()
            })
        };
        match path {
            b"/" | b"/health" => Route::Health,
            b"/stream" => Route::Stream {
                rate: param(b"rate").and_then(|v| v.parse().ok()).unwrap_or(10.0),
                count: param(b"count").and_then(|v| v.parse().ok()),
            },
            b"/ticker" => Route::Ticker,
            b"/idle" => Route::Idle {
                hello: param(b"hello") == Some("1"),
            },
            b"/bulk" => Route::Bulk {
                size: param(b"size")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(65536usize)
                    .clamp(64, 16 << 20),
            },
            _ => Route::NotFound,
        }
    }
}

async fn serve(mut s: TcpStream, ticks: watch::Receiver<Bytes>) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let end = loop {
            if let Some(p) = find(&buf[..have], b"\r\n\r\n") {
                break p + 4;
            }
            if have == buf.len() {
                return s.write_all(TOO_LARGE).await;
            }
            let n = s.read(&mut buf[have..]).await?;
            if n == 0 {
                return Ok(());
            }
            have += n;
        };
        let route = Route::parse(&buf[..end]);
        // Keep-alive: whatever follows this head is the next request.
        buf.copy_within(end..have, 0);
        have -= end;
        match route {
            Route::Health => s.write_all(OK).await?,
            Route::NotFound => s.write_all(NOT_FOUND).await?,
            Route::Stream { rate, count } => {
                stream_rate(&mut s, rate, count).await?;
                if count.is_none() {
                    return Ok(());
                }
            }
            Route::Ticker => return ticker_stream(s, ticks).await,
            Route::Idle { hello } => return idle(s, hello).await,
            Route::Bulk { size } => return bulk(s, size).await,
        }
    }
}

/// True once the peer has closed (or reset) the connection. Stray bytes are discarded.
fn peer_closed(s: &TcpStream) -> bool {
    let mut scratch = [0u8; 256];
    match s.try_read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

async fn stream_rate(s: &mut TcpStream, rate: f64, count: Option<u64>) -> io::Result<()> {
    s.write_all(SSE_HEAD).await?;
    if rate.is_nan() || rate <= 0.0 {
        return wait_closed(s).await;
    }
    let mut iv = interval(Duration::from_secs_f64(1.0 / rate));
    iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut ev = [0u8; 64];
    let mut sent = 0u64;
    loop {
        tokio::select! {
            // Next event is due: stamp it as late as possible, write it.
            _ = iv.tick() => {
                let n = event_chunk(&mut ev, now_ns());
                s.write_all(&ev[..n]).await?;
                sent += 1;
                if count == Some(sent) {
                    return s.write_all(LAST_CHUNK).await;
                }
            }
            // The client left (or sent something): stop paying for the stream.
            r = s.readable() => {
                r?;
                if peer_closed(s) {
                    return Ok(());
                }
            }
        }
    }
}

async fn ticker_stream(mut s: TcpStream, mut ticks: watch::Receiver<Bytes>) -> io::Result<()> {
    s.write_all(SSE_HEAD).await?;
    ticks.borrow_and_update();
    loop {
        tokio::select! {
            // A tick: write the shared, already framed event.
            r = ticks.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                let ev = ticks.borrow_and_update().clone();
                s.write_all(&ev).await?;
            }
            // The client left.
            r = s.readable() => {
                r?;
                if peer_closed(&s) {
                    return Ok(());
                }
            }
        }
    }
}

async fn idle(mut s: TcpStream, hello: bool) -> io::Result<()> {
    s.write_all(SSE_HEAD).await?;
    if hello {
        s.write_all(b"9\r\n: hello\n\n\r\n").await?;
    }
    wait_closed(&s).await
}

async fn wait_closed(s: &TcpStream) -> io::Result<()> {
    loop {
        s.readable().await?;
        if peer_closed(s) {
            return Ok(());
        }
    }
}

async fn bulk(mut s: TcpStream, size: usize) -> io::Result<()> {
    // One reusable chunk; only its 20 timestamp digits change per event.
    let mut chunk = format!("{size:x}\r\ndata: ").into_bytes();
    let ts_at = chunk.len();
    chunk.extend_from_slice(&[b'0'; 20]);
    chunk.push(b' ');
    let fill = size - "data: ".len() - 20 - 1 - 2;
    chunk.resize(chunk.len() + fill, b'x');
    chunk.extend_from_slice(b"\n\n\r\n");
    s.write_all(SSE_HEAD).await?;
    loop {
        // A client that leaves makes this write fail (EPIPE/ECONNRESET).
        let mut t = now_ns();
        for d in chunk[ts_at..ts_at + 20].iter_mut().rev() {
            *d = b'0' + (t % 10) as u8;
            t /= 10;
        }
        s.write_all(&chunk).await?;
    }
}

/// Writes one chunk-framed `data: <t>\n\n` event into `buf`; returns its length.
fn event_chunk(buf: &mut [u8; 64], t: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut d = digits.len();
    let mut v = t;
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = &digits[d..];
    let data_len = "data: ".len() + digits.len() + 2;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = 0;
    let mut put = |bytes: &[u8]| {
        buf[i..i + bytes.len()].copy_from_slice(bytes);
        i += bytes.len();
    };
    put(&[HEX[data_len >> 4], HEX[data_len & 15]]);
    put(b"\r\ndata: ");
    put(digits);
    put(b"\n\n\r\n");
    i
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_chunk_is_valid_chunked_sse() {
        let mut buf = [0u8; 64];
        let n = event_chunk(&mut buf, 1234567890123);
        assert_eq!(&buf[..n], b"15\r\ndata: 1234567890123\n\n\r\n");
        let n = event_chunk(&mut buf, 0);
        assert_eq!(&buf[..n], b"09\r\ndata: 0\n\n\r\n");
        let n = event_chunk(&mut buf, u64::MAX);
        assert_eq!(&buf[..n], b"1c\r\ndata: 18446744073709551615\n\n\r\n");
    }

    #[test]
    fn routes() {
        let r = |s: &str| Route::parse(s.as_bytes());
        assert_eq!(
            r("GET /stream?rate=5&count=3 HTTP/1.1\r\n\r\n"),
            Route::Stream {
                rate: 5.0,
                count: Some(3)
            }
        );
        assert_eq!(r("GET /ticker HTTP/1.1\r\n"), Route::Ticker);
        assert_eq!(
            r("GET /bulk?size=1000 HTTP/1.1\r\n"),
            Route::Bulk { size: 1000 }
        );
        assert_eq!(r("GET /nope HTTP/1.1\r\n"), Route::NotFound);
        assert_eq!(r("garbage"), Route::NotFound);
    }
}
