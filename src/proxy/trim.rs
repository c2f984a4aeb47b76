//! Gives freed heap back to the OS once a burst of streams has ended. glibc keeps freed chunks
//! in its per-thread arenas, so without this RSS stays at the peak of the largest burst (the
//! figure is in the README's benchmark notes).

use super::drain::Drain;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How far the in-flight count must have fallen since the last tick before trimming pays:
/// a trim walks every arena.
const DROP_WORTH_TRIMMING: usize = 256;

pub(crate) struct TrimService {
    pub(crate) drain: Arc<Drain>,
}

#[async_trait]
impl BackgroundService for TrimService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = self.drain.in_flight_count();
            let peak = self.drain.take_high_water(now);
            if peak >= now + DROP_WORTH_TRIMMING {
                crate::sys::malloc_trim();
            }
        }
    }
}
