//! Reconnect backoff: jittered exponential, computed from the attempt number.
//!
//! Pure: the caller supplies the randomness, so tests are deterministic.

use std::time::Duration;

/// Exponential backoff with "equal jitter": half the step is fixed, half random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (attempt 0), before jitter.
    pub base: Duration,
    /// Ceiling for any delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay before retry number `attempt` (0-based). `rand` is a uniform sample in
    /// `[0, 1)`; values outside are clamped. The result lies in `[step/2, step]` where
    /// `step = min(max, base * 2^attempt)`.
    pub fn delay(&self, attempt: u32, rand: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let step = self.base.saturating_mul(factor).min(self.max);
        let half = step / 2;
        let r = if rand.is_nan() {
            0.0
        } else {
            rand.clamp(0.0, 1.0)
        };
        half + half.mul_f64(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(3750));
        assert_eq!(b.delay(1, f64::NAN), Duration::from_millis(100));
    }
}
