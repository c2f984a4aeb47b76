//! A TLS-listening sidecar for tests: a self-signed certificate made at run time (rcgen), the
//! real binary started with a `listen: [{addr, tls}]` config (the common builder adds a plain
//! `--listen`), and a rustls client that trusts only that certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::process::Process;
use super::sidecar::command;
use super::{free_port, Origin};

/// Handshake timeout for [`tls_connect`].
const T: Duration = Duration::from_secs(5);

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

pub fn make_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen self-signed certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        dir,
        cert,
        key,
        der: ck.cert.der().clone(),
    }
}

/// The real binary with one TLS listener on a free port; killed on drop, stderr printed when
/// the test panics.
pub struct TlsSidecar {
    /// Declared before `_dir`: it prints the stderr file on a failing test's drop.
    pub proc: Process,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl TlsSidecar {
    /// `extra_yaml` is appended to the config file; `args` follow `--config`.
    pub async fn start(origin: &Origin, cert: &TestCert, extra_yaml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let yaml = format!(
            "listen:\n  - addr: \"{addr}\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n{extra_yaml}",
            cert.cert.display(),
            cert.key.display()
        );
        let conf = dir.path().join("sse-sidecar.yaml");
        std::fs::write(&conf, &yaml).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = command();
        cmd.arg("--config")
            .arg(&conf)
            .args(["--upstream", &origin.url()])
            .args(args)
            // No admin listener unless `args` has one (a flag beats the environment).
            .env("SSE_SIDECAR_METRICS_LISTEN", "off")
            // Not the shared /tmp defaults: tests run side by side.
            .env("SSE_SIDECAR_PID_FILE", dir.path().join("pid"))
            .env("SSE_SIDECAR_UPGRADE_SOCK", dir.path().join("upgrade.sock"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let child = cmd.spawn().expect("spawn sse-sidecar");
        let mut sc = TlsSidecar {
            proc: Process::new("sse-sidecar (TLS)", child, stderr_path),
            addr,
            _dir: dir,
        };
        if let Err(e) = sc.proc.wait_listening(addr, Duration::from_secs(10)).await {
            panic!("{e}\nconfig:\n{yaml}");
        }
        sc
    }

    pub fn sigterm(&self) {
        self.proc.signal(libc::SIGTERM);
    }

    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(deadline).await
    }
}

/// A TLS connection to `addr` trusting only `cert`, offering `alpn`; returns the stream and
/// the protocol the server chose.
pub async fn tls_connect(
    addr: SocketAddr,
    cert: &TestCert,
    alpn: &[&str],
) -> (TlsStream<TcpStream>, Option<String>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(cert.der.clone())
        .expect("trust the test certificate");
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(T, TlsConnector::from(Arc::new(cfg)).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake (certificate verified against the generated one)");
    let chosen = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    (tls, chosen)
}
