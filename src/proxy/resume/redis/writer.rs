//! The store's background service: connects, pings every second (the `up` gauge), and
//! writes what the relays queued, many writes to one pipeline, with each live stream's TTL
//! refreshed and its Redis stream trimmed to about `resume.max_bytes`.

use super::client::{Op, Redis};
use super::write::Write;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::ConnectionManager;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Writes per pipeline, at most.
const BATCH: usize = 512;

/// A live stream's events in Redis, for trimming by bytes.
#[derive(Default)]
struct Live {
    events: VecDeque<(u64, usize)>,
    bytes: usize,
    /// Its events key has a TTL: `XADD` keeps a key's TTL, so only the write that may create
    /// the key sets one (the refresh keeps it after that).
    ttl_set: bool,
}

pub(crate) struct Service(pub(crate) Arc<Redis>);

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let redis = &self.0;
        let receiver = redis
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(receiver) = receiver else {
            return;
        };
        match ConnectionManager::new_lazy_with_config(redis.client.clone(), redis.manager_config())
        {
            Ok(conn) => {
                *redis.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
            }
            Err(e) => {
                redis.failed(Op::Ping, &e);
                return;
            }
        }
        // Keeps running through the drain: handed-off streams still write.
        tokio::join!(health(redis), Writer::new(redis.clone()).run(receiver));
    }
}

/// Pings once a second: the store is up while it answers.
async fn health(redis: &Redis) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut ping = redis::pipe();
        ping.cmd("PING");
        if redis.query::<(String,)>(Op::Ping, &ping).await.is_some() {
            redis.set_up(true);
        }
    }
}

struct Writer {
    redis: Arc<Redis>,
    live: HashMap<Arc<str>, Live>,
    /// Streams whose writes were lost: nothing more is written for them, and their keys
    /// are deleted once the store answers again.
    broken: HashSet<Arc<str>>,
    to_delete: Vec<Arc<str>>,
    /// Streams followed from this replica, for refreshing their reader keys.
    followed: HashMap<Arc<str>, usize>,
}

