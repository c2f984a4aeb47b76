//! Every metric the sidecar exports: names, help texts and buckets live here and
//! nowhere else.
//!
//! [`Metrics::new`] registers everything into a [`Registry`] that is passed in
//! (the admin service serves that registry at `/metrics`). Labelled series are
//! created once at startup and kept in arrays indexed by small enums, so every
//! series exists (at 0) from the first scrape and the hot path never hashes a
//! label: each recording call is one or a few atomic operations, no allocation.
//!
//! Share it as `Arc<Metrics>`; all methods take `&self`.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

mod labels;

use labels::CODE_CLASSES;
pub(crate) use labels::{H2Abuse, Kind, Outcome, ResumeResult, UpstreamErrorReason};

/// Sidecar-added latency per event: the interesting range is tens of
/// microseconds on loopback; anything near a second is a bug.
const EVENT_DELAY_BUCKETS: &[f64] = &[
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0,
];

/// Request to first event: apps answer in milliseconds, LLMs in seconds, and
/// some streams wait minutes for their first event.
const TIME_TO_FIRST_EVENT_BUCKETS: &[f64] = &[
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];

/// Gaps between upstream reads. 30, 55, 60 and 100 s are the idle timeouts of
/// GCP backends, Heroku, AWS ALB / nginx and Cloudflare: a gap past one of them
/// is a stream that would have died there without heartbeats.
const UPSTREAM_SILENCE_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 55.0, 60.0, 100.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Stream lifetimes, from a rejected connect to a day-long dashboard.
const STREAM_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0,
];

/// All sidecar metrics, registered in one registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    streams_active: IntGauge,
    streams_total: [IntCounter; Outcome::ALL.len()],
    events_total: IntCounter,
    stream_bytes_total: IntCounter,
    heartbeats_total: IntCounter,
    event_delay_seconds: Histogram,
    time_to_first_event_seconds: Histogram,
    upstream_silence_seconds: Histogram,
    stream_duration_seconds: Histogram,
    /// Indexed `[kind][status / 100 - 1]`.
    requests_total: [[IntCounter; CODE_CLASSES.len()]; Kind::ALL.len()],
    upstream_errors_total: [IntCounter; UpstreamErrorReason::ALL.len()],
    streams_parked: IntGauge,
    resumes_total: [IntCounter; ResumeResult::ALL.len()],
    replayed_events_total: IntCounter,
    resume_buffer_bytes: IntGauge,
    resume_unbuffered_total: IntCounter,
    learned_routes: IntGauge,
    h2_abuse_total: [IntCounter; H2Abuse::ALL.len()],
    /// The registry, for the series of optional parts (the shared resume store's).
    pub(crate) registry: Registry,
}

impl Metrics {
    /// Creates every metric and registers it, plus `sse_sidecar_build_info` and
    /// (on Linux) the `process_*` collector, into `registry`.
    ///
    /// Fails if any name is already registered there, e.g. when called twice
    /// with the same registry.
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let streams_active = IntGauge::new(
            "sse_sidecar_streams_active",
            "SSE streams currently being relayed.",
        )?;
        registry.register(Box::new(streams_active.clone()))?;

        let streams_total = counters(
            registry,
            "sse_sidecar_streams_total",
            "SSE streams ended, by why they ended.",
            "outcome",
            Outcome::ALL.map(Outcome::as_str),
        )?;

        let events_total = counter(
            registry,
            "sse_sidecar_events_total",
            "Application events relayed to SSE clients.",
        )?;
        let stream_bytes_total = counter(
            registry,
            "sse_sidecar_stream_bytes_total",
            "Bytes written to SSE clients (app bytes plus injected comments), in bytes.",
        )?;
        let heartbeats_total = counter(
            registry,
            "sse_sidecar_heartbeats_total",
            "Heartbeat comments injected while the app was silent.",
        )?;

        let event_delay_seconds = histogram(
            registry,
            "sse_sidecar_event_delay_seconds",
            "Latency the sidecar adds to an event, from reading it upstream to writing it \
             downstream, in seconds.",
            EVENT_DELAY_BUCKETS,
        )?;
        let time_to_first_event_seconds = histogram(
            registry,
            "sse_sidecar_time_to_first_event_seconds",
            "Time from receiving the request to writing the first application event, in seconds.",
            TIME_TO_FIRST_EVENT_BUCKETS,
        )?;
        let upstream_silence_seconds = histogram(
            registry,
            "sse_sidecar_upstream_silence_seconds",
            "Gaps between consecutive upstream reads on an SSE stream, in seconds.",
            UPSTREAM_SILENCE_BUCKETS,
        )?;
        let stream_duration_seconds = histogram(
            registry,
            "sse_sidecar_stream_duration_seconds",
            "Lifetime of SSE streams, from request to close, in seconds.",
            STREAM_DURATION_BUCKETS,
        )?;

