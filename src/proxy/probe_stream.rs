//! The probe stream (`probe.*`): a diagnostic event stream the sidecar serves itself, never
//! forwarded to the app, whose events carry their send time so `sse-sidecar probe` can tell
//! which box on the path buffers, compresses or cuts streams. Answered in `request_filter`
//! for every protocol; the head guard leaves the probe path to pingora (see
//! [`crate::proxy::candidate`]).

use crate::probe::schedule::{done_block, event_block, now_ms, Schedule};
use crate::proxy::answers::Answer;
use crate::proxy::headers;
use crate::proxy::shared::{Shared, StreamSlot};
use crate::proxy::stream::io::{Body, Client};
use crate::proxy::stream::respond;
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// Whether this request is for the probe stream (enabled, and its path).
pub(crate) fn is_probe(shared: &Shared, req: &RequestHeader) -> bool {
    shared.config.is_probe_path(req.uri.path())
}

/// What the probe answered, for the access log.
pub(crate) struct Served {
    pub(crate) status: u16,
    pub(crate) error: Option<String>,
}

/// Answers a probe request: 401 without the token, 400 on a bad or too long schedule, 503
/// past `probe.max_streams`, otherwise the scheduled stream.
pub(crate) async fn serve<C: Client + Send>(
    shared: &Shared,
    client: &mut C,
    req: &RequestHeader,
) -> Served {
    let probe = &shared.config.probe;
    let query = req.uri.query().unwrap_or("");
    if let Some(token) = &probe.token {
        if !token_matches(query, token) {
            return refuse(client, 401, "probe.token required as ?token=".into()).await;
        }
    }
    let schedule = match Schedule::from_query(query) {
        Ok(s) if s.total() <= probe.max_duration => s,
        Ok(s) => {
            let why = format!(
                "the schedule takes {:?}, over probe.max_duration ({:?})",
                s.total(),
                probe.max_duration
            );
            return refuse(client, 400, why).await;
        }
        Err(why) => return refuse(client, 400, why).await,
    };
    let Some(_slot) = StreamSlot::probe(shared) else {
        let why = format!("probe.max_streams ({}) reached", probe.max_streams);
        return refuse(client, 503, why).await;
    };
    let ended = tokio::time::timeout(probe.max_duration, stream(shared, client, &schedule)).await;
    let error = match ended {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why.to_string()),
        Err(_) => {
            client.abort().await;
            Some("probe.max_duration reached".into())
        }
    };
    Served { status: 200, error }
}

async fn refuse<C: Client>(client: &mut C, status: u16, why: String) -> Served {
    let _ = respond::answer(client, Answer::plain(status, Some(&why))).await;
    Served {
        status,
        error: Some(why),
    }
}

/// The token in `?token=` equals the configured one.
fn token_matches(query: &str, token: &str) -> bool {
    query
        .split('&')
        .filter_map(|p| p.strip_prefix("token="))
        .any(|t| t == token)
}

async fn stream<C: Client>(
    shared: &Shared,
    client: &mut C,
    s: &Schedule,
) -> Result<(), &'static str> {
    let mut head = ResponseHeader::build(200, Some(4)).expect("a valid status");
    let _ = head.insert_header(http::header::CONTENT_TYPE, "text/event-stream");
    headers::apply_sse_policy(&mut head, client.chunked());
    let gone = |_| "client went away";
    client
        .write_head(head, Body::Stream, false, None)
        .await
        .map_err(gone)?;
    let mut seq = 0u64;
    for burst in 0..=s.silences.len() {
        for i in 0..s.events {
            let last = i + 1 == s.events;
            seq += 1;
            let silence = last.then(|| s.silences.get(burst).copied()).flatten();
            let block = event_block(seq, now_ms(), s.padding, silence);
            client.send(block).await.map_err(gone)?;
            // `done` comes a gap after the last event too, so it arrives on its own.
            wait(shared, client, silence.unwrap_or(s.gap)).await?;
        }
    }
    client
        .finish(Some(done_block(seq + 1, now_ms())))
        .await
        .map_err(gone)
}

/// Sleeps `d` unless the client leaves or the sidecar drains first; silences send nothing,
/// heartbeats included.
async fn wait<C: Client>(shared: &Shared, client: &mut C, d: Duration) -> Result<(), &'static str> {
    tokio::select! {
        // The schedule's next send is due.
        _ = tokio::time::sleep(d) => Ok(()),
        // The client closed or reset: nothing more to send.
        _ = client.gone() => Err("client went away"),
        // Shutting down: a probe must not hold the drain for up to probe.max_duration; the
        // stream is cut without `done`, which the probe reports.
        _ = shared.drain.signal() => {
            client.abort().await;
            Err("the sidecar is draining")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        assert!(token_matches("a=1&token=s3cret", "s3cret"));
        assert!(!token_matches("token=s3cre", "s3cret"));
        assert!(!token_matches("xtoken=s3cret", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
