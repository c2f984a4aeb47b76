//! A third-party proxy run by a test (nginx, HAProxy): started in the foreground from a temp
//! dir, waited for until it listens, its logs printed when the test fails, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_listening;

pub struct Middlebox {
    name: &'static str,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Files in `dir` worth showing when a test fails (stdout.log and stderr.log always are).
    logs: &'static [&'static str],
}

impl Middlebox {
    /// Runs `cmd` (stdout and stderr to `dir`) and waits, at most 10 s, until `addr` accepts.
    pub async fn spawn(
        name: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
        logs: &'static [&'static str],
    ) -> Middlebox {
        let log = |f: &str| std::fs::File::create(dir.path().join(f)).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut m = Middlebox {
            name,
            child: Some(child),
            addr,
            dir,
            logs,
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited ({st}) before listening:\n{}", m.logs());
            }
            if wait_listening(addr, Duration::from_millis(100)).await {
                return m;
            }
            if std::time::Instant::now() > end {
                panic!("{name} not listening on {addr} within 10 s:\n{}", m.logs());
            }
        }
    }

    /// Its output and log files.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        ["stdout.log", "stderr.log"]
            .iter()
            .chain(self.logs)
            .map(|f| format!("-- {} {f} --\n{}", self.name, read(f)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Middlebox {
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
