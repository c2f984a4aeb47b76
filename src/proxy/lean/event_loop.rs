//! The lean relay's event loop: one thread per core that carries running HTTP/1 streams while
//! all they do is relay app chunks and send heartbeats — nginx's event-loop shape.
//!
//! Why: with one tokio task per stream, an event costs a readiness dispatch, a task wake, a
//! poll of the stream's `select!` (four branches over its future state, on cold cache lines)
//! and a timer check, on top of the `recv` and `sendmsg` the kernel needs. A relay with no
//! user-space work at all (`examples/floor_relay.rs`) showed that this was most of the
//! user-space CPU per event (README, benchmark section). Here a wake is one `epoll_wait`
//! shared by every ready stream, and per stream a slab index, the read, the framer and the
//! write.
//!
//! The loop owns only the steady state. Anything else — the client closing or sending bytes,
//! the app ending, failing or closing, a write the client's socket cannot take whole, an idle
//! timeout, a scheduled close, a drain — hands the stream back to its tokio task, which goes on
//! with [`crate::proxy::stream::run`] from the same [`Progress`]. Every rule of the stream loop keeps
//! one implementation; this loop only decides when it can do the common case itself.
//!
//! Per chunk and per timer, the loop calls the same steps of [`Progress`] as the stream loop
//! (`chunk`, `heartbeat`, `sent`, `due`, `deadline`); what it adds is only the non-blocking
//! write and the decision to hand a stream back.
//!
//! Timers: one heap entry per stream at most, at the stream's [`Progress::deadline`]. As in the
//! stream loop, a deadline is only ever moved earlier on the hot path; one that moved later is
//! noticed when its entry fires, so a busy stream costs no timer work per event.

use crate::proxy::http1::body::Decode;
use crate::proxy::http1::chunked::{advance, body_parts, ChunkHead};
use crate::proxy::http1::socket::{recv_copy, sendmsg};
use crate::proxy::resume::inline::Inline;
use crate::proxy::shared::Shared;
use crate::proxy::stream::progress::Sent;
use crate::proxy::stream::{Due, Progress, Unsent};
use crate::proxy::upstream_error::{Phase, UpstreamError};
use crate::sys::{Epoll, EventFd, HANGUP, NO_EVENT};
use bytes::Bytes;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Instant;
use tokio::sync::oneshot;

/// The token of the loop's own wake-up eventfd; streams use `(slot + 1) << 1 | side`.
const WAKE: u64 = 0;
const CLIENT: u64 = 0;
const APP: u64 = 1;

/// A stream while the loop carries it, and what it hands back.
pub(crate) struct ParkedStream {
    pub(crate) client: TcpStream,
    pub(crate) app: TcpStream,
    pub(crate) dec: Decode,
    /// The client's body is chunked (HTTP/1.1); else it ends with the connection.
    pub(crate) chunked: bool,
    pub(crate) progress: Progress,
    /// A resumable stream's producer half (memory store): each chunk is logged on its way.
    pub(crate) resume: Option<Box<Inline>>,
    reply: Option<oneshot::Sender<Box<ParkedStream>>>,
    /// Unique per stream, so a stale timer entry for a reused slot is recognised.
    id: u64,
    timer_at: Instant,
}

impl ParkedStream {
    pub(crate) fn new(
        client: TcpStream,
        app: TcpStream,
        dec: Decode,
        chunked: bool,
        progress: Progress,
        resume: Option<Box<Inline>>,
    ) -> (Box<ParkedStream>, oneshot::Receiver<Box<ParkedStream>>) {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let stream = Box::new(ParkedStream {
            client,
            app,
            dec,
            chunked,
            progress,
            resume,
            reply: Some(tx),
            id: 0,
            timer_at: now,
        });
        (stream, rx)
    }
}

/// One loop thread's mailbox: new streams, and the eventfd that wakes it.
pub(crate) struct Mailbox {
    /// New streams; `None` once the loop thread has died (a bug), so none is left waiting.
    /// Boxed: the record is allocated once by the task and travels boxed both ways.
    #[allow(clippy::vec_box)]
    inbox: Mutex<Option<Vec<Box<ParkedStream>>>>,
    wake: EventFd,
    /// A resumable stream here was taken over by another connection ([`TakenOver`]).
    recheck: AtomicBool,
}

