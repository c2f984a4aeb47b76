//! What the relays queue for the store's writer.

use super::super::store::Credentials;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What a resume on another replica needs to know of a stream.
pub(crate) struct Meta {
    pub credentials: Credentials,
    pub target: Vec<u8>,
    pub head: Vec<u8>,
}

/// One write for the store.
pub(crate) enum Write {
    /// A stream opened on this replica.
    Open { token: Arc<str>, meta: Meta },
    /// Event `seq` (and the bytes before it since the previous event).
    Event {
        token: Arc<str>,
        seq: u64,
        bytes: Bytes,
    },
    /// The stream's end after event `seq`: `end` is `clean`, `failed` or `given_up`.
    End {
        token: Arc<str>,
        seq: u64,
        bytes: Bytes,
        end: &'static str,
        why: String,
    },
    /// Nothing to resume any more: its keys go now.
    Forget { token: Arc<str> },
    /// A client received the stream's end.
    Delivered { token: Arc<str> },
    /// A client on this replica follows the stream (refreshes the reader key).
    Follow { token: Arc<str> },
    /// No client on this replica follows it any more.
    Unfollow { token: Arc<str> },
    /// Answered once every write before it is done.
    Flush(oneshot::Sender<()>),
}
