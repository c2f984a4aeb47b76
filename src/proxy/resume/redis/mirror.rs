//! The replica holding a stream's app connection writes the stream into the store.

use super::client::{head_to_bytes, Op, Redis};
use super::write::{Meta, Write};
use crate::proxy::resume::source::{Framed, Over};
use crate::proxy::resume::store::Entry;
use crate::proxy::upstream_error::UpstreamError;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Feeds one stream of this replica into the store, event by event.
pub(crate) struct Mirror {
    redis: Arc<Redis>,
    token: Arc<str>,
    /// Bytes since the last complete event.
    pending: BytesMut,
    /// A write was lost: the stream's keys are given up, nothing more is written.
    broken: bool,
    /// The last event written.
    last_seq: u64,
    /// The end marker was written.
    ended: bool,
}

impl Mirror {
    /// The writer of the stream `entry`, opened on this replica.
    pub(crate) fn new(redis: &Arc<Redis>, entry: &Entry) -> Mirror {
        let token: Arc<str> = entry.token.as_str().into();
        let meta = Meta {
            credentials: entry.credentials,
            target: entry.target.clone(),
            head: head_to_bytes(&entry.head),
        };
        let broken = !redis.send(Write::Open {
            token: token.clone(),
            meta,
        });
        Mirror {
            redis: redis.clone(),
            token,
            pending: BytesMut::new(),
            broken,
            last_seq: 0,
            ended: false,
        }
    }

    fn send(&mut self, w: Write) {
        if self.broken {
            return;
        }
        if !self.redis.send(w) {
            self.broken = true;
            // Best effort: a stream with a hole must not be resumed from the store.
            let _ = self.redis.queue.try_send(Write::Forget {
                token: self.token.clone(),
            });
        }
    }

    /// The bytes a producer put into the log: one write per event they complete.
    pub(crate) fn push(&mut self, framed: &Framed) {
        if self.broken {
            return;
        }
        let mut from = 0;
        for &(seq, at) in &framed.ends {
            let bytes = if self.pending.is_empty() {
                framed.bytes.slice(from..at)
            } else {
                self.pending.extend_from_slice(&framed.bytes[from..at]);
                self.pending.split().freeze()
            };
            from = at;
            self.last_seq = seq;
            let token = self.token.clone();
            self.send(Write::Event { token, seq, bytes });
        }
        self.pending.extend_from_slice(&framed.bytes[from..]);
    }

    /// The app's body ended (failed: `error`), `rest` after its last event.
    pub(crate) fn end(&mut self, rest: Bytes, error: Option<&UpstreamError>) {
        self.ended = true;
        self.pending.extend_from_slice(&rest);
        let bytes = self.pending.split().freeze();
        let (end, why) = match error {
            None => ("clean", String::new()),
            Some(e) => ("failed", e.to_string()),
        };
        let (token, seq) = (self.token.clone(), self.last_seq);
        self.send(Write::End {
            token,
            seq,
            bytes,
            end,
            why,
        });
    }

    /// Whether a client on another replica follows the stream now.
    pub(crate) async fn followed_elsewhere(&self) -> bool {
        let mut cmd = redis::pipe();
        cmd.exists(self.redis.key(&self.token, "reader"));
        matches!(
            self.redis.query::<(bool,)>(Op::Lookup, &cmd).await,
            Some((true,))
        )
    }

    /// The stream is over on this replica. Draining (`HandedOff`), waits (bounded) until its
    /// last writes are in the store, so the process does not exit before them.
    pub(crate) async fn over(mut self, how: Over) {
        let token = self.token.clone();
        match how {
            Over::Cancelled => self.send(Write::Forget { token }),
            // Given up before the app's end: followers elsewhere are told (after its end, the
            // keys just expire).
            Over::GivenUp if !self.ended => {
                let seq = self.last_seq;
                self.send(Write::End {
                    token,
                    seq,
                    bytes: Bytes::new(),
                    end: "given_up",
                    why: String::new(),
                });
            }
            Over::GivenUp => {}
            Over::Delivered => self.send(Write::Delivered { token }),
            Over::HandedOff => self.flushed().await,
        }
    }

    /// Resolves once every write queued so far for any stream is done (or failed), bounded by
    /// twice `resume.redis.timeout`.
    async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.redis.queue.try_send(Write::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(self.redis.config.timeout * 2, rx).await;
        }
    }
}
