//! What the resume tests (tests/resume.rs, tests/resume_redis.rs) share: opening and
//! resuming streams with the raw client, reading them, breaking their connections, and the
//! check that a resumed client got the rest of the app's stream exactly once.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::{self, End};
use super::origin::RequestRecord;
use super::show;
use super::sse::{self, Event, ResumeId, SseStream};

pub const ES: (&str, &str) = ("Accept", "text/event-stream");
const T: Duration = Duration::from_secs(5);

/// Opens `method target` through `addr` as an event-stream request with `headers` added;
/// panics unless the answer is a 200.
pub async fn open(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> SseStream {
    let mut h = vec![ES];
    h.extend_from_slice(headers);
    let resp = client::send(addr, &client::request(method, target, &h, body), method).await;
    assert_eq!(
        resp.status(),
        200,
        "{method} {target} {headers:?}: {:?}",
        show(&resp.head.raw)
    );
    SseStream::new(resp)
}

/// `GET target` with `Last-Event-ID: id` (and `headers`).
pub async fn reconnect(
    addr: SocketAddr,
    target: &str,
    id: &str,
    headers: &[(&str, &str)],
) -> SseStream {
    let mut h = vec![("Last-Event-ID", id)];
    h.extend_from_slice(headers);
    open(addr, "GET", target, &h, None).await
}

/// The next `n` events (5 s each at most).
pub async fn take(s: &mut SseStream, n: usize, what: &str) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match s.next_event(T).await {
            Some((e, _)) => out.push(e),
            None => panic!(
                "{what}: no event {} of {n} (ended: {:?}); bytes so far: {}",
                out.len() + 1,
                s.ended(),
                show(&s.bytes)
            ),
        }
    }
    out
}

/// Reads to the end of the body (10 s at most); returns every event and how the body ended
/// (`None`: it had not ended).
pub async fn read_rest(s: &mut SseStream) -> (Vec<Event>, Option<End>) {
    let end = s.read_to_end(Duration::from_secs(10)).await;
    (s.events().into_iter().map(|(e, _)| e).collect(), end)
}

/// Closes the client's connection with an RST, as a network failure would.
pub fn reset(s: SseStream) {
    s.resp.conn.close_rst();
}

/// The id of `e`, which must be one of the sidecar's.
pub fn resume_id(e: &Event, what: &str) -> ResumeId {
    ResumeId::parse(&e.id).unwrap_or_else(|| {
        panic!(
            "{what}: event {:?} has id {:?}, not <22 base64url chars>.<seq>[.<app id>]",
            e.seq(),
            e.id
        )
    })
}

/// The events the app wrote for `rec`, as a spec parser reads them.
pub fn app_events(rec: &RequestRecord) -> Vec<Event> {
    sse::events_of(&sse::parse_all(&rec.body_sent))
}

/// The event blocks of a stream with the `id:` lines and comment lines taken out: the sidecar
/// adds its ids (and may add comments); everything else must be the app's bytes.
pub fn blocks_without_ids(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            break; // an unfinished line
        }
        if line.is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if !(line == b"id" || line.starts_with(b"id:") || line.starts_with(b":")) {
            block.extend_from_slice(line);
            block.push(b'\n');
        }
    }
    blocks
}

/// Asserts that `got` (read from the body `bytes`) is the app's stream for `app` from event
/// `from` on: each event exactly once and in order, its bytes the app's but for the id, and
/// every id `<token>.<seq>[.<app id>]` of the stream `token`.
pub fn assert_rest(
    bytes: &[u8],
    got: &[Event],
    app: &RequestRecord,
    from: u64,
    token: &str,
    what: &str,
) {
    let all = app_events(app);
    assert!(
        (from as usize) <= all.len(),
        "{what}: the app wrote only {} events",
        all.len()
    );
    let want = &all[from as usize - 1..];
    let seqs = |es: &[Event]| es.iter().map(|e| e.seq()).collect::<Vec<_>>();
    assert_eq!(
        seqs(got),
        seqs(want),
        "{what}: events received (by seq), want {from}..={} each once, in order; body: {}",
        all.len(),
        show(bytes)
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.event, &g.data), (&w.event, &w.data), "{what}: event");
        let id = resume_id(g, what);
        assert_eq!(
            id.token,
            token,
            "{what}: event {:?} of another stream",
            g.seq()
        );
        assert_eq!(
            Some(id.seq),
            w.seq(),
            "{what}: the id counts the stream's events"
        );
        let app_id = (!w.id.is_empty()).then(|| w.id.clone());
        assert_eq!(id.app, app_id, "{what}: the id carries the app's own id");
    }
    let app_blocks = blocks_without_ids(&app.body_sent);
    assert_eq!(
        blocks_without_ids(bytes),
        app_blocks[from as usize - 1..].to_vec(),
        "{what}: the events' bytes (ids and comments aside) are the app's, byte for byte"
    );
}
