//! A real `redis-server` (Debian's) on a free loopback port, started by a test in the
//! foreground with no persistence, killed on drop; stopped and started again on the same
//! port to play an outage. `redis-cli` reads what the sidecar wrote.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::free_port;
use super::process::Process;

pub struct RedisServer {
    process: Option<Process>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    /// TLS only (`rediss://`), with this certificate for 127.0.0.1 and its key.
    tls: Option<(String, String)>,
}

/// Whether this machine has `redis-server` (`make test` installs it).
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(None).await
    }

    /// A server that speaks TLS only, with a self-signed certificate for 127.0.0.1 (its PEM
    /// is [`RedisServer::ca_file`], for a client to trust).
    pub async fn start_tls() -> RedisServer {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        RedisServer::start_with(Some((ck.cert.pem(), ck.signing_key.serialize_pem()))).await
    }

    async fn start_with(tls: Option<(String, String)>) -> RedisServer {
        assert!(
            available(),
            "redis-server is not installed (make test-deps installs it)"
        );
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut r = RedisServer {
            process: None,
            addr,
            dir: tempfile::tempdir().unwrap(),
            tls,
        };
        if let Some((cert, key)) = &r.tls {
            std::fs::write(r.dir.path().join("cert.pem"), cert).unwrap();
            std::fs::write(r.dir.path().join("key.pem"), key).unwrap();
        }
        r.restart().await;
        r
    }

    /// The certificate a TLS server presents (trust it with `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/0", self.addr)
    }

    /// Kills the server (SIGKILL): everything in it is gone.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it (again) on the same port, empty; waits until it accepts (10 s at most).
    pub async fn restart(&mut self) {
        self.process = None;
        let log = self.dir.path().join("redis.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        let port = self.addr.port().to_string();
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some(_) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(self.dir.path().join("cert.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.path().join("key.pem")),
        };
        let child = cmd
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // Small stream nodes, so approximate trimming is close to exact.
            .args(["--stream-node-max-entries", "8"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn redis-server");
        let mut process = Process::new("redis-server", child, log);
        if let Err(e) = process
            .wait_listening(self.addr, Duration::from_secs(10))
            .await
        {
            panic!("{e}");
        }
        self.process = Some(process);
    }

    /// `redis-cli <args>`'s output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan"])
            .lines()
            .map(str::to_string)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }
}
