//! A child process owned by a test: killed and reaped on drop, its log file printed when the
//! test panics. [`super::sidecar::Sidecar`] is one; tests that start other processes (the demo
//! origin, a TLS-configured or `--upgrade` sidecar) wrap their `Child` in one too. [`rss`] and
//! [`RssWatch`] read a process's resident memory, [`open_fds`] counts its file descriptors and
//! [`raise_nofile`] lifts this process's fd limit (inherited by the children it starts).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wait_listening;

pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Takes over `child`, whose output the caller sent to the file `log`; `name` says which
    /// process it is in messages.
    pub fn new(name: impl Into<String>, child: Child, log: PathBuf) -> Process {
        Process {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    /// Everything written to the log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `sig`; panics unless it was delivered.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid();
        assert!(pid > 0, "{} not running", self.name);
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until something accepts connections on `addr`, for `deadline` at most; the error
    /// says whether the process exited first or never listened, with its log.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        deadline: Duration,
    ) -> Result<(), String> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.try_exit() {
                return Err(format!(
                    "{} exited ({st}) before listening on {addr}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if wait_listening(addr, Duration::from_millis(100)).await {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "{} not accepting on {addr} within {deadline:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}\n---- end of {} log ----",
                self.name,
                self.log.display(),
                self.log(),
                self.name
            );
        }
    }
}

/// Open file descriptors of `pid` (entries of `/proc/<pid>/fd`); panics if unreadable.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The size of `pid`'s descriptor table (`FDSize` in /proc/<pid>/status).
pub fn fd_table(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize in /proc/<pid>/status")
}

/// This process's `RLIMIT_NOFILE` (the processes it spawns inherit it).
pub fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit); the
/// processes it spawns afterwards inherit it. Panics if the hard limit is too low.
pub fn raise_nofile(want: u64) {
    let mut lim = nofile();
    if lim.rlim_cur < want {
        assert!(
            lim.rlim_max >= want,
            "RLIMIT_NOFILE hard limit {} is below the {want} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit with a valid pointer to a local struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
}

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); panics if unreadable.
pub fn rss(pid: i32) -> u64 {
    try_rss(pid).unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

fn try_rss(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some(kib * 1024)
}

/// Samples a process's RSS every 10 ms until dropped; `max()` is the peak seen.
pub struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    pub fn start(pid: i32) -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(bytes) = try_rss(pid) {
                    p.fetch_max(bytes, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch { peak, stop }
    }

    pub fn max(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
