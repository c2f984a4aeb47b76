//! Thin entry point: parse the command line → load the configuration → init logging → build
//! the server → run.

use anyhow::Context;
use clap::Parser;
use sse_sidecar::cli::{Cli, Command};
use sse_sidecar::config::{Config, LogFormat, Overrides};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => match Config::load(&Overrides::from(args)) {
            Ok(_) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Some(Command::PrintConfig(args)) => match Config::load(&Overrides::from(args)) {
            Ok(c) => {
                print!("{}", c.to_yaml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Probe(args)) => ExitCode::from(sse_sidecar::probe::run(args.into())),
        Some(Command::Drain(args)) => drain(args),
        None => {
            let upgrade = cli.run.upgrade;
            let config = match Config::load(&Overrides::from(cli.run)) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.log_format);
            match run(config, upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sse-sidecar: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `sse-sidecar drain`: 0 once the drain started (with --wait: once the sidecar exited), 1 when
/// --timeout passed first, 2 when there is no sidecar to drain.
fn drain(args: sse_sidecar::cli::DrainArgs) -> ExitCode {
    use sse_sidecar::control::{self, DrainError};
    let wait = match (args.wait, args.timeout.as_deref()) {
        (false, _) => None,
        (true, None) => Some(std::time::Duration::MAX),
        (true, Some(t)) => match sse_sidecar::config::parse_duration(t) {
            Some(d) => Some(d),
            None => {
                eprintln!("sse-sidecar drain: --timeout {t:?} is not a duration such as 30s or 2m");
                return ExitCode::from(2);
            }
        },
    };
    let path = args.pid_file.unwrap_or_else(control::pid_file);
    match control::drain(&path, wait) {
        Ok(pid) if args.wait => {
            println!("sse-sidecar {pid} drained and exited");
            ExitCode::SUCCESS
        }
        Ok(pid) => {
            println!("sse-sidecar {pid} is draining");
            ExitCode::SUCCESS
        }
        Err(e @ DrainError::TimedOut { .. }) => {
            eprintln!("sse-sidecar drain: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sse-sidecar drain: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(config: Config, upgrade: bool) -> anyhow::Result<()> {
    tracing::info!(
        listen = ?config.listeners.iter().map(|l| l.addr.to_string()).collect::<Vec<_>>(),
        upstream = %config.upstream.url,
        metrics = ?config.metrics_listen,
        version = env!("CARGO_PKG_VERSION"),
        "starting sse-sidecar"
    );
    let server = sse_sidecar::server::build(config, upgrade).context("startup failed")?;
    // For `sse-sidecar drain`; the proxy runs without it (a read-only /tmp, say).
    let pid_file = sse_sidecar::control::pid_file();
    if let Err(e) = sse_sidecar::control::write_pid_file(&pid_file) {
        tracing::warn!(
            "cannot write the pid file {}: {e}; `sse-sidecar drain` will not find this process",
            pid_file.display()
        );
    }
    server.run_forever()
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // pingora logs every failed downstream write at error level; a client closing its tab is
    // normal for SSE, so pingora is quieter by default.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn"));
    // Colour only on a terminal: collected logs must be greppable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
