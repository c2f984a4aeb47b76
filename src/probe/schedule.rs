//! The probe stream's schedule and wire format, shared by the sidecar that serves it
//! ([`crate::proxy::probe_stream`]) and the `probe` command that reads it: the query that sets
//! the schedule, and the stamped events.
//!
//! Each event carries its sequence number and the sidecar's wall-clock send time; the last
//! event before a silence also says how long the silence is, so a reader knows, from the
//! sidecar's own clock, when the silence that cut a stream began:
//!
//! ```text
//! id: 12
//! data: {"seq":12,"sent_ms":1765000000123,"silence_ms":5000}
//! ```

use crate::config::duration;
use bytes::Bytes;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most this many events per burst.
const MAX_EVENTS: usize = 1000;
/// At most this much padding per event.
const MAX_PADDING: usize = 64 * 1024;
/// At most this many silences.
const MAX_SILENCES: usize = 32;

/// What the probe stream sends: `events` events `gap` apart before each silence and after
/// the last, each padded with `padding` bytes, then, a gap later, `event: done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) events: usize,
    pub(crate) gap: Duration,
    pub(crate) padding: usize,
    pub(crate) silences: Vec<Duration>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            events: 10,
            gap: Duration::from_millis(100),
            padding: 0,
            silences: Vec::new(),
        }
    }
}

impl Schedule {
    /// Reads `events`, `gap`, `padding` and `silences` from a query string; other parameters
    /// (`token`) are ignored. Errors name the parameter and what it accepts.
    pub(crate) fn from_query(query: &str) -> Result<Schedule, String> {
        let mut s = Schedule::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "events" => match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_EVENTS).contains(&n) => s.events = n,
                    _ => return Err(format!("events={v}: expected 1 to {MAX_EVENTS}")),
                },
                "gap" => match duration::parse(v) {
                    Some(d) if d <= Duration::from_secs(60) => s.gap = d,
                    _ => return Err(format!("gap={v}: expected a duration up to 60s")),
                },
                "padding" => match v.parse::<usize>() {
                    Ok(n) if n <= MAX_PADDING => s.padding = n,
                    _ => return Err(format!("padding={v}: expected 0 to {MAX_PADDING} bytes")),
                },
                "silences" => s.silences = parse_silences(&v.replace("%2C", ","))?,
                _ => {}
            }
        }
        Ok(s)
    }

    /// How long the whole stream takes.
    pub(crate) fn total(&self) -> Duration {
        let bursts = self.silences.len() as u32 + 1;
        let burst = self.gap * self.events.saturating_sub(1) as u32;
        burst * bursts + self.gap + self.silences.iter().sum::<Duration>()
    }
}

/// `5s,15s,35s`: at most [`MAX_SILENCES`] positive durations; empty means none.
pub(crate) fn parse_silences(list: &str) -> Result<Vec<Duration>, String> {
    let items: Vec<&str> = list.split(',').filter(|s| !s.trim().is_empty()).collect();
    if items.len() > MAX_SILENCES {
        return Err(format!("silences: at most {MAX_SILENCES}"));
    }
    items
        .iter()
        .map(|s| match duration::parse(s) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(format!(
                "silences: {s:?} is not a duration such as 5s or 1m30s"
            )),
        })
        .collect()
}

/// Wall-clock now, in unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One stamped event; `silence` when a silence follows it.
pub(crate) fn event_block(
    seq: u64,
    sent_ms: u64,
    padding: usize,
    silence: Option<Duration>,
) -> Bytes {
    let mut out = String::with_capacity(64 + padding);
    if padding > 0 {
        // A comment line: readers skip it, boxes still have to carry its bytes.
        out.push(':');
        out.extend(std::iter::repeat_n('.', padding));
        out.push('\n');
    }
    let _ = write!(
        out,
        "id: {seq}\ndata: {{\"seq\":{seq},\"sent_ms\":{sent_ms}"
    );
    if let Some(d) = silence {
        let _ = write!(out, ",\"silence_ms\":{}", d.as_millis());
    }
    out.push_str("}\n\n");
    Bytes::from(out)
}

/// The last event.
pub(crate) fn done_block(seq: u64, sent_ms: u64) -> Bytes {
    Bytes::from(format!(
        "id: {seq}\nevent: done\ndata: {{\"seq\":{seq},\"sent_ms\":{sent_ms}}}\n\n"
    ))
}

/// A probe event's stamp, read back from its `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) seq: u64,
    pub(crate) sent_ms: u64,
    pub(crate) silence_ms: Option<u64>,
}

/// Reads a stamp from an event's data; `None` for any other data.
pub(crate) fn parse_stamp(data: &str) -> Option<Stamp> {
    let field = |name: &str| -> Option<u64> {
        let key = format!("\"{name}\":");
        let at = data.find(&key)? + key.len();
        let digits: String = data[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some(Stamp {
        seq: field("seq")?,
        sent_ms: field("sent_ms")?,
        silence_ms: field("silence_ms"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_and_defaults_hold() {
        let s = Schedule::from_query("token=x&silences=1s,3s&padding=512").unwrap();
        assert_eq!(s.events, 10);
        assert_eq!(s.gap, Duration::from_millis(100));
        assert_eq!(
            s.silences,
            vec![Duration::from_secs(1), Duration::from_secs(3)]
        );
        let q = "events=3&gap=250ms&padding=0&silences=";
        let custom = Schedule::from_query(q).unwrap();
        assert_eq!((custom.events, custom.gap), (3, Duration::from_millis(250)));
        assert!(custom.silences.is_empty());
        // 3 bursts of 10 events 100 ms apart, 4 s of silence, `done` 100 ms after the last
        // event: under 10 s.
        assert_eq!(s.total(), Duration::from_millis(3 * 900 + 4000 + 100));
        assert_eq!(Schedule::from_query("").unwrap(), Schedule::default());
    }

    #[test]
    fn bad_parameters_are_named() {
        for (q, name) in [
            ("events=0", "events"),
            ("gap=fast", "gap"),
            ("padding=999999", "padding"),
            ("silences=5s,x", "silences"),
        ] {
            let e = Schedule::from_query(q).unwrap_err();
            assert!(e.starts_with(name), "{q}: {e}");
        }
    }

    #[test]
    fn stamps_read_back() {
        let block = event_block(7, 1_700_000_000_123, 0, Some(Duration::from_secs(5)));
        let text = std::str::from_utf8(&block).unwrap();
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let stamp = parse_stamp(data).unwrap();
        assert_eq!(
            stamp,
            Stamp {
                seq: 7,
                sent_ms: 1_700_000_000_123,
                silence_ms: Some(5000)
            }
        );
        assert_eq!(parse_stamp("hello"), None);
        let padded = event_block(1, 2, 100, None);
        assert!(padded.len() > 100 && padded.starts_with(b":"));
    }
}
