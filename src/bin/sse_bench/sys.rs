//! The bench's syscalls, through the `libc` crate, each behind a safe function: the one
//! module of the binary where `unsafe` is allowed (the crate root denies it elsewhere).
//! `sample_group` reads /proc, so the bench runs on Linux, which is where it is used.

#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;

/// CLOCK_MONOTONIC in nanoseconds. The origin stamps events with it and the
/// client subtracts it on arrival: both run on the same machine, and unlike
/// CLOCK_REALTIME it cannot jump when NTP steps the clock mid-run.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call; CLOCK_MONOTONIC
    // always exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: `rl` is a valid rlimit whose soft limit does not exceed the hard one; the
        // kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(rl.rlim_cur)
}

/// Resource use summed over every process of one process group.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupSample {
    pub procs: u32,
    pub rss_bytes: u64,
    /// user + system time, seconds.
    pub cpu_s: f64,
}

/// Sums RSS and user+system CPU over the processes whose pgrp is `pgid`,
/// from /proc/<pid>/stat (fields 14, 15 and 24). Processes that exit between
/// the directory listing and the read are skipped.
pub fn sample_group(pgid: i32) -> GroupSample {
    // SAFETY: sysconf takes no pointers and has no preconditions; an unknown name returns -1.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };
    let mut s = GroupSample::default();
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return s;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_ascii_whitespace().collect();
        // f[0] is field 3 (state): field k is f[k - 3].
        if f.len() < 22 || f[2].parse::<i32>().ok() != Some(pgid) {
            continue;
        }
        let num = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        s.procs += 1;
        ticks += num(11) + num(12);
        s.rss_bytes += num(21) * page;
    }
    s.cpu_s = ticks as f64 / tck;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process group contains at least this process, with some RSS.
    #[test]
    fn samples_own_group() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let close = stat.rfind(')').unwrap();
        let pgrp: i32 = stat[close + 1..]
            .split_ascii_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        let s = sample_group(pgrp);
        assert!(s.procs >= 1);
        assert!(s.rss_bytes > 0);
    }

    #[test]
    fn clock_advances() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(now_ns() - a >= 2_000_000);
    }
}
