//! The soak's clients: one task per slot, each holding one SSE stream at a time and opening
//! the next when it ends, as an EventSource does; the churn task that makes clients leave and
//! arrive; and the check of every stream's bytes and end.
//!
//! Slot `i` is a slow reader when `i % 100 == 99`, else an h2c stream when `i % 4 == 1`
//! (ten to a connection), else HTTP/1.1; slots with `i % 10 < 3` ask for a resumable path
//! and reconnect with `Last-Event-ID`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::common::client::{self, End, Response};
use crate::common::h2c::{H2Conn, H2Response};
use crate::common::rng::XorShift;
use crate::common::sse::{Item, ResumeId, SseStream, Timed};
use crate::tally::{Outcome, Tally};

/// No byte at all for this long on a stream that heartbeats every second is a stall.
const STALL: Duration = Duration::from_secs(15);
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
pub const H2_PER_CONN: usize = 10;

/// The driver's switches, read by every client.
#[derive(Default)]
pub struct Control {
    /// Checkpoint: no churn, no new stream, slow readers read at full speed.
    pub frozen: AtomicBool,
    /// The end: every client leaves and its task returns.
    pub stop: AtomicBool,
    pub stopped: Notify,
}

impl Control {
    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// One h2c connection shared by ten slots; made again when it is gone.
#[derive(Default)]
pub struct Group {
    conn: tokio::sync::Mutex<Option<Arc<H2Conn>>>,
}

impl Group {
    async fn get(&self, addr: SocketAddr) -> Result<Arc<H2Conn>, String> {
        let mut c = self.conn.lock().await;
        if let Some(conn) = c.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(H2Conn::try_connect(addr, true).await?);
        *c = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection if it is still `conn` (the next request makes a new one).
    async fn forget(&self, conn: &Arc<H2Conn>) {
        let mut c = self.conn.lock().await;
        if c.as_ref().is_some_and(|x| Arc::ptr_eq(x, conn)) {
            *c = None;
        }
    }

    /// Resets the TCP connection (RST); its streams end.
    pub async fn kill(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            c.kill();
        }
    }

    /// Whether a live connection is held (for the fd count).
    pub async fn is_open(&self) -> bool {
        self.conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| !c.is_closed())
    }
}

/// What the churn asks a slot to do.
pub const LEAVE_FIN: u8 = 1;
pub const LEAVE_RST: u8 = 2;
pub const LEAVE_H2_RESET: u8 = 3;
pub const LEAVE_H2_CONN: u8 = 4;

pub struct Slot {
    pub id: usize,
    pub slow: bool,
    pub h2: Option<usize>,
    pub resumable: bool,
    /// Set with a `LEAVE_*` before `wake` is notified.
    pub leave: AtomicU8,
    pub wake: Notify,
    /// A stream is open (the churn only picks these).
    pub holding: AtomicBool,
}

impl Slot {
    pub fn new(id: usize, h2_index: &mut usize) -> Slot {
        let slow = id % 100 == 99;
        let h2 = (!slow && id % 4 == 1).then(|| {
            *h2_index += 1;
            (*h2_index - 1) / H2_PER_CONN
        });
        Slot {
            id,
            slow,
            h2,
            resumable: !slow && id % 10 < 3,
            leave: AtomicU8::new(0),
            wake: Notify::new(),
            holding: AtomicBool::new(false),
        }
    }
}

/// Everything a client task needs.
pub struct Env {
    pub addr: SocketAddr,
    pub seed: u64,
    pub control: Control,
    pub tally: Tally,
    pub slots: Vec<Slot>,
    pub groups: Vec<Group>,
}

/// Where a resumable client is: the request and the id of the last event it read (a resume
/// must ask for the same path and query).
#[derive(Default)]
struct Resume {
    ask: Option<Ask>,
    last_id: Option<String>,
    token: Option<String>,
    seq: u64,
}

// One per client task, made once per stream: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Stream {
    H1(SseStream),
    H2(H2Response, Arc<H2Conn>),
}

