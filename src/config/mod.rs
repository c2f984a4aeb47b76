//! The validated configuration. Everything the proxy reads comes from [`Config`], which cannot
//! hold an invalid value: durations are `Duration`s, addresses `SocketAddr`s, the upstream a
//! parsed URL. [`Config::load`] layers defaults < file < environment < flags and reports every
//! problem at once, each naming the key, the bad value and what would be accepted.

pub mod duration;
pub mod file;

use file::{kind, scalar, Raw, Source};
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Values given on the command line or in the environment (clap merges the two, flags win).
/// Each is still text: it is validated with the file's values, under the same key names.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Vec<String>,
    pub upstream: Option<String>,
    pub metrics_listen: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub sse_idle_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub threads: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The app the sidecar fronts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// As configured, for logs and `print-config`.
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host:port`, used for `Host` on HTTP/1.0 requests that carried none and for SNI.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the upstream once, at startup.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
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
pub enum OnUpstreamError {
    /// Answer SSE candidates with a 200 event stream carrying a retry hint.
    Retry,
    /// Answer with the plain 502/503/504.
    Status,
}

/// Every timeout in one place. `None` means "never".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to the app.
    pub connect: Duration,
    /// Longest wait for any single upstream read before the response header of an SSE stream
    /// (and for the whole of every non-SSE response).
    pub read: Duration,
    /// Longest app silence an SSE stream survives once its header has arrived.
    pub sse_idle: Duration,
    /// A downstream write to an SSE client that makes no progress for this long drops the client.
    pub sse_write: Duration,
    /// Longest time a client may take to send its request header.
    pub header_read: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sse {
    pub paths: Vec<String>,
    pub heartbeat_interval: Option<Duration>,
    pub open_comment: Option<String>,
    pub heartbeat_comment: String,
    pub initial_padding: usize,
    pub retry: Option<Duration>,
    pub on_upstream_error: OnUpstreamError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub drain_window: Duration,
    pub retry: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_streams: usize,
    pub max_stream_duration: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub upstream: Upstream,
    pub metrics_listen: Option<SocketAddr>,
    pub threads: usize,
    pub log_format: LogFormat,
    pub timeouts: Timeouts,
    pub sse: Sse,
    pub shutdown: Shutdown,
    pub limits: Limits,
}

/// Every problem found while loading, in one error.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
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

/// Padding larger than this is surely a typo; legacy buffers want about 2 KiB.
const MAX_PADDING: usize = 64 * 1024;

impl Config {
    /// Layers defaults < file < environment < flags and validates the result.
    pub fn load(over: &Overrides) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut raw = match &over.config {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Raw::from_yaml(&text, &mut problems),
                Err(e) => {
                    problems.push(format!("cannot read config file {}: {e}", path.display()));
                    Raw::default()
                }
            },
            None => Raw::default(),
        };
        apply_overrides(&mut raw, over);
        let config = Validator {
            raw: &raw,
            problems: &mut problems,
        }
        .config();
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Parses a YAML document alone (no environment, no flags); for tests and tooling.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let raw = Raw::from_yaml(text, &mut problems);
        let config = Validator {
            raw: &raw,
            problems: &mut problems,
        }
        .config();
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError { problems }),
        }
    }

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
            "header_read_timeout".into(),
            d(self.timeouts.header_read).into(),
        );
        top.insert("limits".into(), Value::Mapping(limits));
        serde_yaml::to_string(&Value::Mapping(top)).unwrap_or_default()
    }

    /// Whether `path` is configured as an SSE path (prefix match on path segments' text).
    pub fn is_sse_path(&self, path: &str) -> bool {
        self.sse.paths.iter().any(|p| path.starts_with(p.as_str()))
    }
}

fn apply_overrides(raw: &mut Raw, over: &Overrides) {
    // Destructured in full so that a new flag that is not applied here fails to compile.
    let Overrides {
        config: _,
        listen,
        upstream,
        metrics_listen,
        heartbeat_interval,
        sse_idle_timeout,
        read_timeout,
        connect_timeout,
        threads,
        log_format,
    } = over;
    if !listen.is_empty() {
        let list = listen.iter().map(|s| Value::from(s.as_str())).collect();
        raw.set("listen", Value::Sequence(list), Source::Flag);
    }
    let scalars: [(&'static str, &Option<String>, &str); 8] = [
        ("upstream", upstream, "SSE_SIDECAR_UPSTREAM"),
        (
            "metrics_listen",
            metrics_listen,
            "SSE_SIDECAR_METRICS_LISTEN",
        ),
        (
            "heartbeat_interval",
            heartbeat_interval,
            "SSE_SIDECAR_HEARTBEAT_INTERVAL",
        ),
        (
            "sse_idle_timeout",
            sse_idle_timeout,
            "SSE_SIDECAR_SSE_IDLE_TIMEOUT",
        ),
        ("read_timeout", read_timeout, "SSE_SIDECAR_READ_TIMEOUT"),
        (
            "connect_timeout",
            connect_timeout,
            "SSE_SIDECAR_CONNECT_TIMEOUT",
        ),
        ("threads", threads, "SSE_SIDECAR_THREADS"),
        ("log_format", log_format, "SSE_SIDECAR_LOG_FORMAT"),
    ];
    for (key, value, env) in scalars {
        if let Some(v) = value {
            // clap merged env and flag; tell them apart for the error message only.
            let source = if std::env::var(env).ok().as_deref() == Some(v.as_str()) {
                Source::Env
            } else {
                Source::Flag
            };
            raw.set(key, Value::from(v.as_str()), source);
        }
    }
}

struct Validator<'a> {
    raw: &'a Raw,
    problems: &'a mut Vec<String>,
}

impl Validator<'_> {
    fn bad(&mut self, key: &str, v: &Value, source: Source, expected: &str) {
        let shown = scalar(v).map_or_else(|| kind(v).to_string(), |s| format!("{s:?}"));
        self.problems.push(format!(
            "{key}: invalid value {shown} (from {source}): expected {expected}"
        ));
    }

    /// The value for `key` if set, as text; pushes a problem for non-scalar values.
    fn text(&mut self, key: &str) -> Option<(String, Value, Source)> {
        let (v, source) = self.raw.get(key)?;
        match scalar(v) {
            Some(s) => Some((s, v.clone(), *source)),
            None => {
                self.bad(key, v, *source, "a single value");
                None
            }
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Duration {
        let Some((s, v, source)) = self.text(key) else {
            return default;
        };
        duration::parse(&s).unwrap_or_else(|| {
            self.bad(key, &v, source, "a duration such as 500ms, 15s, 2m or 1h");
            default
        })
    }

    /// A duration where `0s`/`off` means "disabled".
    fn optional_duration(&mut self, key: &str, default: Option<Duration>) -> Option<Duration> {
        let Some((s, v, source)) = self.text(key) else {
            return default;
        };
        if matches!(s.as_str(), "off" | "false" | "none") {
            return None;
        }
        match duration::parse(&s) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => {
                self.bad(
                    key,
                    &v,
                    source,
                    "a duration such as 500ms, 15s or 1h, or off",
                );
                default
            }
        }
    }

    /// A duration that must be positive.
    fn positive_duration(&mut self, key: &str, default: Duration) -> Duration {
        let d = self.duration(key, default);
        if d.is_zero() {
            let (v, source) = self
                .raw
                .get(key)
                .cloned()
                .unwrap_or((Value::Null, Source::File));
            self.bad(key, &v, source, "a duration greater than zero");
            return default;
        }
        d
    }

    fn number(&mut self, key: &str, default: usize, max: usize) -> usize {
        let Some((s, v, source)) = self.text(key) else {
            return default;
        };
        match s.parse::<usize>() {
            Ok(n) if n <= max => n,
            _ => {
                self.bad(key, &v, source, &format!("a whole number from 0 to {max}"));
                default
            }
        }
    }

    fn comment(&mut self, key: &str, default: &str) -> String {
        let Some((s, v, source)) = self.text(key) else {
            return default.to_string();
        };
        if crate::sse::validate_comment(&s).is_err() {
            self.bad(
                key,
                &v,
                source,
                "one line of text (a line break would end the comment and corrupt the stream)",
            );
            return default.to_string();
        }
        s
    }

    fn addr(&mut self, key: &str, text: &str, v: &Value, source: Source) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.bad(
                    key,
                    v,
                    source,
                    "an IP address and port such as 0.0.0.0:8080 or [::]:8080",
                );
                None
            }
        }
    }

    fn listeners(&mut self) -> Vec<Listener> {
        let default = vec![Listener {
            addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls: None,
        }];
        let Some((v, source)) = self.raw.get("listen").cloned() else {
            return default;
        };
        let items = match v {
            Value::Sequence(ref items) => items.clone(),
            Value::String(_) => vec![v.clone()],
            _ => {
                self.bad(
                    "listen",
                    &v,
                    source,
                    "a list of addresses such as [\"0.0.0.0:8080\"]",
                );
                return default;
            }
        };
        if items.is_empty() {
            self.bad("listen", &v, source, "at least one address");
            return default;
        }
        let mut out = Vec::new();
        for item in items {
            match &item {
                Value::String(s) => {
                    // The environment variable is a comma-separated list.
                    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        if let Some(addr) = self.addr("listen", part, &Value::from(part), source) {
                            out.push(Listener { addr, tls: None });
                        }
                    }
                }
                Value::Mapping(m) => {
                    if let Some(l) = self.tls_listener(m, source) {
                        out.push(l);
                    }
                }
                other => self.bad("listen", other, source, "an address or {addr, tls}"),
            }
        }
        if out.is_empty() {
            return default;
        }
        out
    }

    fn tls_listener(&mut self, m: &Mapping, source: Source) -> Option<Listener> {
        let mut addr = None;
        let mut tls = None;
        for (k, v) in m {
            match k.as_str() {
                Some("addr") => match scalar(v) {
                    Some(s) => addr = self.addr("listen.addr", &s, v, source),
                    None => self.bad("listen.addr", v, source, "an address"),
                },
                Some("tls") => tls = self.tls(v, source),
                _ => self.problems.push(format!(
                    "unknown key `listen.{}` (known keys: addr, tls)",
                    scalar(k).unwrap_or_default()
                )),
            }
        }
        match addr {
            Some(addr) => Some(Listener { addr, tls }),
            None => {
                self.problems
                    .push("listen: a listener given as a mapping needs `addr`".into());
                None
            }
        }
    }

    fn tls(&mut self, v: &Value, source: Source) -> Option<Tls> {
        let Value::Mapping(m) = v else {
            self.bad("listen.tls", v, source, "a mapping with cert and key");
            return None;
        };
        let mut cert = None;
        let mut key = None;
        for (k, v) in m {
            let name = k.as_str().unwrap_or_default();
            let path = match scalar(v) {
                Some(p) => PathBuf::from(p),
                None => {
                    self.bad(&format!("listen.tls.{name}"), v, source, "a file path");
                    continue;
                }
            };
            match name {
                "cert" | "key" => {
                    if !Path::new(&path).is_file() {
                        self.bad(
                            &format!("listen.tls.{name}"),
                            v,
                            source,
                            "a readable PEM file (no such file)",
                        );
                    }
                    if name == "cert" {
                        cert = Some(path)
                    } else {
                        key = Some(path)
                    }
                }
                other => self.problems.push(format!(
                    "unknown key `listen.tls.{other}` (known keys: cert, key)"
                )),
            }
        }
        match (cert, key) {
            (Some(cert), Some(key)) => {
                // Only when both files exist (a missing one was reported above).
                if cert.is_file() && key.is_file() {
                    if let Err(msg) = check_tls_pair(&cert, &key) {
                        self.problems.push(format!("listen.tls: {msg}"));
                    }
                }
                Some(Tls { cert, key })
            }
            _ => {
                self.problems
                    .push("listen.tls: both `cert` and `key` are required".into());
                None
            }
        }
    }

    fn upstream(&mut self) -> Upstream {
        let default = Upstream {
            url: "http://127.0.0.1:3000".into(),
            tls: false,
            host: "127.0.0.1".into(),
            port: 3000,
        };
        let Some((s, v, source)) = self.text("upstream") else {
            return default;
        };
        match parse_upstream(&s) {
            Some(u) => u,
            None => {
                self.bad(
                    "upstream",
                    &v,
                    source,
                    "an http:// or https:// URL with a host and no path, such as http://127.0.0.1:3000",
                );
                default
            }
        }
    }

    fn config(mut self) -> Option<Config> {
        let listeners = self.listeners();
        let upstream = self.upstream();
        let metrics_listen = match self.text("metrics_listen") {
            None => Some(SocketAddr::from(([0, 0, 0, 0], 9090))),
            Some((s, _, _)) if matches!(s.as_str(), "off" | "false" | "none") => None,
            Some((s, v, source)) => self.addr("metrics_listen", &s, &v, source),
        };
        let threads = match self.number("threads", 0, 1024) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let log_format = match self.text("log_format") {
            None => LogFormat::Text,
            Some((s, v, source)) => match s.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    self.bad("log_format", &v, source, "one of: text, json");
                    LogFormat::Text
                }
            },
        };
        let timeouts = Timeouts {
            connect: self.positive_duration("connect_timeout", Duration::from_secs(5)),
            read: self.positive_duration("read_timeout", Duration::from_secs(60)),
            sse_idle: self.positive_duration("sse_idle_timeout", Duration::from_secs(3600)),
            sse_write: self.positive_duration("sse.write_timeout", Duration::from_secs(30)),
            header_read: self
                .positive_duration("limits.header_read_timeout", Duration::from_secs(10)),
        };
        let paths = match self.raw.get("sse.paths").cloned() {
            None | Some((Value::Null, _)) => Vec::new(),
            Some((Value::Sequence(items), source)) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(p) if p.starts_with('/') => Some(p.clone()),
                    other => {
                        self.bad("sse.paths", other, source, "path prefixes starting with /");
                        None
                    }
                })
                .collect(),
            Some((other, source)) => {
                self.bad(
                    "sse.paths",
                    &other,
                    source,
                    "a list of path prefixes such as [\"/v1/chat\"]",
                );
                Vec::new()
            }
        };
        let open_comment = match self.text("sse.open_comment") {
            Some((s, _, _)) if matches!(s.as_str(), "off" | "false") => None,
            Some(_) => Some(self.comment("sse.open_comment", "ok")),
            None => Some("ok".to_string()),
        };
        let sse = Sse {
            paths,
            heartbeat_interval: self
                .optional_duration("heartbeat_interval", Some(Duration::from_secs(15))),
            open_comment,
            heartbeat_comment: self.comment("sse.heartbeat_comment", ""),
            initial_padding: self.number("sse.initial_padding", 0, MAX_PADDING),
            retry: self.optional_duration("sse.retry", None),
            on_upstream_error: match self.text("sse.on_upstream_error") {
                None => OnUpstreamError::Retry,
                Some((s, v, source)) => match s.as_str() {
                    "retry" => OnUpstreamError::Retry,
                    "status" => OnUpstreamError::Status,
                    _ => {
                        self.bad("sse.on_upstream_error", &v, source, "one of: retry, status");
                        OnUpstreamError::Retry
                    }
                },
            },
        };
        let shutdown = Shutdown {
            drain_window: self.duration("shutdown.drain_window", Duration::from_secs(10)),
            retry: self.duration("shutdown.retry", Duration::from_secs(1)),
        };
        let limits = Limits {
            max_streams: self.number("limits.max_streams", 10_000, 10_000_000),
            max_stream_duration: self.optional_duration("limits.max_stream_duration", None),
        };
        if limits.max_streams == 0 {
            let (v, source) = self.raw.get("limits.max_streams").cloned()?;
            self.bad("limits.max_streams", &v, source, "at least 1");
        }
        if let Some(m) = metrics_listen {
            if listeners.iter().any(|l| l.addr == m) {
                self.problems.push(format!(
                    "metrics_listen: {m} is also a proxy listener; the admin endpoints need their own address"
                ));
            }
        }
        Some(Config {
            listeners,
            upstream,
            metrics_listen,
            threads,
            log_format,
            timeouts,
            sse,
            shutdown,
            limits,
        })
    }
}

fn parse_upstream(s: &str) -> Option<Upstream> {
    let uri: http::Uri = s.parse().ok()?;
    let tls = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return None;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Some(Upstream {
        url: s.to_string(),
        tls,
        host: host.to_string(),
        port,
    })
}

/// Loads a cert/key pair as pingora's rustls listener will, so a file that is not PEM, holds
/// no key, or a key that does not match the certificate is a configuration error (and `check`
/// catches it) instead of a panic in the listener thread, which leaves the process running with
/// no proxy listener at all while /readyz answers 200.
fn check_tls_pair(cert: &Path, key: &Path) -> Result<(), String> {
    use pingora_core::tls::{load_certs_and_key_files, ServerConfig};
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let (certs, key) = match load_certs_and_key_files(&c, &k) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return Err(format!(
                "no PEM certificate in {c}, or no PEM private key (PKCS#8, PKCS#1 or SEC1) in {k}"
            ))
        }
        Err(e) => return Err(format!("reading {c} / {k}: {e}")),
    };
    pingora_core::tls::install_default_crypto_provider();
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(drop)
        .map_err(|e| format!("{c} and {k} do not make a usable certificate and key: {e}"))
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
    fn print_config_round_trips() {
        let c =
            Config::from_yaml("sse:\n  paths: [/v1/chat]\n  retry: 3s\nheartbeat_interval: 0s\n")
                .unwrap();
        let again = Config::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(c, again);
        assert_eq!(again.sse.heartbeat_interval, None);
    }

    #[test]
    fn upstream_urls() {
        assert!(parse_upstream("http://127.0.0.1:3000").is_some());
        assert!(parse_upstream("http://app/").is_some());
        assert_eq!(parse_upstream("https://app").unwrap().port, 443);
        assert!(parse_upstream("http://[::1]:80").is_some());
        for bad in [
            "127.0.0.1:3000",
            "ftp://a",
            "http://a/path",
            "http://u@a",
            "http://a?q",
        ] {
            assert!(parse_upstream(bad).is_none(), "{bad}");
        }
    }
}
