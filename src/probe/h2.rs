//! HTTP/2 for the probe, when TLS negotiated it: one GET stream, its DATA frames recorded as
//! they arrive; the stream's end tells a clean END_STREAM from a RST_STREAM or a lost
//! connection.

use super::client::{End, Observation, ProbeError, Recorder, Target};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Requests `target` over an h2 connection on `io` and records the stream.
pub(crate) async fn observe<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    target: &Target,
    headers: &[(String, String)],
    deadline: tokio::time::Instant,
    timeout: Duration,
    mut rec: Recorder,
) -> Result<Observation, ProbeError> {
    let h2_err = |e: h2::Error| ProbeError::H2(e.to_string());
    let (send, conn) = tokio::time::timeout_at(deadline, h2::client::handshake(io))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
        .map_err(h2_err)?;
    // The connection's driver: frames move only while it is polled.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method("GET")
        .uri(format!("https://{}{}", target.authority, target.path));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(())
        .map_err(|e| ProbeError::H2(format!("request: {e}")))?;
    let mut send = tokio::time::timeout_at(deadline, send.ready())
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
        .map_err(h2_err)?;
    let (resp, _stream) = send.send_request(req, true).map_err(h2_err)?;
    let resp = tokio::time::timeout_at(deadline, resp)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
        .map_err(h2_err)?;
    let (parts, mut body) = resp.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_string(), v)
        })
        .collect();
    rec.head("HTTP/2", parts.status.as_u16(), headers);
    let end = loop {
        let next = tokio::time::timeout_at(deadline, body.data()).await;
        match next {
            Err(_) => break End::Timeout,
            Ok(None) => break End::Clean,
            Ok(Some(Ok(data))) => {
                let _ = body.flow_control().release_capacity(data.len());
                rec.body(data.len(), &data);
            }
            Ok(Some(Err(e))) if e.is_reset() => break End::Reset,
            Ok(Some(Err(e))) if e.is_io() => {
                break e.get_io().map_or(End::Fin, super::client::io_end);
            }
            Ok(Some(Err(e))) => break End::Error(e.to_string()),
        }
    };
    driver.abort();
    Ok(rec.end(end))
}
