//! Process-wide state every request reads: the validated configuration, metrics, the relays'
//! connection to the app, the blocks the relay injects, the learned SSE routes, and the drain
//! and stream-limit state.

use super::drain::Drain;
use super::learned_routes::LearnedRoutes;
use super::resume::redis::Redis;
use super::resume::store::Store;
use crate::config::Config;
use crate::metrics::Metrics;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    /// The session relay's own connection pool to the app (the normal path has pingora's).
    pub(crate) connector: Connector,
    pub(crate) peer: HttpPeer,
    /// The upstream address, for logs and the lean relay.
    pub(crate) upstream_addr: SocketAddr,
    pub(crate) open_block: Option<Bytes>,
    pub(crate) heartbeat_block: Bytes,
    pub(crate) drain: Arc<Drain>,
    /// Resumable streams; `None` when `resume.paths` is empty.
    pub(crate) resume: Option<Arc<Store>>,
    /// The shared resume store (`resume.store: redis://…`), with resumable streams only.
    pub(crate) redis: Option<Arc<Redis>>,
    /// Routes found to answer with event streams (`sse.learn`).
    pub(crate) learned: LearnedRoutes,
    /// Probe streams open now, for `probe.max_streams`.
    probes: AtomicUsize,
    /// SSE candidates being relayed now, for `limits.max_streams`.
    relayed: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(config: Config, metrics: Arc<Metrics>, upstream_addr: SocketAddr) -> Shared {
        let mut peer = HttpPeer::new(
            upstream_addr,
            config.upstream.tls,
            config.upstream.host.clone(),
        );
        peer.options.connection_timeout = Some(config.timeouts.connect);
        peer.options.read_timeout = Some(config.timeouts.read);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        let sse = &config.sse;
        let open_block = crate::sse::open_block(
            sse.open_comment.as_deref(),
            sse.initial_padding,
            sse.retry.map(|d| d.as_millis() as u64),
        );
        let heartbeat_block = crate::sse::comment_block(&sse.heartbeat_comment);
        Shared {
            connector: Connector::new(None),
            peer,
            upstream_addr,
            open_block,
            heartbeat_block,
            drain: Arc::new(Drain::new(config.shutdown)),
            resume: (!config.resume.paths.is_empty())
                .then(|| Arc::new(Store::new(config.resume.clone(), metrics.clone()))),
            redis: match &config.resume.redis {
                Some(r) if !config.resume.paths.is_empty() => {
                    Some(Redis::new(r.clone(), &config.resume, metrics.clone()))
                }
                _ => None,
            },
            learned: LearnedRoutes::new(),
            probes: AtomicUsize::new(0),
            relayed: AtomicUsize::new(0),
            metrics,
            config,
        }
    }
}

/// Holds one of the `limits.max_streams` slots while a candidate is relayed, or one of the
/// `probe.max_streams` slots while a probe streams.
pub(crate) struct StreamSlot<'a>(&'a AtomicUsize);

impl<'a> StreamSlot<'a> {
    /// A `limits.max_streams` slot, or `None` when every one is taken.
    pub(crate) fn take(shared: &'a Shared) -> Option<StreamSlot<'a>> {
        StreamSlot::of(&shared.relayed, shared.config.limits.max_streams)
    }

    /// A `probe.max_streams` slot, or `None` when every one is taken.
    pub(crate) fn probe(shared: &'a Shared) -> Option<StreamSlot<'a>> {
        StreamSlot::of(&shared.probes, shared.config.probe.max_streams)
    }

    fn of(open: &'a AtomicUsize, max: usize) -> Option<StreamSlot<'a>> {
        let prev = open.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(open);
        (prev < max).then_some(slot)
    }
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let open = AtomicUsize::new(0);
        let a = StreamSlot::of(&open, 2);
        let b = StreamSlot::of(&open, 2);
        assert!(a.is_some() && b.is_some());
        assert!(StreamSlot::of(&open, 2).is_none());
        drop(a);
        assert!(StreamSlot::of(&open, 2).is_some());
        drop(b);
        assert_eq!(open.load(Ordering::Acquire), 0);
    }
}
