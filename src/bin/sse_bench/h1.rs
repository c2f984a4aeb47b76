//! One SSE stream over HTTP/1.1 on its own connection, plain or TLS: the request, the
//! response head, then the body read until the run ends.

use crate::parse::Chunked;
use crate::stream::{io_fail, Body, Fail, Failure, Framing, Shared, TaskCfg};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

struct Head {
    status: u16,
    status_line: String,
    event_stream: bool,
    framing: Framing,
}

fn parse_head(head: &[u8]) -> Result<Head, Failure> {
    let text = std::str::from_utf8(head)
        .map_err(|_| (Fail::Proto, "non-UTF-8 response head".to_string()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| (Fail::Proto, format!("bad status line {status_line:?}")))?;
    let mut event_stream = false;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        }
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked(Chunked::default()),
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Close,
    };
    Ok(Head {
        status,
        status_line,
        event_stream,
        framing,
    })
}

pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    cfg: &TaskCfg,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    settled: &mut bool,
) -> Result<(), Failure> {
    s.write_all(request)
        .await
        .map_err(|e| io_fail("writing request", e))?;

    let mut buf = vec![0u8; cfg.read_buf];
    let mut have = 0;
    let head_end = loop {
        if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if have == buf.len() {
            return Err((Fail::Proto, "response head larger than --read-buf".into()));
        }
        let n = tokio::select! {
            r = s.read(&mut buf[have..]) => r.map_err(|e| io_fail("reading head", e))?,
            _ = stop.changed() => return Err((Fail::Timeout, "no response head before the run ended".into())),
        };
        if n == 0 {
            return Err((Fail::Eof, "closed before the response head".into()));
        }
        have += n;
    };
    let head = parse_head(&buf[..head_end])?;
    if head.status != 200 || !head.event_stream {
        return Err((
            Fail::Status,
            format!("{} (event-stream: {})", head.status_line, head.event_stream),
        ));
    }
    sh.opened(settled);

    let mut body = Body::new(head.framing);
    if body.process(&buf[head_end..have], sh)? {
        return Err((Fail::Eof, "response ended".into()));
    }
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
            r = s.read(&mut buf) => match r {
                Ok(0) => return Err((Fail::Eof, "connection closed mid-stream".into())),
                Ok(n) => {
                    if body.process(&buf[..n], sh)? {
                        return Err((Fail::Eof, "response ended".into()));
                    }
                    if let Some(d) = cfg.idle_timeout {
                        idle.as_mut().reset(Instant::now() + d);
                    }
                }
                Err(e) => return Err(io_fail("reading body", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert!(h.event_stream);
        assert!(matches!(h.framing, Framing::Chunked(_)));
        let h = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.status, 502);
        assert!(!h.event_stream);
        assert!(matches!(h.framing, Framing::Length(3)));
    }
}
