//! Graceful drain. On SIGTERM pingora stops the listeners and flips its `ShutdownWatch`;
//! [`DrainService`] turns that into our own signal that every stream watches, then exits the
//! process as soon as nothing is in flight instead of sitting out pingora's fixed grace period.

use crate::config::Shutdown;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tracing::info;

/// Shared drain state: the in-flight count and the "draining" signal.
pub(crate) struct Drain {
    in_flight: Arc<AtomicUsize>,
    /// Highest in-flight count since the trim service last looked: a burst that opens and
    /// closes between two of its ticks is still seen.
    high_water: AtomicUsize,
    draining: AtomicBool,
    /// When the drain started.
    started: std::sync::OnceLock<Instant>,
    /// Streams this process still relays into the shared resume store for other replicas.
    handoffs: Arc<AtomicUsize>,
    /// The tasks waiting for the drain, one slot per [`DrainSignal`] that has been polled.
    waiters: Mutex<Waiters>,
    pub(crate) config: Shutdown,
}

/// A slab of wakers: a stream registers once and keeps its slot until it ends.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a stream handed off to the shared resume store until dropped.
pub(crate) struct Handoff(Arc<AtomicUsize>);

impl Drop for Handoff {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drain {
    pub(crate) fn new(config: Shutdown) -> Drain {
        Drain {
            in_flight: Arc::new(AtomicUsize::new(0)),
            high_water: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            started: std::sync::OnceLock::new(),
            handoffs: Arc::new(AtomicUsize::new(0)),
            waiters: Mutex::default(),
            config,
        }
    }

    pub(crate) fn in_flight(&self) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.high_water.fetch_max(now, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A resumable stream with a shared store: on a drain, the process waits for it until
    /// [`Drain::handoff_deadline`].
    pub(crate) fn handoff(&self) -> Handoff {
        self.handoffs.fetch_add(1, Ordering::AcqRel);
        Handoff(self.handoffs.clone())
    }

    pub(crate) fn handoff_count(&self) -> usize {
        self.handoffs.load(Ordering::Acquire)
    }

    /// The drain's start plus `shutdown.handoff_timeout` (from now before the drain).
    pub(crate) fn handoff_deadline(&self) -> Instant {
        *self.started.get().unwrap_or(&Instant::now()) + self.config.handoff_timeout
    }

    /// The highest in-flight count since the last call, which restarts from `now`.
    pub(crate) fn take_high_water(&self, now: usize) -> usize {
        self.high_water.swap(now, Ordering::Relaxed)
    }

    /// A future that resolves once draining has started.
    pub(crate) fn signal(&self) -> DrainSignal<'_> {
        DrainSignal {
            drain: self,
            slot: None,
            waker: None,
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts draining and wakes every stream waiting for it.
    pub(crate) fn start(&self) {
        let _ = self.started.set(Instant::now());
        self.draining.store(true, Ordering::Release);
        let wakers: Vec<Waker> = {
            let mut w = self.lock_waiters();
            w.slots.iter_mut().filter_map(Option::take).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // The lock guards plain data with no invariant a panic could break.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When this stream should close, measured from the start of the drain: spread uniformly
    /// over the drain window so clients do not all reconnect in the same instant.
    pub(crate) fn close_offset(&self) -> Duration {
        self.config.drain_window.mul_f64(crate::random::unit())
    }

    /// The reconnect hint for a closing stream: the base plus up to 50 % jitter, in ms.
    pub(crate) fn retry_ms(&self, base: Duration) -> u64 {
        let base = base.as_millis() as f64;
        (base * (1.0 + 0.5 * crate::random::unit())) as u64
    }
}

/// Resolves when draining starts. Every stream polls one on every wake-up, so a poll that
/// finds nothing new costs one atomic load and a waker comparison: the shared lock is taken
/// only to register (once per stream, or when the task's waker changes) and to unregister.
/// (`tokio::sync::watch` takes its process-wide lock on every poll of `changed()`, which two
/// relay threads then pass back and forth on every event.)
pub(crate) struct DrainSignal<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
    /// The waker registered in `slot`.
    waker: Option<Waker>,
}

impl Future for DrainSignal<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let drain = self.drain;
        if drain.is_draining() {
            return Poll::Ready(());
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let mut waiters = drain.lock_waiters();
        // `start` sets the flag before it takes the lock: checked again under the lock, a
        // registration can never land after `start` has collected the wakers.
        if drain.is_draining() {
            return Poll::Ready(());
        }
        let slot = match self.slot.or_else(|| waiters.free.pop()) {
            Some(i) => i,
            None => {
                waiters.slots.push(None);
                waiters.slots.len() - 1
            }
        };
        let waker = cx.waker().clone();
        waiters.slots[slot] = Some(waker.clone());
        drop(waiters);
        self.slot = Some(slot);
        self.waker = Some(waker);
        Poll::Pending
    }
}

impl Drop for DrainSignal<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut waiters = self.drain.lock_waiters();
            waiters.slots[i] = None;
            waiters.free.push(i);
            // A burst of streams that ended leaves no long tail of empty slots behind.
            if waiters.free.len() == waiters.slots.len() {
                waiters.slots = Vec::new();
                waiters.free = Vec::new();
            }
        }
    }
}

