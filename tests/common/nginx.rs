//! A real nginx (the Debian package) as a middlebox, run from a temp prefix on a free port,
//! in the foreground (`daemon off; master_process off;`), killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use super::free_port;
use super::middlebox::Middlebox;

/// Finds the nginx binary. When it is missing: returns `None` if `SSE_SIDECAR_SKIP_NGINX=1`,
/// otherwise panics saying how to install it.
pub fn nginx_binary() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nginx")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var("SSE_SIDECAR_SKIP_NGINX").as_deref() == Ok("1") {
        eprintln!("nginx not installed: skipped because SSE_SIDECAR_SKIP_NGINX=1");
        return None;
    }
    panic!(
        "nginx is not installed (looked for /usr/sbin/nginx and nginx on PATH). `make test` \
         installs it (apt-get install -y nginx); or set SSE_SIDECAR_SKIP_NGINX=1 to skip the \
         middlebox tests"
    );
}

pub struct Nginx(Middlebox);

impl Nginx {
    /// Starts nginx proxying `location /` to `upstream`. `http_extra` goes into the `http`
    /// block and `location_extra` into the location (e.g. `gzip on;`). Nothing else is tuned:
    /// default buffering, default `proxy_http_version` (1.0).
    pub async fn start(
        bin: &PathBuf,
        upstream: SocketAddr,
        http_extra: &str,
        location_extra: &str,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            {location_extra}
        }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg("stderr");
        Nginx(Middlebox::spawn("nginx", cmd, addr, dir).await)
    }
}

impl std::ops::Deref for Nginx {
    type Target = Middlebox;

    fn deref(&self) -> &Middlebox {
        &self.0
    }
}