impl Stream {
    async fn next(&mut self, t: Duration) -> Option<Timed> {
        match self {
            Stream::H1(s) => s.next(t).await,
            Stream::H2(r, _) => r.next_item(t).await,
        }
    }

    /// `Some(true)`: a clean end; `Some(false)`: cut; `None`: still open (a timeout).
    fn clean_end(&self) -> Option<bool> {
        match self {
            Stream::H1(s) => s.ended().map(End::is_clean),
            Stream::H2(r, _) => r.ended.then_some(r.error.is_none()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Stream::H1(s) => &s.bytes,
            Stream::H2(r, _) => &r.body,
        }
    }
}

/// One stream's request: its target and how many events the app was asked for.
#[derive(Clone)]
struct Ask {
    target: String,
    events: u64,
}

fn ask(slot: &Slot, rng: &mut XorShift, tally: &Tally) -> Ask {
    if slot.slow {
        // 16 KiB events every 20 ms: more than a slow reader takes, so backpressure builds,
        // and a stalled reader fills the socket buffers in seconds.
        let events = 200;
        let target = format!("/sse/slow?events={events}&interval_ms=20&pad=16000");
        return Ask { target, events };
    }
    let events = rng.range(3, 30);
    let interval = rng.range(300, 2500);
    let end = match rng.range(0, 99) {
        0..=7 => "cut",
        8..=14 => "reset",
        _ => "done",
    };
    if end != "done" {
        tally.app_resets_asked.fetch_add(1, Ordering::Relaxed);
    }
    let path = if slot.resumable { "/sse/r" } else { "/sse/s" };
    let target = format!(
        "{path}?events={events}&interval_ms={interval}&end={end}&slot={}",
        slot.id
    );
    Ask { target, events }
}

async fn open(
    env: &Env,
    slot: &Slot,
    target: &str,
    last_id: Option<&str>,
) -> Result<Stream, String> {
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(id) = last_id {
        headers.push(("Last-Event-ID", id));
    }
    if let Some(g) = slot.h2 {
        let group = &env.groups[g];
        let conn = group.get(env.addr).await?;
        return match conn.try_request("GET", target, &headers, None).await {
            Ok(r) if r.status() == 200 => Ok(Stream::H2(r, conn)),
            Ok(r) => Err(format!("h2 status {}", r.status())),
            Err(e) => {
                // A connection the sidecar is draining (GOAWAY) or that churn reset: make a
                // new one and try again, as a browser would.
                group.forget(&conn).await;
                env.tally.h2_retries.fetch_add(1, Ordering::Relaxed);
                Err(format!("h2 retry: {e}"))
            }
        };
    }
    let mut conn = if slot.slow {
        // A small receive buffer, so that a stalled reader fills it in seconds.
        let s = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        s.set_recv_buffer_size(16 * 1024)
            .map_err(|e| e.to_string())?;
        client::Conn::from_stream(s.connect(env.addr).await.map_err(|e| e.to_string())?)
    } else {
        client::Conn::try_connect(env.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?
    };
    conn.try_send(&client::request("GET", target, &headers, None))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let resp = Response::read(conn, "GET", OPEN_TIMEOUT).await?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    Ok(Stream::H1(SseStream::new(resp)))
}

/// One client slot until the run stops.
pub async fn run_slot(env: Arc<Env>, i: usize) {
    let slot = &env.slots[i];
    let mut rng = XorShift::new(env.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut resume = Resume::default();
    // Spread the first wave over two seconds.
    let mut delay = Duration::from_millis(rng.range(0, 2000));
    let mut refusals = 0u32;
    loop {
        if !pause(&env.control, delay).await {
            return;
        }
        let last_id = resume.last_id.clone().filter(|_| slot.resumable);
        let a = match (&last_id, &resume.ask) {
            (Some(_), Some(a)) => a.clone(),
            _ => ask(slot, &mut rng, &env.tally),
        };
        if slot.resumable {
            resume.ask = Some(a.clone());
        }
        let opened = tokio::time::timeout(
            OPEN_TIMEOUT,
            open(&env, slot, &a.target, last_id.as_deref()),
        )
        .await;
        let stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.starts_with("h2 retry") && refusals < 20 => {
                refusals += 1;
                delay = Duration::from_millis(rng.range(50, 300));
                continue;
            }
            Ok(Err(e)) => {
                env.tally
                    .violation(format!("slot {i}: opening {} failed: {e}", a.target));
                delay = Duration::from_secs(1);
                continue;
            }
            Err(_) => {
                env.tally.violation(format!(
                    "slot {i}: no answer to {} within {OPEN_TIMEOUT:?}",
                    a.target
                ));
                delay = Duration::from_secs(1);
                continue;
            }
        };
        refusals = 0;
        let h2 = matches!(stream, Stream::H2(..));
        let (opened_n, held) = if h2 {
            (&env.tally.opened_h2, &env.tally.held_h2)
        } else {
            (&env.tally.opened_h1, &env.tally.held_h1)
        };
        opened_n.fetch_add(1, Ordering::Relaxed);
        held.fetch_add(1, Ordering::SeqCst);
        slot.holding.store(true, Ordering::SeqCst);
        let outcome = read(
            &env,
            slot,
            stream,
            &a,
            last_id.is_some(),
            &mut resume,
            &mut rng,
        )
        .await;
        slot.holding.store(false, Ordering::SeqCst);
        held.fetch_sub(1, Ordering::SeqCst);
        env.tally.ended(outcome);
        let arriving = matches!(
            outcome,
            Outcome::LeftFin | Outcome::LeftRst | Outcome::LeftH2Reset | Outcome::LeftH2Conn
        );
        if arriving && rng.percent(50) {
            // A new client arrives in the place of the one that left, knowing no id.
            resume = Resume::default();
        }
        if outcome == Outcome::Open {
            return;
        }
        delay = Duration::from_millis(if arriving {
            rng.range(0, 500)
        } else {
            rng.range(200, 1000)
        });
    }
}

/// Sleeps `d`, then waits out a checkpoint; false when the run is stopping.
async fn pause(control: &Control, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = control.stopped.notified() => return false,
    }
    // Bounded: a checkpoint lasts at most a minute.
    for _ in 0..1200 {
        if control.stopping() {
            return false;
        }
        if !control.frozen() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !control.stopping()
}

/// Reads one stream to its end, checking every event; returns how it ended.
#[allow(clippy::too_many_arguments)]
async fn read(
    env: &Env,
    slot: &Slot,
    mut stream: Stream,
    a: &Ask,
    resuming: bool,
    resume: &mut Resume,
    rng: &mut XorShift,
) -> Outcome {
    let tally = &env.tally;
    let mut first_event = true;
    let mut expect = 1u64;
    let mut last_seq = 0u64;
    let (mut app_down, mut retry) = (false, false);
    // A slow reader takes an item every 100 ms, and one stream in two stops reading for 20 s
    // at its 30th item, long enough to fill the buffers and pass the 5 s write timeout.
    let stall_at = (slot.slow && rng.percent(50)).then_some(30u32);
    let mut items = 0u32;
    loop {
        if env.control.stopping() {
            return Outcome::Open;
        }
        let woken = tokio::select! {
            biased;
            _ = slot.wake.notified() => None,
            it = stream.next(STALL) => Some(it),
        };
        let item = match woken {
            Some(it) => it,
            None => match slot.leave.swap(0, Ordering::SeqCst) {
                0 => continue,
                how => return leave(stream, how),
            },
        };
        let Some(Timed { item, .. }) = item else {
            break;
        };
        items += 1;
        match item {
            Item::Event(e) => {
                tally.events.fetch_add(1, Ordering::Relaxed);
                let seq = e.seq().unwrap_or(0);
                if slot.resumable {
                    match ResumeId::parse(&e.id) {
                        Some(id) => {
                            if first_event && resuming {
                                if resume.token.as_deref() == Some(id.token.as_str()) {
                                    tally.resumed.fetch_add(1, Ordering::Relaxed);
                                    expect = resume.seq + 1;
                                } else {
                                    tally.resumed_fresh.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            resume.token = Some(id.token);
                            resume.last_id = Some(e.id.clone());
                            resume.seq = seq;
                        }
                        None => tally.violation(format!(
                            "slot {}: event {seq} on a resumable path has id {:?}",
                            slot.id, e.id
                        )),
                    }
                }
                if seq != expect {
                    tally.violation(format!(
                        "slot {}: event seq {seq}, expected {expect} ({}, resuming: {resuming})",
                        slot.id, a.target
                    ));
                }
                first_event = false;
                expect = seq + 1;
                last_seq = seq;
            }
            Item::Comment(c) if c.contains("upstream error") => app_down = true,
            Item::Comment(c) if c.trim() != "ok" => {
                tally.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Item::Retry(_) => retry = true,
            Item::Comment(_) => {}
        }
        if slot.slow && !env.control.frozen() {
            let pause = if stall_at == Some(items) {
                tally.slow_stalls.fetch_add(1, Ordering::Relaxed);
                200
            } else {
                1
            };
            // In steps of 100 ms: a checkpoint makes the reader read at full speed.
            for _ in 0..pause {
                if env.control.frozen() || env.control.stopping() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    match stream.clean_end() {
        None => {
            tally.violation(format!(
                "slot {}: no byte for {STALL:?} on {} (heartbeats every 1 s)",
                slot.id, a.target
            ));
            leave(stream, LEAVE_RST)
        }
        Some(true) if last_seq == a.events && !app_down => Outcome::Complete,
        Some(true) if app_down => Outcome::AppDown,
        Some(true) if retry => Outcome::Drained,
        Some(true) => {
            tally.violation(format!(
                "slot {}: clean end after event {last_seq} of {} with no retry hint ({})",
                slot.id, a.events, a.target
            ));
            Outcome::Drained
        }
        Some(false) if slot.slow => Outcome::SlowCut,
        Some(false) => {
            let b = stream.bytes();
            if !(b.is_empty() || b.ends_with(b"\n\n")) {
                let tail = &b[b.len().saturating_sub(80)..];
                tally.violation(format!(
                    "slot {}: cut mid-event on {}: ...{}",
                    slot.id,
                    a.target,
                    crate::common::show(tail)
                ));
            }
            Outcome::CutAtBoundary
        }
    }
}

/// Leaves the stream the way the churn asked.
fn leave(stream: Stream, how: u8) -> Outcome {
    match (stream, how) {
        (Stream::H1(s), LEAVE_FIN) => {
            s.resp.conn.close_fin();
            Outcome::LeftFin
        }
        (Stream::H1(s), _) => {
            s.resp.conn.close_rst();
            Outcome::LeftRst
        }
        (Stream::H2(mut r, _), LEAVE_H2_RESET) => {
            r.reset();
            Outcome::LeftH2Reset
        }
        (Stream::H2(_, conn), _) => {
            conn.kill();
            Outcome::LeftH2Conn
        }
    }
}

/// Once a second, 10 % of the clients holding a stream leave (a new one arrives in each
/// place); h2 clients reset their stream, or, one connection in twenty picks, the connection.
pub async fn churn(env: Arc<Env>, percent: u64) {
    let mut rng = XorShift::new(env.seed);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !env.control.stopping() {
        tick.tick().await;
        if env.control.frozen() {
            continue;
        }
        let n = env.slots.len() as u64 * percent / 100;
        for _ in 0..n {
            let s = &env.slots[rng.range(0, env.slots.len() as u64 - 1) as usize];
            if s.slow || !s.holding.load(Ordering::SeqCst) {
                continue;
            }
            let how = match s.h2 {
                Some(g) if rng.percent(5) => {
                    // Every slot on the connection leaves with it.
                    for o in env.slots.iter().filter(|o| o.h2 == Some(g)) {
                        o.leave.store(LEAVE_H2_CONN, Ordering::SeqCst);
                        o.wake.notify_one();
                    }
                    env.groups[g].kill().await;
                    continue;
                }
                Some(_) => LEAVE_H2_RESET,
                None if rng.percent(50) => LEAVE_FIN,
                None => LEAVE_RST,
            };
            s.leave.store(how, Ordering::SeqCst);
            s.wake.notify_one();
        }
    }
}
