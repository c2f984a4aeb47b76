//! What a resumable stream's producer reads ([`Source`]) and what it puts in the log
//! ([`Framed`]): the app's body on the replica holding the app's connection, or the shared
//! store on a replica following another's stream.

use crate::proxy::upstream_error::UpstreamError;
use crate::sse::EventEnds;
use bytes::Bytes;
use std::future::Future;

/// Bytes for a stream's log and the events they complete: (seq, offset just past the event).
pub(crate) struct Framed {
    pub bytes: Bytes,
    pub ends: EventEnds,
}

/// How a stream's producer stopped, for its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// Its end reached a client.
    Delivered,
    /// Its client closed it on purpose.
    Cancelled,
    /// Nobody resumed it within the grace, or the budget needed its room.
    GivenUp,
    /// The app's end is stored; this process is draining and leaves it to other replicas.
    HandedOff,
}

/// What a producer reads into a stream's log.
pub(crate) trait Source: Send {
    /// The next bytes, `None` at a clean end. Cancel-safe.
    fn next(&mut self) -> impl Future<Output = Result<Option<Framed>, UpstreamError>> + Send;

    /// The stream has been parked for its grace: whether a client on another replica still
    /// follows it (the grace then starts again).
    fn followed_elsewhere(&mut self) -> impl Future<Output = bool> + Send {
        std::future::ready(false)
    }

    /// Whether this process, draining, keeps reading the source into the shared store until
    /// it ends (`shutdown.handoff_timeout`).
    fn hands_off(&self) -> bool {
        false
    }

    /// The stream is over here; once, before the producer stops.
    fn over(&mut self, how: Over) -> impl Future<Output = ()> + Send {
        let _ = how;
        std::future::ready(())
    }
}
