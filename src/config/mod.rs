//! The validated configuration. Everything the proxy reads comes from [`Config`], which cannot
//! hold an invalid value: durations are `Duration`s, addresses `SocketAddr`s, the upstream a
//! parsed URL. [`Config::load`] layers defaults < file < environment < flags and reports every
//! problem at once, each naming the key, the bad value and what would be accepted.
//!
//! This file holds the validated types and the way out (`to_yaml`); `file.rs` reads the YAML
//! shape, and `load.rs` layers the sources and validates them into a [`Config`].

pub(crate) mod duration;

/// Parses a duration as the configuration does (`500ms`, `15s`, `2m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    duration::parse(text)
}
mod file;
mod load;
mod size;

use serde_yaml::{Mapping, Value};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Values given on the command line or in the environment (clap merges the two, flags win).
/// Each is still text: it is validated with the file's values, under the same key names.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub(crate) config: Option<PathBuf>,
    pub(crate) listen: Vec<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) metrics_listen: Option<String>,
    pub(crate) heartbeat_interval: Option<String>,
    pub(crate) sse_idle_timeout: Option<String>,
    pub(crate) read_timeout: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) threads: Option<String>,
    pub(crate) log_format: Option<String>,
    pub(crate) sse_learn: Option<String>,
    pub(crate) resume_store: Option<String>,
    pub(crate) probe_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub(crate) tls: Option<Tls>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The app the sidecar fronts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// As configured, for logs and `print-config`.
    pub url: String,
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Upstream {
    /// `host:port`, used for `Host` on HTTP/1.0 requests that carried none and for SNI.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the upstream once, at startup.
    pub(crate) fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve upstream {}: {e}", self.authority()))?
            .next()
            .ok_or_else(|| format!("upstream {} resolved to no address", self.authority()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnUpstreamError {
    /// Answer SSE candidates with a 200 event stream carrying a retry hint.
    Retry,
    /// Answer with the plain 502/503/504.
    Status,
}

/// Every timeout in one place. `None` means "never".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// TCP connect to the app.
    pub(crate) connect: Duration,
    /// Longest wait for any single upstream read before the response header of an SSE stream
    /// (and for the whole of every non-SSE response).
    pub(crate) read: Duration,
    /// Longest app silence an SSE stream survives once its header has arrived.
    pub(crate) sse_idle: Duration,
    /// A downstream write to an SSE client that makes no progress for this long drops the client.
    pub(crate) sse_write: Duration,
    /// Longest time a client may take to send its request header.
    pub(crate) header_read: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sse {
    pub(crate) paths: Vec<String>,
    /// Learn the routes whose answer was an event stream, and treat them as candidates.
    pub(crate) learn: bool,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) open_comment: Option<String>,
    pub(crate) heartbeat_comment: String,
    pub(crate) initial_padding: usize,
    pub(crate) retry: Option<Duration>,
    pub(crate) on_upstream_error: OnUpstreamError,
}

/// `pub`: `proxy::drain::Drain` takes it in its public constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub(crate) drain_window: Duration,
    pub(crate) retry: Duration,
    /// With a shared resume store: how long a draining process keeps relaying the app's
    /// resumable streams into the store after their clients were closed.
    pub(crate) handoff_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_streams: usize,
    pub(crate) max_stream_duration: Option<Duration>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the sidecar announces on every h2 connection (h2c and
    /// TLS); a client opening more gets REFUSED_STREAM.
    pub(crate) h2_max_concurrent_streams: u32,
}

/// Resumable streams (`resume.*`): off while `paths` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) paths: Vec<String>,
    /// How long a stream whose client left stays open, buffering.
    pub(crate) grace: Duration,
    /// Replay buffer per stream.
    pub(crate) max_bytes: usize,
    /// All replay buffers together.
    pub(crate) max_total_bytes: usize,
    /// Cookies that identify the client; empty: the whole `Cookie` header.
    pub(crate) cookies: Vec<String>,
    /// The shared store (`resume.store: redis://…`); `None`: memory only.
    pub(crate) redis: Option<Redis>,
}

/// `resume.store: redis://host:port/db` (or `rediss://`) and `resume.redis.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Redis {
    pub(crate) url: String,
    /// Prefix of every key the sidecar writes.
    pub(crate) key_prefix: String,
    /// Bound on one command (a lookup, a pipelined write, a ping).
    pub(crate) timeout: Duration,
    /// Bound on connecting (and reconnecting).
    pub(crate) connect_timeout: Duration,
}