/// Wakes a loop to see which of its resumable streams another connection took over.
struct TakenOver(Arc<Mailbox>);

impl Wake for TakenOver {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.recheck.store(true, Ordering::Release);
        self.0.notify();
    }
}

thread_local! {
    /// The loop that streams started on this (worker) thread go to.
    static CURRENT: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

impl Mailbox {
    /// Starts loop thread `i`.
    pub(crate) fn start(i: usize, shared: Arc<Shared>) -> io::Result<Arc<Mailbox>> {
        let wake = EventFd::new()?;
        let ep = Epoll::new()?;
        ep.add(wake.fd(), WAKE)?;
        let mailbox = Arc::new(Mailbox {
            inbox: Mutex::new(Some(Vec::new())),
            wake,
            recheck: AtomicBool::new(false),
        });
        let this = mailbox.clone();
        std::thread::Builder::new()
            .name(format!("sse-loop-{i}"))
            .spawn(move || {
                let mailbox = this.clone();
                let looped = Loop {
                    shared,
                    taken_over: Waker::from(Arc::new(TakenOver(this.clone()))),
                    mailbox: this,
                    s: Streams {
                        ep,
                        streams: Vec::new(),
                        free: Vec::new(),
                        timers: BinaryHeap::new(),
                        next_id: 1,
                    },
                    draining: false,
                };
                // A panic drops the streams the loop held (their tasks end them: "the event
                // loop thread stopped"); streams not yet taken go back, and later ones stay in
                // their tasks.
                let panicked =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| looped.run()));
                if panicked.is_err() {
                    tracing::error!(
                        "relay event loop {i} panicked; its new streams stay in their tasks"
                    );
                    let waiting = mailbox
                        .inbox
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    for stream in waiting.into_iter().flatten() {
                        send_back(stream);
                    }
                }
            })?;
        Ok(mailbox)
    }

    /// Makes `mailbox` the loop for streams started on the calling thread.
    pub(crate) fn set_current(mailbox: Arc<Mailbox>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(mailbox));
    }

    /// The calling thread's loop, if it has one.
    pub(crate) fn current() -> Option<Arc<Mailbox>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Hands `stream` to the loop; gives it back if the loop is gone.
    pub(crate) fn submit(&self, stream: Box<ParkedStream>) -> Result<(), Box<ParkedStream>> {
        match &mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(inbox) => inbox.push(stream),
            None => return Err(stream),
        }
        self.notify();
        Ok(())
    }

    fn notify(&self) {
        self.wake.notify();
    }
}

