//! Thread-per-core runtimes for the lean relay, the way nginx runs one event loop per worker.
//!
//! pingora's service runtime is work-stealing: the thread that sees a socket become ready
//! often wakes another to run the task, and every such hop costs a futex wake and a context
//! switch. An SSE event is tiny, so that hop was most of its cost (measured, 1,000 streams ×
//! 10 events/s: 21.7 µs of CPU per event with pingora's 2-thread runtime, 15.9 µs on one
//! thread; nginx 17.2 µs). Here each worker thread runs its own single-threaded runtime with
//! its own epoll; a stream's sockets, timer and task all live on one thread.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` worker threads, each running a current-thread runtime until the process exits.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("sse-relay-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `future` on the next worker, round robin (new connections spread like accepts do
    /// across nginx workers).
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(future);
    }
}
