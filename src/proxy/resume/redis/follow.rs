//! A client resumes here a stream another replica holds: [`find`] finds it in the store and
//! checks the client, and [`Follow`] reads its events from the store (replay, then live with
//! blocking reads) into a local entry, whose consumers are the ordinary ones.

use super::client::{head_from_bytes, Op, Redis};
use super::write::Write;
use crate::metrics::ResumeResult;
use crate::proxy::resume::source::{Framed, Over, Source};
use crate::proxy::resume::store::{Credentials, Store};
use crate::proxy::upstream_error::{Failure, UpstreamError};
use crate::sse::resume_id::ResumeId;
use crate::sse::EventEnds;
use bytes::Bytes;
use pingora_http::RequestHeader;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::AsyncConnectionConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one blocking read waits for new events.
const BLOCK: Duration = Duration::from_millis(1000);

/// A stream id `<ms>-<n>` as numbers.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What a replica needs to follow a stream of another's for a client.
pub(crate) struct Found {
    pub credentials: Credentials,
    pub target: Vec<u8>,
    pub head: pingora_http::ResponseHeader,
}

/// The stream's credentials, target and head, when `req` may resume it after `id.seq` and
/// the store still holds every event after that.
pub(crate) async fn find(
    store: &Store,
    redis: &Redis,
    id: &ResumeId<'_>,
    req: &RequestHeader,
) -> Result<Found, ResumeResult> {
    if !redis.is_up() {
        return Err(ResumeResult::Unknown);
    }
    // The client may have the id's event before this replica can read it: the holding
    // replica writes to the store right after it sends, so a few ms may separate them.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match find_once(store, redis, id, req).await {
            Err(ResumeResult::Unknown) if attempts < LAG_ATTEMPTS && ahead(redis, id).await => {
                tokio::time::sleep(LAG_STEP).await;
            }
            found => return found,
        }
    }
}

/// Tries for an id the store has not caught up with yet, `LAG_STEP` apart.
const LAG_ATTEMPTS: u32 = 5;
const LAG_STEP: Duration = Duration::from_millis(50);

