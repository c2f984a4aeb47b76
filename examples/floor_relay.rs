//! The cheapest HTTP/1 stream relay we know how to write, as a yardstick for `make bench`'s CPU
//! rows — not a proxy to run.
//!
//! One thread per core, each with its own `SO_REUSEPORT` listener and level-triggered epoll, a
//! slab of two-fd records and one shared read buffer: per app chunk exactly one `epoll_wait`
//! (shared by every ready stream), one `recv` and one `send`, and no user-space work at all —
//! no parsing, no framing, no timers, no metrics. The request head is forwarded verbatim and the
//! app's response bytes are passed through unchanged. Whatever CPU per event this costs is the
//! floor set by the kernel (loopback TCP, wake-ups) for any design shaped like nginx's.
//!
//! ```text
//! cargo run --release --example floor_relay -- LISTEN_PORT UPSTREAM_PORT [THREADS]
//! ```

use std::io;
use std::mem;

const READ_SIZE: usize = 64 * 1024;
const MAX_HEAD: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (
        args.first().and_then(|a| a.parse::<u16>().ok()),
        args.get(1).and_then(|a| a.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: floor_relay LISTEN_PORT UPSTREAM_PORT [THREADS]");
        std::process::exit(2);
    };
    let threads = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2usize);
    let handles: Vec<_> = (0..threads.max(1))
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("floor-{i}"))
                .spawn(move || {
                    if let Err(e) = run(listen, upstream) {
                        eprintln!("floor_relay: {e}");
                        std::process::exit(1);
                    }
                })
                .expect("spawn")
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn addr(port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_in = unsafe { mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    a
}

fn listener(port: u16) -> io::Result<libc::c_int> {
    let one: libc::c_int = 1;
    let a = addr(port);
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &one as *const _ as *const libc::c_void,
                mem::size_of_val(&one) as libc::socklen_t,
            ))?;
        }
        check(libc::bind(
            fd,
            &a as *const _ as *const libc::sockaddr,
            mem::size_of_val(&a) as libc::socklen_t,
        ))?;
        check(libc::listen(fd, 4096))?;
        Ok(fd)
    }
}

/// A blocking connect (loopback: immediate), then non-blocking with TCP_NODELAY.
fn connect(port: u16) -> io::Result<libc::c_int> {
    let a = addr(port);
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        if let Err(e) = check(libc::connect(
            fd,
            &a as *const _ as *const libc::sockaddr,
            mem::size_of_val(&a) as libc::socklen_t,
        )) {
            libc::close(fd);
            return Err(e);
        }
        set_stream_opts(fd);
        Ok(fd)
    }
}

fn set_stream_opts(fd: libc::c_int) {
    let one: libc::c_int = 1;
    // SAFETY: fcntl/setsockopt on a descriptor the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            mem::size_of_val(&one) as libc::socklen_t,
        );
    }
}

struct Conn {
    client: libc::c_int,
    /// -1 until the request head is complete.
    up: libc::c_int,
    head: Vec<u8>,
}

const LISTENER: u64 = u64::MAX;

fn watch(ep: libc::c_int, fd: libc::c_int, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: `ev` outlives the call.
    check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

/// Writes all of `buf`, waiting with `poll` if the client's socket is full (not expected for
/// the small events this yardstick measures).
fn send_all(fd: libc::c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n > 0 {
            buf = &buf[n as usize..];
            continue;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 10_000) } > 0 {
                continue;
            }
        }
        return false;
    }
    true
}

fn run(listen: u16, upstream: u16) -> io::Result<()> {
    let lfd = listener(listen)?;
    // SAFETY: epoll_create1 has no preconditions.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    watch(ep, lfd, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    loop {
        // SAFETY: `events` has room for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            if token == LISTENER {
                loop {
                    // SAFETY: accept4 with null address arguments.
                    let fd = unsafe {
                        libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), 0)
                    };
                    if fd < 0 {
                        break;
                    }
                    set_stream_opts(fd);
                    let i = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    conns[i] = Some(Conn {
                        client: fd,
                        up: -1,
                        head: Vec::new(),
                    });
                    watch(ep, fd, (i as u64) << 1)?;
                }
                continue;
            }
            let i = (token >> 1) as usize;
            let from_up = token & 1 == 1;
            let Some(conn) = conns.get_mut(i).and_then(|c| c.as_mut()) else {
                continue;
            };
            let fd = if from_up { conn.up } else { conn.client };
            // SAFETY: `buf` has room for its length.
            let got =
                unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            let mut close = got <= 0;
            if !close && from_up {
                close = !send_all(conn.client, &buf[..got as usize]);
            } else if !close && conn.up < 0 {
                conn.head.extend_from_slice(&buf[..got as usize]);
                if conn.head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match connect(upstream) {
                        Ok(up) => {
                            conn.up = up;
                            close = !send_all(up, &conn.head);
                            conn.head = Vec::new();
                            watch(ep, up, ((i as u64) << 1) | 1)?;
                        }
                        Err(_) => close = true,
                    }
                } else {
                    close = conn.head.len() > MAX_HEAD;
                }
            } else if !close {
                // A client that sends after its request is done with this stream.
                close = true;
            }
            if close {
                // SAFETY: closing descriptors this record owns; close also removes them from
                // the epoll set.
                unsafe {
                    libc::close(conn.client);
                    if conn.up >= 0 {
                        libc::close(conn.up);
                    }
                }
                conns[i] = None;
                free.push(i);
            }
        }
    }
}
