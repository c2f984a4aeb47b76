//! A tiny seeded PRNG (xorshift64; no `rand` dependency, quality does not matter here): the
//! cutter's jitter, and the soak's churn and stream shapes, which a printed seed reproduces.

use std::time::Duration;

pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; 0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> XorShift {
        // splitmix64 once, so nearby seeds (slot numbers) give unrelated sequences.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A duration uniform in `[every - jitter, every + jitter]`.
    pub fn around(&mut self, every: Duration, jitter: Duration) -> Duration {
        let span = 2 * jitter.as_micros() as u64;
        let offset = if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        };
        (every - jitter) + Duration::from_micros(offset)
    }
}
