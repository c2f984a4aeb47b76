//! Per-connection limits HTTP/2 itself does not set: [`frames`] counts a client's frames by
//! kind (pure, over bytes), and [`stream::Guarded`] wraps an h2 connection's stream with it and
//! ends the connection with GOAWAY ENHANCE_YOUR_CALM past a limit.

pub(crate) mod frames;
pub(crate) mod stream;
