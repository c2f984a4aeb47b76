//! What an [`Observation`] means: bursts, delays, the silence that cut the stream, and the
//! findings, each naming the likely box and the fix. Pure functions over the record.

use super::client::{End, Observation};

/// Events arriving within this many milliseconds of each other count as one burst.
const BURST_WINDOW_MS: f64 = 10.0;
/// A burst of this many events or more, sent apart, is buffering.
const BUFFERED_BURST: usize = 3;
/// First byte later than this is a finding.
const SLOW_FIRST_BYTE_MS: f64 = 2000.0;
/// A cut after at least this much silence counts as an idle cut on a stream that is not a
/// probe stream.
const IDLE_CUT_MIN_MS: f64 = 1000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Ok,
    Buffered,
    Compressed,
    CutIdle,
    HeadersStripped,
    SlowFirstByte,
    ErrorStatus,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Buffered => "buffered",
            Kind::Compressed => "compressed",
            Kind::CutIdle => "cut_idle",
            Kind::HeadersStripped => "headers_stripped",
            Kind::SlowFirstByte => "slow_first_byte",
            Kind::ErrorStatus => "error_status",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Finding {
    pub(crate) kind: Kind,
    pub(crate) detail: String,
}

/// Consecutive events that arrived together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Burst {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Analysis {
    /// At least one; `Ok` alone when nothing was found.
    pub(crate) findings: Vec<Finding>,
    /// The stream carried the probe's stamped events.
    pub(crate) probe: bool,
    pub(crate) events: usize,
    pub(crate) bursts: Vec<Burst>,
    /// Per event: arrival minus send time, less the fastest event's (probe streams only).
    pub(crate) delays_ms: Vec<f64>,
    /// From the start of the silence that ended the stream to the cut.
    pub(crate) idle_cutoff_s: Option<f64>,
    /// Which silence (its configured length) ended the stream.
    pub(crate) cut_silence_s: Option<f64>,
    /// How and when the stream ended, in words.
    pub(crate) ending: String,
}

impl Analysis {
    pub(crate) fn max_burst(&self) -> Burst {
        self.bursts
            .iter()
            .copied()
            .max_by_key(|b| (b.events, b.bytes))
            .unwrap_or(Burst {
                events: 0,
                bytes: 0,
            })
    }

    /// Whether anything is wrong (exit status 1).
    pub(crate) fn problem(&self) -> bool {
        self.findings.iter().any(|f| f.kind != Kind::Ok)
    }
}

/// Groups arrivals `(at_ms, bytes)` into bursts: each event within [`BURST_WINDOW_MS`] of the
/// previous one joins its burst.
pub(crate) fn bursts(arrivals: &[(f64, usize)]) -> Vec<Burst> {
    let mut out: Vec<Burst> = Vec::new();
    let mut prev: Option<f64> = None;
    for &(at, bytes) in arrivals {
        match (prev, out.last_mut()) {
            (Some(p), Some(b)) if at - p <= BURST_WINDOW_MS => {
                b.events += 1;
                b.bytes += bytes;
            }
            _ => out.push(Burst { events: 1, bytes }),
        }
        prev = Some(at);
    }
    out
}

/// Arrival minus send time for each stamped event, less the smallest (the clock offset
/// between the two machines plus the path's fastest delivery).
pub(crate) fn delays(pairs: &[(f64, u64)]) -> Vec<f64> {
    let raw: Vec<f64> = pairs
        .iter()
        .map(|&(wall, sent)| wall - sent as f64)
        .collect();
    let offset = raw.iter().copied().fold(f64::INFINITY, f64::min);
    raw.iter().map(|d| d - offset).collect()
}

/// The box the headers point at, in the words a user searches for.
pub(crate) fn suspect(obs: &Observation) -> Option<String> {
    if let Some(v) = obs.header("via") {
        return Some(format!("Via: {v}"));
    }
    for (name, what) in [
        ("cf-ray", "Cloudflare"),
        ("x-amz-cf-id", "CloudFront"),
        ("x-served-by", "Fastly or Varnish"),
    ] {
        if obs.header(name).is_some() {
            return Some(format!("{what}, {name} present"));
        }
    }
    obs.header("server").map(|v| format!("Server: {v}"))
}

fn named(suspect: &Option<String>) -> String {
    suspect
        .as_ref()
        .map_or_else(String::new, |s| format!(" ({s})"))
}

