//! The chunked decoder (`ChunkedDecoder`, and `Decode` as the lean relay's
//! event loop runs it) on any bytes, split anywhere:
//! - any split decodes to what one read decodes: the same payload, the same
//!   number of bytes used, the same end, the same error;
//! - the payload is never longer than what was used, and no more is used
//!   than was given;
//! - `Decode` hands out the same payload and ends (or fails) with it;
//! - every body a strict reference decoder (built on httparse's
//!   `parse_chunk_size`, CRLF everywhere) reads, ours reads the same way,
//!   to the same byte (the tests of the decoder check the reverse direction:
//!   what `ChunkHead` encodes round-trips).
//!
//! Input: a seed byte for the read splits (`sse_sidecar_fuzz::cuts`), then
//! the body's bytes as the app sends them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sse_sidecar::fuzzing::{Chunked, ChunkedBody};
use sse_sidecar_fuzz::split;

/// Longest size or trailer line the reference takes (the decoder's limit is
/// 4096 bytes; past it the two may disagree by design).
const LINE_MAX: usize = 4000;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    payload: Vec<u8>,
    used: usize,
    done: bool,
    error: Option<String>,
}

fn decode(reads: &[&[u8]]) -> Outcome {
    let mut decoder = Chunked::default();
    let mut out = Outcome {
        payload: Vec::new(),
        used: 0,
        done: false,
        error: None,
    };
    for read in reads {
        let input = Bytes::copy_from_slice(read);
        match decoder.decode(&input, |piece| out.payload.extend_from_slice(&piece)) {
            Ok(used) => {
                assert!(used <= read.len(), "used {used} of {} bytes", read.len());
                // Bytes after the body's end are left over, never eaten.
                assert!(used == read.len() || decoder.is_done(), "stopped early");
                out.used += used;
            }
            Err(e) => {
                // How much a failing read used is not reported; earlier reads' counts are moot.
                out.used = 0;
                out.error = Some(e);
                break;
            }
        }
    }
    out.done = decoder.is_done();
    out
}

/// A strict decoder from the RFC 9112 §7.1 grammar: size lines by httparse
/// (with no CR or LF in them but the CRLF that ends them),
/// data then CRLF, trailer lines ending in CRLF with no CR or LF in them.
/// The payload and the bytes the body takes, or `None` when the input is not
/// such a complete body.
fn reference(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut payload = Vec::new();
    loop {
        let rest = &wire[pos..];
        if !rest.first()?.is_ascii_hexdigit() {
            return None; // httparse reads an empty size as 0
        }
        let httparse::Status::Complete((n, size)) = httparse::parse_chunk_size(rest).ok()? else {
            return None;
        };
        // httparse takes any byte in an extension, even a bare CR or LF; the grammar does not.
        if n > LINE_MAX || rest[..n - 2].iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return None;
        }
        pos += n;
        if size == 0 {
            break;
        }
        let end = pos.checked_add(usize::try_from(size).ok()?)?;
        payload.extend_from_slice(wire.get(pos..end)?);
        if wire.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        pos = end + 2;
    }
    loop {
        let rest = &wire[pos..];
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        if eol > LINE_MAX || rest[..eol].iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return None;
        }
        pos += eol + 2;
        if eol == 0 {
            return Some((payload, pos));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(&[wire]);
    assert!(whole.used <= wire.len());
    if whole.error.is_none() {
        // Every payload byte came with its framing (a failing read reports no length).
        assert!(whole.payload.len() <= whole.used);
    } else {
        assert!(whole.payload.len() <= wire.len() && !whole.done);
    }

    let reads = split(wire, seed);
    let parts = decode(&reads);
    assert_eq!(
        parts,
        whole,
        "split {:?}",
        reads.iter().map(|r| r.len()).collect::<Vec<_>>()
    );

    // The relay's `Decode`: the same payload, ending or failing with it.
    let mut body = ChunkedBody::default();
    let mut payload = Vec::new();
    let mut failed = None;
    for read in &reads {
        match body.push(Bytes::copy_from_slice(read)) {
            Ok(Some(piece)) => payload.extend_from_slice(&piece),
            Ok(None) => {}
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert_eq!(failed.is_some(), whole.error.is_some(), "Decode's error");
    if failed.is_some() {
        // The read that fails hands out nothing, not even what came before the error in it.
        assert!(
            whole.payload.starts_with(&payload),
            "Decode's payload before the error"
        );
    } else {
        assert_eq!(payload, whole.payload, "Decode's payload");
        assert_eq!(body.finished(), whole.done, "Decode's end");
    }

    if let Some((want, used)) = reference(wire) {
        assert_eq!(whole.error, None, "a valid body refused");
        assert!(whole.done, "a valid body not finished");
        assert_eq!(whole.payload, want, "payload differs from the reference");
        assert_eq!(whole.used, used, "body length differs from the reference");
    }
});