/// The drain signal wakes the loop through its eventfd.
impl Wake for Mailbox {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

struct Loop {
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    /// What a resumable stream's entry wakes when another connection takes it over.
    taken_over: Waker,
    s: Streams,
    draining: bool,
}

/// The streams a loop carries.
struct Streams {
    ep: Epoll,
    streams: Vec<Option<Box<ParkedStream>>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_id: u64,
}

impl Loop {
    fn run(mut self) {
        let shared = self.shared.clone();
        let mut drain = pin!(shared.drain.signal());
        let waker = Waker::from(self.mailbox.clone());
        let mut cx = Context::from_waker(&waker);
        let mut events = vec![NO_EVENT; 256];
        // Registers the loop's waker, so a drain that starts while it sleeps wakes it.
        if drain.as_mut().poll(&mut cx).is_ready() {
            self.draining = true;
        }
        loop {
            let timeout = match self.s.timers.peek() {
                None => -1,
                Some(Reverse((at, _, _))) => {
                    let left = at.saturating_duration_since(Instant::now());
                    // Rounded up: a timer never fires early.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let mut woken = false;
            for ev in self.s.ep.wait(&mut events, timeout) {
                let (token, flags) = (ev.u64, ev.events);
                if token == WAKE {
                    woken = true;
                    continue;
                }
                let slot = (token >> 1) as usize - 1;
                if self.s.streams.get(slot).is_none_or(Option::is_none) {
                    continue;
                }
                if token & 1 == CLIENT || flags & HANGUP != 0 {
                    // The client sent bytes or left, or the app closed or failed: the stream
                    // loop decides what that means.
                    self.s.hand_back(slot);
                } else {
                    self.readable(slot);
                }
            }
            if woken {
                self.mailbox.wake.reset();
                if self.mailbox.recheck.swap(false, Ordering::AcqRel) {
                    // Its task ends this connection's share of the stream.
                    for slot in 0..self.s.streams.len() {
                        if self.s.streams[slot]
                            .as_ref()
                            .is_some_and(|l| l.taken_over())
                        {
                            self.s.hand_back(slot);
                        }
                    }
                }
                if !self.draining && drain.as_mut().poll(&mut cx).is_ready() {
                    // Every stream goes back to its task, whose loop spreads the closes over
                    // the drain window.
                    self.draining = true;
                    for slot in 0..self.s.streams.len() {
                        if self.s.streams[slot].is_some() {
                            self.s.hand_back(slot);
                        }
                    }
                }
                let new = self
                    .mailbox
                    .inbox
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .map(std::mem::take);
                for stream in new.into_iter().flatten() {
                    self.insert(stream);
                }
            }
            self.fire_timers();
        }
    }

    fn insert(&mut self, mut stream: Box<ParkedStream>) {
        if self.draining || self.shared.drain.is_draining() {
            send_back(stream);
            return;
        }
        let slot = self.s.free.pop().unwrap_or_else(|| {
            self.s.streams.push(None);
            self.s.streams.len() - 1
        });
        stream.id = self.s.next_id;
        self.s.next_id += 1;
        let base = ((slot as u64) + 1) << 1;
        let ep = &self.s.ep;
        let registered = ep
            .add(stream.client.as_raw_fd(), base | CLIENT)
            .and_then(|()| ep.add(stream.app.as_raw_fd(), base | APP));
        // Watched before it is checked: a take-over in between still wakes the loop.
        if let Some(r) = &stream.resume {
            r.watch(Some(self.taken_over.clone()));
        }
        let taken_over = stream.taken_over();
        self.s.streams[slot] = Some(stream);
        if registered.is_err() || taken_over {
            self.s.hand_back(slot);
            return;
        }
        self.s.schedule(&self.shared, slot, true);
        // Bytes read together with the response head.
        if self.s.streams[slot]
            .as_ref()
            .is_some_and(|l| !l.dec.pending.is_empty())
        {
            self.relay(slot);
        }
    }

    /// The app's socket is readable: one read, then relay what it holds.
    fn readable(&mut self, slot: usize) {
        let Some(stream) = self.s.streams[slot].as_mut() else {
            return;
        };
        match recv_copy(socket2::SockRef::from(&stream.app)) {
            // The end of the app's body or connection: the stream loop finishes the stream.
            Ok(data) if data.is_empty() => self.s.hand_back(slot),
            Ok(data) => {
                stream.dec.pending = data;
                self.relay(slot);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                stream.dec.failed = Some(UpstreamError::from_io(&e, Phase::ReadBody));
                self.s.hand_back(slot);
            }
        }
    }

    /// Decodes the pending bytes and writes what the framer passes on.
    fn relay(&mut self, slot: usize) {
        let shared = &*self.shared;
        let Some(stream) = self.s.streams[slot].as_mut() else {
            return;
        };
        let data = match stream.dec.decode() {
            Ok(Some(data)) if !data.is_empty() => data,
            Ok(_) => {
                if stream.dec.finished() {
                    self.s.hand_back(slot);
                }
                return;
            }
            Err(e) => {
                stream.dec.failed = Some(e);
                self.s.hand_back(slot);
                return;
            }
        };
        let data = match &mut stream.resume {
            None => data,
            Some(r) => match r.append(shared, data) {
                Some(stamped) => stamped,
                // Taken over: the chunk is in the log for the new connection.
                None => {
                    self.s.hand_back(slot);
                    return;
                }
            },
        };
        let out = stream.progress.chunk(shared, data);
        if !out.bytes.is_empty() && !stream.write(out.bytes, out.sent) {
            self.s.hand_back(slot);
            return;
        }
        let p = &mut stream.progress;
        if p.sent(shared, out.sent).is_some() || stream.dec.finished() {
            self.s.hand_back(slot);
            return;
        }
        self.s.schedule(shared, slot, false);
    }

    fn fire_timers(&mut self) {
        let Some(&Reverse((first, _, _))) = self.s.timers.peek() else {
            return;
        };
        let now = Instant::now();
        if first > now {
            return;
        }
        while let Some(&Reverse((at, slot, id))) = self.s.timers.peek() {
            if at > now {
                break;
            }
            self.s.timers.pop();
            let live = self.s.streams[slot]
                .as_ref()
                .is_some_and(|l| l.id == id && l.timer_at == at);
            if live {
                self.timer(slot, now);
            }
        }
    }

    /// The stream's deadline passed: a heartbeat here; anything else goes back to the task.
    fn timer(&mut self, slot: usize, now: Instant) {
        let shared = &*self.shared;
        let Some(stream) = self.s.streams[slot].as_mut() else {
            return;
        };
        let p = &mut stream.progress;
        match p.due(shared, now) {
            Due::Nothing => {}
            Due::Heartbeat(now) => {
                let out = p.heartbeat(shared, now);
                if !stream.write(out.bytes, out.sent) {
                    self.s.hand_back(slot);
                    return;
                }
                stream.progress.sent(shared, out.sent);
            }
            // An idle timeout or a scheduled close: the task's stream loop acts on it.
            Due::Idle | Due::Close(_) | Due::Cut(_) => {
                self.s.hand_back(slot);
                return;
            }
        }
        self.s.schedule(shared, slot, true);
    }
}

impl Streams {
    /// Keeps the stream's timer entry at or before its deadline. `fresh`: the stream has no
    /// live entry (new, or its entry just fired).
    fn schedule(&mut self, shared: &Shared, slot: usize, fresh: bool) {
        let Some(stream) = self.streams[slot].as_mut() else {
            return;
        };
        let want = stream.progress.deadline(shared);
        if fresh || want < stream.timer_at {
            stream.timer_at = want;
            self.timers.push(Reverse((want, slot, stream.id)));
        }
    }

    /// Gives the stream back to its task (see the module docs).
    fn hand_back(&mut self, slot: usize) {
        let Some(stream) = self.streams[slot].take() else {
            return;
        };
        self.free.push(slot);
        for fd in [stream.client.as_raw_fd(), stream.app.as_raw_fd()] {
            let _ = self.ep.delete(fd);
        }
        if let Some(r) = &stream.resume {
            r.watch(None);
        }
        send_back(stream);
    }
}

impl ParkedStream {
    /// A resumable stream whose client another connection took over.
    fn taken_over(&self) -> bool {
        self.resume.as_ref().is_some_and(|r| !r.attached())
    }

    /// Writes `bytes` framed for the client with one `sendmsg`; `false` when the socket did
    /// not take them all: the rest waits in `progress.unsent` for the task, which finishes the
    /// write (waiting for the socket) or finds the client gone.
    fn write(&mut self, bytes: Bytes, sent: Sent) -> bool {
        match write_framed(&self.client, self.chunked, &bytes) {
            Ok(()) => true,
            Err(wire) => {
                self.progress.unsent = Some(Unsent { wire, sent });
                false
            }
        }
    }
}

fn send_back(mut stream: Box<ParkedStream>) {
    if let Some(reply) = stream.reply.take() {
        // A task that is gone (its runtime shut down) drops the stream and its sockets.
        let _ = reply.send(stream);
    }
}

/// Writes `data` framed for the client with one `sendmsg`. `Err` holds the bytes still to
/// write (all of them if the socket took none or failed): the task's loop finishes the write,
/// waiting for the socket, or finds the client gone.
fn write_framed(client: &TcpStream, chunked: bool, data: &[u8]) -> Result<(), Bytes> {
    let head = ChunkHead::new(data.len());
    let mut parts = body_parts(&head, data, chunked);
    let sent = sendmsg(socket2::SockRef::from(client), &parts.map(IoSlice::new)).unwrap_or(0);
    advance(&mut parts, sent);
    if parts.iter().all(|p| p.is_empty()) {
        return Ok(());
    }
    Err(parts.concat().into())
}

#[cfg(test)]
mod tests {
    //! The loop against real loopback sockets: an "app" end writing a chunked body and a
    //! "client" end reading what the loop writes, with the stream's task played by the test.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    struct Rig {
        shared: Arc<Shared>,
        mailbox: Arc<Mailbox>,
        /// The app's end of the upstream connection.
        app: TcpStream,
        /// The client's end of the downstream connection.
        client: TcpStream,
        back: oneshot::Receiver<Box<ParkedStream>>,
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// A loop carrying one stream whose body is chunked and whose client is HTTP/1.1.
    fn rig(yaml: &str, pending: &[u8]) -> Rig {
        let config = Config::from_yaml(yaml).unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let shared = Arc::new(Shared::new(config, metrics, "127.0.0.1:9".parse().unwrap()));
        let mailbox = Mailbox::start(0, shared.clone()).unwrap();
        let (app, app_side) = pair();
        let (client_side, client) = pair();
        for s in [&app_side, &client_side] {
            s.set_nonblocking(true).unwrap();
        }
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut dec = Decode::chunked();
        dec.pending = Bytes::copy_from_slice(pending);
        let progress = Progress::new(&shared, Instant::now(), 0);
        let (stream, back) = ParkedStream::new(client_side, app_side, dec, true, progress, None);
        assert!(mailbox.submit(stream).is_ok());
        Rig {
            shared,
            mailbox,
            app,
            client,
            back,
        }
    }

    /// Reads from the client until `want` bytes arrived.
    fn read_exactly(client: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = vec![0; want];
        client.read_exact(&mut got).unwrap();
        got
    }

    /// Waits (bounded) for the loop to hand the stream back.
    fn handed_back(back: &mut oneshot::Receiver<Box<ParkedStream>>) -> Box<ParkedStream> {
        for _ in 0..500 {
            if let Ok(stream) = back.try_recv() {
                return stream;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the loop did not hand the stream back within 5 s");
    }

    fn still_carried(back: &mut oneshot::Receiver<Box<ParkedStream>>) -> bool {
        matches!(back.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    #[test]
    fn relays_chunks_rechunked_and_counts_events() {
        // The first event arrived with the response head; the second comes later.
        let mut r = rig("heartbeat_interval: 0s\n", b"8\r\ndata: a\n\r\n");
        assert_eq!(read_exactly(&mut r.client, 13), b"8\r\ndata: a\n\r\n");
        r.app.write_all(b"1\r\n\n\r\n").unwrap();
        assert_eq!(read_exactly(&mut r.client, 6), b"1\r\n\n\r\n");
        r.app.write_all(b"9\r\ndata: b\n\n\r\n").unwrap();
        assert_eq!(read_exactly(&mut r.client, 14), b"9\r\ndata: b\n\n\r\n");
        assert!(still_carried(&mut r.back));
        // The app ends its body: the task finishes the stream (terminating chunk and all).
        r.app.write_all(b"0\r\n\r\n").unwrap();
        let stream = handed_back(&mut r.back);
        assert!(stream.dec.finished());
        assert_eq!(stream.progress.summary.events, 2);
        assert_eq!(stream.progress.summary.bytes, 8 + 1 + 9);
        assert!(stream.progress.unsent.is_none());
    }

    #[test]
    fn heartbeats_only_at_event_boundaries() {
        let mut r = rig("heartbeat_interval: 200ms\n", b"");
        // Mid-event: the app is silent for longer than the interval, no heartbeat may cut in.
        r.app.write_all(b"8\r\ndata: a\n\r\n").unwrap();
        assert_eq!(read_exactly(&mut r.client, 13), b"8\r\ndata: a\n\r\n");
        std::thread::sleep(Duration::from_millis(500));
        r.app.write_all(b"1\r\n\n\r\n").unwrap();
        assert_eq!(read_exactly(&mut r.client, 6), b"1\r\n\n\r\n");
        // At a boundary: a heartbeat after ~200 ms of downstream silence.
        let started = Instant::now();
        let beat = r.shared.heartbeat_block.clone();
        let wire = [
            format!("{:x}\r\n", beat.len()).into_bytes(),
            beat.to_vec(),
            b"\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(read_exactly(&mut r.client, wire.len()), wire);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert!(still_carried(&mut r.back));
        drop(r.client);
        let stream = handed_back(&mut r.back);
        assert_eq!(stream.progress.summary.heartbeats, 1);
    }

    #[test]
    fn a_full_client_socket_hands_back_the_exact_rest() {
        let mut r = rig("heartbeat_interval: 0s\n", b"");
        // A client that does not read, and numbered 64 KiB events: the client's socket fills.
        let events: Vec<u8> = (0..400)
            .flat_map(|i| {
                let pad = vec![b'x'; 65_000];
                [format!("data: {i:04} ").into_bytes(), pad, b"\n\n".to_vec()].concat()
            })
            .collect();
        let body: Vec<u8> = events
            .chunks(65_009)
            .flat_map(|e| {
                [
                    format!("{:x}\r\n", e.len()).into_bytes(),
                    e.to_vec(),
                    b"\r\n".to_vec(),
                ]
                .concat()
            })
            .collect();
        r.app.set_nonblocking(true).unwrap();
        let mut written = 0;
        let mut stream = None;
        for _ in 0..400 {
            if let Ok(l) = r.back.try_recv() {
                stream = Some(l);
                break;
            }
            if let Ok(n) = r.app.write(&body[written..]) {
                written += n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut stream = stream.expect("the loop hands back a stream whose client stops reading");
        let unsent = stream.progress.unsent.take().expect("unsent bytes");
        assert!(!unsent.wire.is_empty() && unsent.sent.len > 0);
        // What the client got, then the rest the task must write, decodes to exactly the
        // start of the app's body: no byte lost, none repeated, however the reads fell.
        r.client.set_nonblocking(true).unwrap();
        let mut wire = Vec::new();
        let mut buf = vec![0; 1 << 16];
        while let Ok(n) = r.client.read(&mut buf) {
            if n == 0 {
                break;
            }
            wire.extend_from_slice(&buf[..n]);
        }
        wire.extend_from_slice(&unsent.wire);
        let mut payload = Vec::new();
        crate::proxy::http1::chunked::ChunkedDecoder::default()
            .decode(&Bytes::from(wire), |piece| {
                payload.extend_from_slice(&piece)
            })
            .unwrap();
        assert!(payload.len() > 65_009, "{} bytes", payload.len());
        assert!(
            payload == events[..payload.len()],
            "payload is not the app's body"
        );
    }

    #[test]
    fn hands_back_on_client_close_app_close_bad_chunk_and_drain() {
        // The client leaves.
        let mut r = rig("", b"");
        drop(r.client);
        let stream = handed_back(&mut r.back);
        assert!(stream.dec.failed.is_none() && !stream.dec.finished());

        // The app closes mid-body: left for the task, which reads the end itself.
        let mut r = rig("", b"");
        drop(r.app);
        let stream = handed_back(&mut r.back);
        assert!(stream.dec.failed.is_none());

        // A malformed chunk: the error travels with the stream.
        let mut r = rig("", b"");
        r.app.write_all(b"zz\r\n").unwrap();
        let stream = handed_back(&mut r.back);
        assert!(stream.dec.failed.is_some());

        // SIGTERM: every stream goes back, and none is taken afterwards.
        let mut r = rig("", b"");
        std::thread::sleep(Duration::from_millis(50));
        assert!(still_carried(&mut r.back));
        r.shared.drain.start();
        let _ = handed_back(&mut r.back);
        let (client, _client) = pair();
        let (app, _app) = pair();
        let progress = Progress::new(&r.shared, Instant::now(), 0);
        let (stream, mut back) =
            ParkedStream::new(client, app, Decode::chunked(), true, progress, None);
        assert!(r.mailbox.submit(stream).is_ok());
        let _ = handed_back(&mut back);
    }

    #[test]
    fn idle_timeout_goes_back_to_the_task() {
        let mut r = rig("heartbeat_interval: 0s\nsse_idle_timeout: 300ms\n", b"");
        std::thread::sleep(Duration::from_millis(100));
        assert!(still_carried(&mut r.back));
        let started = Instant::now();
        let stream = handed_back(&mut r.back);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(Instant::now() >= stream.progress.last_read + Duration::from_millis(300));
    }
}
