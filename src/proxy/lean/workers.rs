//! Thread-per-core runtimes for the lean relay, the way nginx runs one event loop per worker.
//!
//! pingora's service runtime is work-stealing: the thread that sees a socket become ready
//! often wakes another to run the task, and every such hop costs a futex wake and a context
//! switch. An SSE event is tiny, so that hop was most of its cost (the measurements are in the
//! README's benchmark section). Here each worker thread runs its own single-threaded runtime
//! with its own epoll; a stream's sockets, timer and task all live on one thread. Each worker
//! has a partner event-loop thread: once a stream's head is written, that loop carries it
//! (see [`super::event_loop`]); the worker's runtime sets streams up and finishes them.
//!
//! Placement: a new stream goes to the worker with the fewest open streams, ties broken at
//! random. Plain round robin follows arrival order, and arrival order correlates with when a
//! stream's events come: clients that connect at a steady pace to an app that emits on a
//! fixed period land with the same phase every k-th connection, and round robin then puts
//! every stream of a phase on one worker, so each burst queues on one core while the other
//! idles.

use super::event_loop::Mailbox;
use crate::proxy::shared::Shared;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

pub(crate) struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `n` worker threads, each running a current-thread runtime until the process exits.
    pub(crate) fn start(n: usize, shared: Arc<Shared>) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let mailbox = Mailbox::start(i, shared.clone())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                open: Arc::new(AtomicUsize::new(0)),
            });
            std::thread::Builder::new()
                .name(format!("sse-relay-{i}"))
                .spawn(move || {
                    Mailbox::set_current(mailbox);
                    runtime.block_on(std::future::pending::<()>())
                })?;
        }
        Ok(Workers { workers })
    }

    /// Runs the future `task` makes on the least loaded worker (see the module docs). `task`
    /// gets the stream's [`Open`] count and must hold it for as long as the stream lives.
    ///
    /// The guard is handed in rather than wrapped around the future: an `async` wrapper that
    /// awaits a captured future stores it twice (the capture and the awaited copy), and the
    /// task lives as long as its stream.
    pub(crate) fn spawn<F, T>(&self, task: T)
    where
        F: Future<Output = ()> + Send + 'static,
        T: FnOnce(Open) -> F,
    {
        let i = pick(self.workers.iter().map(|w| w.open.load(Ordering::Relaxed)));
        let worker = &self.workers[i];
        worker.handle.spawn(task(Open::new(worker.open.clone())));
    }
}

/// Counts one stream on its worker for as long as the stream's task holds it.
pub(crate) struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::Relaxed);
        Open(count)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Index of the smallest count; among equal counts, a random one.
fn pick(counts: impl ExactSizeIterator<Item = usize>) -> usize {
    let n = counts.len();
    if n <= 1 {
        return 0;
    }
    let start = ((crate::random::unit() * n as f64) as usize).min(n - 1);
    // Least count first, then least distance from `start` around the ring: a random tie.
    let (_, rank) = counts
        .enumerate()
        .map(|(i, c)| (c, (i + n - start) % n))
        .min()
        .unwrap_or((0, 0));
    (rank + start) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places `n` streams that never close on `workers` workers; returns each one's worker.
    fn place(workers: usize, n: usize) -> Vec<usize> {
        let mut counts = vec![0usize; workers];
        (0..n)
            .map(|_| {
                let i = pick(counts.iter().copied());
                counts[i] += 1;
                i
            })
            .collect()
    }

    #[test]
    fn stays_balanced() {
        for workers in 1..=5 {
            let placed = place(workers, 1000);
            let mut counts = vec![0; workers];
            for i in placed {
                counts[i] += 1;
            }
            let (min, max) = (counts.iter().min(), counts.iter().max());
            assert!(
                max.unwrap() - min.unwrap() <= 1,
                "{workers} workers: {counts:?}"
            );
        }
    }

    #[test]
    fn prefers_the_least_loaded() {
        for _ in 0..100 {
            assert_eq!(pick([5, 2, 7].into_iter()), 1);
            assert_eq!(pick([3, 3, 0, 3].into_iter()), 2);
        }
    }

    /// Every k-th stream (the streams that share a phase when clients connect at a steady
    /// pace) must spread over the workers, not land on one as with round robin.
    #[test]
    fn every_kth_stream_spreads() {
        let placed = place(2, 1000);
        for k in [2, 4, 20] {
            for phase in 0..k {
                let on_0 = placed
                    .iter()
                    .skip(phase)
                    .step_by(k)
                    .filter(|&&w| w == 0)
                    .count();
                let total = placed.iter().skip(phase).step_by(k).count();
                // Binomial(total, 1/2): within 6 standard deviations (3 * sqrt(total)) of
                // total / 2. A fixed 30-70 % band was only 2.8 of them for k = 20 (50
                // streams), and failed about one run in ten. Round robin puts a whole phase
                // on one worker, far outside either.
                let dev = 3.0 * (total as f64).sqrt();
                let mid = total as f64 / 2.0;
                assert!(dev < mid, "too few streams per phase to tell");
                assert!(
                    (on_0 as f64 - mid).abs() <= dev,
                    "k={k} phase={phase}: {on_0}/{total} on worker 0"
                );
            }
        }
    }

    #[test]
    fn ties_go_everywhere() {
        let mut hits = [0; 4];
        for _ in 0..4000 {
            hits[pick([1, 1, 1, 1].into_iter())] += 1;
        }
        assert!(hits.iter().all(|&h| (800..=1200).contains(&h)), "{hits:?}");
    }
}
