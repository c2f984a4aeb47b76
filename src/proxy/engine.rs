//! The lean relay's event loop: one thread per core that carries running HTTP/1 streams while
//! all they do is relay app chunks and send heartbeats — nginx's event-loop shape.
//!
//! Why: with one tokio task per stream, an event costs a readiness dispatch, a task wake, a
//! poll of the stream's `select!` (four branches over ~1 KiB of future state on cold cache
//! lines) and a timer check, on top of the `recv` and `sendmsg` the kernel needs. A relay with
//! no user-space work at all (`examples/floor_relay.rs`) measured ~15 % less CPU per event than
//! this crate's task-per-stream relay and nginx alike, almost all of it user time. Here a wake
//! is one `epoll_wait` shared by every ready stream, and per stream a slab index, the read, the
//! framer and the write.
//!
//! The loop owns only the steady state. Anything else — the client closing or sending bytes,
//! the app ending, failing or closing, a write the client's socket cannot take whole, an idle
//! timeout, a scheduled close, a drain — hands the stream back to its tokio task, which goes on
//! with [`super::stream::run`] from the same [`Progress`]. Every rule of the stream loop keeps
//! one implementation; this loop only decides when it can do the common case itself.
//!
//! Timers: one heap entry per stream at most, at the stream's [`Progress::deadline`]. As in the
//! stream loop, a deadline is only ever moved earlier on the hot path; one that moved later is
//! noticed when its entry fires, so a busy stream costs no timer work per event.

use super::codec::ChunkHead;
use super::h1::{body_parts, recv_copy, sendmsg, Decode};
use super::stream::{Due, Progress, Unsent};
use super::Shared;
use bytes::Bytes;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Instant;
use tokio::sync::oneshot;

/// The token of the loop's own wake-up eventfd; streams use `(slot + 1) << 1 | side`.
const WAKE: u64 = 0;
const DOWN: u64 = 0;
const UP: u64 = 1;

/// A stream while the loop carries it, and what it hands back.
pub(super) struct Lane {
    pub ds: TcpStream,
    pub up: TcpStream,
    pub dec: Decode,
    /// The client's body is chunked (HTTP/1.1); else it ends with the connection.
    pub chunked: bool,
    pub progress: Progress,
    reply: Option<oneshot::Sender<Box<Lane>>>,
    /// Unique per stream, so a stale timer entry for a reused slot is recognised.
    id: u64,
    timer_at: Instant,
}

impl Lane {
    pub fn new(
        ds: TcpStream,
        up: TcpStream,
        dec: Decode,
        chunked: bool,
        progress: Progress,
    ) -> (Box<Lane>, oneshot::Receiver<Box<Lane>>) {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let lane = Box::new(Lane {
            ds,
            up,
            dec,
            chunked,
            progress,
            reply: Some(tx),
            id: 0,
            timer_at: now,
        });
        (lane, rx)
    }
}

/// One loop thread's mailbox: new streams, and the eventfd that wakes it.
pub struct Engine {
    /// New streams; `None` once the loop thread has died (a bug), so none is left waiting.
    /// Boxed: the record is allocated once by the task and travels boxed both ways.
    #[allow(clippy::vec_box)]
    inbox: Mutex<Option<Vec<Box<Lane>>>>,
    wake: OwnedFd,
}

thread_local! {
    /// The loop that streams started on this (worker) thread go to.
    static CURRENT: RefCell<Option<Arc<Engine>>> = const { RefCell::new(None) };
}

