//! Delays between attempts: exponential, capped, with jitter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait before retry number `retry` (1 for the first retry) under
/// `backoff = (first, max)`: `d = min(first · 2^(retry-1), max)`, then a
/// uniformly drawn point of `[d/2, d]` ("equal jitter": retries of many calls
/// that failed together spread out, yet each waits at least half its step).
/// No backoff: retry at once.
pub(crate) fn delay(backoff: Option<(Duration, Duration)>, retry: u32) -> Duration {
    let Some((first, max)) = backoff else {
        return Duration::ZERO;
    };
    let step = first
        .checked_mul(1u32 << retry.saturating_sub(1).min(31))
        .unwrap_or(max)
        .min(max);
    let half = step / 2;
    let spread = (step - half).as_nanos() as u64;
    let jitter = if spread == 0 {
        0
    } else {
        random() % (spread + 1)
    };
    half + Duration::from_nanos(jitter)
}

/// A cheap pseudo-random number (splitmix64 over a counter seeded by the
/// clock); jitter needs spread, not cryptographic quality.
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_backoff_retries_at_once() {
        assert_eq!(delay(None, 1), Duration::ZERO);
    }

    #[test]
    fn doubles_within_jitter_and_caps() {
        let first = Duration::from_millis(100);
        let max = Duration::from_millis(500);
        for _ in 0..100 {
            let d1 = delay(Some((first, max)), 1);
            assert!(d1 >= first / 2 && d1 <= first, "{d1:?}");
            let d3 = delay(Some((first, max)), 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = delay(Some((first, max)), 30);
            assert!(d30 >= max / 2 && d30 <= max, "{d30:?}");
        }
    }
}
