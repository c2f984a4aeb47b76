//! The fault soak (issue 19 §3): `make soak`, i.e.
//! `SOAK_SECS=1800 cargo test --release --test soak -- --ignored --nocapture`.
//!
//! 2,000 clients (`SOAK_STREAMS`) each hold one SSE stream through the real sidecar and open
//! the next when it ends: HTTP/1.1 on the raw client, h2c ten streams to a connection, 30 % on
//! a resumable path (memory store) reconnecting with `Last-Event-ID`, 1 % slow readers (one
//! stream in two stalls for 20 s, past the 5 s write timeout), heartbeats every second. The app is the in-process
//! origin: streams of 3–30 events 0.3–2.5 s apart, 15 % ending in an app-side cut or reset.
//! Faults, on a schedule of cycles (`SOAK_SECS / 15`, 20 s to 2 min):
//!
//! - each second 10 % of the clients holding a stream leave (FIN, RST, h2 RST_STREAM, or an
//!   h2 connection reset) and new ones arrive in their place;
//! - at the end of every cycle but the last the app restarts (down 0.5 s, same port);
//! - in the middle of cycles 1, 3, 5… of the first half, a SIGQUIT upgrade: a new process
//!   started with `--upgrade` takes the listener, the old one drains and must exit.
//!
//! At the end of each cycle a checkpoint freezes churn and reconnects and checks:
//! `sse_sidecar_streams_active` equals the streams the clients hold; the sidecar's open fds
//! minus its sockets to clients (one per HTTP/1.1 stream and per h2 connection) and to the
//! app (every connection the origin has open: streams, parked resumable streams, idle
//! pooled ones) equal that process's figure at its first checkpoint (±[`FD_SLACK`]); RSS is
//! sampled. RSS growth is judged per process, since an
//! upgrade starts a new one: from its second checkpoint, or its third when it has four or
//! more (warm: it has carried the full load for over a cycle; RSS after an upgrade climbs
//! through the first one), to its last, below 5 %, for every process with at least three
//! checkpoints (the last process always has). Clients check every stream: events in order
//! with none lost or repeated (across resumes too), and each end counted as one outcome
//! (see tally.rs); a cut must fall on an event boundary (slow readers excepted); 15 s
//! without a byte is a stall. At the end every client leaves; the sidecar must come back to
//! zero streams and to the fds it had before the first stream (±[`END_FD_SLACK`]), and no process
//! may have logged a panic. `SOAK_SEED` replays a run's churn and stream shapes.

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod tally;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::{churn, run_slot, Control, Env, Group, Slot, H2_PER_CONN};
use common::process::{open_fds, raise_nofile, rss, Process};
use common::sidecar::{series_value, spawn_upgrader, wait_file};
use common::{free_port, Origin, Sidecar};
use tally::{Tally, OUTCOMES};

/// Tolerance on fd figures: sockets in flight while a count is taken (a connection one side
/// has closed and the other not yet noticed, a reconnect not yet counted).
const FD_SLACK: i64 = 8;
/// After the last wave nothing is in flight: the fds must be back to within this of the
/// first process's before its first stream (the last process may be an upgraded one, whose
/// count at rest was seen to differ by up to 2).
const END_FD_SLACK: i64 = 4;
const RSS_GROWTH_LIMIT: f64 = 0.05;
const CHURN_PERCENT: u64 = 10;

const CONFIG: &str = "\
heartbeat_interval: 1s
sse:
  write_timeout: 5s
resume:
  paths: [/sse/r]
  grace: 5s
shutdown:
  drain_window: 3s
  retry: 1s
";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sidecar process of the run.
struct Proc {
    n: usize,
    pid: i32,
    admin: SocketAddr,
    first: Option<Sidecar>,
    upgraded: Option<Process>,
    checkpoints: Vec<Sample>,
    /// fds minus the sockets of the streams, at its first checkpoint.
    fd_base: Option<i64>,
}

