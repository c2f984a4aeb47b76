//! Everything a relay writes that is not the stream loop, once for both relays: an answer
//! the sidecar made up, the app's non-stream answer passed through, and the head of a stream.

use super::io::{AppBody, Body, Client, WriteError};
use super::progress::StreamSummary;
use crate::metrics::{Kind, Outcome};
use crate::proxy::answers::Answer;
use crate::proxy::headers;
use crate::proxy::shared::Shared;
use crate::proxy::upstream_error::{Failure, UpstreamError};
use pingora_http::ResponseHeader;

/// Writes a made-up answer.
pub(crate) async fn answer<C: Client>(client: &mut C, a: Answer) -> Result<(), WriteError> {
    if a.stream {
        client
            .write_head(a.head, Body::Stream, a.close, None)
            .await?;
        return client.finish(Some(a.body)).await;
    }
    let body = if a.body.is_empty() {
        Body::None
    } else {
        Body::Length
    };
    let first = (!a.body.is_empty()).then_some(a.body);
    client.write_head(a.head, body, a.close, first).await?;
    client.finish(None).await
}

/// The app failed before answering: counts it and answers per `sse.on_upstream_error`.
/// Returns the status and kind for the access log, and the summary when the answer was a
/// stream (it counts as one that ended with `upstream_error`).
pub(crate) async fn upstream_failed<C: Client>(
    shared: &Shared,
    client: &mut C,
    e: &UpstreamError,
) -> (u16, Kind, Option<StreamSummary>) {
    shared.metrics.upstream_error(e.failure.reason());
    let a = Answer::upstream_failure(shared, e, client.chunked());
    let (status, kind, stream, len) = (a.head.status.as_u16(), a.kind(), a.stream, a.body.len());
    let _ = answer(client, a).await;
    let summary =
        stream.then(|| StreamSummary::ended_early(shared, Outcome::UpstreamError, len as u64));
    (status, kind, summary)
}

/// Why a pass-through ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassError {
    #[error("client went away")]
    ClientGone,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The app's answer to an SSE candidate was not a stream (a 401, a JSON error, a `HEAD`
/// answer): passed through unchanged but for hop-by-hop fields, while noticing a client that
/// leaves. `Ok` means the app's body ended cleanly (its connection may be reused).
pub(crate) async fn passthrough<C: Client + Send, A: AppBody + Send>(
    shared: &Shared,
    client: &mut C,
    app: &mut A,
    mut head: ResponseHeader,
    body: Body,
) -> Result<(), PassError> {
    headers::strip_response_hop_by_hop(&mut head);
    let gone = |_| PassError::ClientGone;
    client
        .write_head(head, body, false, None)
        .await
        .map_err(gone)?;
    let timeout = shared.config.timeouts.read;
    if body == Body::None {
        return client.finish(None).await.map_err(gone);
    }
    loop {
        tokio::select! {
            biased;
            // The client left: the app's connection is dropped, never pooled.
            _ = client.gone() => return Err(PassError::ClientGone),
            chunk = tokio::time::timeout(timeout, app.next()) => match chunk {
                Ok(Ok(Some(data))) => client.send(data).await.map_err(gone)?,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(upstream_broke(shared, client, e).await),
                Err(_) => {
                    let e = UpstreamError::new(Failure::BodyStalled, format!("{timeout:?}"));
                    return Err(upstream_broke(shared, client, e).await);
                }
            }
        }
    }
    client.finish(None).await.map_err(gone)
}

/// The app's body broke off: counted, and the client's response cut so it sees the break.
async fn upstream_broke<C: Client>(shared: &Shared, client: &mut C, e: UpstreamError) -> PassError {
    shared.metrics.upstream_error(e.failure.reason());
    client.abort().await;
    PassError::Upstream(e)
}

/// Writes an event stream's head, with the SSE policy, and the opening block in the same
/// write. Returns the opening block's length (body bytes the stream has written).
pub(crate) async fn start_stream<C: Client>(
    shared: &Shared,
    client: &mut C,
    mut head: ResponseHeader,
) -> Result<u64, WriteError> {
    headers::strip_response_hop_by_hop(&mut head);
    headers::apply_sse_policy(&mut head, client.chunked());
    let open = shared.open_block.clone();
    let len = open.as_ref().map_or(0, |o| o.len() as u64);
    client.write_head(head, Body::Stream, false, open).await?;
    Ok(len)
}
