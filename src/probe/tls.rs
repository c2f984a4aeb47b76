//! TLS for the probe: the system's roots (plus `--cacert`), ALPN `h2` then `http/1.1`, as a
//! browser offers them.

use super::client::ProbeError;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, ProbeError> {
    let mut roots = RootCertStore::empty();
    // Certificates the system store cannot parse are skipped, as browsers do.
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        let _ = roots.add_parsable_certificates(native);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| ProbeError::Tls(format!("--cacert {}: {e}", path.display())))?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| ProbeError::Tls(format!("--cacert {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ProbeError::Tls(format!(
                "--cacert {}: no PEM certificate in it",
                path.display()
            )));
        }
        roots.add_parsable_certificates(certs);
    }
    Ok(roots)
}

/// The TLS handshake on `sock` for `host`.
pub(crate) async fn connect(
    sock: TcpStream,
    host: &str,
    ca_file: Option<&Path>,
) -> Result<TlsStream<TcpStream>, ProbeError> {
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| ProbeError::Tls(format!("{host}: {e}")))?;
    TlsConnector::from(Arc::new(cfg))
        .connect(name, sock)
        .await
        .map_err(|e| ProbeError::Tls(e.to_string()))
}