        let requests_total = IntCounterVec::new(
            Opts::new(
                "sse_sidecar_requests_total",
                "Requests answered, by kind (sse, sse_unlearned or other) and status class.",
            ),
            &["kind", "code"],
        )?;
        registry.register(Box::new(requests_total.clone()))?;
        let requests_total = Kind::ALL
            .map(|k| CODE_CLASSES.map(|c| requests_total.with_label_values(&[k.as_str(), c])));

        let upstream_errors_total = counters(
            registry,
            "sse_sidecar_upstream_errors_total",
            "Failures talking to the app, by reason.",
            "reason",
            UpstreamErrorReason::ALL.map(UpstreamErrorReason::as_str),
        )?;

        let streams_parked = IntGauge::new(
            "sse_sidecar_streams_parked",
            "Resumable streams whose client left, kept open for resume.grace.",
        )?;
        registry.register(Box::new(streams_parked.clone()))?;
        let resumes_total = counters(
            registry,
            "sse_sidecar_resumes_total",
            "Requests carrying one of the sidecar's Last-Event-IDs on a resumable path, by result.",
            "result",
            ResumeResult::ALL.map(ResumeResult::as_str),
        )?;
        let replayed_events_total = counter(
            registry,
            "sse_sidecar_replayed_events_total",
            "Events replayed from resume buffers to resuming clients.",
        )?;
        let resume_buffer_bytes = IntGauge::new(
            "sse_sidecar_resume_buffer_bytes",
            "Bytes held in resume buffers (attached and parked streams), in bytes.",
        )?;
        registry.register(Box::new(resume_buffer_bytes.clone()))?;
        let resume_unbuffered_total = counter(
            registry,
            "sse_sidecar_resume_unbuffered_total",
            "Streams on a resumable path relayed without resume because resume.max_total_bytes \
             was in use by attached streams.",
        )?;
        let learned_routes = IntGauge::new(
            "sse_sidecar_learned_routes",
            "Routes learned as SSE because an answer to them was an event stream (sse.learn).",
        )?;
        registry.register(Box::new(learned_routes.clone()))?;
        let h2_abuse_total = counters(
            registry,
            "sse_sidecar_h2_abuse_total",
            "Client h2 connections closed for abusing the protocol (floods of one frame kind, \
             GOAWAY ENHANCE_YOUR_CALM; too many malformed requests), by reason.",
            "reason",
            H2Abuse::ALL.map(H2Abuse::as_str),
        )?;