impl Engine {
    /// Starts loop thread `i`.
    pub fn start(i: usize, shared: Arc<Shared>) -> io::Result<Arc<Engine>> {
        // SAFETY: plain system calls; the returned descriptors are owned right away.
        let wake = unsafe {
            OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
            ))?)
        };
        // SAFETY: as above.
        let ep = unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        ctl(&ep, libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE)?;
        let engine = Arc::new(Engine {
            inbox: Mutex::new(Some(Vec::new())),
            wake,
        });
        let this = engine.clone();
        std::thread::Builder::new()
            .name(format!("sse-loop-{i}"))
            .spawn(move || {
                let engine = this.clone();
                let looped = Loop {
                    shared,
                    engine: this,
                    s: Slab {
                        ep,
                        lanes: Vec::new(),
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
                    let waiting = engine
                        .inbox
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    for lane in waiting.into_iter().flatten() {
                        send_back(lane);
                    }
                }
            })?;
        Ok(engine)
    }

    /// Makes `engine` the loop for streams started on the calling thread.
    pub fn set_current(engine: Arc<Engine>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(engine));
    }

    /// The calling thread's loop, if it has one.
    pub(super) fn current() -> Option<Arc<Engine>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Hands `lane` to the loop; gives it back if the loop is gone.
    pub(super) fn submit(&self, lane: Box<Lane>) -> Result<(), Box<Lane>> {
        match &mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(inbox) => inbox.push(lane),
            None => return Err(lane),
        }
        self.notify();
        Ok(())
    }

    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) still
        // leaves the eventfd readable, which is all the loop needs.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }
}

/// The drain signal wakes the loop through its eventfd.
impl Wake for Engine {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

struct Loop {
    shared: Arc<Shared>,
    engine: Arc<Engine>,
    s: Slab,
    draining: bool,
}

/// The streams a loop carries.
struct Slab {
    ep: OwnedFd,
    lanes: Vec<Option<Box<Lane>>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_id: u64,
}

impl Loop {
    fn run(mut self) {
        let shared = self.shared.clone();
        let mut drain = pin!(shared.drain.signal());
        let waker = Waker::from(self.engine.clone());
        let mut cx = Context::from_waker(&waker);
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
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
            // SAFETY: `events` has room for its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.s.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            let mut woken = false;
            for ev in &events[..n.max(0) as usize] {
                let (token, flags) = (ev.u64, ev.events);
                if token == WAKE {
                    woken = true;
                    continue;
                }
                let slot = (token >> 1) as usize - 1;
                if self.s.lanes.get(slot).is_none_or(Option::is_none) {
                    continue;
                }
                let hangup = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
                if token & 1 == DOWN || flags & hangup != 0 {
                    // The client sent bytes or left, or the app closed or failed: the stream
                    // loop decides what that means.
                    self.s.hand_back(slot);
                } else {
                    self.readable(slot);
                }
            }
            if woken {
                let mut count = 0u64;
                // SAFETY: reads 8 bytes into a live u64; resets the eventfd.
                unsafe {
                    libc::read(
                        self.engine.wake.as_raw_fd(),
                        &mut count as *mut u64 as *mut libc::c_void,
                        8,
                    );
                }
                if !self.draining && drain.as_mut().poll(&mut cx).is_ready() {
                    // Every stream goes back to its task, whose loop spreads the closes over
                    // the drain window.
                    self.draining = true;
                    for slot in 0..self.s.lanes.len() {
                        if self.s.lanes[slot].is_some() {
                            self.s.hand_back(slot);
                        }
                    }
                }
                let new = self
                    .engine
                    .inbox
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .map(std::mem::take);
                for lane in new.into_iter().flatten() {
                    self.insert(lane);
                }
            }
            self.fire_timers();
        }
    }

    fn insert(&mut self, mut lane: Box<Lane>) {
        if self.draining || self.shared.drain.is_draining() {
            send_back(lane);
            return;
        }
        let slot = self.s.free.pop().unwrap_or_else(|| {
            self.s.lanes.push(None);
            self.s.lanes.len() - 1
        });
        lane.id = self.s.next_id;
        self.s.next_id += 1;
        let base = ((slot as u64) + 1) << 1;
        let ep = &self.s.ep;
        let registered = ctl(ep, libc::EPOLL_CTL_ADD, lane.ds.as_raw_fd(), base | DOWN)
            .and_then(|()| ctl(ep, libc::EPOLL_CTL_ADD, lane.up.as_raw_fd(), base | UP));
        self.s.lanes[slot] = Some(lane);
        if registered.is_err() {
            self.s.hand_back(slot);
            return;
        }
        self.s.schedule(&self.shared, slot, true);
        // Bytes read together with the response head.
        if self.s.lanes[slot]
            .as_ref()
            .is_some_and(|l| !l.dec.pending.is_empty())
        {
            self.relay(slot);
        }
    }