/// Reads the record into findings.
pub(crate) fn analyse(obs: &Observation) -> Analysis {
    let box_ = suspect(obs);
    let mut findings = Vec::new();
    let arrivals: Vec<(f64, usize)> = obs.events.iter().map(|e| (e.at_ms, e.bytes)).collect();
    let bursts = bursts(&arrivals);
    let stamped: Vec<_> = obs
        .events
        .iter()
        .filter_map(|e| e.stamp.map(|s| (e, s)))
        .collect();
    let probe = !stamped.is_empty();
    let pairs: Vec<(f64, u64)> = stamped
        .iter()
        .map(|(e, s)| (e.wall_ms, s.sent_ms))
        .collect();
    let delays_ms = delays(&pairs);

    if obs.status >= 400 || !(200..300).contains(&obs.status) {
        findings.push(Finding {
            kind: Kind::ErrorStatus,
            detail: format!(
                "the answer was {} instead of a 200 event stream{} — check the URL, the \
                 probe token, and the box's own error page",
                obs.status,
                named(&box_)
            ),
        });
    }
    let content_type = obs.header("content-type").unwrap_or("");
    if (200..300).contains(&obs.status)
        && !content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    {
        findings.push(Finding {
            kind: Kind::HeadersStripped,
            detail: format!(
                "Content-Type is {content_type:?}, not text/event-stream{}: browsers' \
                 EventSource refuses the stream — the box rewrote or dropped the header",
                named(&box_)
            ),
        });
    }
    if let Some(coding) = obs
        .header("content-encoding")
        .filter(|c| !c.trim().eq_ignore_ascii_case("identity"))
    {
        findings.push(Finding {
            kind: Kind::Compressed,
            detail: format!(
                "the stream arrives compressed (Content-Encoding: {coding}){}: a compressor \
                 holds events until its buffer fills — exclude text/event-stream from \
                 compression on that box (nginx: leave it out of gzip_types; Caddy encode, \
                 Traefik compress, Express compression(): skip text/event-stream)",
                named(&box_)
            ),
        });
    }
    // A probe burst only counts when its events were sent apart; any other stream's events
    // are taken to be sent apart.
    let spread = |i: usize| -> bool {
        if !probe {
            return true;
        }
        let start: usize = bursts[..i].iter().map(|b| b.events).sum();
        let sent: Vec<u64> = obs.events[start..start + bursts[i].events]
            .iter()
            .filter_map(|e| e.stamp.map(|s| s.sent_ms))
            .collect();
        match (sent.iter().min(), sent.iter().max()) {
            (Some(a), Some(b)) => b - a >= 50,
            _ => false,
        }
    };
    // Without send stamps, an app's own quick succession (LLM tokens a few ms apart) must not
    // read as buffering: a burst must also hold a fifth of the stream's events.
    let threshold = if probe {
        BUFFERED_BURST
    } else {
        BUFFERED_BURST.max(obs.events.len() / 5)
    };
    let buffered = (0..bursts.len())
        .filter(|&i| bursts[i].events >= threshold && spread(i))
        .map(|i| bursts[i])
        .max_by_key(|b| b.events);
    if let Some(b) = buffered {
        findings.push(Finding {
            kind: Kind::Buffered,
            detail: format!(
                "events arrive in bursts of up to {} events ({} bytes): something on the path \
                 buffers{} — turn response buffering off for this route (nginx: \
                 proxy_buffering off, or stop ignoring X-Accel-Buffering; Varnish: \
                 beresp.do_stream; a CDN: do not cache text/event-stream)",
                b.events,
                b.bytes,
                named(&box_)
            ),
        });
    } else if obs.header("content-length").is_some() && (200..300).contains(&obs.status) {
        findings.push(Finding {
            kind: Kind::Buffered,
            detail: format!(
                "the stream came with a Content-Length: a box on the path stored the whole \
                 answer before sending it{}",
                named(&box_)
            ),
        });
    }
    if let Some(first) = obs.first_byte_ms.filter(|t| *t > SLOW_FIRST_BYTE_MS) {
        findings.push(Finding {
            kind: Kind::SlowFirstByte,
            detail: if probe {
                format!(
                    "the first byte took {:.1} s{}: the probe stream starts at once, so a box \
                     on the path holds the start",
                    first / 1000.0,
                    named(&box_)
                )
            } else {
                format!(
                    "the first byte took {:.1} s{}: a stream should start at once — the app or \
                     a box holds the start (the sidecar's open comment, sse.open_comment, makes \
                     the app's first byte immediate)",
                    first / 1000.0,
                    named(&box_)
                )
            },
        });
    }

    let done = obs.events.iter().any(|e| e.done);
    let end = obs.end.clone().unwrap_or(End::Timeout);
    let how = match &end {
        End::Clean => "a clean end".to_string(),
        End::Fin => "the connection closed (FIN) without a framed end".to_string(),
        End::Reset => "a reset (RST)".to_string(),
        End::Error(e) => format!("a read error ({e})"),
        End::Timeout => "the probe's --timeout".to_string(),
    };
    let mut idle_cutoff_s = None;
    let mut cut_silence_s = None;
    // Our own timeout is no cut, nor is a probe stream's end after `done`.
    let cut = !(matches!(end, End::Timeout) || probe && done);
    let ending;
    if probe && cut {
        // The last stamped event says which silence followed it, in the sidecar's clock.
        let last = stamped.iter().max_by_key(|(_, s)| s.seq);
        let offset = pairs
            .iter()
            .map(|&(w, s)| w - s as f64)
            .fold(f64::INFINITY, f64::min);
        match last.and_then(|(_, s)| s.silence_ms.map(|len| (s.sent_ms, len))) {
            Some((sent, len)) => {
                let cutoff = (obs.end_wall_ms - (sent as f64 + offset)) / 1000.0;
                idle_cutoff_s = Some(cutoff);
                cut_silence_s = Some(len as f64 / 1000.0);
                ending = format!(
                    "ended by {how} {cutoff:.1} s into the {} s silence, at {:.1} s",
                    len as f64 / 1000.0,
                    obs.end_ms / 1000.0
                );
            }
            None => {
                ending = format!(
                    "ended by {how} while events were flowing, at {:.1} s, before `event: done`",
                    obs.end_ms / 1000.0
                );
            }
        }
    } else if cut && !matches!(end, End::Clean) {
        let quiet = obs.end_ms - obs.last_byte_ms.unwrap_or(obs.headers_ms);
        if quiet >= IDLE_CUT_MIN_MS {
            idle_cutoff_s = Some(quiet / 1000.0);
        }
        ending = format!(
            "ended by {how} at {:.1} s, {:.1} s after the last byte",
            obs.end_ms / 1000.0,
            quiet / 1000.0
        );
    } else {
        ending = format!("ended by {how} at {:.1} s", obs.end_ms / 1000.0);
    }
    if let Some(cutoff) = idle_cutoff_s {
        let keep = (cutoff / 2.0).floor().max(1.0);
        findings.push(Finding {
            kind: Kind::CutIdle,
            detail: format!(
                "the stream was cut {cutoff:.0} s into a silence: an idle timeout on the \
                 path{} (AWS ALB and nginx default to 60 s, GCP 30 s, Cloudflare 100 s) — keep \
                 heartbeat_interval below it (e.g. {keep:.0}s), or raise the box's timeout",
                named(&box_)
            ),
        });
    } else if probe && cut {
        findings.push(Finding {
            kind: Kind::ErrorStatus,
            detail: format!(
                "the stream was cut while events were flowing ({how}){}",
                named(&box_)
            ),
        });
    }
    if findings.is_empty() {
        let pattern = if probe {
            "events arrive one by one, as sent"
        } else {
            "events arrive one by one"
        };
        findings.push(Finding {
            kind: Kind::Ok,
            detail: format!("{pattern}; nothing on the path buffers, compresses or cut the stream"),
        });
    }
    Analysis {
        findings,
        probe,
        events: obs.events.len(),
        bursts,
        delays_ms,
        idle_cutoff_s,
        cut_silence_s,
        ending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::client::Arrival;
    use crate::probe::schedule::Stamp;

    fn event(at_ms: f64, seq: u64, sent_ms: u64, silence_ms: Option<u64>) -> Arrival {
        Arrival {
            at_ms,
            wall_ms: 1_000_000.0 + at_ms,
            bytes: 40,
            stamp: Some(Stamp {
                seq,
                sent_ms,
                silence_ms,
            }),
            done: false,
        }
    }

    fn stream(events: Vec<Arrival>, end: End, end_ms: f64) -> Observation {
        Observation {
            http_version: "HTTP/1.1".into(),
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            headers_ms: 1.0,
            first_byte_ms: events.first().map(|e| e.at_ms),
            last_byte_ms: events.last().map(|e| e.at_ms),
            events,
            body_bytes: 0,
            end: Some(end),
            end_ms,
            end_wall_ms: 1_000_000.0 + end_ms,
        }
    }

    #[test]
    fn bursts_group_events_that_arrive_together() {
        let b = bursts(&[(0.0, 10), (100.0, 10), (200.0, 10), (201.0, 20), (205.0, 5)]);
        assert_eq!(
            b,
            vec![
                Burst {
                    events: 1,
                    bytes: 10
                },
                Burst {
                    events: 1,
                    bytes: 10
                },
                Burst {
                    events: 3,
                    bytes: 35
                }
            ]
        );
        assert!(bursts(&[]).is_empty());
    }

    #[test]
    fn delays_are_relative_to_the_fastest_event() {
        assert_eq!(
            delays(&[(1005.0, 1000), (1102.0, 1100), (1300.0, 1200)]),
            vec![3.0, 0.0, 98.0]
        );
    }

    #[test]
    fn one_by_one_probe_with_done_is_ok() {
        let mut events: Vec<Arrival> = (0..10)
            .map(|i| event(i as f64 * 100.0, i + 1, 1_000_000 + i * 100, None))
            .collect();
        let mut done = event(1000.0, 11, 1_001_000, None);
        done.done = true;
        events.push(done);
        let a = analyse(&stream(events, End::Clean, 1001.0));
        assert_eq!(a.findings.len(), 1);
        assert_eq!(a.findings[0].kind, Kind::Ok);
        assert!(!a.problem());
        assert_eq!(a.max_burst().events, 1);
    }

    #[test]
    fn probe_events_sent_apart_but_arriving_together_are_buffered() {
        let events: Vec<Arrival> = (0..8)
            .map(|i| event(900.0, i + 1, 1_000_000 + i * 100, None))
            .collect();
        let mut obs = stream(events, End::Clean, 1000.0);
        obs.headers.push(("server".into(), "nginx/1.22.1".into()));
        let a = analyse(&obs);
        let f = a
            .findings
            .iter()
            .find(|f| f.kind == Kind::Buffered)
            .unwrap();
        assert!(
            f.detail.contains("bursts of up to 8 events") && f.detail.contains("nginx"),
            "{}",
            f.detail
        );
        assert_eq!(
            a.max_burst(),
            Burst {
                events: 8,
                bytes: 320
            }
        );
    }

    #[test]
    fn a_cut_in_a_silence_gives_the_cutoff_from_the_silence_start() {
        // The last event (sent at 1_000_900 sidecar time, clock offset 0) opens a 5 s
        // silence; the connection closes at wall 1_003_000: 2.1 s into it.
        let events: Vec<Arrival> = (0..10)
            .map(|i| {
                event(
                    i as f64 * 100.0,
                    i + 1,
                    1_000_000 + i * 100,
                    (i == 9).then_some(5000),
                )
            })
            .collect();
        let a = analyse(&stream(events, End::Fin, 3000.0));
        assert_eq!(a.cut_silence_s, Some(5.0));
        assert!((a.idle_cutoff_s.unwrap() - 2.1).abs() < 0.01);
        assert!(a.findings.iter().any(|f| f.kind == Kind::CutIdle));
        assert!(a.problem());
    }

    #[test]
    fn a_plain_stream_cut_after_silence_is_idle_and_a_timeout_is_not() {
        let mut events = vec![event(0.0, 1, 0, None)];
        events[0].stamp = None;
        let a = analyse(&stream(events.clone(), End::Reset, 2500.0));
        assert!((a.idle_cutoff_s.unwrap() - 2.5).abs() < 0.01);
        let a = analyse(&stream(events, End::Timeout, 2500.0));
        assert_eq!(a.idle_cutoff_s, None);
        assert_eq!(a.findings[0].kind, Kind::Ok);
    }

    #[test]
    fn an_app_stream_is_buffered_only_when_a_burst_holds_a_fifth_of_it() {
        let plain = |at_ms: f64| {
            let mut e = event(at_ms, 0, 0, None);
            e.stamp = None;
            e
        };
        // 40 tokens 50 ms apart, three of them coalesced once: not buffering.
        let mut tokens: Vec<Arrival> = (0..40).map(|i| plain(i as f64 * 50.0)).collect();
        tokens[10].at_ms = tokens[9].at_ms;
        tokens[11].at_ms = tokens[9].at_ms;
        let a = analyse(&stream(tokens.clone(), End::Clean, 2000.0));
        assert_eq!(a.findings[0].kind, Kind::Ok, "{:?}", a.findings);
        // Ten at a time: buffering.
        for (i, t) in tokens.iter_mut().enumerate() {
            t.at_ms = (i / 10) as f64 * 500.0;
        }
        let a = analyse(&stream(tokens, End::Clean, 2000.0));
        assert!(a.findings.iter().any(|f| f.kind == Kind::Buffered));
    }

    #[test]
    fn compression_error_status_and_a_wrong_type_are_findings() {
        let mut obs = stream(vec![], End::Clean, 10.0);
        obs.headers.push(("content-encoding".into(), "gzip".into()));
        assert!(analyse(&obs)
            .findings
            .iter()
            .any(|f| f.kind == Kind::Compressed));
        obs.status = 502;
        obs.headers = vec![("content-type".into(), "text/html".into())];
        let kinds: Vec<Kind> = analyse(&obs).findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![Kind::ErrorStatus]);
        obs.status = 200;
        let kinds: Vec<Kind> = analyse(&obs).findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![Kind::HeadersStripped]);
    }

    #[test]
    fn a_missing_accel_buffering_header_alone_is_not_a_finding() {
        let mut done = event(0.0, 1, 1_000_000, None);
        done.done = true;
        let a = analyse(&stream(vec![done], End::Clean, 5.0));
        assert_eq!(a.findings[0].kind, Kind::Ok);
    }
}
