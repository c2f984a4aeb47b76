//! Starting the drain of a running sidecar from the same host or container, with no network
//! endpoint (an HTTP "shutdown" endpoint is a denial-of-service risk: any local process or
//! SSRF could stop the proxy). The sidecar writes its pid to `SSE_SIDECAR_PID_FILE` at
//! startup; `sse-sidecar drain` reads it, checks that the process is an sse-sidecar, and sends
//! it SIGTERM — the same drain as on any SIGTERM — then, with `--wait`, waits for it to exit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the pid file is unless `SSE_SIDECAR_PID_FILE` says otherwise.
pub const DEFAULT_PID_FILE: &str = "/tmp/sse-sidecar.pid";

/// The pid file named by the environment, or the default.
pub fn pid_file() -> PathBuf {
    std::env::var_os("SSE_SIDECAR_PID_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PID_FILE))
}

/// Records this process's pid, so `sse-sidecar drain` can find it.
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("cannot read the pid file {}: {io} (is the sidecar running, with the same SSE_SIDECAR_PID_FILE?)", path.display())]
    PidFile { path: PathBuf, io: std::io::Error },
    #[error("the pid file {} holds {text:?}, not a process id", path.display())]
    BadPid { path: PathBuf, text: String },
    #[error("process {pid} (from {}) is not a running sse-sidecar: the pid file is stale", path.display())]
    NotRunning { pid: u32, path: PathBuf },
    #[error("cannot signal process {pid}: {io}")]
    Signal { pid: u32, io: std::io::Error },
    #[error("process {pid} was still draining after {waited:?}")]
    TimedOut { pid: u32, waited: Duration },
}

/// Starts the drain of the sidecar whose pid `path` holds; with `wait`, returns once it has
/// exited, or fails after `wait` has passed.
pub fn drain(path: &Path, wait: Option<Duration>) -> Result<u32, DrainError> {
    let text = std::fs::read_to_string(path).map_err(|io| DrainError::PidFile {
        path: path.to_path_buf(),
        io,
    })?;
    let pid: u32 = text.trim().parse().map_err(|_| DrainError::BadPid {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
    })?;
    if !is_sidecar(pid) {
        return Err(DrainError::NotRunning {
            pid,
            path: path.to_path_buf(),
        });
    }
    crate::sys::terminate(pid).map_err(|io| DrainError::Signal { pid, io })?;
    let Some(wait) = wait else {
        return Ok(pid);
    };
    let started = Instant::now();
    while is_sidecar(pid) {
        if started.elapsed() >= wait {
            return Err(DrainError::TimedOut {
                pid,
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// Whether `pid` is a live sse-sidecar (so a stale pid file never signals a stranger that
/// inherited the number). A zombie counts as exited.
fn is_sidecar(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": the state follows the last ')'.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    if state == Some("Z") || state == Some("X") {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|cmd| cmd.split(|b| *b == 0).next().map(<[u8]>::to_vec))
        .is_some_and(|arg0| {
            use std::os::unix::ffi::OsStrExt;
            Path::new(std::ffi::OsStr::from_bytes(&arg0))
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("sse-sidecar"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_pid_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pid");
        let e = drain(&missing, None).unwrap_err().to_string();
        assert!(e.contains("none.pid"), "{e}");
        let bad = dir.path().join("bad.pid");
        std::fs::write(&bad, "abc\n").unwrap();
        assert!(drain(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("\"abc\""));
    }

    #[test]
    fn a_pid_that_is_not_a_sidecar_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.pid");
        // This test binary is alive but not an sse-sidecar.
        std::fs::write(&other, format!("{}\n", std::process::id())).unwrap();
        let e = drain(&other, None).unwrap_err();
        assert!(matches!(e, DrainError::NotRunning { .. }), "{e}");
    }
}
