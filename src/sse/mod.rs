//! Byte-level Server-Sent Events support for the relay.
//!
//! The relay never parses events; it only needs to know *where* it may add
//! bytes without changing what a client parses (DESIGN §2):
//!
//! - [`Framer`] watches every forwarded chunk, finds line
//!   ends with `memchr2`, and says whether the stream is between events
//!   ([`Framer::at_boundary`]). It also counts dispatched events and drops a
//!   leading UTF-8 BOM when the sidecar wrote something before the app's
//!   first byte.
//! - `blocks.rs` renders the whole blocks the relay may inject at a boundary
//!   (heartbeat comment, opening block, `retry:` hint) once, from config.
//!
//! - `resume_id.rs` makes and reads the ids a resumable stream's events
//!   carry; a framer made with [`Framer::stamping`] writes them.
//!
//! Everything works on bytes: payloads are never decoded or copied (but for
//! a stamping framer, which rebuilds a chunk that completes an event).

mod blocks;
mod framer;
pub mod resume_id;

pub use blocks::{comment_block, open_block, retry_block, validate_comment};
pub use framer::{EventEnds, Forwarded, Framer};