/// Whether the id names an event the store does not hold yet of a live stream (its last
/// entry is an earlier event, not an end).
async fn ahead(redis: &Redis, id: &ResumeId<'_>) -> bool {
    let mut pipe = redis::pipe();
    pipe.cmd("XREVRANGE")
        .arg(redis.key(id.token, "events"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    match redis.query::<(StreamRangeReply,)>(Op::Lookup, &pipe).await {
        Some((last,)) => match last.ids.first().and_then(|e| parse_id(&e.id)) {
            Some((seq, 0)) => seq < id.seq,
            _ => false,
        },
        None => false,
    }
}

async fn find_once(
    store: &Store,
    redis: &Redis,
    id: &ResumeId<'_>,
    req: &RequestHeader,
) -> Result<Found, ResumeResult> {
    let (meta_key, events) = (redis.key(id.token, "meta"), redis.key(id.token, "events"));
    let mut pipe = redis::pipe();
    pipe.hgetall(&meta_key)
        .cmd("XRANGE")
        .arg(&events)
        .arg(format!("({}-0", id.seq))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XREVRANGE")
        .arg(&events)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    type Reply = (HashMap<String, Vec<u8>>, StreamRangeReply, StreamRangeReply);
    let (meta, next, last) = redis
        .query::<Reply>(Op::Lookup, &pipe)
        .await
        .ok_or(ResumeResult::Unknown)?;
    let (Some(credentials), Some(target), Some(head)) = (
        meta.get("credentials"),
        meta.get("target"),
        meta.get("head"),
    ) else {
        return Err(ResumeResult::Unknown);
    };
    let credentials: Credentials = credentials
        .as_slice()
        .try_into()
        .map_err(|_| ResumeResult::Unknown)?;
    if !store.same_client_as(id.token, &credentials, target, req) {
        return Err(ResumeResult::Denied);
    }
    if meta.contains_key("delivered") {
        return Err(ResumeResult::Unknown);
    }
    // Every event after the id is still there: the next entry is event seq + 1 or the end,
    // or there is none yet and the last one is the id's.
    let first = next.ids.first().and_then(|e| parse_id(&e.id));
    let last = last.ids.first().and_then(|e| parse_id(&e.id));
    let complete = match (first, last) {
        (Some((seq, 0)), _) => seq == id.seq + 1,
        (Some((seq, 1)), _) => seq == id.seq,
        (None, Some((seq, 0))) => seq == id.seq,
        (None, None) => id.seq == 0,
        _ => false,
    };
    if !complete {
        return Err(ResumeResult::Unknown);
    }
    let head = head_from_bytes(head).ok_or(ResumeResult::Unknown)?;
    Ok(Found {
        credentials,
        target: target.clone(),
        head,
    })
}

/// Reads a stream of another replica from the store, from the event after `seq`.
pub(crate) struct Follow {
    redis: Arc<Redis>,
    token: Arc<str>,
    key: String,
    /// The last entry read.
    last: (u64, u64),
    /// A connection of its own: blocking reads would hold up everyone on the shared one.
    conn: Option<MultiplexedConnection>,
    /// A read was under way when the future was dropped: its answer may still come on
    /// `conn`, which is replaced.
    reading: bool,
    read: VecDeque<StreamId>,
    /// The end, once read (after the bytes that came with it).
    end: Option<Result<(), UpstreamError>>,
    /// Since when the store fails to answer.
    failing_since: Option<Instant>,
}

impl Follow {
    pub(crate) fn new(redis: Arc<Redis>, token: &str, seq: u64) -> Follow {
        let token: Arc<str> = token.into();
        redis.send(Write::Follow {
            token: token.clone(),
        });
        Follow {
            key: redis.key(&token, "events"),
            redis,
            token,
            last: (seq, 0),
            conn: None,
            reading: false,
            read: VecDeque::new(),
            end: None,
            failing_since: None,
        }
    }

    fn gone(why: &str) -> UpstreamError {
        UpstreamError::new(Failure::ClosedMidBody, why.to_string())
    }

    /// One entry as log bytes; `None` for an end without bytes.
    fn entry(&mut self, e: StreamId) -> Result<Option<Framed>, UpstreamError> {
        let Some((seq, n)) = parse_id(&e.id) else {
            return Err(Self::gone("an entry of the resume store is not ours"));
        };
        let bytes: Vec<u8> = e.get("d").unwrap_or_default();
        let bytes = Bytes::from(bytes);
        if n == 0 {
            if seq != self.last.0 + 1 || self.last.1 != 0 {
                return Err(Self::gone("the resume store lost events of this stream"));
            }
            self.last = (seq, 0);
            let ends = EventEnds::from_slice(&[(seq, bytes.len())]);
            return Ok(Some(Framed { bytes, ends }));
        }
        self.last = (seq, n);
        let end: String = e.get("end").unwrap_or_default();
        self.end = Some(match end.as_str() {
            "clean" => Ok(()),
            "failed" => {
                let why: String = e.get("why").unwrap_or_default();
                Err(Self::gone(&why))
            }
            _ => Err(Self::gone(
                "the stream was given up by the replica holding it",
            )),
        });
        Ok((!bytes.is_empty()).then_some(Framed {
            bytes,
            ends: EventEnds::new(),
        }))
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.redis.config.connect_timeout))
            .set_response_timeout(Some(BLOCK + self.redis.config.timeout));
        self.redis
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// One blocking read into `self.read`.
    async fn read_more(&mut self) -> Result<(), UpstreamError> {
        if std::mem::take(&mut self.reading) {
            self.conn = None;
        }
        let result = async {
            if self.conn.is_none() {
                self.conn = Some(self.connect().await?);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(true);
            };
            self.reading = true;
            let mut pipe = redis::pipe();
            pipe.cmd("XREAD")
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(format!("{}-{}", self.last.0, self.last.1));
            let (reply,): (Option<StreamReadReply>,) = pipe.query_async(conn).await?;
            self.reading = false;
            match reply {
                Some(reply) => {
                    for key in reply.keys {
                        self.read.extend(key.ids);
                    }
                    Ok(true)
                }
                // Nothing new: the stream must still be there.
                None => redis::cmd("EXISTS").arg(&self.key).query_async(conn).await,
            }
        }
        .await;
        match result {
            Ok(true) => {
                self.failing_since = None;
                Ok(())
            }
            Ok(false) => Err(Self::gone("the stream is gone from the resume store")),
            Err(e) => {
                self.reading = false;
                self.conn = None;
                self.redis.failed(Op::Follow, &e);
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.redis.grace {
                    return Err(Self::gone("the resume store stopped answering"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            }
        }
    }
}

impl Source for Follow {
    async fn next(&mut self) -> Result<Option<Framed>, UpstreamError> {
        loop {
            if let Some(end) = self.end.take() {
                self.end = Some(Ok(()));
                return end.map(|()| None);
            }
            if let Some(e) = self.read.pop_front() {
                match self.entry(e)? {
                    Some(framed) => return Ok(Some(framed)),
                    None => continue,
                }
            }
            self.read_more().await?;
        }
    }

    async fn over(&mut self, how: Over) {
        let token = self.token.clone();
        if how == Over::Delivered {
            self.redis.send(Write::Delivered {
                token: token.clone(),
            });
        }
        self.redis.send(Write::Unfollow { token });
    }
}
