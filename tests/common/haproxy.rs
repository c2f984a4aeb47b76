//! A real HAProxy (the Debian package) as a middlebox in HTTP mode, run from a temp dir on a
//! free port, in the foreground (`-db`), killed on drop; and the lookup of middlebox binaries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_listening};

/// Finds a middlebox binary. When it is missing: `None` (with a note) if
/// SSE_SIDECAR_SKIP_MIDDLEBOX=1, otherwise a panic saying how to install it.
pub fn binary(name: &str) -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin").join(name)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var("SSE_SIDECAR_SKIP_MIDDLEBOX").as_deref() == Ok("1") {
        eprintln!(
            "note: {name} is not installed; test skipped because SSE_SIDECAR_SKIP_MIDDLEBOX=1"
        );
        return None;
    }
    panic!(
        "{name} is not installed (looked in /usr/sbin and on PATH). `make test` installs it \
         (scripts/install-deps.sh, apt-get install -y nginx haproxy); or set \
         SSE_SIDECAR_SKIP_MIDDLEBOX=1 to skip the middlebox tests"
    );
}

/// A real HAProxy in HTTP mode on a free port, `-db` (foreground), killed on drop.
pub struct Haproxy {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `upstream`, with `timeout server` set to
    /// `server_timeout_ms`.
    pub async fn start(bin: &PathBuf, upstream: SocketAddr, server_timeout_ms: u64) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = format!(
            "global\n    maxconn 256\n    nbthread 1\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server {server_timeout_ms}ms\n\
             frontend fe\n    bind {addr}\n    default_backend be\n\
             backend be\n    server sidecar {upstream}\n"
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = |f: &str| std::fs::File::create(dir.path().join(f)).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut h = Haproxy {
            child: Some(child),
            addr,
            dir,
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = h.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("haproxy exited ({st}) before listening:\n{}", h.logs());
            }
            if wait_listening(addr, Duration::from_millis(100)).await {
                return h;
            }
            if std::time::Instant::now() > end {
                panic!("haproxy not listening on {addr} within 10 s:\n{}", h.logs());
            }
        }
    }

    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "-- haproxy stdout --\n{}\n-- haproxy stderr --\n{}",
            read("stdout.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
