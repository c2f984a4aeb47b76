//! The configuration as written: a YAML file, environment variables and flags, layered into
//! one map of `key path → (value, where it came from)` before anything is validated.
//!
//! The file is walked by hand rather than through `#[serde(deny_unknown_fields)]` structs so
//! that `check` can list *every* unknown key and bad value in one run instead of stopping at
//! serde's first error.

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Every key the configuration knows, as it is spelled in YAML (`section.key`).
pub const KEYS: &[&str] = &[
    "listen",
    "upstream",
    "metrics_listen",
    "heartbeat_interval",
    "sse_idle_timeout",
    "read_timeout",
    "connect_timeout",
    "threads",
    "log_format",
    "sse.paths",
    "sse.learn",
    "sse.open_comment",
    "sse.heartbeat_comment",
    "sse.initial_padding",
    "sse.retry",
    "sse.write_timeout",
    "sse.on_upstream_error",
    "shutdown.drain_window",
    "shutdown.retry",
    "shutdown.handoff_timeout",
    "limits.max_streams",
    "limits.max_stream_duration",
    "limits.h2_max_concurrent_streams",
    "limits.header_read_timeout",
    "resume.paths",
    "resume.grace",
    "resume.max_bytes",
    "resume.max_total_bytes",
    "resume.cookies",
    "resume.store",
    "resume.redis.key_prefix",
    "resume.redis.timeout",
    "resume.redis.connect_timeout",
    "probe.enabled",
    "probe.path",
    "probe.token",
    "probe.max_streams",
    "probe.max_duration",
];

/// Mappings whose keys are `section.key` (`resume.redis` nests in `resume`).
const SECTIONS: &[&str] = &[
    "sse",
    "shutdown",
    "limits",
    "resume",
    "resume.redis",
    "probe",
];

/// Where a value came from; named in error messages so users know what to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Env,
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::File => "config file",
            Source::Env => "environment",
            Source::Flag => "command line",
        })
    }
}

/// The layered, not yet validated settings.
#[derive(Default, Debug)]
pub struct Raw {
    values: BTreeMap<&'static str, (Value, Source)>,
}

impl Raw {
    /// Reads a YAML document into the raw layer. Unknown keys and shape errors are pushed to
    /// `problems`; everything that could be read is kept so later checks still run.
    pub fn from_yaml(text: &str, problems: &mut Vec<String>) -> Raw {
        let mut raw = Raw::default();
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("config file is not valid YAML: {e}"));
                return raw;
            }
        };
        let top = match doc {
            Value::Null => return raw,
            Value::Mapping(m) => m,
            other => {
                problems.push(format!(
                    "config file: expected a mapping of keys at the top level, found {}",
                    kind(&other)
                ));
                return raw;
            }
        };
        raw.read_mapping(top, "", problems);
        raw
    }

    /// Reads the keys of one mapping, `within` a section (`""` at the top level).
    fn read_mapping(&mut self, m: serde_yaml::Mapping, within: &str, problems: &mut Vec<String>) {
        for (k, v) in m {
            let Some(k) = key_name(&k, within, problems) else {
                continue;
            };
            let path = if within.is_empty() {
                k
            } else {
                format!("{within}.{k}")
            };
            if SECTIONS.contains(&path.as_str()) {
                match v {
                    Value::Null => {}
                    Value::Mapping(section) => self.read_mapping(section, &path, problems),
                    other => problems.push(format!(
                        "{path}: expected a mapping of keys, found {}",
                        kind(&other)
                    )),
                }
            } else {
                self.set_known(&path, v, Source::File, problems);
            }
        }
    }

    fn set_known(&mut self, path: &str, v: Value, source: Source, problems: &mut Vec<String>) {
        match KEYS.iter().find(|k| **k == path) {
            Some(key) => {
                self.values.insert(key, (v, source));
            }
            None => problems.push(unknown_key(path)),
        }
    }

    /// Overrides `key` (which must be one of [`KEYS`]) with a value from the environment or a flag.
    pub fn set(&mut self, key: &'static str, v: Value, source: Source) {
        debug_assert!(KEYS.contains(&key));
        self.values.insert(key, (v, source));
    }

    pub fn get(&self, key: &str) -> Option<&(Value, Source)> {
        self.values.get(key)
    }
}

fn key_name(k: &Value, section: &str, problems: &mut Vec<String>) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        other => {
            let at = if section.is_empty() {
                "top level"
            } else {
                section
            };
            problems.push(format!("{at}: keys must be strings, found {}", kind(other)));
            None
        }
    }
}

fn unknown_key(path: &str) -> String {
    let (section, _) = path.rsplit_once('.').unwrap_or(("", path));
    let siblings: Vec<&str> = KEYS
        .iter()
        .filter(|k| match k.rsplit_once('.') {
            Some((s, _)) => s == section,
            None => section.is_empty(),
        })
        .map(|k| k.rsplit_once('.').map_or(*k, |(_, name)| name))
        .collect();
    let mut known = siblings.join(", ");
    if section.is_empty() {
        known.push_str(", ");
        known.push_str(&SECTIONS.join(", "));
    }
    let place = if section.is_empty() {
        String::new()
    } else {
        format!(" in section `{section}`")
    };
    format!("unknown key `{path}`{place} (known keys: {known})")
}

/// A short name for a YAML value's kind, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Renders a scalar as the user wrote it, for error messages and scalar parsing.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
