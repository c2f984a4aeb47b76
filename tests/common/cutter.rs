//! A TCP proxy that breaks connections on a schedule, as a flaky network or a middlebox that
//! drops its state would: the test puts it between a client and the sidecar.
//!
//! ```ignore
//! let cutter = Cutter::start(sc.addr, Duration::from_secs(1), Duration::from_millis(300)).await;
//! // clients connect to cutter.addr; each connection is reset 0.7–1.3 s after it was accepted
//! ```
//!
//! Each accepted connection is forwarded byte for byte, both ways, to the target. When its
//! time is up both sockets are closed with `SO_LINGER 0`, so the client and the target each
//! receive an RST (a cut, counted); a connection that ends first is closed normally and not
//! counted. At most [`MAX_CONNECTIONS`] connections are accepted. Dropping the cutter stops
//! the listener and every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::now_ns;
use super::rng::XorShift;

/// The listener stops accepting after this many connections, so a client that reconnects in a
/// tight loop cannot keep a test running.
pub const MAX_CONNECTIONS: usize = 1000;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    cuts: AtomicUsize,
}

pub struct Cutter {
    /// Where clients connect.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Cutter {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`, resetting it `every`
    /// ± `jitter` (uniform) after it was accepted.
    pub async fn start(target: SocketAddr, every: Duration, jitter: Duration) -> Cutter {
        let jitter = jitter.min(every);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("cutter bind");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c, t) = (counts.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            let mut rng = XorShift::new(now_ns());
            while c.accepted.load(Ordering::SeqCst) < MAX_CONNECTIONS {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let life = rng.around(every, jitter);
                let task = tokio::spawn(relay(client, target, life, c.clone()));
                t.lock().unwrap().push(task.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Cutter {
            addr,
            counts,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections reset so far.
    pub fn cuts(&self) -> usize {
        self.counts.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Carries one connection until it ends or `life` is over; then resets both sides.
async fn relay(mut client: TcpStream, target: SocketAddr, life: Duration, counts: Arc<Counts>) {
    let Ok(mut app) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = app.set_nodelay(true);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut app);
    let timed_out = tokio::time::timeout(life, copy).await.is_err();
    if timed_out {
        // Closing with SO_LINGER 0 sends an RST instead of a FIN, and drops whatever either
        // socket still had buffered: the bytes in flight are lost, as in a real cut.
        let _ = client.set_zero_linger();
        let _ = app.set_zero_linger();
        counts.cuts.fetch_add(1, Ordering::SeqCst);
    }
}
