//! A lock-free latency histogram: log-scale buckets of microseconds with four
//! steps per power of two (≤ 19% error), enough for p50/p99 on a dashboard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const STEPS: u32 = 4;
const BUCKETS: usize = 34 * STEPS as usize;

/// Counts of observed latencies by bucket.
#[derive(Debug)]
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    let us = us.max(1);
    let log = 63 - us.leading_zeros();
    let frac = if log >= 2 {
        (us >> (log - 2)) & 3
    } else {
        (us << (2 - log)) & 3
    } as u32;
    ((log * STEPS + frac) as usize).min(BUCKETS - 1)
}

/// The lower bound of a bucket, in microseconds.
fn bucket_floor(b: usize) -> u64 {
    let log = b as u32 / STEPS;
    let frac = u64::from(b as u32 % STEPS);
    if log >= 2 {
        (4 + frac) << (log - 2)
    } else {
        ((4 + frac) >> (2 - log)).max(1)
    }
}

impl Latency {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        self.buckets[bucket_of(d.as_micros() as u64)].fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets every observation.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The latency below which a share `q` (0–1) of observations fall; zero with none.
    pub fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(bucket_floor(b));
            }
        }
        Duration::from_micros(bucket_floor(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for us in [1u64, 2, 3, 4, 5, 7, 8, 100, 1000, 12_345, 1_000_000, 60_000_000] {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us && us as f64 <= floor as f64 * 1.26, "{us}: floor {floor}");
        }
    }

    #[test]
    fn quantiles() {
        let l = Latency::default();
        assert_eq!(l.quantile(0.5), Duration::ZERO);
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile(0.5).as_millis();
        let p99 = l.quantile(0.99).as_millis();
        assert!((40..=50).contains(&p50), "{p50}");
        assert!((80..=99).contains(&p99), "{p99}");
        assert_eq!(l.count(), 100);
    }
}