/// Watches pingora's shutdown signal; starts the drain and exits once nothing is in flight.
pub(crate) struct DrainService {
    pub(crate) drain: Arc<Drain>,
    /// Called when draining starts (flips `/readyz`).
    pub(crate) on_drain: Box<dyn Fn() + Send + Sync>,
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !*shutdown.borrow() && shutdown.changed().await.is_err() {
            return;
        }
        let drain = &self.drain;
        let started = Instant::now();
        let window = drain.config.drain_window;
        info!(
            streams = drain.in_flight_count(),
            window_ms = window.as_millis() as u64,
            "draining: closing streams over the drain window"
        );
        (self.on_drain)();
        drain.start();
        // Streams finish their current event first, bounded by one more window; streams
        // handed off to the shared resume store run until their app ends them, bounded by
        // the hand-off timeout.
        let hard = started + window * 2 + Duration::from_secs(1);
        let handoff_hard = drain.handoff_deadline() + Duration::from_secs(2);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut logged = false;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let left = drain.in_flight_count();
            let handoffs = drain.handoff_count();
            let clients_done = left == 0 || now >= hard;
            if clients_done && (handoffs == 0 || now >= handoff_hard) {
                info!(
                    left,
                    handoffs,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "drain complete, exiting"
                );
                std::process::exit(0);
            }
            if clients_done && !logged {
                logged = true;
                info!(
                    handoffs,
                    "clients drained; relaying handed-off streams into the resume store"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain() -> Arc<Drain> {
        Arc::new(Drain::new(
            crate::config::Config::from_yaml("").unwrap().shutdown,
        ))
    }

    fn poll_once(signal: &mut Pin<&mut DrainSignal<'_>>, waker: &Waker) -> Poll<()> {
        signal.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn registers_once_per_stream_and_unregisters_on_drop() {
        let d = drain();
        let a = std::task::Waker::noop();
        {
            let mut s = std::pin::pin!(d.signal());
            for _ in 0..5 {
                assert!(poll_once(&mut s, a).is_pending());
            }
            let mut t = std::pin::pin!(d.signal());
            assert!(poll_once(&mut t, a).is_pending());
            assert_eq!(d.lock_waiters().slots.len(), 2);
        }
        let w = d.lock_waiters();
        assert!(w.slots.is_empty() && w.free.is_empty());
    }

    #[test]
    fn a_new_waker_replaces_the_old_one_in_place() {
        let d = drain();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        struct Ping(std::sync::mpsc::Sender<()>);
        impl std::task::Wake for Ping {
            fn wake(self: Arc<Self>) {
                let _ = self.0.send(());
            }
        }
        let ping = Waker::from(Arc::new(Ping(tx)));
        let mut s = std::pin::pin!(d.signal());
        assert!(poll_once(&mut s, std::task::Waker::noop()).is_pending());
        assert!(poll_once(&mut s, &ping).is_pending());
        assert_eq!(d.lock_waiters().slots.len(), 1);
        d.start();
        rx.try_recv().expect("start() wakes the latest waker");
        assert!(poll_once(&mut s, &ping).is_ready());
    }

    #[test]
    fn after_start_every_signal_is_ready() {
        let d = drain();
        d.start();
        let mut s = std::pin::pin!(d.signal());
        assert!(poll_once(&mut s, std::task::Waker::noop()).is_ready());
        assert!(d.lock_waiters().slots.is_empty());
    }

    /// The interleaving that loses a wake-up unless the flag is checked again under the lock:
    /// a first poll finds the flag clear, `start` sets it and collects the (still empty) waiter
    /// list, then the poll registers. The poll must see the drain instead of waiting for a
    /// wake-up that already happened.
    #[test]
    fn a_poll_between_flag_and_lock_sees_the_drain() {
        let d = drain();
        let held = d.lock_waiters();
        let poller = {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut s = std::pin::pin!(d.signal());
                // Finds the flag clear, then blocks on the lock the test holds.
                poll_once(&mut s, std::task::Waker::noop()).is_ready()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // `start`, with the lock the test already holds: flag first, then the waiters.
        d.draining.store(true, Ordering::Release);
        assert!(held.slots.is_empty());
        drop(held);
        assert!(poller.join().unwrap(), "a wake-up was lost");
    }

    /// `start` racing with first polls on other threads: no task is left waiting.
    #[test]
    fn start_racing_with_registration_wakes_everyone() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..200 {
                let d = drain();
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let d = d.clone();
                        tokio::spawn(async move { d.signal().await })
                    })
                    .collect();
                if round % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                d.start();
                for t in tasks {
                    tokio::time::timeout(Duration::from_secs(5), t)
                        .await
                        .expect("a waiting stream missed the drain")
                        .unwrap();
                }
            }
        });
    }
}