impl Writer {
    fn new(redis: Arc<Redis>) -> Writer {
        Writer {
            redis,
            live: HashMap::new(),
            broken: HashSet::new(),
            to_delete: Vec::new(),
            followed: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Write>) {
        // Live keys are refreshed well within their TTL.
        let every =
            (self.redis.grace / 3).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut refresh = tokio::time::interval(every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.write(&mut batch).await;
                }
                _ = refresh.tick() => self.refresh().await,
            }
        }
    }

    fn ttl(&self) -> u64 {
        self.redis.grace.as_millis() as u64
    }

    /// One pipeline for a batch of writes.
    async fn write(&mut self, batch: &mut Vec<Write>) {
        let redis = self.redis.clone();
        let ttl = self.ttl();
        let mut pipe = redis::pipe();
        let mut touched: HashSet<Arc<str>> = HashSet::new();
        let mut ended = Vec::new();
        let mut flushes = Vec::new();
        for w in batch.drain(..) {
            match w {
                Write::Open { token, meta } => {
                    if self.broken.contains(&token) {
                        continue;
                    }
                    pipe.hset_multiple(
                        redis.key(&token, "meta"),
                        &[
                            ("credentials", meta.credentials.to_vec()),
                            ("target", meta.target),
                            ("head", meta.head),
                        ],
                    )
                    .ignore();
                    pipe.pexpire(redis.key(&token, "meta"), ttl as i64).ignore();
                    self.live.insert(token.clone(), Live::default());
                    touched.insert(token);
                }
                Write::Event { token, seq, bytes } => {
                    if self.broken.contains(&token) {
                        continue;
                    }
                    let events = redis.key(&token, "events");
                    pipe.cmd("XADD")
                        .arg(&events)
                        .arg(format!("{seq}-0"))
                        .arg("d")
                        .arg(bytes.as_ref())
                        .ignore();
                    if let Some(live) = self.live.get_mut(&token) {
                        live.events.push_back((seq, bytes.len()));
                        live.bytes += bytes.len();
                        // Trimmed in steps of a quarter of the budget, not once per event.
                        let mut keep_from = None;
                        if live.bytes > redis.max_bytes + redis.max_bytes / 4 {
                            while live.bytes > redis.max_bytes && live.events.len() > 1 {
                                let (_, len) = live.events.pop_front().unwrap_or_default();
                                live.bytes -= len;
                                keep_from = live.events.front().map(|(s, _)| *s);
                            }
                        }
                        if !std::mem::replace(&mut live.ttl_set, true) {
                            pipe.pexpire(&events, ttl as i64).ignore();
                        }
                        if let Some(from) = keep_from {
                            pipe.cmd("XTRIM")
                                .arg(&events)
                                .arg("MINID")
                                .arg("~")
                                .arg(format!("{from}-0"))
                                .ignore();
                        }
                    }
                    touched.insert(token);
                }
                Write::End {
                    token,
                    seq,
                    bytes,
                    end,
                    why,
                } => {
                    self.live.remove(&token);
                    if self.broken.remove(&token) {
                        continue;
                    }
                    pipe.cmd("XADD")
                        .arg(redis.key(&token, "events"))
                        .arg(format!("{seq}-1"))
                        .arg("end")
                        .arg(end)
                        .arg("why")
                        .arg(why)
                        .arg("d")
                        .arg(bytes.as_ref())
                        .ignore();
                    ended.push(token.clone());
                    touched.insert(token);
                }
                Write::Forget { token } => {
                    self.live.remove(&token);
                    self.broken.remove(&token);
                    self.to_delete.push(token);
                }
                Write::Delivered { token } => {
                    // Never a key without a TTL, should the meta have expired meanwhile.
                    let meta = redis.key(&token, "meta");
                    pipe.hset(&meta, "delivered", 1).ignore();
                    pipe.pexpire(&meta, ttl as i64).ignore();
                }
                Write::Follow { token } => {
                    *self.followed.entry(token.clone()).or_default() += 1;
                    pipe.pset_ex(redis.key(&token, "reader"), 1, ttl).ignore();
                }
                Write::Unfollow { token } => {
                    if let Some(n) = self.followed.get_mut(&token) {
                        *n -= 1;
                        if *n == 0 {
                            self.followed.remove(&token);
                            pipe.del(redis.key(&token, "reader")).ignore();
                        }
                    }
                }
                Write::Flush(done) => flushes.push(done),
            }
        }
        for token in self.to_delete.iter() {
            pipe.del(&[
                redis.key(token, "events"),
                redis.key(token, "meta"),
                redis.key(token, "reader"),
            ])
            .ignore();
        }
        // An ended stream's keys expire a grace after its end.
        for token in &ended {
            pipe.pexpire(redis.key(token, "events"), ttl as i64)
                .ignore();
            pipe.pexpire(redis.key(token, "meta"), ttl as i64).ignore();
        }
        if redis.query::<()>(Op::Write, &pipe).await.is_some() {
            self.to_delete.clear();
        } else {
            // Their events have a hole now: resumes of them go to the app.
            for token in touched {
                if self.live.remove(&token).is_some() {
                    self.broken.insert(token.clone());
                }
                self.to_delete.push(token);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }

    /// Refreshes the TTL of every live stream's keys and of the reader keys of the streams
    /// followed here.
    async fn refresh(&mut self) {
        if self.live.is_empty() && self.followed.is_empty() {
            return;
        }
        let ttl = self.ttl();
        let mut pipe = redis::pipe();
        for token in self.live.keys() {
            pipe.pexpire(self.redis.key(token, "events"), ttl as i64)
                .ignore();
            pipe.pexpire(self.redis.key(token, "meta"), ttl as i64)
                .ignore();
        }
        for token in self.followed.keys() {
            pipe.pset_ex(self.redis.key(token, "reader"), 1, ttl)
                .ignore();
        }
        if self.redis.query::<()>(Op::Write, &pipe).await.is_none() {
            // A key may expire meanwhile, and an XADD would make it again without a TTL.
            for live in self.live.values_mut() {
                live.ttl_set = false;
            }
        }
    }
}
