//! A failure talking to the app, classified once where it arises — from a pingora error on
//! the session paths, from a socket error on the lean relay — into one type that says what
//! the metric label, the status to answer and the log line are.

use crate::metrics::UpstreamErrorReason;
use std::io;

/// What went wrong, in the words the access log and the error answers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    #[error("upstream connect timed out")]
    ConnectTimeout,
    #[error("upstream did not answer within the read timeout")]
    ReadTimeout,
    #[error("upstream refused the connection")]
    Refused,
    #[error("upstream unreachable")]
    Unreachable,
    #[error("upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("upstream closed the connection mid-body")]
    ClosedMidBody,
    #[error("upstream sent an invalid response")]
    InvalidResponse,
    #[error("upstream sent an invalid chunked body")]
    InvalidChunkedBody,
    #[error("upstream body stalled past the read timeout")]
    BodyStalled,
}

impl Failure {
    /// The `reason` label of `sse_sidecar_upstream_errors_total`.
    pub(crate) fn reason(self) -> UpstreamErrorReason {
        use Failure::*;
        match self {
            ConnectTimeout | ReadTimeout | BodyStalled => UpstreamErrorReason::Timeout,
            Refused | Unreachable => UpstreamErrorReason::Connect,
            ClosedBeforeAnswer | ClosedMidBody => UpstreamErrorReason::Reset,
            InvalidResponse | InvalidChunkedBody => UpstreamErrorReason::Protocol,
        }
    }

    /// The status a request gets when the app failed before answering.
    pub(crate) fn status(self) -> u16 {
        match self.reason() {
            UpstreamErrorReason::Timeout => 504,
            _ => 502,
        }
    }
}

/// Where in the exchange a socket error happened: the same `io::ErrorKind` means different
/// things while connecting and while reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Connect,
    SendRequest,
    SendBody,
    ReadHead,
    ReadBody,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::SendRequest => "sending the request",
            Phase::SendBody => "sending the request body",
            Phase::ReadHead => "reading the response header",
            Phase::ReadBody => "reading the body",
        }
    }
}

/// A failure talking to the app, with the underlying error for the log.
#[derive(Debug, thiserror::Error)]
#[error("{failure}: {detail}")]
pub(crate) struct UpstreamError {
    pub(crate) failure: Failure,
    pub(crate) detail: String,
}

impl UpstreamError {
    pub(crate) fn new(failure: Failure, detail: impl Into<String>) -> UpstreamError {
        UpstreamError {
            failure,
            detail: detail.into(),
        }
    }

    /// A socket error of the lean relay.
    pub(crate) fn from_io(e: &io::Error, phase: Phase) -> UpstreamError {
        use io::ErrorKind::*;
        let failure = match (e.kind(), phase) {
            (TimedOut, Phase::Connect) => Failure::ConnectTimeout,
            (TimedOut, _) => Failure::ReadTimeout,
            (ConnectionRefused, _) => Failure::Refused,
            (InvalidData, _) => Failure::InvalidResponse,
            (_, Phase::Connect) => Failure::Unreachable,
            (_, Phase::ReadBody) => Failure::ClosedMidBody,
            _ => Failure::ClosedBeforeAnswer,
        };
        UpstreamError::new(failure, format!("{}: {e}", phase.as_str()))
    }

    /// A pingora error from the connector or the upstream session.
    pub(crate) fn from_pingora(e: &pingora_error::Error) -> UpstreamError {
        use pingora_error::ErrorType::*;
        let failure = match e.etype() {
            ConnectTimedout | TLSHandshakeTimedout => Failure::ConnectTimeout,
            ConnectRefused => Failure::Refused,
            t if is_connect_failure(t) => Failure::Unreachable,
            ReadTimedout | WriteTimedout => Failure::ReadTimeout,
            ConnectionClosed | ReadError | WriteError => Failure::ClosedBeforeAnswer,
            _ => Failure::InvalidResponse,
        };
        UpstreamError::new(failure, e.to_string())
    }

    /// Whether a pingora error of the normal proxy path is the app's (and not the client's or
    /// a bad request's): its source says so, or it could only come from connecting.
    pub(crate) fn caused_by_app(e: &pingora_error::Error) -> bool {
        use pingora_error::ErrorType::*;
        *e.esource() == pingora_error::ErrorSource::Upstream
            || matches!(e.etype(), ConnectTimedout | ConnectRefused)
            || is_connect_failure(e.etype())
    }
}

fn is_connect_failure(t: &pingora_error::ErrorType) -> bool {
    use pingora_error::ErrorType::*;
    matches!(
        t,
        ConnectNoRoute
            | ConnectError
            | SocketError
            | BindError
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | InvalidCert
            | HandshakeError
            | TLSWantX509Lookup
            | ConnectProxyFailure
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_error::{Error, ErrorType};

    #[test]
    fn socket_errors_by_phase() {
        let err = |kind| io::Error::new(kind, "x");
        for (kind, phase, want) in [
            (
                io::ErrorKind::TimedOut,
                Phase::Connect,
                Failure::ConnectTimeout,
            ),
            (
                io::ErrorKind::TimedOut,
                Phase::ReadHead,
                Failure::ReadTimeout,
            ),
            (
                io::ErrorKind::ConnectionRefused,
                Phase::Connect,
                Failure::Refused,
            ),
            (io::ErrorKind::Other, Phase::Connect, Failure::Unreachable),
            (
                io::ErrorKind::InvalidData,
                Phase::ReadHead,
                Failure::InvalidResponse,
            ),
            (
                io::ErrorKind::UnexpectedEof,
                Phase::ReadHead,
                Failure::ClosedBeforeAnswer,
            ),
            (
                io::ErrorKind::ConnectionReset,
                Phase::ReadBody,
                Failure::ClosedMidBody,
            ),
        ] {
            assert_eq!(UpstreamError::from_io(&err(kind), phase).failure, want);
        }
        let e = UpstreamError::from_io(&err(io::ErrorKind::ConnectionRefused), Phase::Connect);
        assert_eq!(e.to_string(), "upstream refused the connection: connect: x");
        assert_eq!(
            (e.failure.status(), e.failure.reason()),
            (502, UpstreamErrorReason::Connect)
        );
        assert_eq!(Failure::ReadTimeout.status(), 504);
    }

    #[test]
    fn pingora_errors() {
        let refused = Error::new(ErrorType::ConnectRefused);
        assert_eq!(
            UpstreamError::from_pingora(&refused).failure,
            Failure::Refused
        );
        assert!(UpstreamError::caused_by_app(&refused));
        let read = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(
            UpstreamError::from_pingora(&read).failure,
            Failure::ReadTimeout
        );
        assert!(UpstreamError::caused_by_app(&read));
        let client = Error::new(ErrorType::ReadError).into_down();
        assert!(!UpstreamError::caused_by_app(&client));
        let tls = Error::new(ErrorType::TLSHandshakeFailure);
        assert_eq!(
            UpstreamError::from_pingora(&tls).failure,
            Failure::Unreachable
        );
    }
}