impl Proc {
    fn log(&self) -> String {
        match (&self.first, &self.upgraded) {
            (Some(s), _) => s.stderr(),
            (_, Some(p)) => p.log(),
            _ => String::new(),
        }
    }

    async fn wait_exit(&mut self, d: Duration) -> bool {
        match (&mut self.first, &mut self.upgraded) {
            (Some(s), _) => s.wait_exit(d).await.is_some(),
            (_, Some(p)) => p.wait_exit(d).await.is_some(),
            _ => true,
        }
    }
}

struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    residual: i64,
}

async fn metrics(admin: SocketAddr) -> String {
    let r = common::client::get(admin, "/metrics", &[]).await;
    String::from_utf8_lossy(&r.body).into_owned()
}

fn value(text: &str, series: &str) -> i64 {
    series_value(text, series).unwrap_or(0.0) as i64
}

/// Freezes the clients, checks the active gauge and the fds against what the clients hold,
/// samples RSS, and lets the clients go on.
async fn checkpoint(env: &Env, origin: &Origin, p: &mut Proc, t0: Instant) {
    let tally = &env.tally;
    env.control.frozen.store(true, Ordering::SeqCst);
    let end = Instant::now() + Duration::from_secs(20);
    let (matched, last) = loop {
        let active = value(&metrics(p.admin).await, "sse_sidecar_streams_active");
        let now = (active, tally.held() as i64);
        if now.0 == now.1 {
            break (true, now);
        }
        if Instant::now() > end {
            break (false, now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !matched {
        tally.violation(format!(
            "checkpoint {}: sse_sidecar_streams_active {} but the clients hold {} streams",
            p.checkpoints.len(),
            last.0,
            last.1
        ));
    }
    let text = metrics(p.admin).await;
    let parked = value(&text, "sse_sidecar_streams_parked");
    let mut h2_conns = 0;
    for g in &env.groups {
        h2_conns += g.is_open().await as i64;
    }
    let (h1, h2) = (
        tally.held_h1.load(Ordering::SeqCst) as i64,
        tally.held_h2.load(Ordering::SeqCst) as i64,
    );
    // Every connection to the app is the sidecar's: its streams', parked streams' and idle
    // pooled ones.
    let app_conns = origin.open_connections() as i64;
    let fds = open_fds(p.pid);
    let residual = fds as i64 - h1 - h2_conns - app_conns;
    let rss_now = rss(p.pid);
    env.control.frozen.store(false, Ordering::SeqCst);
    let at = t0.elapsed();
    println!(
        "soak: {:>5.0} s  pid {} checkpoint {}: active {} (h1 {h1}, h2 {h2} on {h2_conns} conns), \
         parked {parked}, app conns {app_conns}, fds {fds} (residual {residual}), RSS {:.1} MiB",
        at.as_secs_f64(),
        p.pid,
        p.checkpoints.len(),
        last.0,
        rss_now as f64 / 1048576.0
    );
    match p.fd_base {
        None => p.fd_base = Some(residual),
        Some(base) if (residual - base).abs() > FD_SLACK => tally.violation(format!(
            "pid {}: {fds} fds, {residual} besides the sockets of its clients and app \
             connections, against {base} at its first checkpoint",
            p.pid
        )),
        Some(_) => {}
    }
    p.checkpoints.push(Sample {
        at,
        rss: rss_now,
        fds,
        residual,
    });
}

/// Starts a process with `--upgrade` on `old`'s address and sends `old` SIGQUIT.
async fn upgrade(
    dir: &Path,
    addr: SocketAddr,
    url: &str,
    old: &Proc,
    env: &[(&str, String)],
) -> Result<Proc, String> {
    let sock = dir.join("upgrade.sock");
    let _ = std::fs::remove_file(&sock);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let args: Vec<String> = [
        "--config",
        &dir.join("soak.yaml").display().to_string(),
        "--listen",
        &addr.to_string(),
        "--upstream",
        url,
        "--metrics-listen",
        &admin.to_string(),
        "--upgrade",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let n = old.n + 1;
    let mut p = spawn_upgrader(&args, env, dir.join(format!("sidecar-{n}.log")));
    let s = sock.clone();
    let offered = tokio::task::spawn_blocking(move || wait_file(&s, Duration::from_secs(10)))
        .await
        .unwrap();
    if !offered {
        return Err(format!(
            "upgrade {n}: no {} within 10 s; log:\n{}",
            sock.display(),
            p.log()
        ));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(old.pid, libc::SIGQUIT) }, 0);
    p.wait_listening(admin, Duration::from_secs(15)).await?;
    Ok(Proc {
        n,
        pid: p.pid(),
        admin,
        first: None,
        upgraded: Some(p),
        checkpoints: Vec::new(),
        fd_base: None,
    })
}

/// Runs the soak; `make soak`. Fails on any violation the clients or checkpoints recorded,
/// RSS growth of 5 % or more in a process after its warm-up, fds not back to the start after
/// the last wave, or a panic in any sidecar's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes: make soak (SOAK_SECS, SOAK_STREAMS, SOAK_SEED)"]
async fn soak() {
    let secs = env_u64("SOAK_SECS", 1800);
    let streams = env_u64("SOAK_STREAMS", 2000) as usize;
    let seed = env_u64("SOAK_SEED", common::now_ns() ^ std::process::id() as u64);
    let cycle = Duration::from_secs((secs / 15).clamp(20, 120));
    let cycles = ((secs / cycle.as_secs()) as usize).max(3);
    let upgrades: Vec<usize> = (1..cycles / 2).step_by(2).collect();
    println!(
        "soak: {secs} s, {streams} clients, seed {seed} (SOAK_SEED={seed} replays it), \
         {cycles} cycles of {cycle:?}, upgrades in cycles {upgrades:?}"
    );
    raise_nofile((streams as u64 * 5 + 2000).min(20000));

    let origin = Origin::start().await;
    origin.keep_latest(2000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("soak.yaml"), CONFIG).unwrap();
    let penv = [
        (
            "SSE_SIDECAR_UPGRADE_SOCK",
            dir.path().join("upgrade.sock").display().to_string(),
        ),
        (
            "SSE_SIDECAR_PID_FILE",
            dir.path().join("sidecar.pid").display().to_string(),
        ),
        ("RUST_LOG", "warn".to_string()),
    ];
    let mut b = Sidecar::builder(&origin.url())
        .arg("--config")
        .arg(dir.path().join("soak.yaml").display().to_string());
    for (k, v) in &penv {
        b = b.env(k, v);
    }
    let first = b.start().await;
    let addr = first.addr;
    let mut procs = vec![Proc {
        n: 0,
        pid: first.pid(),
        admin: first.metrics_addr.unwrap(),
        first: Some(first),
        upgraded: None,
        checkpoints: Vec::new(),
        fd_base: None,
    }];
    let fds_start = open_fds(procs[0].pid);

    let mut h2_index = 0;
    let slots: Vec<Slot> = (0..streams).map(|i| Slot::new(i, &mut h2_index)).collect();
    let env = Arc::new(Env {
        addr,
        seed,
        control: Control::default(),
        tally: Tally::default(),
        slots,
        groups: (0..h2_index.div_ceil(H2_PER_CONN))
            .map(|_| Group::default())
            .collect(),
    });
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| tokio::spawn(run_slot(env.clone(), i)))
        .collect();
    let churner = tokio::spawn(churn(env.clone(), CHURN_PERCENT));
    let (mut restarts, mut upgrades_done) = (0, 0);

    for k in 0..cycles {
        let start = t0 + cycle * k as u32;
        if upgrades.contains(&k) {
            tokio::time::sleep_until((start + cycle / 2).into()).await;
            match upgrade(
                dir.path(),
                addr,
                &origin.url(),
                procs.last().unwrap(),
                &penv,
            )
            .await
            {
                Ok(p) => {
                    println!(
                        "soak: {:>5.0} s  upgrade: pid {} took over from pid {}",
                        t0.elapsed().as_secs_f64(),
                        p.pid,
                        procs.last().unwrap().pid
                    );
                    procs.push(p);
                    upgrades_done += 1;
                }
                Err(e) => env.tally.violation(e),
            }
        }
        tokio::time::sleep_until((start + cycle).into()).await;
        // The old process drains for pingora's 5 s hand-over pause plus the 3 s window.
        let n = procs.len();
        if n > 1 && !procs[n - 2].wait_exit(Duration::from_secs(30)).await {
            env.tally.violation(format!(
                "pid {} still running 30 s after its upgrade",
                procs[n - 2].pid
            ));
        }
        checkpoint(&env, &origin, procs.last_mut().unwrap(), t0).await;
        if k + 1 < cycles {
            origin.stop();
            tokio::time::sleep(Duration::from_millis(500)).await;
            origin.restart().await;
            restarts += 1;
            println!("soak: {:>5.0} s  app restarted", t0.elapsed().as_secs_f64());
        }
    }

    // The last wave: every client leaves.
    env.control.stop.store(true, Ordering::SeqCst);
    env.control.stopped.notify_waiters();
    for g in &env.groups {
        g.kill().await;
    }
    for t in tasks {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a client did not stop within 30 s")
        {
            env.tally.violation(format!("a client task failed: {e}"));
        }
    }
    churner.abort();
    let last = procs.last().unwrap();
    // Parked resumable streams are given up after the 5 s grace.
    let mut quiet = (0, 0);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let text = metrics(last.admin).await;
        quiet = (
            value(&text, "sse_sidecar_streams_active"),
            value(&text, "sse_sidecar_streams_parked"),
        );
        if quiet == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if quiet != (0, 0) {
        env.tally.violation(format!(
            "after every client left: {} streams active, {} parked",
            quiet.0, quiet.1
        ));
    }
    let text = metrics(last.admin).await;
    let sidecar_counts: Vec<(String, i64)> = [
        "completed",
        "client_closed",
        "upstream_error",
        "shutdown",
        "slow_consumer",
        "idle_timeout",
        "parked_expired",
    ]
    .iter()
    .map(|o| {
        (
            o.to_string(),
            value(
                &text,
                &format!("sse_sidecar_streams_total{{outcome=\"{o}\"}}"),
            ),
        )
    })
    .chain(["resumed", "unknown", "denied"].iter().map(|r| {
        (
            format!("resume {r}"),
            value(
                &text,
                &format!("sse_sidecar_resumes_total{{result=\"{r}\"}}"),
            ),
        )
    }))
    .chain(["2xx", "5xx"].iter().map(|c| {
        (
            format!("sse requests {c}"),
            value(
                &text,
                &format!("sse_sidecar_requests_total{{code=\"{c}\",kind=\"sse\"}}"),
            ),
        )
    }))
    .collect();
    println!("soak: the last process's counters: {sidecar_counts:?}");
    // With nothing open, every SSE request it answered with a 200 has its stream's end
    // counted, once (parked_expired counts the app side of a stream, not a client's).
    let ended: i64 = sidecar_counts[..6].iter().map(|(_, n)| n).sum();
    let answered = sidecar_counts[10].1;
    if ended != answered {
        env.tally.violation(format!(
            "the last process answered {answered} SSE requests and counted {ended} stream ends"
        ));
    }
    // Stopping the app closes any pooled idle connection to it.
    origin.stop();
    let mut fds_end = open_fds(last.pid);
    let end = Instant::now() + Duration::from_secs(10);
    while (fds_end as i64 - fds_start as i64) > END_FD_SLACK && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds_end = open_fds(last.pid);
    }
    if (fds_end as i64 - fds_start as i64).abs() > END_FD_SLACK {
        env.tally.violation(format!(
            "fds {fds_end} after the last wave, {fds_start} before the first stream"
        ));
    }
    let unaccounted = env.tally.opened() as i64 - env.tally.ended_total() as i64;
    if unaccounted != 0 {
        env.tally.violation(format!(
            "{unaccounted} streams opened without an outcome counted"
        ));
    }
    let panics: Vec<String> = procs
        .iter()
        .filter(|p| p.log().contains("panicked"))
        .map(|p| format!("pid {}:\n{}", p.pid, p.log()))
        .collect();
    for p in &panics {
        env.tally.violation(format!("a panic in the log of {p}"));
    }
    let growth = summary(
        &env,
        &procs,
        (restarts, upgrades_done),
        (fds_start, fds_end),
        t0.elapsed(),
    );
    let (n, v) = env.tally.violations();
    assert!(n == 0, "{n} violations, the first ones:\n{}", v.join("\n"));
    assert!(
        !growth.is_empty(),
        "no process had three checkpoints: the run is too short to judge RSS"
    );
    for (pid, g) in growth {
        assert!(
            g < RSS_GROWTH_LIMIT,
            "pid {pid}: RSS grew {:.1} % after its warm-up",
            g * 100.0
        );
    }
}

/// Prints the table for the README; returns each judged process's RSS growth.
fn summary(
    env: &Env,
    procs: &[Proc],
    (restarts, upgrades): (usize, usize),
    (fds_start, fds_end): (usize, usize),
    took: Duration,
) -> Vec<(i32, f64)> {
    let t = &env.tally;
    let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "\nsoak summary ({:.0} s, seed {}):",
        took.as_secs_f64(),
        env.seed
    );
    println!("| figure | value |\n|---|---|");
    println!(
        "| streams opened (HTTP/1.1, h2) | {} ({}, {}) |",
        t.opened(),
        c(&t.opened_h1),
        c(&t.opened_h2)
    );
    for o in OUTCOMES {
        println!("| ended: {} | {} |", o.name(), t.count(o));
    }
    println!(
        "| streams without an outcome | {} |",
        t.opened() as i64 - t.ended_total() as i64
    );
    println!(
        "| events received, heartbeats | {}, {} |",
        c(&t.events),
        c(&t.heartbeats)
    );
    println!(
        "| resumed from the buffer, became fresh | {}, {} |",
        c(&t.resumed),
        c(&t.resumed_fresh)
    );
    println!(
        "| app-side cuts/resets asked | {} |",
        c(&t.app_resets_asked)
    );
    println!("| slow-reader stalls (20 s) | {} |", c(&t.slow_stalls));
    println!(
        "| h2 requests retried on a new connection | {} |",
        c(&t.h2_retries)
    );
    println!("| app restarts, SIGQUIT upgrades | {restarts}, {upgrades} |");
    println!("| fds before the first stream, after the last wave | {fds_start}, {fds_end} |");
    let mut growth = Vec::new();
    for p in procs {
        let cp = &p.checkpoints;
        // Warm: the second checkpoint, or the third once there are four or more — after an
        // upgrade RSS still climbs through the first full cycle (2-minute run: 41.0, 46.5,
        // 48.3, 48.8, 48.8 MiB), which is warm-up, not growth.
        let warm = cp.len().min(5) / 2;
        let line = match (cp.get(warm), cp.last()) {
            (Some(w), Some(l)) if cp.len() >= 3 => {
                let g = l.rss as f64 / w.rss as f64 - 1.0;
                growth.push((p.pid, g));
                format!(
                    "RSS {:.1} MiB at {:.0} s (warm) → {:.1} MiB at {:.0} s: {:+.1} %",
                    w.rss as f64 / 1048576.0,
                    w.at.as_secs_f64(),
                    l.rss as f64 / 1048576.0,
                    l.at.as_secs_f64(),
                    g * 100.0
                )
            }
            _ => format!("RSS not judged ({} checkpoints)", cp.len()),
        };
        let fds = cp
            .iter()
            .map(|s| format!("{}/{}", s.fds, s.residual))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "| process {} (pid {}) | {line}; fds/residual per checkpoint: {fds} |",
            p.n, p.pid
        );
    }
    println!("| violations | {} |", env.tally.violations().0);
    growth
}