impl Redis {
    /// The URL with its password as `***`, for logs and `print-config`.
    pub(crate) fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// What `print-config` shows for a secret (a Redis password, `probe.token`).
pub(crate) const REDACTED: &str = "***";

/// `url` with the password of its user info (`scheme://user:password@host…`) replaced by
/// [`REDACTED`]. Textual, so that it also hides the password of a URL that does not parse
/// (which a configuration error quotes).
pub(crate) fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}{REDACTED}{}", &url[..=colon], &url[at..]),
        None => url.to_string(),
    }
}

/// The probe stream (`probe.*`): a diagnostic event stream the sidecar serves itself, for
/// `sse-sidecar probe` to find which box on the path buffers, compresses or cuts streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    pub(crate) enabled: bool,
    pub(crate) path: String,
    /// Required as `?token=` when set.
    pub(crate) token: Option<String>,
    /// Probe streams open at once; past it, 503.
    pub(crate) max_streams: usize,
    /// Longest probe stream.
    pub(crate) max_duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub upstream: Upstream,
    pub metrics_listen: Option<SocketAddr>,
    pub(crate) threads: usize,
    pub log_format: LogFormat,
    pub(crate) timeouts: Timeouts,
    pub(crate) sse: Sse,
    pub(crate) shutdown: Shutdown,
    pub(crate) limits: Limits,
    pub(crate) resume: Resume,
    pub(crate) probe: Probe,
}

