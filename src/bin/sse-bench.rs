//! `sse-bench`: the load generator and test origin behind `make bench`.
//!
//! ```text
//! sse-bench origin --listen 127.0.0.1:9000 [--fanout-interval 1s]
//! sse-bench client --url 'http://127.0.0.1:8080/stream?rate=10' --streams 1000 \
//!     --ramp 5s --duration 30s [--json] [--watch-pgid PGID]
//! sse-bench client --url https://127.0.0.1:8443/idle --cacert ca.pem --h2 \
//!     --connections 40 --streams 4000 ...
//! sse-bench ports 4        # prints 4 free loopback ports
//! ```
//!
//! Every event the origin writes carries its CLOCK_MONOTONIC timestamp in ns
//! (`data: <t_ns>`); the client, on the same machine, subtracts it on arrival.
//! See `scripts/bench.sh` for the workloads built from these two modes.
//!
//! Layout: `sse_bench/origin.rs` (the origin), `client.rs` (phases, report),
//! `stream.rs` (what every stream shares: failures, counters, body parsing),
//! `conn.rs` (URL, TCP, TLS, shared h2 connections), `h1.rs` and `h2.rs` (one
//! stream over HTTP/1.1, over HTTP/2 with the `h2` crate), `parse.rs` (chunked +
//! SSE byte parsers), `hist.rs` (latency histogram), `sys.rs` (clock, fd
//! limit, /proc sampling; the one module allowed `unsafe`).

#![deny(unsafe_code)]

#[path = "sse_bench/client.rs"]
mod client;
#[path = "sse_bench/conn.rs"]
mod conn;
#[path = "sse_bench/h1.rs"]
mod h1;
#[path = "sse_bench/h2.rs"]
mod h2;
#[path = "sse_bench/hist.rs"]
mod hist;
#[path = "sse_bench/origin.rs"]
mod origin;
#[path = "sse_bench/parse.rs"]
mod parse;
#[path = "sse_bench/stream.rs"]
mod stream;
#[path = "sse_bench/sys.rs"]
mod sys;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sse-bench",
    version,
    about = "SSE load generator and test origin"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve /stream?rate=R, /ticker, /idle, /bulk?size=B (chunked text/event-stream).
    Origin(OriginArgs),
    /// Open N SSE streams, measure event latency, count events/comments/failures.
    Client(ClientArgs),
    /// Print N currently free TCP ports on 127.0.0.1, one per line.
    Ports {
        #[arg(default_value_t = 1)]
        n: usize,
    },
}

#[derive(Args)]
struct OriginArgs {
    #[arg(long)]
    listen: SocketAddr,
    /// Period of the shared /ticker.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    fanout_interval: Duration,
    /// Runtime worker threads (1 = a current-thread runtime: cheapest, leaves cores to the proxy).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct ClientArgs {
    /// http(s)://HOST:PORT/PATH, e.g. http://127.0.0.1:8080/stream?rate=10
    #[arg(long)]
    url: String,
    /// https://: the CA (PEM) the server's certificate is signed with; nothing else is trusted.
    #[arg(long)]
    cacert: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Stream starts are spread evenly over this time.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ramp: Duration,
    /// Length of the measurement window, which opens once every stream is open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// HTTP/2: with prior knowledge (h2c) on http://, by ALPN on https://.
    #[arg(long, alias = "h2c")]
    h2: bool,
    /// --h2: spread the streams over this many connections (default: one per stream).
    #[arg(long)]
    connections: Option<usize>,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// Per-stream read buffer in bytes.
    #[arg(long, default_value_t = 8192)]
    read_buf: usize,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Fail a stream that receives no byte at all for this long (`off`/`0s` = never).
    #[arg(long, default_value = "off", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// How long after the ramp to wait for the last response heads.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// Longest wait for a 100 ms gap between events before opening and closing
    /// the window, so bursty workloads (fan-out) are counted in whole bursts.
    #[arg(long, default_value = "1200ms", value_parser = parse_duration)]
    align: Duration,
    /// Sample RSS and CPU of this process group (the proxy under test).
    #[arg(long)]
    watch_pgid: Option<i32>,
    /// Written (with the number of open streams) once every stream is open or failed.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Runtime worker threads (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// `250ms`, `15s`, `2m`, `1h`, `0s`; `off` = zero.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "off" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m or h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = sys::raise_nofile() {
        eprintln!("sse-bench: cannot raise RLIMIT_NOFILE: {e}");
    }
    match cli.cmd {
        Cmd::Ports { n } => {
            // Hold all listeners until every port is printed so the N ports are distinct.
            let ls: Vec<_> = (0..n)
                .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
                .collect();
            for l in &ls {
                if let Ok(a) = l.local_addr() {
                    println!("{}", a.port());
                }
            }
            if ls.len() == n {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Origin(a) => {
            let opts = origin::OriginOpts {
                listen: a.listen,
                fanout_interval: a.fanout_interval.max(Duration::from_millis(1)),
            };
            match runtime(a.threads).and_then(|rt| rt.block_on(origin::run(opts))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sse-bench origin: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Client(a) => {
            let json = a.json;
            let opts = client::ClientOpts {
                url: a.url,
                h2: a.h2,
                connections: a.connections.unwrap_or(a.streams),
                cacert: a.cacert,
                streams: a.streams,
                ramp: a.ramp,
                duration: a.duration,

                read_buf: a.read_buf,
                connect_timeout: a.connect_timeout,
                idle_timeout: (!a.idle_timeout.is_zero()).then_some(a.idle_timeout),
                ready_timeout: a.ready_timeout,
                align: a.align,
                watch_pgid: a.watch_pgid,
                ready_file: a.ready_file,
                headers: a.headers,
            };
            let rt = match runtime(a.threads) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sse-bench client: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let report = rt.block_on(client::run(opts));
            // Stuck stream tasks (if any) must not delay the exit.
            rt.shutdown_timeout(Duration::from_millis(100));
            match report {
                Ok(r) => {
                    if json {
                        println!("{}", r.to_json());
                    } else {
                        print!("{}", r.to_text());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sse-bench client: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("off").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
