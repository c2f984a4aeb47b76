//! A log-linear latency histogram (HdrHistogram-like, ~1.6 % resolution) that
//! stream tasks record into concurrently: one relaxed `fetch_add` per event,
//! no lock and no per-stream copy (9,000 streams × 30 KiB would add up).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Values below this are exact; above, each power of two has HALF buckets.
const SUB: usize = 128;
const HALF: usize = SUB / 2;
const SUB_BITS: u32 = SUB.trailing_zeros();
const BUCKETS: usize = SUB + 57 * HALF;

pub struct Hist {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
    sum: AtomicU64,
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - (SUB_BITS - 1);
    let mantissa = (v >> shift) as usize; // in [HALF, SUB)
    SUB + (shift as usize - 1) * HALF + (mantissa - HALF)
}

/// The midpoint of bucket `i`'s value range.
fn value_of(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let k = i - SUB;
    let shift = (k / HALF + 1) as u32;
    let mantissa = (k % HALF + HALF) as u64;
    let low = mantissa << shift;
    low + (1u64 << shift) / 2
}

impl Hist {
    pub fn new() -> Self {
        Hist {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
        self.sum.fetch_add(v, Relaxed);
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Summary::default();
        }
        let max = self.max.load(Relaxed);
        let at = |q: f64| -> u64 {
            let rank = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return value_of(i).min(max);
                }
            }
            max
        };
        Summary {
            count,
            mean: self.sum.load(Relaxed) as f64 / count as f64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value maps to a bucket whose midpoint is within 1/64 of it.
    #[test]
    fn buckets_are_precise_and_in_range() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            for x in [v, v + 1, v * 3 / 2] {
                let i = index(x);
                assert!(i < BUCKETS, "{x}");
                let m = value_of(i);
                let err = (m as f64 - x as f64).abs() / x as f64;
                assert!(err <= 1.0 / 64.0, "{x} -> {m}");
            }
            v = v * 2 + 1;
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_uniform_values() {
        let h = Hist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.max, 10_000_000);
        let near = |got: u64, want: f64| (got as f64 - want).abs() / want < 0.02;
        assert!(near(s.p50, 5_000_000.0), "{}", s.p50);
        assert!(near(s.p99, 9_900_000.0), "{}", s.p99);
        assert!(near(s.p999, 9_990_000.0), "{}", s.p999);
    }
}
