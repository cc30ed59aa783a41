//! A token bucket driven by caller-supplied time.

use std::time::Instant;

/// Allows `per_sec` events per second on average with bursts of `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst);
        Self {
            per_sec,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token if there is one. Time going backwards refills nothing.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        }
        if self.last.is_none_or(|l| now > l) {
            self.last = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An arbitrary origin; tests only ever add offsets to it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn burst_then_rate() {
        let t0 = origin();
        let mut b = TokenBucket::new(1.0, 3);
        assert!((0..3).all(|_| b.allow(t0)));
        assert!(!b.allow(t0));
        assert!(!b.allow(t0 + Duration::from_millis(900)));
        assert!(b.allow(t0 + Duration::from_millis(1000)));
        assert!(!b.allow(t0 + Duration::from_millis(1500)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.allow(later)));
        assert!(!b.allow(later));
        // Going back in time neither panics nor refills.
        assert!(!b.allow(t0));
    }
}
