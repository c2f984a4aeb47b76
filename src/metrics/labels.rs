//! The label values of the labelled metrics: one small enum per label, each with `ALL` (the
//! order of its series array in [`Metrics`](super::Metrics)) and `as_str()` (the value
//! exported).

/// Why a stream ended: the `outcome` label of `sse_sidecar_streams_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// The app ended the response normally.
    Completed = 0,
    /// The client went away first.
    ClientClosed = 1,
    /// The upstream connection failed or broke mid-stream.
    UpstreamError = 2,
    /// The app was silent for longer than `sse_idle_timeout`.
    IdleTimeout = 3,
    /// Closed by the sidecar while draining for shutdown.
    Shutdown = 4,
    /// Cut at `limits.max_stream_duration`.
    MaxDuration = 5,
    /// The client did not take bytes within `sse.write_timeout`.
    SlowConsumer = 6,
    /// A resumable stream whose client left was given up: nobody resumed it within
    /// `resume.grace`, or the resume buffers needed its room. Counted in addition to the
    /// outcome of the client's own connection.
    ParkedExpired = 7,
}

impl Outcome {
    /// Every outcome, in label-array order.
    pub(crate) const ALL: [Outcome; 8] = [
        Outcome::Completed,
        Outcome::ClientClosed,
        Outcome::UpstreamError,
        Outcome::IdleTimeout,
        Outcome::Shutdown,
        Outcome::MaxDuration,
        Outcome::SlowConsumer,
        Outcome::ParkedExpired,
    ];

    /// The label value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientClosed => "client_closed",
            Outcome::UpstreamError => "upstream_error",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::MaxDuration => "max_duration",
            Outcome::SlowConsumer => "slow_consumer",
            Outcome::ParkedExpired => "parked_expired",
        }
    }
}

/// What kind of request was answered: the `kind` label of `sse_sidecar_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Answered with a `text/event-stream` response that a relay carried.
    Sse = 0,
    /// Anything else.
    Other = 1,
    /// An event stream met on pingora's normal path: the request was not an SSE candidate, so
    /// the stream went through unprepared (the app saw `Accept-Encoding`, no heartbeats). With
    /// `sse.learn` on, the first request of a route.
    SseUnlearned = 2,
}

impl Kind {
    /// Every kind, in label-array order.
    pub(crate) const ALL: [Kind; 3] = [Kind::Sse, Kind::Other, Kind::SseUnlearned];

    /// The label value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Other => "other",
            Kind::SseUnlearned => "sse_unlearned",
        }
    }
}

/// Status classes, the `code` label of `sse_sidecar_requests_total`.
pub(super) const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why talking to the upstream failed: the `reason` label of
/// `sse_sidecar_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamErrorReason {
    /// TCP (or TLS) connection could not be established.
    Connect = 0,
    /// A connect, read or write timeout fired.
    Timeout = 1,
    /// The connection was reset or closed unexpectedly.
    Reset = 2,
    /// The app sent something that is not valid HTTP.
    Protocol = 3,
}

impl UpstreamErrorReason {
    /// Every reason, in label-array order.
    pub(crate) const ALL: [UpstreamErrorReason; 4] = [
        UpstreamErrorReason::Connect,
        UpstreamErrorReason::Timeout,
        UpstreamErrorReason::Reset,
        UpstreamErrorReason::Protocol,
    ];

    /// The label value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorReason::Connect => "connect",
            UpstreamErrorReason::Timeout => "timeout",
            UpstreamErrorReason::Reset => "reset",
            UpstreamErrorReason::Protocol => "protocol",
        }
    }
}

/// Why the sidecar closed a client's h2 connection for abusing the protocol: the `reason`
/// label of `sse_sidecar_h2_abuse_total`. h2's own limits (CONTINUATION, HPACK, resets
/// before an answer) close connections inside the `h2` crate, unseen, and are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum H2Abuse {
    RstStreamFlood = 0,
    PingFlood = 1,
    SettingsFlood = 2,
    WindowUpdateFlood = 3,
    EmptyDataFlood = 4,
    /// Past the malformed requests a connection may send.
    MalformedRequests = 5,
}

impl H2Abuse {
    pub(crate) const ALL: [H2Abuse; 6] = [
        H2Abuse::RstStreamFlood,
        H2Abuse::PingFlood,
        H2Abuse::SettingsFlood,
        H2Abuse::WindowUpdateFlood,
        H2Abuse::EmptyDataFlood,
        H2Abuse::MalformedRequests,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            H2Abuse::RstStreamFlood => "rst_stream_flood",
            H2Abuse::PingFlood => "ping_flood",
            H2Abuse::SettingsFlood => "settings_flood",
            H2Abuse::WindowUpdateFlood => "window_update_flood",
            H2Abuse::EmptyDataFlood => "empty_data_flood",
            H2Abuse::MalformedRequests => "malformed_requests",
        }
    }
}

/// How a resume attempt went: the `result` label of `sse_sidecar_resumes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResumeResult {
    /// The stream was found and the events after the id replayed (takeovers included).
    Resumed = 0,
    /// No such stream: expired, overflowed past the id, ended, or never existed.
    Unknown = 1,
    /// The stream exists, but the credentials, path or query differ.
    Denied = 2,
}

impl ResumeResult {
    pub(crate) const ALL: [ResumeResult; 3] = [
        ResumeResult::Resumed,
        ResumeResult::Unknown,
        ResumeResult::Denied,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ResumeResult::Resumed => "resumed",
            ResumeResult::Unknown => "unknown",
            ResumeResult::Denied => "denied",
        }
    }
}
