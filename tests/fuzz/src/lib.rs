//! What the fuzz targets share: the reference SSE parser and the framer's relay
//! simulation, compiled from the very files the property tests use
//! (`tests/spec/`), and one way to turn a seed byte into read splits.

/// The WHATWG reference parser and `relay`, the framer's invariants.
#[path = "../../spec/mod.rs"]
pub mod spec;

/// Where to cut `len` bytes into reads, from a seed byte the fuzzer mutates:
/// `None` means one byte per read; otherwise up to 7 sorted cut points (so
/// seed 0 is one read of everything).
pub fn cuts(seed: u8, len: usize) -> Option<Vec<usize>> {
    if seed == 0xff {
        return None;
    }
    let mut x = (u64::from(seed) << 32) ^ (len as u64) ^ 0x9E37_79B9_7F4A_7C15;
    let mut cuts: Vec<usize> = (0..seed % 8)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (len as u64 + 1)) as usize
        })
        .collect();
    cuts.sort_unstable();
    Some(cuts)
}

/// `data` cut into reads as [`cuts`] says.
pub fn split(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let Some(cuts) = cuts(seed, data.len()) else {
        return data.chunks(1).collect();
    };
    let mut reads = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for cut in cuts {
        reads.push(&data[last..cut]);
        last = cut;
    }
    reads.push(&data[last..]);
    reads
}