        let build_info = IntGauge::with_opts(
            Opts::new(
                "sse_sidecar_build_info",
                "Always 1; the version label says which sse-sidecar is running.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;

        // The collector reads /proc, which only exists (and is only compiled in) on Linux.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Metrics {
            streams_active,
            streams_total,
            events_total,
            stream_bytes_total,
            heartbeats_total,
            event_delay_seconds,
            time_to_first_event_seconds,
            upstream_silence_seconds,
            stream_duration_seconds,
            requests_total,
            upstream_errors_total,
            streams_parked,
            resumes_total,
            replayed_events_total,
            resume_buffer_bytes,
            resume_unbuffered_total,
            learned_routes,
            h2_abuse_total,
            registry: registry.clone(),
        })
    }

    /// A resumable stream's client left (`+1`) or one came back or it was given up (`-1`).
    pub(crate) fn streams_parked_add(&self, delta: i64) {
        self.streams_parked.add(delta);
    }

    /// A resume attempt and, when it resumed, the events replayed to it.
    pub(crate) fn resume(&self, result: ResumeResult, replayed: u64) {
        self.resumes_total[result as usize].inc();
        self.replayed_events_total.inc_by(replayed);
    }

    /// Resume buffers grew (`+`) or shrank (`-`) by `delta` bytes.
    pub(crate) fn resume_buffer_add(&self, delta: i64) {
        self.resume_buffer_bytes.add(delta);
    }

    /// Bytes the resume buffers hold: the resume store's budget is kept on this gauge (see
    /// `Store::account`).
    pub(crate) fn resume_buffer_bytes(&self) -> i64 {
        self.resume_buffer_bytes.get()
    }

    /// A stream on a resumable path went without resume: the buffers were full.
    pub(crate) fn resume_unbuffered(&self) {
        self.resume_unbuffered_total.inc();
    }

    /// Counts a stream as active until the returned guard is dropped, so the
    /// gauge comes back down on every path (errors and panics included).
    #[inline]
    #[must_use = "the stream counts as active only while the guard lives"]
    pub(crate) fn stream_started(&self) -> ActiveStreamGuard {
        self.streams_active.inc();
        ActiveStreamGuard {
            gauge: self.streams_active.clone(),
        }
    }

    /// Records how a stream ended and how long it lived. Call once per stream;
    /// the active gauge is handled by [`ActiveStreamGuard`].
    #[inline]
    pub(crate) fn stream_finished(&self, outcome: Outcome, duration: Duration) {
        self.streams_total[outcome as usize].inc();
        self.stream_duration_seconds.observe(duration.as_secs_f64());
    }

    /// Counts `n` application events relayed.
    #[inline]
    pub(crate) fn events_relayed(&self, n: u64) {
        self.events_total.inc_by(n);
    }

    /// Counts `n` bytes written to an SSE client (app bytes and injected blocks).
    #[inline]
    pub(crate) fn stream_bytes_written(&self, n: u64) {
        self.stream_bytes_total.inc_by(n);
    }

    /// Counts one injected heartbeat.
    #[inline]
    pub(crate) fn heartbeat_sent(&self) {
        self.heartbeats_total.inc();
    }

    /// Records the latency the sidecar added to one event (upstream read →
    /// downstream write).
    #[inline]
    pub(crate) fn observe_event_delay(&self, delay: Duration) {
        self.event_delay_seconds.observe(delay.as_secs_f64());
    }

    /// Records request received → first application event written.
    #[inline]
    pub(crate) fn observe_time_to_first_event(&self, elapsed: Duration) {
        self.time_to_first_event_seconds
            .observe(elapsed.as_secs_f64());
    }

    /// Records the gap since the previous upstream read on the same stream.
    #[inline]
    pub(crate) fn observe_upstream_silence(&self, gap: Duration) {
        self.upstream_silence_seconds.observe(gap.as_secs_f64());
    }

    /// Counts one answered request. Statuses outside 100..=599 are counted in
    /// the nearest class (below 200 → `1xx`, from 500 up → `5xx`).
    #[inline]
    pub(crate) fn request(&self, kind: Kind, status: u16) {
        let class = usize::from(status / 100).clamp(1, CODE_CLASSES.len()) - 1;
        self.requests_total[kind as usize][class].inc();
    }

    /// Counts one failure talking to the app.
    #[inline]
    pub(crate) fn upstream_error(&self, reason: UpstreamErrorReason) {
        self.upstream_errors_total[reason as usize].inc();
    }

    /// Counts one client h2 connection closed for abuse.
    pub(crate) fn h2_abuse(&self, reason: H2Abuse) {
        self.h2_abuse_total[reason as usize].inc();
    }

    /// Counts routes learned (`delta` > 0) or dropped (< 0). A change rather than a level, so
    /// that updates from several threads add up in any order.
    pub(crate) fn learned_routes_changed(&self, delta: i64) {
        self.learned_routes.add(delta);
    }
}

/// Keeps `sse_sidecar_streams_active` raised while alive; see [`Metrics::stream_started`].
#[derive(Debug)]
pub(crate) struct ActiveStreamGuard {
    // A clone of the gauge (an `Arc` inside), so the guard can live in a
    // per-request context without borrowing `Metrics`.
    gauge: IntGauge,
}

impl Drop for ActiveStreamGuard {
    #[inline]
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A counter family with one label, one series per value (each at 0 from the first scrape),
/// in the order of `values`.
fn counters<const N: usize>(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> Result<[IntCounter; N], prometheus::Error> {
    let family = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(family.clone()))?;
    Ok(values.map(|v| family.with_label_values(&[v])))
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, prometheus::Error> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};
    use std::time::Instant;

