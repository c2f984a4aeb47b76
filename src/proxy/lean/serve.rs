//! The lean relay: an SSE candidate on a plain-TCP HTTP/1 connection, relayed on raw sockets in
//! a task of its own instead of inside pingora's HTTP session (whose per-stream buffers and
//! boxed futures are most of a held stream's memory; see the README's benchmark section).
//!
//! Once a stream's head is written it is parked in this thread's event loop
//! ([`super::event_loop`]), which carries it for as long as it only relays events and
//! heartbeats; whatever else happens hands it back here, to the stream loop
//! ([`crate::proxy::stream::run`]) that the session relay runs too.
//!
//! The task lives as long as its stream, so its future is kept small: the exchange with the
//! app and every answer that is not a stream run in a boxed [`setup`] whose memory is freed
//! before the stream starts; only [`Live`] and the stream loop stay.

use super::app::LeanApp;
use super::client::LeanClient;
use super::conn::ClientConn;
use super::event_loop::{Mailbox, ParkedStream};
use super::exchange::{compact, forward_request_body, open_exchange, Exchange, ExchangeError};
use crate::metrics::{Kind, Outcome};
use crate::proxy::access_log;
use crate::proxy::answers::Answer;
use crate::proxy::candidate;
use crate::proxy::headers;
use crate::proxy::http1::request::Request;
use crate::proxy::resume::inline::Inline;
use crate::proxy::resume::relay::{self as resume_relay, Lookup};
use crate::proxy::shared::{Shared, StreamSlot};
use crate::proxy::stream::{self, respond, Ended, Progress, StreamSummary, WriteError};
use bytes::Bytes;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Relays one SSE candidate. Returns the client connection and any bytes already read past
/// this request when the connection can carry another request.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    client: ClientConn,
    req: Box<Request>,
    buffered: Bytes,
) -> Option<(ClientConn, Bytes)> {
    let started = Instant::now();
    let _in_flight = shared.drain.in_flight();
    let Some(_slot) = StreamSlot::take(shared) else {
        Box::pin(over_limit(shared, client, &req, started)).await;
        return None;
    };
    let live = match Box::pin(setup(shared, client, req, buffered, started)).await {
        Setup::Done(next) => return next,
        Setup::Stream(live) => live,
    };
    // The task's state stays small while the event loop carries the stream: everything big
    // is boxed or travels in the loop's record (each value a match binds here would otherwise
    // get its own room in this future for the stream's whole life).
    // No `&mut` of a local here: a borrowed local keeps its room in this future across every
    // later await, for the stream's whole life (the size budget below catches it).
    let progress = Progress::new(shared, started, live.meta.prefix_bytes);
    let Live {
        client,
        app,
        meta,
        resume,
    } = *live;
    let here = Resumed {
        client,
        app,
        progress,
        resume,
    };
    let next = match Mailbox::current() {
        Some(mailbox) => park(shared, &mailbox, here, meta.http11),
        None => Ok(Next::Here(Box::new(here))),
    };
    let resumed = match next {
        Ok(Next::Here(r)) => Ok(r),
        Ok(Next::Loop(back)) => take_back(shared, back.await),
        Err(ended) => Err(ended),
    };
    let (ended, client) = match resumed {
        Ok(r) => Box::pin(run_stream(shared, r, meta.http11)).await,
        Err(ended) => (ended, None),
    };
    access_log::Entry {
        method: &meta.log.method,
        path: &meta.log.path,
        status: meta.status,
        kind: Kind::Sse,
        started,
        stream: Some(&ended.summary),
        error: ended.error.as_deref(),
        replayed: None,
    }
    .record(shared);
    let clean = ended.summary.outcome == Some(Outcome::Completed);
    let client = client.filter(|_| clean && meta.keepalive && meta.http11)?;
    Some((client, meta.buffered))
}

/// Where a stream goes after its head is written.
enum Next {
    /// Stays in this task: a TLS client, or no event loop on this thread (a test calling
    /// [`serve`] directly).
    Here(Box<Resumed>),
    /// Into the event loop, until it hands the stream back.
    Loop(tokio::sync::oneshot::Receiver<Box<ParkedStream>>),
}

