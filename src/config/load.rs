//! How a [`Config`] comes to be: the file, then the environment and the command line over it,
//! then every key read into its validated type. A bad value is reported (key, value, where it
//! came from, what would be accepted) and replaced by its default, so one pass lists every
//! problem.

use super::file::{kind, scalar, Raw, Source};
use super::{
    duration, redact_url, size, Config, ConfigError, Limits, Listener, LogFormat, OnUpstreamError,
    Overrides, Probe, Redis, Resume, Shutdown, Sse, Timeouts, Tls, Upstream, REDACTED,
};
use serde_yaml::{Mapping, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Padding larger than this is surely a typo; legacy buffers want about 2 KiB.
const MAX_PADDING: usize = 64 * 1024;
/// Highest `limits.h2_max_concurrent_streams`: each open stream holds buffers and a task.
const MAX_H2_CONCURRENT_STREAMS: usize = 10_000;

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
        validate(&raw, problems)
    }

    /// Parses a YAML document alone (no environment, no flags), as tests need it.
    #[cfg(test)]
    pub(crate) fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let raw = Raw::from_yaml(text, &mut problems);
        validate(&raw, problems)
    }
}

/// Validates `raw`; `problems` already holds what reading it found.
fn validate(raw: &Raw, mut problems: Vec<String>) -> Result<Config, ConfigError> {
    let config = Validator {
        raw,
        problems: &mut problems,
    }
    .config();
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigError { problems }),
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
        sse_learn,
        resume_store,
        probe_token,
    } = over;
    if !listen.is_empty() {
        let list = listen.iter().map(|s| Value::from(s.as_str())).collect();
        raw.set("listen", Value::Sequence(list), Source::Flag);
    }
    let scalars: [(&'static str, &Option<String>, &str); 11] = [
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
        ("sse.learn", sse_learn, "SSE_SIDECAR_SSE_LEARN"),
        ("resume.store", resume_store, "SSE_SIDECAR_RESUME_STORE"),
        ("probe.token", probe_token, "SSE_SIDECAR_PROBE_TOKEN"),
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

    /// A size such as `64KiB` or `1MiB`, at least 1 KiB.
    fn size(&mut self, key: &str, default: usize) -> usize {
        let Some((s, v, source)) = self.text(key) else {
            return default;
        };
        match size::parse(&s) {
            Some(n) if n >= 1024 => n,
            _ => {
                self.bad(
                    key,
                    &v,
                    source,
                    "a size of at least 1KiB, such as 64KiB or 1MiB",
                );
                default
            }
        }
    }

    /// One of `options` (the first is the default when the key is not set).
    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], expected: &str) -> T {
        let default = options[0].1;
        let Some((s, v, source)) = self.text(key) else {
            return default;
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, value)) => *value,
            None => {
                self.bad(key, &v, source, expected);
                default
            }
        }
    }

    /// A list of path prefixes starting with `/`.
    fn paths(&mut self, key: &str) -> Vec<String> {
        self.list(
            key,
            |p| p.starts_with('/'),
            "path prefixes starting with /",
            "a list of path prefixes such as [\"/v1/chat\"]",
        )
    }

    /// A list of names (cookie names): non-empty tokens without `=`, `;` or spaces.
    fn names(&mut self, key: &str) -> Vec<String> {
        self.list(
            key,
            |n| !n.is_empty() && !n.contains(|c: char| c == '=' || c == ';' || c.is_whitespace()),
            "cookie names such as session",
            "a list of cookie names such as [session]",
        )
    }

    /// A list of strings, each `valid`; every bad item is reported.
    fn list(
        &mut self,
        key: &str,
        valid: impl Fn(&str) -> bool,
        item: &str,
        whole: &str,
    ) -> Vec<String> {
        match self.raw.get(key).cloned() {
            None | Some((Value::Null, _)) => Vec::new(),
            Some((Value::Sequence(items), source)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) if valid(s) => Some(s.clone()),
                    other => {
                        self.bad(key, other, source, item);
                        None
                    }
                })
                .collect(),
            Some((other, source)) => {
                self.bad(key, &other, source, whole);
                Vec::new()
            }
        }
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
        let log_format = self.choice(
            "log_format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            "one of: text, json",
        );
        let timeouts = Timeouts {
            connect: self.positive_duration("connect_timeout", Duration::from_secs(5)),
            read: self.positive_duration("read_timeout", Duration::from_secs(60)),
            sse_idle: self.positive_duration("sse_idle_timeout", Duration::from_secs(3600)),
            sse_write: self.positive_duration("sse.write_timeout", Duration::from_secs(30)),
            header_read: self
                .positive_duration("limits.header_read_timeout", Duration::from_secs(10)),
        };
        let paths = self.paths("sse.paths");
        let open_comment = match self.text("sse.open_comment") {
            Some((s, _, _)) if matches!(s.as_str(), "off" | "false") => None,
            Some(_) => Some(self.comment("sse.open_comment", "ok")),
            None => Some("ok".to_string()),
        };
        let learn = self.choice(
            "sse.learn",
            &[
                ("on", true),
                ("true", true),
                ("off", false),
                ("false", false),
            ],
            "one of: on, off",
        );
        let sse = Sse {
            paths,
            learn,
            heartbeat_interval: self
                .optional_duration("heartbeat_interval", Some(Duration::from_secs(15))),
            open_comment,
            heartbeat_comment: self.comment("sse.heartbeat_comment", ""),
            initial_padding: self.number("sse.initial_padding", 0, MAX_PADDING),
            retry: self.optional_duration("sse.retry", None),
            on_upstream_error: self.choice(
                "sse.on_upstream_error",
                &[
                    ("retry", OnUpstreamError::Retry),
                    ("status", OnUpstreamError::Status),
                ],
                "one of: retry, status",
            ),
        };
        let shutdown = Shutdown {
            drain_window: self.duration("shutdown.drain_window", Duration::from_secs(10)),
            retry: self.duration("shutdown.retry", Duration::from_secs(1)),
            handoff_timeout: self.duration("shutdown.handoff_timeout", Duration::from_secs(120)),
        };
        let limits = Limits {
            max_streams: self.number("limits.max_streams", 10_000, 10_000_000),
            max_stream_duration: self.optional_duration("limits.max_stream_duration", None),
            h2_max_concurrent_streams: self.number(
                "limits.h2_max_concurrent_streams",
                100,
                MAX_H2_CONCURRENT_STREAMS,
            ) as u32,
        };
        for (key, value) in [
            ("limits.max_streams", limits.max_streams),
            (
                "limits.h2_max_concurrent_streams",
                limits.h2_max_concurrent_streams as usize,
            ),
        ] {
            if value == 0 {
                let (v, source) = self.raw.get(key).cloned()?;
                self.bad(key, &v, source, "at least 1");
            }
        }
        if let Some(m) = metrics_listen {
            if listeners.iter().any(|l| l.addr == m) {
                self.problems.push(format!(
                    "metrics_listen: {m} is also a proxy listener; the admin endpoints need their own address"
                ));
            }
        }
        let resume = Resume {
            paths: self.paths("resume.paths"),
            grace: self.positive_duration("resume.grace", Duration::from_secs(30)),
            max_bytes: self.size("resume.max_bytes", 1 << 20),
            max_total_bytes: self.size("resume.max_total_bytes", 256 << 20),
            cookies: self.names("resume.cookies"),
            redis: self.redis(),
        };
        if resume.max_bytes > resume.max_total_bytes {
            self.problems.push(format!(
                "resume.max_bytes ({}) is larger than resume.max_total_bytes ({})",
                size::format(resume.max_bytes),
                size::format(resume.max_total_bytes)
            ));
        }
        let probe = self.probe();
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
            resume,
            probe,
        })
    }

    /// `resume.store` and `resume.redis.*`: `None` for the memory store.
    fn redis(&mut self) -> Option<Redis> {
        let key_prefix = match self.text("resume.redis.key_prefix") {
            None => "sse-sidecar:".to_string(),
            Some((s, v, source)) => {
                if s.is_empty()
                    || s.bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    self.bad(
                        "resume.redis.key_prefix",
                        &v,
                        source,
                        "a non-empty prefix without spaces or control characters",
                    );
                }
                s
            }
        };
        let timeout = self.positive_duration("resume.redis.timeout", Duration::from_secs(1));
        let connect_timeout =
            self.positive_duration("resume.redis.connect_timeout", Duration::from_secs(2));
        let (url, _, source) = self.text("resume.store")?;
        if url == "memory" {
            return None;
        }
        // A problem quotes the URL without its password.
        let v = Value::from(redact_url(&url));
        let expected = "memory, or a Redis URL: redis://host:port/db or rediss://host:port/db";
        match redis::parse_redis_url(&url) {
            Some(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {}
            _ => {
                self.bad("resume.store", &v, source, expected);
                return None;
            }
        }
        if redis::Client::open(url.as_str()).is_err() {
            self.bad("resume.store", &v, source, expected);
            return None;
        }
        Some(Redis {
            url,
            key_prefix,
            timeout,
            connect_timeout,
        })
    }

    fn probe(&mut self) -> Probe {
        let enabled = match self.text("probe.enabled") {
            None => false,
            Some((s, v, source)) => match s.as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => {
                    self.bad("probe.enabled", &v, source, "one of: on, off, true, false");
                    false
                }
            },
        };
        let default_path = "/_sse-sidecar/probe";
        let path = match self.text("probe.path") {
            None => default_path.to_string(),
            Some((s, _, _)) if s.starts_with('/') && !s.contains(['?', '#', ' ']) => s,
            Some((_, v, source)) => {
                self.bad(
                    "probe.path",
                    &v,
                    source,
                    "a path starting with / without ?, # or spaces",
                );
                default_path.to_string()
            }
        };
        let token = match self.text("probe.token") {
            None => None,
            Some((s, _, _))
                if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'&') =>
            {
                Some(s)
            }
            Some((_, _, source)) => {
                // Not quoted: it is a secret.
                self.bad(
                    "probe.token",
                    &Value::from(REDACTED),
                    source,
                    "a non-empty token of printable characters without spaces or &",
                );
                None
            }
        };
        let max_streams = self.number("probe.max_streams", 4, 1000);
        if max_streams == 0 {
            if let Some((v, source)) = self.raw.get("probe.max_streams").cloned() {
                self.bad("probe.max_streams", &v, source, "at least 1");
            }
        }
        Probe {
            enabled,
            path,
            token,
            max_streams: max_streams.max(1),
            max_duration: self.positive_duration("probe.max_duration", Duration::from_secs(600)),
        }
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
