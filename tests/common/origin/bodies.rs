//! The bodies the origin sends: fixed payloads, reason phrases, gzip flushed per event.

use std::io::Write as _;

/// The body `/json?size=N` sends (before any gzip).
pub fn json_body(size: usize) -> Vec<u8> {
    format!(
        r#"{{"ok":true,"items":[1,2,3],"pad":"{}"}}"#,
        "x".repeat(size)
    )
    .into_bytes()
}

/// The body `/big?size=N` sends: deterministic, not text, not compressible.
pub fn big_body(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Gzip encoder that hands out what it has produced after each sync flush.
pub(super) struct StreamGz(flate2::write::GzEncoder<Vec<u8>>);

impl StreamGz {
    pub(super) fn new() -> Self {
        StreamGz(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ))
    }
    pub(super) fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.0.write_all(data).unwrap();
        self.0.flush().unwrap();
        std::mem::take(self.0.get_mut())
    }
    pub(super) fn finish(self) -> Vec<u8> {
        self.0.finish().unwrap()
    }
}
