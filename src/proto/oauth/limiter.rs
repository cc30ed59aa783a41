//! Failed sign-in attempts, counted per key (a user name, a client address) in fixed
//! windows, so password and token guessing is slow whatever the argon2 cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counts failures per key; refuses a key that reached the limit until its window ends.
#[derive(Debug, Clone)]
pub struct AttemptLimiter {
    max_failures: u32,
    window: Duration,
    max_keys: usize,
    entries: HashMap<String, (u32, Instant)>,
}

impl AttemptLimiter {
    /// At most `max_failures` failures per key per `window`, tracking at most `max_keys`
    /// keys (beyond that, expired entries go first, then arbitrary ones).
    pub fn new(max_failures: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            max_failures,
            window,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` when `key` may not try now.
    ///
    /// # Errors
    /// How long until it may.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key) {
            Some((n, start)) if *n >= self.max_failures => {
                let end = *start + self.window;
                if now < end { Err(end - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Records a failure of `key`.
    pub fn failed(&mut self, key: &str, now: Instant) {
        let window = self.window;
        if !self.entries.contains_key(key) && self.entries.len() >= self.max_keys {
            self.entries
                .retain(|_, (_, start)| now.saturating_duration_since(*start) < window);
            if self.entries.len() >= self.max_keys
                && let Some(k) = self.entries.keys().next().cloned()
            {
                self.entries.remove(&k);
            }
        }
        let e = self.entries.entry(key.to_string()).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= window {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }

    /// Forgets `key`'s failures (after a success).
    pub fn succeeded(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn limits_per_key_and_window() {
        let t = origin();
        let w = Duration::from_secs(60);
        let mut l = AttemptLimiter::new(3, w, 100);
        for _ in 0..3 {
            assert!(l.check("alice", t).is_ok());
            l.failed("alice", t);
        }
        assert_eq!(
            l.check("alice", t + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        assert!(l.check("bob", t).is_ok(), "other keys unaffected");
        assert!(l.check("alice", t + w).is_ok(), "window over");
        l.failed("alice", t + w);
        assert!(l.check("alice", t + w).is_ok(), "counting starts again");
        l.succeeded("alice");
        assert!(l.is_empty());
    }

    #[test]
    fn bounded() {
        let t = origin();
        let mut l = AttemptLimiter::new(1, Duration::from_secs(60), 10);
        for i in 0..100 {
            l.failed(&format!("k{i}"), t);
        }
        assert!(l.len() <= 10);
    }
}
