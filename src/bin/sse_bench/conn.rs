//! Where the client's streams go and how it gets there: the parsed `--url`, the TCP
//! connection, TLS (rustls with ring, trusting the `--cacert` file only), and the shared HTTP/2
//! connections that carry `--connections` streams each.

use crate::stream::{Fail, Failure};
use bytes::Bytes;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Our receive window, for every h2 stream and connection: the largest allowed, so flow
/// control never holds the server back (credit goes back as soon as a chunk is parsed).
const H2_WINDOW: u32 = (1 << 31) - 1;

pub struct Target {
    pub addr: SocketAddr,
    /// `https://`: every connection starts with a TLS handshake.
    pub tls: bool,
    /// The host as the URL names it, for SNI and the certificate check.
    host: String,
    /// The HTTP/1.1 request.
    pub request: Vec<u8>,
    /// The h2 request's head (`:scheme` and `:authority` from the URL).
    pub h2_request: http::request::Parts,
}

pub fn parse_url(url: &str, headers: &[String]) -> Result<Target, String> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => {
            return Err(format!(
                "--url {url:?}: only http:// and https:// URLs are supported"
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let has_port = authority
        .rsplit(':')
        .next()
        .is_some_and(|p| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    let with_port = match (has_port, tls) {
        (true, _) => authority.to_string(),
        (false, false) => format!("{authority}:80"),
        (false, true) => format!("{authority}:443"),
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url:?}: host has no address"))?;
    let host = match with_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => authority.to_string(),
    };
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n"
    );
    let scheme = if tls { "https" } else { "http" };
    let mut h2 = http::Request::builder()
        .method("GET")
        .uri(format!("{scheme}://{authority}{path}"))
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache");
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected `Name: value`"))?;
        let _ = write!(request, "{name}:{value}\r\n");
        h2 = h2.header(name.trim().to_ascii_lowercase(), value.trim());
    }
    request.push_str("\r\n");
    let h2_request = h2
        .body(())
        .map_err(|e| format!("--url {url:?} / --header: {e}"))?
        .into_parts()
        .0;
    Ok(Target {
        addr,
        tls,
        host,
        request: request.into_bytes(),
        h2_request,
    })
}

/// The client's TLS settings: trust exactly the CA in `ca_file`, offer one ALPN protocol
/// (`h2` or `http/1.1`, so the server cannot pick the other one).
pub fn tls_config(ca_file: Option<&Path>, h2: bool) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.ok_or(
        "an https:// URL needs --cacert FILE (the CA the server's certificate is signed with)",
    )?;
    let pem = std::fs::read(path).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "--cacert {}: no usable PEM certificate",
            path.display()
        ));
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(cfg))
}

pub async fn tcp(t: &Target, connect_timeout: Duration) -> Result<TcpStream, Failure> {
    let s = match timeout(connect_timeout, TcpStream::connect(t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err((Fail::Connect, e.to_string())),
        Err(_) => {
            return Err((
                Fail::Connect,
                format!("no connection within {connect_timeout:?}"),
            ))
        }
    };
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// The TLS handshake on `s`; fails unless the server agreed to the one protocol offered.
pub async fn tls(
    s: TcpStream,
    t: &Target,
    cfg: &Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<TlsStream<TcpStream>, Failure> {
    let name = ServerName::try_from(t.host.clone())
        .map_err(|e| (Fail::Connect, format!("{}: {e}", t.host)))?;
    let s = timeout(
        connect_timeout,
        TlsConnector::from(cfg.clone()).connect(name, s),
    )
    .await
    .map_err(|_| {
        (
            Fail::Connect,
            format!("no TLS handshake within {connect_timeout:?}"),
        )
    })?
    .map_err(|e| (Fail::Connect, format!("TLS: {e}")))?;
    let want = cfg.alpn_protocols[0].as_slice();
    if s.get_ref().1.alpn_protocol() != Some(want) {
        return Err((
            Fail::Proto,
            format!(
                "TLS: the server did not agree to ALPN {}",
                String::from_utf8_lossy(want)
            ),
        ));
    }
    Ok(s)
}

/// One h2 connection's request handle, opened by the first stream that needs it and shared by
/// the others; a connection that failed to open fails each of its streams with its reason.
pub type H2Slot = OnceCell<Result<h2::client::SendRequest<Bytes>, Failure>>;

/// Opens an h2 connection: prior knowledge on `http://` (h2c), ALPN on `https://`.
pub async fn h2_connect(
    t: &Target,
    tls_cfg: Option<&Arc<ClientConfig>>,
    connect_timeout: Duration,
) -> Result<h2::client::SendRequest<Bytes>, Failure> {
    let s = tcp(t, connect_timeout).await?;
    match tls_cfg {
        Some(cfg) => h2_handshake(tls(s, t, cfg, connect_timeout).await?).await,
        None => h2_handshake(s).await,
    }
}

async fn h2_handshake<S>(io: S) -> Result<h2::client::SendRequest<Bytes>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| (Fail::Proto, format!("h2 handshake: {e}")))?;
    // The connection's driver: frames move only while it is polled. It ends with the
    // connection, which ends once every stream's handle is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_request() {
        let t = parse_url("http://127.0.0.1:8080/stream?rate=10", &["X-A: 1".into()]).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(!t.tls);
        let req = String::from_utf8(t.request).unwrap();
        assert!(req.starts_with("GET /stream?rate=10 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(req.ends_with("X-A: 1\r\n\r\n"));
        assert_eq!(t.h2_request.uri, "http://127.0.0.1:8080/stream?rate=10");
        assert_eq!(t.h2_request.headers["x-a"], "1");
        let t = parse_url("https://127.0.0.1:8443/idle", &[]).unwrap();
        assert!(t.tls);
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.h2_request.uri.scheme_str(), Some("https"));
        assert!(parse_url("ftp://x/", &[]).is_err());
    }
}
