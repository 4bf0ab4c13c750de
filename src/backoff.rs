//! The one backoff formula, and jitter drawn apart from it so that decisions stay pure.
//!
//! Every retry in the operator waits [`exponential`]: the remote call's retries (from 200 ms,
//! with full jitter), a failed listing (from 5 s, capped at the sync interval), refused mirror
//! writes (from 5 s, capped at the write backoff cap), a failed `GetRayCluster` and a failed
//! reconcile (from 5 s). What a remote or the API server asks for (`x-acs-retry-after`,
//! `Retry-After`) is applied by each caller, which knows whether to obey or to bound it.

use std::time::Duration;

use rand::Rng;

/// The wait after `failures` consecutive failures (1: the first): `base`, doubled for each
/// failure after the first, at most `cap`. Pure.
pub fn exponential(failures: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap)
}

/// `d` lengthened by `fraction` of itself (`fraction` drawn with [`draw`]; 0 in tests). Pure.
pub fn stretch(d: Duration, fraction: f64) -> Duration {
    let extra = Duration::try_from_secs_f64(d.as_secs_f64() * fraction.clamp(0.0, 1.0))
        .unwrap_or(Duration::MAX);
    d.saturating_add(extra)
}

/// A random fraction in `[0, max)`: the jitter a caller passes to the pure decisions.
pub fn draw(max: f64) -> f64 {
    rand::rng().random_range(0.0..max.max(f64::MIN_POSITIVE))
}

/// `d` lengthened by a random fraction in `[0, max)` of itself.
pub fn jitter(d: Duration, max: f64) -> Duration {
    stretch(d, draw(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let s = Duration::from_secs;
        let rows = [
            (0, s(5), "no failure counts as the first"),
            (1, s(5), "the first failure waits the base"),
            (2, s(10), "doubled"),
            (3, s(20), "doubled again"),
            (7, s(300), "capped"),
            (u32::MAX, s(300), "never overflows"),
        ];
        for (failures, want, why) in rows {
            assert_eq!(exponential(failures, s(5), s(300)), want, "{why}");
        }
        assert_eq!(exponential(40, Duration::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn stretch_is_bounded_and_jitter_stays_in_range() {
        let d = Duration::from_secs(10);
        assert_eq!(stretch(d, 0.0), d);
        assert_eq!(stretch(d, 0.5), Duration::from_secs(15));
        assert_eq!(stretch(d, 7.0), Duration::from_secs(20), "at most doubled");
        assert_eq!(stretch(Duration::MAX, 1.0), Duration::MAX);
        for _ in 0..100 {
            let j = jitter(d, 0.2);
            assert!(j >= d && j < Duration::from_secs(12));
        }
    }
}
