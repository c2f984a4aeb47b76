//! A real HAProxy (the Debian package) as a middlebox in HTTP mode, run from a temp dir on a
//! free port, in the foreground (`-db`), killed on drop; and the lookup of middlebox binaries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use super::free_port;
use super::middlebox::Middlebox;

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
pub struct Haproxy(Middlebox);

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
        let mut cmd = Command::new(bin);
        cmd.arg("-f").arg(&cfg_path).arg("-db");
        Haproxy(Middlebox::spawn("haproxy", cmd, addr, dir).await)
    }
}

impl std::ops::Deref for Haproxy {
    type Target = Middlebox;

    fn deref(&self) -> &Middlebox {
        &self.0
    }
}
