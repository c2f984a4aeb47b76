//! Resumable streams (`resume.*`): a stream on a resumable path outlives its client's
//! connection. Its events carry the sidecar's ids (`sse::resume_id`), its bytes are kept in
//! a bounded log ([`log`], per stream in the [`store`]), and a client that reconnects with one of those ids within
//! `resume.grace` gets the events after it and then the live stream ([`relay`]).

pub(crate) mod inline;
pub(crate) mod log;
pub(crate) mod redis;
pub(crate) mod relay;
pub(crate) mod source;
pub(crate) mod store;
