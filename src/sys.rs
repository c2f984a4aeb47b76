//! The system calls the standard library and `socket2` do not wrap: epoll, eventfd,
//! duplicating a descriptor we do not own, growing the descriptor table, `kill` and
//! `malloc_trim`. This is the one module of the crate allowed `unsafe`; each block says why it
//! is sound, and everything it exports is safe.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An epoll instance whose interests are level-triggered reads (and hang-ups) tagged with a
/// `u64` token.
pub(crate) struct Epoll(OwnedFd);

/// One readiness report: the token given to [`Epoll::add`] and the event flags.
pub(crate) type Ready = libc::epoll_event;

/// Flags of a report meaning the peer closed or the socket failed.
pub(crate) const HANGUP: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: a plain system call; the descriptor it returns is owned at once.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for reads and hang-ups, level-triggered: a socket with bytes left unread is
    /// reported again on the next wait.
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; the kernel ignores it for EPOLL_CTL_DEL.
        check(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`; returns the ones reported.
    pub(crate) fn wait<'a>(&self, events: &'a mut [Ready], timeout_ms: i32) -> &'a [Ready] {
        let room = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is valid for writes of `room` entries for the whole call.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), room, timeout_ms) };
        &events[..n.max(0) as usize]
    }
}

/// An empty readiness report, to size the buffer [`Epoll::wait`] fills.
pub(crate) const NO_EVENT: Ready = libc::epoll_event { events: 0, u64: 0 };

/// A non-blocking eventfd: one thread's doorbell for others.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: a plain system call; the descriptor it returns is owned at once.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Rings: the eventfd becomes readable.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) still leaves the
        // eventfd readable, which is all a waiter needs.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears the rings so far.
    pub(crate) fn reset(&self) {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// A descriptor of our own for a socket that another owner (pingora's stream) keeps open: a
/// `dup`, so each side closes its own.
pub(crate) fn dup_socket(fd: RawFd) -> io::Result<std::net::TcpStream> {
    // SAFETY: the caller's owner keeps `fd` open for this whole call; it is only duplicated.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    Ok(std::net::TcpStream::from(owned))
}

/// Sends SIGTERM to process `pid`.
pub(crate) fn terminate(pid: u32) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) takes plain integers; a positive pid names one process.
    check(unsafe { libc::kill(pid, libc::SIGTERM) }).map(drop)
}

/// Gives freed heap pages back to the OS (glibc keeps them in its arenas otherwise).
pub(crate) fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The most descriptors [`reserve_fds`] makes room for: a table of 65,536 costs the kernel
/// 512 KiB, and a proxy with more connections than that grows it once more (one stall).
const MAX_RESERVED_FDS: u64 = 65_536;

/// Grows this process's descriptor table now to hold as many descriptors as RLIMIT_NOFILE
/// allows (at most 65,536); returns the size asked for.
///
/// Linux grows the table by doubling when a new descriptor does not fit, and in a process with
/// more than one thread each growth waits for an RCU grace period (`synchronize_rcu` in
/// `expand_files`): 10–20 ms during which the thread that called `accept` serves none of its
/// streams. 1,000 connections arriving at once cross five doublings (64 … 1,024), five stalls
/// of every stream on the accepting thread. Done once at startup, before the runtimes start,
/// the growth costs no grace period, and the kernel never shrinks the table again.
pub(crate) fn reserve_fds() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit that outlives the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    let want = rl.rlim_cur.min(MAX_RESERVED_FDS);
    let Ok(highest) = libc::c_int::try_from(want.saturating_sub(1)) else {
        return Ok(0);
    };
    let file = std::fs::File::open("/dev/null")?;
    // SAFETY: `file` is open for the whole call; F_DUPFD_CLOEXEC only makes a new descriptor,
    // numbered `highest` or above, which is owned (and closed) right away.
    let fd = check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) })?;
    // SAFETY: `fd` was just made by fcntl and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(want)
}
