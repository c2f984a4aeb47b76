//! A third-party proxy run by a test (nginx, HAProxy): started in the foreground from a temp
//! dir, with its output in one log, waited for until it listens; a [`Process`], so it is
//! killed on drop and its log printed when the test fails.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::Process;

pub struct Middlebox {
    _process: Process,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Middlebox {
    /// Runs `cmd` (stdout and stderr to one log in `dir`) and waits, at most 10 s, until
    /// `addr` accepts.
    pub async fn spawn(
        name: &'static str,
        mut cmd: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Middlebox {
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut process = Process::new(name, child, log);
        if let Err(e) = process.wait_listening(addr, Duration::from_secs(10)).await {
            panic!("{e}");
        }
        Middlebox {
            _process: process,
            addr,
            _dir: dir,
        }
    }
}
