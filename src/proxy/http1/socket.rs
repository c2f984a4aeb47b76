//! The socket calls of the lean relay, on `socket2` and tokio: one `recv` through a per-thread
//! scratch buffer, one `sendmsg` per write, and the few waits around them.

use super::chunked::advance;
use bytes::{Bytes, BytesMut};
use std::io::{self, IoSlice};
use std::time::Duration;
use tokio::net::TcpStream;

/// Upstream read size; the buffer lives only until its bytes are written downstream.
pub(crate) const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// Every upstream read lands here first (see [`recv_copy`]); only the bytes read are copied
    /// out. Streams hold no read buffer while idle, and a read costs a small allocation, not a
    /// 64 KiB one.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_SIZE]);
}

/// One `recv` of at most [`READ_SIZE`] bytes through this thread's scratch buffer: the bytes
/// read (empty at end of stream). The tokio relay and the event loop both read this way.
pub(crate) fn recv_copy(sock: socket2::SockRef<'_>) -> io::Result<Bytes> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let n = io::Read::read(&mut &*sock, &mut scratch)?;
        Ok(Bytes::copy_from_slice(&scratch[..n]))
    })
}

/// One `sendmsg` (not `writev`: see [`send_vectored`]); never raises SIGPIPE.
pub(crate) fn sendmsg(sock: socket2::SockRef<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sock.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
}

/// One read from a ready socket: the bytes read (empty at end of stream), or `WouldBlock`.
///
/// A short read means the socket's receive queue is empty, so readiness is cleared right
/// away (by reporting `WouldBlock` to tokio) instead of by a second read that returns EAGAIN:
/// one system call per event instead of two.
pub(crate) fn read_once(sock: &TcpStream) -> io::Result<Bytes> {
    let mut got: Option<Bytes> = None;
    let result = sock.try_io(tokio::io::Interest::READABLE, || {
        let data = recv_copy(socket2::SockRef::from(sock))?;
        let short = !data.is_empty() && data.len() < READ_SIZE;
        got = Some(data);
        if short {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (got, result) {
        (Some(data), _) => Ok(data),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

pub(crate) fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// Reads what is available (at most `max` bytes) into `buf`; 0 at end of stream.
pub(crate) async fn read_some(
    sock: &TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<usize> {
    buf.reserve(max);
    loop {
        sock.readable().await?;
        match sock.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Writes every byte of `parts` (one `sendmsg` when the socket takes it all), waiting at most
/// `timeout` for the socket to make progress each time it is full.
pub(crate) async fn write_all(
    sock: &TcpStream,
    parts: &[&[u8]],
    timeout: Duration,
) -> io::Result<()> {
    let mut parts = Parts::new(parts);
    loop {
        if try_write(sock, &mut parts)? {
            return Ok(());
        }
        // The socket is full: a slow client. Boxed, so the common path's future stays small.
        Box::pin(wait_writable(sock, timeout)).await?;
    }
}

/// The bytes of one vectored write still to go: at most four non-empty buffers (a head, and a
/// chunk's size line, data and CRLF), without an allocation.
pub(crate) struct Parts<'a> {
    bufs: [&'a [u8]; 4],
    n: usize,
    first: usize,
}

impl<'a> Parts<'a> {
    pub(crate) fn new(parts: &[&'a [u8]]) -> Parts<'a> {
        let mut bufs: [&[u8]; 4] = [&[]; 4];
        let mut n = 0;
        for p in parts.iter().filter(|p| !p.is_empty()).take(4) {
            bufs[n] = p;
            n += 1;
        }
        Parts { bufs, n, first: 0 }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.first == self.n
    }

    /// What is left, as I/O slices (the first `len` of them).
    pub(crate) fn slices(&self) -> ([IoSlice<'a>; 4], usize) {
        let slices = std::array::from_fn(|i| {
            IoSlice::new(
                self.bufs[..self.n]
                    .get(self.first + i)
                    .copied()
                    .unwrap_or_default(),
            )
        });
        (slices, self.n - self.first)
    }

    /// `written` more bytes went out.
    pub(crate) fn wrote(&mut self, written: usize) {
        advance(&mut self.bufs[self.first..self.n], written);
        while self.first < self.n && self.bufs[self.first].is_empty() {
            self.first += 1;
        }
    }
}

/// Writes what the socket takes now; `Ok(true)` when everything is written.
fn try_write(sock: &TcpStream, parts: &mut Parts<'_>) -> io::Result<bool> {
    while !parts.is_done() {
        let (slices, len) = parts.slices();
        match send_vectored(sock, &slices[..len]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => parts.wrote(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// `sendmsg` rather than `writev` (what `TcpStream::try_write_vectored` uses): a socket write
/// through the VFS layer costs an fd position lock and the VFS checks on every event.
fn send_vectored(sock: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sock.try_io(tokio::io::Interest::WRITABLE, || {
        sendmsg(socket2::SockRef::from(sock), bufs)
    })
}

async fn wait_writable(sock: &TcpStream, timeout: Duration) -> io::Result<()> {
    let writable = std::future::poll_fn(|cx| sock.poll_write_ready(cx));
    match tokio::time::timeout(timeout, writable).await {
        Ok(r) => r,
        Err(_) => Err(timed_out("write made no progress")),
    }
}
