//! The real `sse-sidecar` binary, started on free ports for one test.
//!
//! ```ignore
//! let sc = Sidecar::builder(&origin.url()).arg("--read-timeout").arg("1s").start().await;
//! let sc = Sidecar::builder(&origin.url()).config("sse:\n  paths: [/sse]\n").start().await;
//! ```
//! The process is killed on drop; its stderr goes to a file, printed when the test panics
//! (see [`super::process::Process`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::process::Process;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sse-sidecar");

/// A `Command` for the binary with every `SSE_SIDECAR_*` variable of the test's own
/// environment removed (so only what a test sets applies).
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SSE_SIDECAR_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the binary to completion (`check`, `print-config`, `--version`, ...), bounded to 20 s.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sse-sidecar");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sse-sidecar {args:?} did not exit within 20 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `text` to a new file in a fresh temp dir; returns both (keep the dir alive).
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write temp file");
    (dir, p)
}

pub struct SidecarBuilder {
    upstream: String,
    args: Vec<String>,
    config: Option<String>,
    metrics: bool,
    env: Vec<(String, String)>,
}

impl SidecarBuilder {
    /// An extra command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// YAML written to a temp file and passed as `--config` (flags still set listen, upstream
    /// and metrics addresses, and win over the file).
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_string());
        self
    }

    /// `--metrics-listen off` instead of a free port.
    pub fn metrics_off(mut self) -> Self {
        self.metrics = false;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts the sidecar and waits (10 s at most) until it accepts connections; panics with
    /// its stderr otherwise.
    pub async fn start(self) -> Sidecar {
        match self.try_start().await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn try_start(self) -> Result<Sidecar, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: Option<SocketAddr> = self
            .metrics
            .then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let mut args: Vec<String> = Vec::new();
        if let Some(y) = &self.config {
            let p = dir.path().join("sse-sidecar.yaml");
            std::fs::write(&p, y).expect("write config");
            args.push("--config".into());
            args.push(p.display().to_string());
        }
        args.extend([
            "--listen".into(),
            addr.to_string(),
            "--upstream".into(),
            self.upstream.clone(),
            "--metrics-listen".into(),
            metrics_addr.map_or("off".into(), |a| a.to_string()),
        ]);
        args.extend(self.args.iter().cloned());
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");
        let mut cmd = command();
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let mut sc = Sidecar {
            proc: Process::new(format!("sse-sidecar {args:?}"), child, stderr_path),
            addr,
            metrics_addr,
            args,
            stdout_path,
            _dir: dir,
        };
        sc.proc
            .wait_listening(addr, Duration::from_secs(10))
            .await
            .map(|()| sc)
    }
}

/// A running sidecar.
pub struct Sidecar {
    /// Declared before `_dir`: it prints the stderr file on a failing test's drop.
    proc: Process,
    /// The proxy's listen address.
    pub addr: SocketAddr,
    /// The admin (metrics) address, unless started with `metrics_off`.
    pub metrics_addr: Option<SocketAddr>,
    pub args: Vec<String>,
    stdout_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// A builder proxying to `upstream` (a URL like `http://127.0.0.1:PORT`).
    pub fn builder(upstream: &str) -> SidecarBuilder {
        SidecarBuilder {
            upstream: upstream.to_string(),
            args: Vec::new(),
            config: None,
            metrics: true,
            env: Vec::new(),
        }
    }

    /// Starts with defaults in front of `upstream`.
    pub async fn start(upstream: &str) -> Sidecar {
        Sidecar::builder(upstream).start().await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.proc.log()
    }

    /// The body of `GET /metrics` on the admin port (panics if metrics are off).
    /// One value from `/metrics`, e.g. `sse_sidecar_streams_total{outcome="x"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let addr = self.metrics_addr.expect("sidecar started with metrics off");
        metric_at(addr, series).await
    }

    pub async fn metrics(&self) -> String {
        let addr = self.metrics_addr.expect("sidecar started with metrics off");
        let r = super::client::get(addr, "/metrics", &[]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr_path(&self) -> &Path {
        self.proc.log_path()
    }

    pub fn sigterm(&self) {
        self.proc.signal(libc::SIGTERM);
    }

    /// Kills the process at once, as the OOM killer or a node failure would.
    pub fn sigkill(&self) {
        self.proc.signal(libc::SIGKILL);
    }

    pub fn sigint(&self) {
        self.proc.signal(libc::SIGINT);
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.proc.try_exit()
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(deadline).await
    }
}

/// Starts `sse-sidecar ARGS` (the caller passes `--upgrade` and the listen address of the
/// process it takes over) with `env` added and its stderr in the file `stderr`; the caller
/// waits for the upgrade socket ([`wait_file`]) before sending the old process SIGQUIT.
pub fn spawn_upgrader(args: &[String], env: &[(&str, String)], stderr: PathBuf) -> Process {
    let mut cmd = command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn sse-sidecar --upgrade");
    Process::new("upgraded sse-sidecar", child, stderr)
}

/// Whether `p` exists within `deadline` (polled every 10 ms).
pub fn wait_file(p: &Path, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// One value from the `/metrics` at `admin`, e.g. `sse_sidecar_streams_total{outcome="x"}`.
pub async fn metric_at(admin: std::net::SocketAddr, series: &str) -> f64 {
    let r = super::client::get(admin, "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    series_value(&text, series).unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
}

/// The value of one series in a `/metrics` text, if it is shown.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
