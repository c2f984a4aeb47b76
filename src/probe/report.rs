//! The probe's output: the verdict in plain words, then a table; or the same as JSON.

use super::analysis::Analysis;
use super::client::Observation;
use std::fmt::Write as _;

/// The headers that say how a box treats a stream, in report order.
pub(crate) const HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "cache-control",
    "x-accel-buffering",
    "via",
    "server",
    "cf-ray",
    "x-amz-cf-id",
    "x-served-by",
];

fn ttfb(obs: &Observation) -> Option<f64> {
    obs.first_byte_ms
}

/// The human report.
pub(crate) fn text(obs: &Observation, a: &Analysis) -> String {
    let mut out = String::new();
    for f in &a.findings {
        let _ = writeln!(out, "{}: {}", f.kind.as_str(), f.detail);
    }
    out.push('\n');
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<22} {v}");
    };
    row("http version", obs.http_version.clone());
    row("status", obs.status.to_string());
    row("time to headers", format!("{:.0} ms", obs.headers_ms));
    row(
        "time to first byte",
        ttfb(obs).map_or("-".into(), |t| format!("{t:.0} ms")),
    );
    for name in HEADERS {
        row(name, obs.header(name).unwrap_or("-").to_string());
    }
    row(
        "events",
        format!(
            "{}{}",
            a.events,
            if a.probe { " (probe stream)" } else { "" }
        ),
    );
    let max = a.max_burst();
    row(
        "largest burst",
        format!("{} events, {} bytes", max.events, max.bytes),
    );
    let sizes: Vec<String> = a.bursts.iter().map(|b| b.events.to_string()).collect();
    row(
        "arrival pattern",
        format!("[{}] events per burst", sizes.join(" ")),
    );
    if !a.delays_ms.is_empty() {
        let worst = a.delays_ms.iter().copied().fold(0.0, f64::max);
        row("max event delay", format!("{worst:.0} ms"));
    }
    row(
        "idle cutoff",
        a.idle_cutoff_s.map_or("-".into(), |s| format!("{s:.1} s")),
    );
    row("ending", a.ending.clone());
    if a.probe {
        out.push_str("\n  event   arrived(ms)  delay(ms)  bytes\n");
        let stamped = obs.events.iter().filter(|e| e.stamp.is_some());
        for (e, d) in stamped.zip(&a.delays_ms) {
            let seq = e.stamp.map_or(0, |s| s.seq);
            let _ = writeln!(
                out,
                "  {seq:>5}   {:>11.0}  {d:>9.0}  {:>5}",
                e.at_ms, e.bytes
            );
        }
    }
    out
}

/// The `--json` report.
pub(crate) fn json(obs: &Observation, a: &Analysis) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let verdict: Vec<Value> = a
        .findings
        .iter()
        .map(|f| json!({"kind": f.kind.as_str(), "detail": f.detail}))
        .collect();
    let mut headers = Map::new();
    for name in HEADERS {
        if let Some(v) = obs.header(name) {
            headers.insert((*name).to_string(), Value::from(v));
        }
    }
    let max = a.max_burst();
    json!({
        "verdict": verdict,
        "http_version": obs.http_version,
        "status": obs.status,
        "headers_ms": round(obs.headers_ms),
        "ttfb_ms": ttfb(obs).map(round),
        "events": a.events,
        "probe_stream": a.probe,
        "max_burst_events": max.events,
        "max_burst_bytes": max.bytes,
        "bursts": a.bursts.iter().map(|b| b.events).collect::<Vec<_>>(),
        "delays_ms": a.delays_ms.iter().copied().map(round).collect::<Vec<_>>(),
        "idle_cutoff_s": a.idle_cutoff_s.map(|s| (s * 100.0).round() / 100.0),
        "cut_silence_s": a.cut_silence_s,
        "ending": a.ending,
        "duration_ms": round(obs.end_ms),
        "headers": headers,
    })
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}
