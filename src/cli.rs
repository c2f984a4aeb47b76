//! Command-line definitions only. Every run flag also reads an `SSE_SIDECAR_*` environment
//! variable; clap gives the flag precedence over the variable.

use crate::config::Overrides;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sse-sidecar",
    version,
    about = "A reverse proxy that makes Server-Sent Events survive buffering, compressing and timing-out middleboxes",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the configuration and exit: 0 when valid, 2 with every problem listed otherwise.
    Check(RunArgs),
    /// Print the effective configuration (defaults < file < environment < flags) as YAML.
    PrintConfig(RunArgs),
    /// Open an event stream as a browser does and report which box on the path buffers,
    /// compresses or cuts it: 0 nothing found, 1 a problem found, 2 usage or connection error.
    Probe(ProbeArgs),
    /// Start the drain of the sidecar running on this host (the process in
    /// SSE_SIDECAR_PID_FILE), exactly as SIGTERM does: for a Kubernetes preStop hook.
    Drain(DrainArgs),
}

/// `sse-sidecar drain`.
#[derive(Args, Debug, Clone)]
pub struct DrainArgs {
    /// Return only once the sidecar has exited.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up (exit 1) after this long, e.g. 30s. [default: no limit]
    #[arg(long, value_name = "DUR", requires = "wait")]
    pub timeout: Option<String>,
    /// The sidecar's pid file. [default: $SSE_SIDECAR_PID_FILE, else /tmp/sse-sidecar.pid]
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// `sse-sidecar probe`: against the sidecar's probe stream (`probe.enabled`), or any SSE URL.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The stream, e.g. https://example.com/_sse-sidecar/probe?token=…
    #[arg(value_name = "URL")]
    pub url: String,
    /// A request header, 'Name: value'; repeat for several.
    #[arg(long = "header", short = 'H', value_name = "K: V")]
    pub headers: Vec<String>,
    /// Silences the probe stream keeps, heartbeats off. [default: 5s,15s,35s,65s,105s]
    #[arg(long, value_name = "LIST")]
    pub silences: Option<String>,
    /// Give up after this long. [default: the probe schedule plus 30s]
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Trust the certificates in this PEM file besides the system's roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
}

impl From<ProbeArgs> for crate::probe::Request {
    fn from(a: ProbeArgs) -> Self {
        crate::probe::Request {
            url: a.url,
            headers: a.headers,
            silences: a.silences,
            timeout: a.timeout,
            json: a.json,
            ca_file: a.cacert,
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// YAML configuration file.
    #[arg(long, env = "SSE_SIDECAR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept clients on; repeat for several. [default: 0.0.0.0:8080]
    #[arg(
        long,
        env = "SSE_SIDECAR_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// The app: http://host:port. [default: http://127.0.0.1:3000]
    #[arg(long, env = "SSE_SIDECAR_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Admin address for /metrics, /healthz and /readyz, or `off`. [default: 0.0.0.0:9090]
    #[arg(long, env = "SSE_SIDECAR_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,
    /// Write a heartbeat comment after this much stream silence; 0s disables. [default: 15s]
    #[arg(long, env = "SSE_SIDECAR_HEARTBEAT_INTERVAL", value_name = "DUR")]
    pub heartbeat_interval: Option<String>,
    /// Longest app silence an SSE stream survives. [default: 1h]
    #[arg(long, env = "SSE_SIDECAR_SSE_IDLE_TIMEOUT", value_name = "DUR")]
    pub sse_idle_timeout: Option<String>,
    /// Upstream read timeout for everything but established SSE streams. [default: 60s]
    #[arg(long, env = "SSE_SIDECAR_READ_TIMEOUT", value_name = "DUR")]
    pub read_timeout: Option<String>,
    /// Upstream connect timeout. [default: 5s]
    #[arg(long, env = "SSE_SIDECAR_CONNECT_TIMEOUT", value_name = "DUR")]
    pub connect_timeout: Option<String>,
    /// Worker threads; 0 means one per CPU. [default: 0]
    #[arg(long, env = "SSE_SIDECAR_THREADS", value_name = "N")]
    pub threads: Option<String>,
    /// Log line format: text or json. [default: text]
    #[arg(long, env = "SSE_SIDECAR_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,
    /// Learn the routes whose answer is an event stream and relay their later requests as
    /// SSE (sse.learn). [default: on]
    #[arg(long, env = "SSE_SIDECAR_SSE_LEARN", value_name = "on|off")]
    pub sse_learn: Option<String>,
    /// Where resumable streams' buffers live: memory, or redis://[:PASSWORD@]host:port/db
    /// (resume.store); the environment variable keeps a password out of files and `ps`.
    /// [default: memory]
    #[arg(long, env = "SSE_SIDECAR_RESUME_STORE", value_name = "memory|URL")]
    pub resume_store: Option<String>,
    /// The token the probe stream requires (probe.token). [default: none]
    #[arg(long, env = "SSE_SIDECAR_PROBE_TOKEN", value_name = "TOKEN")]
    pub probe_token: Option<String>,
    /// Take over the listening sockets of a running sse-sidecar: start this, then send the old
    /// process SIGQUIT; it hands its sockets over and drains.
    #[arg(long)]
    pub upgrade: bool,
}

impl From<RunArgs> for Overrides {
    fn from(args: RunArgs) -> Self {
        // Destructured in full: a flag added above but not carried over fails to compile.
        let RunArgs {
            config,
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
            upgrade: _,
        } = args;
        Overrides {
            config,
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
        }
    }
}
