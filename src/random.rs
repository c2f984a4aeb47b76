//! A cheap, well-spread random number for jitter (drain close times, retry hints, ties between
//! relay workers): nothing here needs to be unpredictable, so no crate is needed.

use std::sync::atomic::{AtomicU64, Ordering};

/// A number in [0, 1).
pub(crate) fn unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        STATE.store(x, Ordering::Relaxed);
    }
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_in_the_unit_interval_and_spreads() {
        let draws: Vec<f64> = (0..10_000).map(|_| super::unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let low = draws.iter().filter(|x| **x < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10,000 below 0.5");
    }
}
