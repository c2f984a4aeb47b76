//! One SSE stream over HTTP/2 (the `h2` crate), on a connection it shares with other streams:
//! the request, the response head, then DATA until the run ends, each chunk's flow-control
//! credit given back once it is parsed.

use crate::conn::{self, H2Slot, Target};
use crate::stream::{Body, Fail, Failure, Framing, Shared, TaskCfg};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

fn h2_fail(what: &str, e: h2::Error) -> Failure {
    let kind = if e.is_reset() || e.is_go_away() {
        Fail::Reset
    } else if e.is_io() {
        Fail::Io
    } else {
        Fail::Proto
    };
    (kind, format!("{what}: {e}"))
}

pub async fn run(
    t: &Target,
    slot: &H2Slot,
    cfg: &TaskCfg,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    settled: &mut bool,
) -> Result<(), Failure> {
    let send = slot
        .get_or_init(|| conn::h2_connect(t, cfg.tls.as_ref(), cfg.connect_timeout))
        .await
        .clone()?;
    let no_head = || {
        (
            Fail::Timeout,
            "no response head before the run ended".into(),
        )
    };
    // Waits for the server's SETTINGS_MAX_CONCURRENT_STREAMS to allow one more.
    let mut send = tokio::select! {
        r = send.ready() => r.map_err(|e| h2_fail("h2 connection", e))?,
        _ = stop.changed() => return Err(no_head()),
    };
    let req = http::Request::from_parts(t.h2_request.clone(), ());
    let (resp, _req_body) = send
        .send_request(req, true)
        .map_err(|e| h2_fail("sending h2 request", e))?;
    let resp = tokio::select! {
        r = resp => r.map_err(|e| h2_fail("h2 response", e))?,
        _ = stop.changed() => return Err(no_head()),
    };
    let event_stream = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    if resp.status() != 200 || !event_stream {
        return Err((
            Fail::Status,
            format!(
                "h2 :status {} (event-stream: {event_stream})",
                resp.status()
            ),
        ));
    }
    sh.opened(settled);
    let mut data = resp.into_body();
    let mut body = Body::new(Framing::Close);
    let idle = sleep(cfg.idle_timeout.unwrap_or(Duration::from_secs(86400)));
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            // End of the run: the stream was held.
            _ = stop.changed() => return Ok(()),
            // Nothing at all (not even a heartbeat) for --idle-timeout.
            _ = &mut idle, if cfg.idle_timeout.is_some() => {
                return Err((Fail::Timeout, format!("no bytes for {:?}", cfg.idle_timeout.unwrap())));
            }
            // A DATA frame's payload, or the stream's end.
            r = data.data() => match r {
                None => return Err((Fail::Eof, "h2 stream ended".into())),
                Some(Ok(chunk)) => {
                    body.process(&chunk, sh)?;
                    let _ = data.flow_control().release_capacity(chunk.len());
                    if let Some(d) = cfg.idle_timeout {
                        idle.as_mut().reset(Instant::now() + d);
                    }
                }
                Some(Err(e)) => return Err(h2_fail("reading h2 body", e)),
            }
        }
    }
}
