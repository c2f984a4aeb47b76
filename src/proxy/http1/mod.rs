//! HTTP/1.1 on raw sockets, for the lean relay: request and response heads, the app's body
//! and its chunked coding, and the socket calls. pingora's HTTP/1 code cannot be used here: it
//! lives inside its sessions, which the lean relay leaves behind to save their memory.

pub(crate) mod body;
pub(crate) mod chunked;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod socket;