/// Hands the stream to this thread's event loop, which carries it for as long as it only
/// relays events and heartbeats.
fn park(shared: &Shared, mailbox: &Mailbox, here: Resumed, http11: bool) -> Result<Next, Ended> {
    // The loop writes with raw `sendmsg`: a TLS stream stays in its task.
    let client = match here.client {
        ClientConn::Plain(tcp) => tcp,
        tls @ ClientConn::Tls(_) => {
            return Ok(Next::Here(Box::new(Resumed {
                client: tls,
                ..here
            })))
        }
    };
    let Resumed {
        app,
        progress,
        resume,
        ..
    } = here;
    // Out of tokio's reactor (a socket in two epoll sets would wake both threads).
    let LeanApp { sock, dec } = app;
    match (client.into_std(), sock.into_std()) {
        (Ok(client), Ok(app)) => {
            let (parked, back) = ParkedStream::new(client, app, dec, http11, progress, resume);
            match mailbox.submit(parked) {
                Ok(()) => Ok(Next::Loop(back)),
                // The loop is gone: the stream stays here.
                Err(parked) => take_back(shared, Ok(parked)).map(Next::Here),
            }
        }
        (Err(e), _) | (_, Err(e)) => Err(moved_badly(shared, progress, &e)),
    }
}

/// The stream as the event loop handed it back, registered with this task's reactor again.
fn take_back(
    shared: &Shared,
    back: Result<Box<ParkedStream>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Box<Resumed>, Ended> {
    // The loop hands back every stream it takes; a dropped sender means its thread died.
    let Ok(parked) = back else {
        return Err(Ended {
            summary: StreamSummary::ended_early(shared, Outcome::ClientClosed, 0),
            error: Some("the event loop thread stopped".into()),
            app_done: false,
        });
    };
    let parked = *parked;
    let dec = parked.dec;
    match (
        TcpStream::from_std(parked.client),
        TcpStream::from_std(parked.app),
    ) {
        (Ok(client), Ok(sock)) => Ok(Box::new(Resumed {
            client: ClientConn::Plain(client),
            app: LeanApp { sock, dec },
            progress: parked.progress,
            resume: parked.resume,
        })),
        (Err(e), _) | (_, Err(e)) => Err(moved_badly(shared, parked.progress, &e)),
    }
}

/// The rest of the stream in this task's stream loop; the client connection comes back for
/// the caller to reuse or drop.
async fn run_stream(
    shared: &Arc<Shared>,
    r: Box<Resumed>,
    http11: bool,
) -> (Ended, Option<ClientConn>) {
    let Resumed {
        mut client,
        mut app,
        progress,
        resume,
    } = *r;
    let timeout = shared.config.timeouts.sse_write;
    let mut side = LeanClient::streaming(&mut client, http11, timeout);
    let ended = match resume {
        // A resumable stream is two halves again from here.
        Some(inline) => inline.into_halves(shared, &mut side, app, progress).await,
        None => stream::run(shared, &mut side, &mut app, progress).await,
    };
    (ended, Some(client))
}

fn moved_badly(shared: &Shared, progress: Progress, e: &io::Error) -> Ended {
    progress.end(
        shared,
        Outcome::ClientClosed,
        Some(format!("moving the stream to or from the event loop: {e}")),
    )
}

/// A stream whose response head is written: its sockets and what its task keeps for the end.
struct Live {
    client: ClientConn,
    app: LeanApp,
    meta: Meta,
    /// A resumable stream's producer half, while one task serves both halves.
    resume: Option<Box<Inline>>,
}

/// What the task keeps for the stream's log line and the connection's reuse.
struct Meta {
    buffered: Bytes,
    log: Box<LogFields>,
    status: u16,
    prefix_bytes: u64,
    http11: bool,
    keepalive: bool,
}

/// A stream ready for the stream loop: its sockets and where it stands.
struct Resumed {
    client: ClientConn,
    app: LeanApp,
    progress: Progress,
    resume: Option<Box<Inline>>,
}

struct LogFields {
    method: String,
    path: String,
}

enum Setup {
    /// Answered (an error, a pass-through, a stream that failed to start): the connection to
    /// reuse, if any.
    Done(Option<(ClientConn, Bytes)>),
    /// The response head and opening block are written: run the stream.
    Stream(Box<Live>),
}

async fn over_limit(shared: &Shared, mut sock: ClientConn, req: &Request, started: Instant) {
    let http11 = req.header.version == http::Version::HTTP_11;
    let mut client = LeanClient::new(&mut sock, http11, false, Duration::from_secs(5));
    let _ = respond::answer(&mut client, Answer::over_limit(shared)).await;
    let why = format!(
        "limits.max_streams ({}) reached",
        shared.config.limits.max_streams
    );
    access_log::Entry {
        method: req.header.method.as_str(),
        path: req.header.uri.path(),
        status: 503,
        kind: Kind::Other,
        started,
        stream: None,
        error: Some(&why),
        replayed: None,
    }
    .record(shared);
}

/// Everything before the stream loop: the exchange with the app, the response head, and
/// every answer that is not a stream.
async fn setup(
    shared: &Arc<Shared>,
    mut sock: ClientConn,
    req: Box<Request>,
    mut buffered: Bytes,
    started: Instant,
) -> Setup {
    let log = Box::new(LogFields {
        method: req.header.method.to_string(),
        path: req.header.uri.path().to_string(),
    });
    let http11 = req.header.version == http::Version::HTTP_11;
    let keepalive = req.keepalive;
    let timeouts = &shared.config.timeouts;
    let logged = |status: u16,
                  kind: Kind,
                  stream: Option<&StreamSummary>,
                  error: Option<&str>,
                  replayed: Option<u64>| {
        access_log::Entry {
            method: &log.method,
            path: &log.path,
            status,
            kind,
            started,
            stream,
            error,
            replayed,
        }
        .record(shared)
    };
    let done = |status, kind, stream, error| logged(status, kind, stream, error, None);
    // A resumable stream's line, and whether its client connection may carry another request.
    let resumable = |status, ended: &Ended, replayed| {
        let error = ended.error.as_deref();
        logged(status, Kind::Sse, Some(&ended.summary), error, replayed);
        ended.summary.outcome == Some(Outcome::Completed) && keepalive && http11
    };

    // A resume is answered from the stream's log; the app sees nothing of it.
    if let Lookup::Resume(entry, attached) = resume_relay::lookup(shared, &req.header).await {
        let ready = forward_request_body(shared, &mut sock, None, req.body, &mut buffered)
            .await
            .map_err(|_| WriteError::Closed);
        let mut client = LeanClient::new(&mut sock, http11, keepalive, timeouts.sse_write);
        let ended =
            resume_relay::serve_client(shared, &mut client, &entry, &attached, started, ready)
                .await;
        let reuse = resumable(entry.head.status.as_u16(), &ended, Some(attached.replayed));
        return Setup::Done(reuse.then_some((sock, compact(buffered))));
    }

    let client_ip = sock.peer_ip();
    let Exchange { head, mut app } =
        match open_exchange(shared, &mut sock, &req, &mut buffered, client_ip).await {
            Ok(ex) => ex,
            Err(e @ ExchangeError::Client) => {
                done(0, Kind::Other, None, Some(&e.to_string()));
                return Setup::Done(None);
            }
            Err(ExchangeError::BadRequest(e)) => {
                let why = e.to_string();
                let mut client = LeanClient::new(&mut sock, http11, false, timeouts.read);
                let _ = respond::answer(&mut client, Answer::plain(400, Some(&why))).await;
                done(400, Kind::Other, None, Some(&why));
                return Setup::Done(None);
            }
            Err(ExchangeError::Upstream(e)) => {
                let mut client = LeanClient::new(&mut sock, http11, false, timeouts.sse_write);
                let (status, kind, summary) =
                    respond::upstream_failed(shared, &mut client, &e).await;
                done(status, kind, summary.as_ref(), Some(&e.to_string()));
                return Setup::Done(None);
            }
        };
    let status = head.status.as_u16();
    // A leftover slice would pin the whole read buffer for the stream's lifetime.
    let buffered = compact(buffered);

    let stream = headers::is_stream_response(&req.header.method, &head);
    candidate::relayed(shared, &req.header, stream);
    if !stream {
        let body = app.body();
        let mut client = LeanClient::new(&mut sock, http11, keepalive, timeouts.read);
        let result = respond::passthrough(shared, &mut client, &mut app, head, body).await;
        let error = result.as_ref().err().map(ToString::to_string);
        done(status, Kind::Other, None, error.as_deref());
        let reuse = result.is_ok() && keepalive && http11;
        return Setup::Done(reuse.then_some((sock, buffered)));
    }

    // A resumable stream: a producer reads the app into the stream's log, and this
    // connection is its first consumer. With the memory store and a plain client, the event
    // loop carries both halves (resume::inline::Inline) while the client keeps up.
    let mut resume = None;
    if let Some((entry, first)) = resume_relay::open(shared, &req.header, &head) {
        let wrote_prefix = shared.open_block.is_some();
        if shared.redis.is_none() && !sock.is_tls() {
            resume = Some(Inline::new(shared, entry, &first, wrote_prefix));
        } else {
            resume_relay::spawn_producer(shared.clone(), entry.clone(), app, wrote_prefix);
            let mut client = LeanClient::new(&mut sock, http11, keepalive, timeouts.sse_write);
            let ended =
                resume_relay::serve_client(shared, &mut client, &entry, &first, started, Ok(()))
                    .await;
            let reuse = resumable(status, &ended, None);
            return Setup::Done(reuse.then_some((sock, buffered)));
        }
    }

    let mut client = LeanClient::new(&mut sock, http11, keepalive, timeouts.sse_write);
    let prefix_bytes = match respond::start_stream(shared, &mut client, head).await {
        Ok(n) => n,
        Err(e) => {
            let summary = StreamSummary::ended_early(shared, e.outcome(), 0);
            done(status, Kind::Sse, Some(&summary), None);
            if let Some(inline) = resume {
                // Its client is gone before its first byte: the stream parks at once.
                (*inline).park_now(shared, app);
            }
            return Setup::Done(None);
        }
    };
    Setup::Stream(Box::new(Live {
        resume,
        client: sock,
        app,
        meta: Meta {
            buffered,
            log,
            status,
            prefix_bytes,
            http11,
            keepalive,
        },
    }))
}

#[cfg(test)]
mod size_tests {
    //! Every idle stream holds its task's future and its event-loop record for its whole
    //! life, so their sizes are most of the memory an idle stream costs. These budgets fail a
    //! change that grows them by accident (a value held across an `.await`, an unboxed field);
    //! one that grows them on purpose raises the budget and says why in its commit.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::proxy::http1::body::Decode;
    use crate::proxy::http1::request::parse_request;
    use crate::proxy::stream::Client;
    use std::sync::Arc;

    fn budget(what: &str, size: usize, max: usize) {
        println!("{what}: {size} bytes (budget {max})");
        assert!(
            size <= max,
            "{what} is {size} bytes, over its budget of {max}"
        );
    }

    #[tokio::test]
    async fn per_stream_sizes_stay_within_budget() {
        let config = Config::from_yaml("").unwrap();
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        let shared = Arc::new(Shared::new(config, metrics, "127.0.0.1:9".parse().unwrap()));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let mut b = ClientConn::Plain(b);
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let req = parse_request(b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();

        let fut = serve(&shared, ClientConn::Plain(a), Box::new(req), Bytes::new());
        budget(
            "serve future (the parked task)",
            std::mem::size_of_val(&fut),
            360,
        );
        drop(fut);
        budget(
            "ParkedStream (the event loop's record)",
            std::mem::size_of::<ParkedStream>(),
            // 376: a resumable stream's producer half (a pointer) rides in the loop too.
            376,
        );
        budget("Progress", std::mem::size_of::<Progress>(), 216);

        // A stream handed back to its task for good runs the stream loop there.
        let mut client = LeanClient::streaming(&mut b, true, Duration::from_secs(1));
        let mut app = LeanApp {
            sock: c,
            dec: Decode::chunked(),
        };
        budget("gone future", std::mem::size_of_val(&client.gone()), 48);
        budget(
            "send future",
            // 384: the plain write's future beside the pointer to the boxed TLS one.
            std::mem::size_of_val(&client.send(Bytes::new())),
            384,
        );
        {
            use crate::proxy::stream::AppBody;
            budget("next future", std::mem::size_of_val(&app.next()), 64);
        }
        let p = Progress::new(&shared, Instant::now(), 9);
        let run = stream::run(&shared, &mut client, &mut app, p);
        budget("stream::run future", std::mem::size_of_val(&run), 1048);
    }
}