    /// The app's socket is readable: one read, then relay what it holds.
    fn readable(&mut self, slot: usize) {
        let Some(lane) = self.s.lanes[slot].as_mut() else {
            return;
        };
        match recv_copy(socket2::SockRef::from(&lane.up)) {
            // The end of the app's body or connection: the stream loop finishes the stream.
            Ok(data) if data.is_empty() => self.s.hand_back(slot),
            Ok(data) => {
                lane.dec.pending = data;
                self.relay(slot);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                lane.dec.failed = Some(super::h1::upstream_error(&e, "reading the body"));
                self.s.hand_back(slot);
            }
        }
    }

    /// Decodes the pending bytes and writes what the framer passes on.
    fn relay(&mut self, slot: usize) {
        let shared = &*self.shared;
        let Some(lane) = self.s.lanes[slot].as_mut() else {
            return;
        };
        let data = match lane.dec.decode() {
            Ok(Some(data)) if !data.is_empty() => data,
            Ok(_) => {
                if lane.dec.finished() {
                    self.s.hand_back(slot);
                }
                return;
            }
            Err(e) => {
                lane.dec.failed = Some(e);
                self.s.hand_back(slot);
                return;
            }
        };
        let p = &mut lane.progress;
        let read_at = p.read(shared);
        let fwd = p.framer.forward(data);
        let n = fwd.bytes.len() as u64;
        if n > 0 {
            if let Err(wire) = write_framed(&lane.ds, lane.chunked, &fwd.bytes) {
                p.unsent = Some(Unsent {
                    wire,
                    bytes: n,
                    events: fwd.events,
                    read_at,
                    heartbeat: false,
                });
                self.s.hand_back(slot);
                return;
            }
        }
        p.wrote(shared, n, fwd.events, read_at, false);
        if p.close_due(read_at).is_some() || lane.dec.finished() {
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
            let live = self.s.lanes[slot]
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
        let Some(lane) = self.s.lanes[slot].as_mut() else {
            return;
        };
        let p = &mut lane.progress;
        match p.due(shared, now) {
            Due::Nothing => {}
            Due::Heartbeat(now) => {
                let block = &shared.heartbeat_block;
                let n = block.len() as u64;
                if let Err(wire) = write_framed(&lane.ds, lane.chunked, block) {
                    p.unsent = Some(Unsent {
                        wire,
                        bytes: n,
                        events: 0,
                        read_at: now,
                        heartbeat: true,
                    });
                    self.s.hand_back(slot);
                    return;
                }
                p.wrote(shared, n, 0, now, true);
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

impl Slab {
    /// Keeps the stream's timer entry at or before its deadline. `fresh`: the stream has no
    /// live entry (new, or its entry just fired).
    fn schedule(&mut self, shared: &Shared, slot: usize, fresh: bool) {
        let Some(lane) = self.lanes[slot].as_mut() else {
            return;
        };
        let want = lane.progress.deadline(shared);
        if fresh || want < lane.timer_at {
            lane.timer_at = want;
            self.timers.push(Reverse((want, slot, lane.id)));
        }
    }

    /// Gives the stream back to its task (see the module docs).
    fn hand_back(&mut self, slot: usize) {
        let Some(lane) = self.lanes[slot].take() else {
            return;
        };
        self.free.push(slot);
        for fd in [lane.ds.as_raw_fd(), lane.up.as_raw_fd()] {
            let _ = ctl(&self.ep, libc::EPOLL_CTL_DEL, fd, 0);
        }
        send_back(lane);
    }
}

fn send_back(mut lane: Box<Lane>) {
    if let Some(reply) = lane.reply.take() {
        // A task that is gone (its runtime shut down) drops the stream and its sockets.
        let _ = reply.send(lane);
    }
}

/// Writes `data` framed for the client with one `sendmsg`. `Err` holds the bytes still to
/// write (all of them if the socket took none or failed): the task's loop finishes the write,
/// waiting for the socket, or finds the client gone.
fn write_framed(ds: &TcpStream, chunked: bool, data: &[u8]) -> Result<(), Bytes> {
    let head = ChunkHead::new(data.len());
    let mut parts = body_parts(&head, data, chunked);
    let sent = sendmsg(socket2::SockRef::from(ds), &parts.map(IoSlice::new)).unwrap_or(0);
    super::codec::advance(&mut parts, sent);
    if parts.iter().all(|p| p.is_empty()) {
        return Ok(());
    }
    Err(parts.concat().into())
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Level-triggered: a stream with bytes left unread is reported again on the next wait.
fn ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: `ev` outlives the call; the kernel ignores it for EPOLL_CTL_DEL.
    check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) }).map(drop)
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
        engine: Arc<Engine>,
        /// The app's end of the upstream connection.
        app: TcpStream,
        /// The client's end of the downstream connection.
        client: TcpStream,
        back: oneshot::Receiver<Box<Lane>>,
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
        let engine = Engine::start(0, shared.clone()).unwrap();
        let (app, up) = pair();
        let (ds, client) = pair();
        for s in [&up, &ds] {
            s.set_nonblocking(true).unwrap();
        }
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut dec = Decode::chunked();
        dec.pending = Bytes::copy_from_slice(pending);
        let progress = Progress::new(&shared, Instant::now(), false);
        let (lane, back) = Lane::new(ds, up, dec, true, progress);
        assert!(engine.submit(lane).is_ok());
        Rig {
            shared,
            engine,
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
    fn handed_back(back: &mut oneshot::Receiver<Box<Lane>>) -> Box<Lane> {
        for _ in 0..500 {
            if let Ok(lane) = back.try_recv() {
                return lane;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the loop did not hand the stream back within 5 s");
    }

    fn still_carried(back: &mut oneshot::Receiver<Box<Lane>>) -> bool {
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
        let lane = handed_back(&mut r.back);
        assert!(lane.dec.finished());
        assert_eq!(lane.progress.summary.events, 2);
        assert_eq!(lane.progress.summary.bytes, 8 + 1 + 9);
        assert!(lane.progress.unsent.is_none());
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
        let lane = handed_back(&mut r.back);
        assert_eq!(lane.progress.summary.heartbeats, 1);
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
        let mut lane = None;
        for _ in 0..400 {
            if let Ok(l) = r.back.try_recv() {
                lane = Some(l);
                break;
            }
            if let Ok(n) = r.app.write(&body[written..]) {
                written += n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut lane = lane.expect("the loop hands back a stream whose client stops reading");
        let unsent = lane.progress.unsent.take().expect("unsent bytes");
        assert!(!unsent.wire.is_empty() && unsent.bytes > 0);
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
        crate::proxy::codec::ChunkedDecoder::default()
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
        let lane = handed_back(&mut r.back);
        assert!(lane.dec.failed.is_none() && !lane.dec.finished());

        // The app closes mid-body: left for the task, which reads the end itself.
        let mut r = rig("", b"");
        drop(r.app);
        let lane = handed_back(&mut r.back);
        assert!(lane.dec.failed.is_none());

        // A malformed chunk: the error travels with the stream.
        let mut r = rig("", b"");
        r.app.write_all(b"zz\r\n").unwrap();
        let lane = handed_back(&mut r.back);
        assert!(lane.dec.failed.is_some());

        // SIGTERM: every stream goes back, and none is taken afterwards.
        let mut r = rig("", b"");
        std::thread::sleep(Duration::from_millis(50));
        assert!(still_carried(&mut r.back));
        r.shared.drain.start();
        let _ = handed_back(&mut r.back);
        let (ds, _client) = pair();
        let (up, _app) = pair();
        let progress = Progress::new(&r.shared, Instant::now(), false);
        let (lane, mut back) = Lane::new(ds, up, Decode::chunked(), true, progress);
        assert!(r.engine.submit(lane).is_ok());
        let _ = handed_back(&mut back);
    }

    #[test]
    fn idle_timeout_goes_back_to_the_task() {
        let mut r = rig("heartbeat_interval: 0s\nsse_idle_timeout: 300ms\n", b"");
        std::thread::sleep(Duration::from_millis(100));
        assert!(still_carried(&mut r.back));
        let started = Instant::now();
        let lane = handed_back(&mut r.back);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(Instant::now() >= lane.progress.last_read + Duration::from_millis(300));
    }
}
