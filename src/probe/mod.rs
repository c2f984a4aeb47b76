//! `sse-sidecar probe URL`: which box on the path buffers, compresses or cuts an event stream.
//!
//! # Layout
//!
//! - [`schedule`]: the probe stream's query and stamped events, shared with the sidecar that
//!   serves it (`crate::proxy::probe_stream`).
//! - [`client`]: opens the stream as a browser does and records what arrives, and when;
//!   HTTP/1.1, or [`h2`] when TLS ([`tls`]) negotiates it; [`body`] turns the bytes into
//!   events.
//! - [`analysis`]: bursts, delays, the silence that cut it, and the findings (pure).
//! - [`report`]: the verdict and table, or JSON.

pub(crate) mod analysis;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod h2;
pub(crate) mod report;
pub(crate) mod schedule;
pub(crate) mod tls;

use std::time::Duration;

/// The probe's silences when `--silences` is not given: past the idle timeouts users meet
/// (GCP 30 s, Heroku 55 s, ALB and nginx 60 s, Cloudflare 100 s).
pub const DEFAULT_SILENCES: &str = "5s,15s,35s,65s,105s";

/// What `sse-sidecar probe` was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: String,
    /// `K: V` lines.
    pub headers: Vec<String>,
    /// `5s,15s`; `None`: [`DEFAULT_SILENCES`].
    pub silences: Option<String>,
    /// `None`: the probe schedule's length plus 30 s.
    pub timeout: Option<String>,
    pub json: bool,
    /// A PEM bundle trusted besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Runs the probe and prints its report. Returns the exit status: 0 nothing found, 1 a
/// problem found, 2 a usage or connection error.
pub fn run(req: Request) -> u8 {
    match prepare(&req) {
        Ok((url, headers, timeout)) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sse-sidecar probe: {e}");
                    return 2;
                }
            };
            let ca = req.ca_file.as_deref();
            match rt.block_on(observe(&url, &headers, timeout, ca)) {
                Ok(obs) => {
                    let a = analysis::analyse(&obs);
                    if req.json {
                        println!("{}", report::json(&obs, &a));
                    } else {
                        print!("{}", report::text(&obs, &a));
                    }
                    u8::from(a.problem())
                }
                Err(e) => {
                    eprintln!("sse-sidecar probe: {e}");
                    2
                }
            }
        }
        Err(why) => {
            eprintln!("sse-sidecar probe: {why}");
            2
        }
    }
}

/// Opens `url` with the browser's headers plus `extra`, and records the stream until it ends
/// or `timeout` (from the start) runs out. `ca_file`: trust this PEM bundle as well.
async fn observe(
    url: &str,
    extra: &[(String, String)],
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<client::Observation, client::ProbeError> {
    let target = client::parse_url(url)?;
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let sock = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&target.addr))
        .await
        .map_err(|_| client::ProbeError::Timeout(timeout))?
        .map_err(|e| client::ProbeError::Connect(target.addr.clone(), e))?;
    let _ = sock.set_nodelay(true);
    let headers = client::request_headers(extra);
    let rec = client::Recorder::new(started);
    if !target.tls {
        return client::h1(sock, &target, &headers, deadline, timeout, rec).await;
    }
    let tls = tokio::time::timeout_at(deadline, tls::connect(sock, &target.host, ca_file))
        .await
        .map_err(|_| client::ProbeError::Timeout(timeout))??;
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        return h2::observe(tls, &target, &headers, deadline, timeout, rec).await;
    }
    client::h1(tls, &target, &headers, deadline, timeout, rec).await
}

type Prepared = (String, Vec<(String, String)>, Duration);

/// Validates the arguments: the URL gets `silences=` in its query (the probe stream's other
/// parameters, `events`, `gap` and `padding`, are left to the URL: an app's own stream may
/// use those names; it ignores `silences`), headers are split, the timeout chosen.
fn prepare(req: &Request) -> Result<Prepared, String> {
    let silences = req.silences.as_deref().unwrap_or(DEFAULT_SILENCES);
    // The stream's length with the default burst, for the default timeout.
    let schedule = schedule::Schedule {
        silences: schedule::parse_silences(silences).map_err(|e| format!("--{e}"))?,
        ..schedule::Schedule::default()
    };
    let timeout = match &req.timeout {
        Some(t) => crate::config::duration::parse(t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--timeout {t:?}: expected a duration such as 30s or 5m"))?,
        None => schedule.total() + Duration::from_secs(30),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
            let (k, v) = (k.trim(), v.trim());
            let valid_name = !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic());
            if !valid_name || v.contains(['\r', '\n']) {
                return Err(format!("--header {h:?}: expected 'Name: value'"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    client::parse_url(&req.url).map_err(|e| e.to_string())?;
    let sep = if req.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}silences={}", req.url, silences.replace(' ', ""));
    Ok((url, headers, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> Request {
        Request {
            url: url.into(),
            headers: vec!["Authorization: Bearer x".into()],
            silences: Some("1s,3s".into()),
            timeout: None,
            json: false,
            ca_file: None,
        }
    }

    #[test]
    fn the_schedule_joins_the_query_and_the_timeout_covers_it() {
        let (url, headers, timeout) = prepare(&request("http://h:1/p?token=t")).unwrap();
        assert_eq!(url, "http://h:1/p?token=t&silences=1s,3s");
        assert_eq!(headers, vec![("Authorization".into(), "Bearer x".into())]);
        assert!(timeout > Duration::from_secs(30) && timeout < Duration::from_secs(40));
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let mut r = request("http://h/p");
        r.headers = vec!["nocolon".into()];
        assert!(prepare(&r).is_err());
        let mut r = request("http://h/p");
        r.silences = Some("5s,soon".into());
        assert!(prepare(&r).is_err());
        let mut r = request("http://h/p");
        r.timeout = Some("0s".into());
        assert!(prepare(&r).is_err());
        assert!(prepare(&request("ftp://h/p")).is_err());
    }
}