/// Every problem found while loading, in one error.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub(crate) problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} configuration problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The effective configuration as YAML in the file's own shape, so it can be fed back.
    pub fn to_yaml(&self) -> String {
        let d = duration::format;
        let opt = |v: Option<Duration>| v.map_or("off".to_string(), d);
        let mut top = Mapping::new();
        let listen: Vec<Value> = self
            .listeners
            .iter()
            .map(|l| match &l.tls {
                None => Value::from(l.addr.to_string()),
                Some(tls) => {
                    let mut t = Mapping::new();
                    t.insert("cert".into(), tls.cert.display().to_string().into());
                    t.insert("key".into(), tls.key.display().to_string().into());
                    let mut m = Mapping::new();
                    m.insert("addr".into(), l.addr.to_string().into());
                    m.insert("tls".into(), Value::Mapping(t));
                    Value::Mapping(m)
                }
            })
            .collect();
        top.insert("listen".into(), Value::Sequence(listen));
        top.insert("upstream".into(), self.upstream.url.clone().into());
        top.insert(
            "metrics_listen".into(),
            self.metrics_listen
                .map_or("off".to_string(), |a| a.to_string())
                .into(),
        );
        top.insert(
            "heartbeat_interval".into(),
            d(self.sse.heartbeat_interval.unwrap_or_default()).into(),
        );
        top.insert("sse_idle_timeout".into(), d(self.timeouts.sse_idle).into());
        top.insert("read_timeout".into(), d(self.timeouts.read).into());
        top.insert("connect_timeout".into(), d(self.timeouts.connect).into());
        top.insert("threads".into(), (self.threads as u64).into());
        top.insert(
            "log_format".into(),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        );
        let mut sse = Mapping::new();
        sse.insert(
            "paths".into(),
            Value::Sequence(self.sse.paths.iter().map(|p| p.clone().into()).collect()),
        );
        sse.insert(
            "learn".into(),
            if self.sse.learn { "on" } else { "off" }.into(),
        );
        sse.insert(
            "open_comment".into(),
            self.sse
                .open_comment
                .clone()
                .unwrap_or_else(|| "off".into())
                .into(),
        );
        sse.insert(
            "heartbeat_comment".into(),
            self.sse.heartbeat_comment.clone().into(),
        );
        sse.insert(
            "initial_padding".into(),
            (self.sse.initial_padding as u64).into(),
        );
        sse.insert("retry".into(), opt(self.sse.retry).into());
        sse.insert("write_timeout".into(), d(self.timeouts.sse_write).into());
        sse.insert(
            "on_upstream_error".into(),
            match self.sse.on_upstream_error {
                OnUpstreamError::Retry => "retry",
                OnUpstreamError::Status => "status",
            }
            .into(),
        );
        top.insert("sse".into(), Value::Mapping(sse));
        let mut shutdown = Mapping::new();
        shutdown.insert("drain_window".into(), d(self.shutdown.drain_window).into());
        shutdown.insert("retry".into(), d(self.shutdown.retry).into());
        shutdown.insert(
            "handoff_timeout".into(),
            d(self.shutdown.handoff_timeout).into(),
        );
        top.insert("shutdown".into(), Value::Mapping(shutdown));
        let mut limits = Mapping::new();
        limits.insert(
            "max_streams".into(),
            (self.limits.max_streams as u64).into(),
        );
        limits.insert(
            "max_stream_duration".into(),
            opt(self.limits.max_stream_duration).into(),
        );
        limits.insert(
            "h2_max_concurrent_streams".into(),
            u64::from(self.limits.h2_max_concurrent_streams).into(),
        );
        limits.insert(
            "header_read_timeout".into(),
            d(self.timeouts.header_read).into(),
        );
        top.insert("limits".into(), Value::Mapping(limits));
        let list = |v: &[String]| Value::Sequence(v.iter().map(|p| p.clone().into()).collect());
        let mut resume = Mapping::new();
        resume.insert("paths".into(), list(&self.resume.paths));
        resume.insert("grace".into(), d(self.resume.grace).into());
        resume.insert(
            "max_bytes".into(),
            size::format(self.resume.max_bytes).into(),
        );
        resume.insert(
            "max_total_bytes".into(),
            size::format(self.resume.max_total_bytes).into(),
        );
        resume.insert("cookies".into(), list(&self.resume.cookies));
        match &self.resume.redis {
            None => {
                resume.insert("store".into(), "memory".into());
            }
            Some(r) => {
                // Secrets are never printed: the output goes to terminals and CI logs.
                resume.insert("store".into(), r.redacted_url().into());
                let mut redis = Mapping::new();
                redis.insert("key_prefix".into(), r.key_prefix.clone().into());
                redis.insert("timeout".into(), d(r.timeout).into());
                redis.insert("connect_timeout".into(), d(r.connect_timeout).into());
                resume.insert("redis".into(), Value::Mapping(redis));
            }
        }
        top.insert("resume".into(), Value::Mapping(resume));
        let mut probe = Mapping::new();
        let on_off = |b: bool| if b { "on" } else { "off" };
        probe.insert("enabled".into(), on_off(self.probe.enabled).into());
        probe.insert("path".into(), self.probe.path.clone().into());
        // Left out when unset; hidden when set (the output still loads).
        if self.probe.token.is_some() {
            probe.insert("token".into(), REDACTED.into());
        }
        probe.insert("max_streams".into(), (self.probe.max_streams as u64).into());
        probe.insert("max_duration".into(), d(self.probe.max_duration).into());
        top.insert("probe".into(), Value::Mapping(probe));
        serde_yaml::to_string(&Value::Mapping(top)).unwrap_or_default()
    }

    /// Whether `path` is configured as an SSE path (prefix match on path segments' text).
    pub(crate) fn is_sse_path(&self, path: &str) -> bool {
        self.sse.paths.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Whether `path` is the probe stream's, with the probe enabled (exact match).
    pub(crate) fn is_probe_path(&self, path: &str) -> bool {
        self.probe.enabled && path == self.probe.path
    }

    /// Whether streams on `path` are resumable (`resume.paths`, prefix match).
    pub(crate) fn is_resume_path(&self, path: &str) -> bool {
        self.resume
            .paths
            .iter()
            .any(|p| path.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.listeners[0].addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.upstream.port, 3000);
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert_eq!(c.sse.heartbeat_interval, Some(Duration::from_secs(15)));
        assert_eq!(c.timeouts.sse_idle, Duration::from_secs(3600));
        assert_eq!(c.timeouts.read, Duration::from_secs(60));
        assert_eq!(c.timeouts.connect, Duration::from_secs(5));
        assert_eq!(c.sse.open_comment.as_deref(), Some("ok"));
        assert_eq!(c.limits.max_streams, 10_000);
        assert_eq!(c.limits.h2_max_concurrent_streams, 100);
        assert!(c.sse.learn);
    }

    #[test]
    fn every_problem_is_listed() {
        let err = Config::from_yaml(
            "heartbeat_interval: 15x\nupstream: ftp://x\nbogus: 1\nsse:\n  nope: 2\n  on_upstream_error: maybe\nlisten: [\"nowhere\"]\n",
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        assert_eq!(err.problems.len(), 6, "{all}");
        assert!(all.contains("listen: invalid value \"nowhere\""), "{all}");
        assert!(
            all.contains("heartbeat_interval: invalid value \"15x\""),
            "{all}"
        );
        assert!(all.contains("unknown key `bogus`"), "{all}");
        assert!(all.contains("unknown key `sse.nope`"), "{all}");
        assert!(all.contains("upstream: invalid value \"ftp://x\""), "{all}");
        assert!(all.contains("sse.on_upstream_error"), "{all}");
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        for (url, want) in [
            ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
            ("rediss://app:s3cret@r/1", "rediss://app:***@r/1"),
            ("redis://app:p@ss:w@rd@r:6379", "redis://app:***@r:6379"),
            ("redis://r:6379/0", "redis://r:6379/0"),
            ("redis://app@r/0", "redis://app@r/0"),
            ("redis://r/0?x=a:b@c", "redis://r/0?x=a:b@c"),
            ("not a url:pw@x", "not a url:pw@x"),
            ("redis//:pw@x", "redis//:pw@x"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn print_config_hides_secrets() {
        let c = Config::from_yaml(
            "resume:\n  store: redis://:s3cret@127.0.0.1:6379/0\nprobe:\n  token: t0ken\n",
        )
        .unwrap();
        let text = c.to_yaml();
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        assert!(text.contains("redis://:***@127.0.0.1:6379/0"), "{text}");
        // It still loads, with the placeholders in place of the secrets.
        let again = Config::from_yaml(&text).unwrap();
        assert_eq!(again.probe.token.as_deref(), Some(REDACTED));
        let bad = Config::from_yaml("resume:\n  store: redis://:s3cret@\nprobe:\n  token: 'a b'\n")
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("s3cret") && !bad.contains("a b"), "{bad}");
        assert!(
            bad.contains("resume.store: invalid value \"redis://:***@\""),
            "{bad}"
        );
        assert!(bad.contains("probe.token: invalid value \"***\""), "{bad}");
    }

    #[test]
    fn print_config_round_trips() {
        let c =
            Config::from_yaml("sse:\n  paths: [/v1/chat]\n  retry: 3s\nheartbeat_interval: 0s\n")
                .unwrap();
        let again = Config::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(c, again);
        assert_eq!(again.sse.heartbeat_interval, None);
        let off = Config::from_yaml("sse:\n  learn: off\n").unwrap();
        assert!(!off.sse.learn);
        assert_eq!(Config::from_yaml(&off.to_yaml()).unwrap(), off);
    }

    #[test]
    fn h2_max_concurrent_streams_is_checked_and_round_trips() {
        let c = Config::from_yaml("limits:\n  h2_max_concurrent_streams: 7\n").unwrap();
        assert_eq!(c.limits.h2_max_concurrent_streams, 7);
        assert_eq!(Config::from_yaml(&c.to_yaml()).unwrap(), c);
        for bad in ["0", "-1", "many", "10001"] {
            let err = Config::from_yaml(&format!("limits:\n  h2_max_concurrent_streams: {bad}\n"))
                .unwrap_err();
            assert!(
                err.problems[0].starts_with(&format!(
                    "limits.h2_max_concurrent_streams: invalid value \"{bad}\""
                )),
                "{:?}",
                err.problems
            );
        }
    }

    #[test]
    fn learn_takes_on_or_off() {
        for (text, want) in [
            ("on", true),
            ("off", false),
            ("true", true),
            ("false", false),
        ] {
            let c = Config::from_yaml(&format!("sse:\n  learn: {text}\n")).unwrap();
            assert_eq!(c.sse.learn, want, "{text}");
        }
        let err = Config::from_yaml("sse:\n  learn: maybe\n").unwrap_err();
        assert_eq!(
            err.problems,
            vec!["sse.learn: invalid value \"maybe\" (from config file): expected one of: on, off"]
        );
    }

    #[test]
    fn probe_defaults_values_and_bad_values() {
        let c = Config::from_yaml("").unwrap();
        assert!(!c.probe.enabled);
        assert_eq!(c.probe.path, "/_sse-sidecar/probe");
        assert_eq!(c.probe.token, None);
        assert_eq!(c.probe.max_streams, 4);
        assert_eq!(c.probe.max_duration, Duration::from_secs(600));
        assert!(!c.is_probe_path("/_sse-sidecar/probe"));
        let yaml = "probe:\n  enabled: true\n  path: /diag\n  token: s3cret\n  max_streams: 2\n  max_duration: 1m\n";
        let c = Config::from_yaml(yaml).unwrap();
        assert!(c.is_probe_path("/diag") && !c.is_probe_path("/diag/x"));
        assert_eq!(c.probe.token.as_deref(), Some("s3cret"));
        assert_eq!(
            (c.probe.max_streams, c.probe.max_duration),
            (2, Duration::from_secs(60))
        );
        // The token is printed as a placeholder; everything else round-trips.
        let mut again = Config::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(again.probe.token.as_deref(), Some(REDACTED));
        again.probe.token = c.probe.token.clone();
        assert_eq!(again, c);
        let bad = "probe:\n  enabled: maybe\n  path: diag\n  token: a b\n  max_streams: 0\n  max_duration: 0s\n  nope: 1\n";
        let err = Config::from_yaml(bad).unwrap_err();
        let all = err.problems.join("\n");
        for key in [
            "probe.enabled: invalid value \"maybe\"",
            "probe.path: invalid value \"diag\"",
            "probe.token: invalid value \"***\"",
            "probe.max_streams: invalid value \"0\"",
            "probe.max_duration: invalid value \"0s\"",
            "unknown key `probe.nope`",
        ] {
            assert!(all.contains(key), "{key} not in:\n{all}");
        }
    }
}