    /// The registry in the text format a scraper sees.
    fn scrape(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The value of one exposed series, e.g. `x_total{outcome="completed"}`.
    fn sample(registry: &Registry, series: &str) -> f64 {
        let text = scrape(registry);
        let line = text
            .lines()
            .find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))
            .unwrap_or_else(|| panic!("{series} not exposed in:\n{text}"));
        line[series.len()..].trim().parse().unwrap()
    }

    /// Number of series of a metric family (lines `name{...} v`, not HELP/TYPE).
    fn series_count(registry: &Registry, name: &str) -> usize {
        let prefix = format!("{name}{{");
        scrape(registry)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }

    /// Every labelled series exists at 0 before anything is recorded, so
    /// dashboards and `rate()` see them from the first scrape.
    #[test]
    fn labelled_series_exist_at_zero() {
        let registry = Registry::new();
        let _m = Metrics::new(&registry).unwrap();
        assert_eq!(series_count(&registry, "sse_sidecar_streams_total"), 8);
        assert_eq!(series_count(&registry, "sse_sidecar_resumes_total"), 3);
        assert_eq!(series_count(&registry, "sse_sidecar_requests_total"), 15);
        assert_eq!(
            series_count(&registry, "sse_sidecar_upstream_errors_total"),
            4
        );
        assert_eq!(series_count(&registry, "sse_sidecar_h2_abuse_total"), 6);
        for o in Outcome::ALL {
            let series = format!("sse_sidecar_streams_total{{outcome=\"{}\"}}", o.as_str());
            assert_eq!(sample(&registry, &series), 0.0);
        }
        for k in Kind::ALL {
            for c in CODE_CLASSES {
                let series = format!(
                    "sse_sidecar_requests_total{{code=\"{c}\",kind=\"{}\"}}",
                    k.as_str()
                );
                assert_eq!(sample(&registry, &series), 0.0);
            }
        }
        let series = format!(
            "sse_sidecar_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&registry, &series), 1.0);
    }

    /// Registering twice into one registry is an error, not a silent duplicate.
    #[test]
    fn second_registration_fails() {
        let registry = Registry::new();
        let _m = Metrics::new(&registry).unwrap();
        assert!(Metrics::new(&registry).is_err());
    }

    /// The guard raises the gauge and its drop lowers it, also on unwind.
    #[test]
    fn active_guard_comes_back_down() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let a = m.stream_started();
        let b = m.stream_started();
        assert_eq!(sample(&registry, "sse_sidecar_streams_active"), 2.0);
        drop(a);
        assert_eq!(sample(&registry, "sse_sidecar_streams_active"), 1.0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _c = m.stream_started();
            panic!("relay blew up");
        }));
        assert!(r.is_err());
        assert_eq!(sample(&registry, "sse_sidecar_streams_active"), 1.0);
        drop(b);
        assert_eq!(sample(&registry, "sse_sidecar_streams_active"), 0.0);
    }

    /// Each outcome, kind, status class and reason lands in its own series.
    #[test]
    fn labels_map_to_the_right_series() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.stream_finished(Outcome::SlowConsumer, Duration::from_secs(2));
        m.stream_finished(Outcome::SlowConsumer, Duration::from_secs(3));
        m.stream_finished(Outcome::Completed, Duration::from_secs(1));
        let streams = |o: &str| {
            sample(
                &registry,
                &format!("sse_sidecar_streams_total{{outcome=\"{o}\"}}"),
            )
        };
        assert_eq!(streams("slow_consumer"), 2.0);
        assert_eq!(streams("completed"), 1.0);
        assert_eq!(streams("shutdown"), 0.0);
        assert_eq!(
            sample(&registry, "sse_sidecar_stream_duration_seconds_count"),
            3.0
        );
        assert_eq!(
            sample(&registry, "sse_sidecar_stream_duration_seconds_sum"),
            6.0
        );

        let requests = |kind: &str, class: &str| {
            sample(
                &registry,
                &format!("sse_sidecar_requests_total{{code=\"{class}\",kind=\"{kind}\"}}"),
            )
        };
        for (status, class) in [
            (101, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (304, "3xx"),
            (499, "4xx"),
            (503, "5xx"),
            (0, "1xx"),
            (999, "5xx"),
        ] {
            let before = requests("other", class);
            m.request(Kind::Other, status);
            assert_eq!(requests("other", class) - before, 1.0, "status {status}");
        }
        m.request(Kind::Sse, 200);
        assert_eq!(requests("sse", "2xx"), 1.0);
        assert_eq!(requests("sse", "5xx"), 0.0);
        m.request(Kind::SseUnlearned, 200);
        assert_eq!(requests("sse_unlearned", "2xx"), 1.0);
        assert_eq!(requests("sse", "2xx"), 1.0);

        assert_eq!(sample(&registry, "sse_sidecar_learned_routes"), 0.0);
        m.learned_routes_changed(3);
        m.learned_routes_changed(-1);
        assert_eq!(sample(&registry, "sse_sidecar_learned_routes"), 2.0);

        m.upstream_error(UpstreamErrorReason::Reset);
        let errors = |r: &str| {
            sample(
                &registry,
                &format!("sse_sidecar_upstream_errors_total{{reason=\"{r}\"}}"),
            )
        };
        assert_eq!(errors("reset"), 1.0);
        assert_eq!(errors("connect"), 0.0);
    }

    /// Many hot-path calls from several threads add up exactly (no lost
    /// updates) and land in the right buckets; a correctness check, not a
    /// timing test.
    #[test]
    fn hot_path_counts_exactly_under_concurrency() {
        const THREADS: u64 = 4;
        const CALLS: u64 = 10_000;
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..CALLS {
                        m.events_relayed(1);
                        m.stream_bytes_written(10);
                        m.heartbeat_sent();
                        m.observe_event_delay(Duration::from_micros(40));
                        m.observe_upstream_silence(Duration::from_millis(250));
                        m.observe_time_to_first_event(Duration::from_millis(1));
                    }
                });
            }
        });
        let n = (THREADS * CALLS) as f64;
        let s = |series: &str| sample(&registry, series);
        assert_eq!(s("sse_sidecar_events_total"), n);
        assert_eq!(s("sse_sidecar_stream_bytes_total"), 10.0 * n);
        assert_eq!(s("sse_sidecar_heartbeats_total"), n);
        assert_eq!(s("sse_sidecar_event_delay_seconds_count"), n);
        assert!((s("sse_sidecar_event_delay_seconds_sum") - n * 40e-6).abs() < 1e-6);
        // 40 µs lands in the 50 µs bucket, not the 25 µs one.
        assert_eq!(
            s("sse_sidecar_event_delay_seconds_bucket{le=\"0.000025\"}"),
            0.0
        );
        assert_eq!(
            s("sse_sidecar_event_delay_seconds_bucket{le=\"0.00005\"}"),
            n
        );
        assert_eq!(s("sse_sidecar_upstream_silence_seconds_count"), n);
        assert_eq!(
            s("sse_sidecar_upstream_silence_seconds_bucket{le=\"0.1\"}"),
            0.0
        );
        assert_eq!(
            s("sse_sidecar_upstream_silence_seconds_bucket{le=\"0.5\"}"),
            n
        );
        assert_eq!(s("sse_sidecar_time_to_first_event_seconds_count"), n);
    }

    /// Prints ns per hot-path call. Run with
    /// `cargo test --release metrics::tests::hot_path_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints timings; run by hand in release mode"]
    fn hot_path_cost() {
        const N: u32 = 5_000_000;
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        fn time(name: &str, mut f: impl FnMut(u32)) {
            let start = Instant::now();
            for i in 0..N {
                f(std::hint::black_box(i));
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
            println!("{name:<40} {ns:>7.2} ns/call");
        }
        time("events_relayed(1)", |_| m.events_relayed(1));
        time("stream_bytes_written(n)", |i| {
            m.stream_bytes_written(u64::from(i & 1023))
        });
        time("heartbeat_sent()", |_| m.heartbeat_sent());
        time("request(kind, status)", |i| {
            m.request(Kind::Sse, 200 + (i & 3) as u16)
        });
        time("observe_event_delay(40µs)", |i| {
            m.observe_event_delay(Duration::from_nanos(40_000 + u64::from(i & 1023)))
        });
        time("observe_upstream_silence(~2.5s)", |i| {
            m.observe_upstream_silence(Duration::from_millis(2_500 + u64::from(i & 1023)))
        });
        time("stream_started()+drop", |_| drop(m.stream_started()));
        time("Instant::now() (reference)", |_| {
            std::hint::black_box(Instant::now());
        });
        time("per event: now + events + bytes + delay", |i| {
            let t = Instant::now();
            m.events_relayed(1);
            m.stream_bytes_written(u64::from(i & 1023));
            m.observe_event_delay(t.elapsed());
        });
        // The same, with two threads hammering the same counters (the relay
        // runs on every worker thread, so cache lines bounce between cores).
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for i in 0..N {
                        m.events_relayed(1);
                        m.stream_bytes_written(u64::from(i & 1023));
                        m.observe_event_delay(Duration::from_nanos(40_000));
                    }
                });
            }
        });
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        println!(
            "{:<40} {ns:>7.2} ns/call-per-thread",
            "per event, 2 threads contended"
        );
    }
}
