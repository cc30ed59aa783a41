//! How fast the server reads one agent's replies: a token bucket in bytes, without I/O or
//! a clock (the caller passes the time and does the waiting).
//!
//! A reply the server reads costs it decryption, the netstack's copies and HTTP framing,
//! all on the cores every tenant shares. An agent that answers with endless or gigantic
//! bodies would otherwise have the server spend them at line rate on its replies alone.
//! The bucket's burst is a whole maximal reply, so any one call reads at full speed; only
//! a destination that keeps the server reading, call after call, is held to the rate, and
//! while a reader waits it stops reading, so TCP's flow control pushes the wait back to
//! the agent instead of buffering its bytes here.

use std::time::{Duration, Instant};

/// The bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyRate {
    /// Bytes per second, sustained.
    pub bytes_per_sec: u64,
    /// Bytes that may be read at once after a quiet spell.
    pub burst: u64,
}

impl Default for ReplyRate {
    /// 64 MiB/s sustained (the 16-client read benchmark reads ~30 MiB/s from its one
    /// agent), with a burst of 16 MiB, the largest reply a call accepts.
    fn default() -> Self {
        Self {
            bytes_per_sec: 64 << 20,
            burst: 16 << 20,
        }
    }
}

impl ReplyRate {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        bytes_per_sec: u64::MAX,
        burst: u64::MAX,
    };
}

/// One destination's bucket.
#[derive(Debug)]
pub struct ReplyBudget {
    rate: ReplyRate,
    /// May go below zero: readers take what arrived and then wait off the debt, so the
    /// bytes read over any long spell stay at the rate however many read at once.
    tokens: f64,
    last: Option<Instant>,
}

impl ReplyBudget {
    /// A full bucket.
    pub fn new(rate: ReplyRate) -> Self {
        Self {
            rate,
            tokens: rate.burst as f64,
            last: None,
        }
    }

    /// Takes `n` bytes read at `now`; returns how long the reader should wait before
    /// reading more (zero while the bucket holds enough).
    pub fn take(&mut self, now: Instant, n: u64) -> Duration {
        if self.rate == ReplyRate::UNLIMITED {
            return Duration::ZERO;
        }
        let rate = self.rate.bytes_per_sec.max(1) as f64;
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
            self.tokens = (self.tokens + refill).min(self.rate.burst as f64);
        }
        self.last = Some(now.max(self.last.unwrap_or(now)));
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a starting instant; the tests then move time by hand
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn rate() -> ReplyRate {
        ReplyRate {
            bytes_per_sec: 10 * MIB,
            burst: 4 * MIB,
        }
    }

    #[test]
    fn a_burst_passes_without_waiting() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        for _ in 0..4 {
            assert_eq!(b.take(t0, MIB), Duration::ZERO);
        }
        // The fifth MiB is owed: a tenth of a second at 10 MiB/s.
        let w = b.take(t0, MIB);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn concurrent_readers_share_the_rate() {
        // Eight readers each take 1 MiB at once: between them they owe 4 MiB beyond the
        // burst, and the last one waits for all of it.
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        let waits: Vec<Duration> = (0..8).map(|_| b.take(t0, MIB)).collect();
        assert_eq!(waits[3], Duration::ZERO);
        assert!((waits[7].as_secs_f64() - 0.4).abs() < 1e-9, "{waits:?}");
    }

    #[test]
    fn a_reader_that_waits_its_turn_reads_at_the_rate() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        let mut now = t0;
        let mut read = 0;
        // Read 64 KiB frames for ten simulated seconds, waiting as told.
        while now < t0 + Duration::from_secs(10) {
            now += b.take(now, 64 << 10);
            read += 64 << 10;
        }
        let per_sec = (read - 4 * MIB) as f64 / 10.0;
        assert!(
            (per_sec / (10 * MIB) as f64 - 1.0).abs() < 0.01,
            "{per_sec}"
        );
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        b.take(t0, 4 * MIB);
        // An hour later the bucket holds the burst, not an hour's worth.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(later, 4 * MIB), Duration::ZERO);
        assert!(b.take(later, MIB) > Duration::ZERO);
    }

    #[test]
    fn unlimited_never_waits() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(ReplyRate::UNLIMITED);
        for _ in 0..1000 {
            assert_eq!(b.take(t0, u64::MAX / 2), Duration::ZERO);
        }
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = ReplyBudget::new(rate());
        b.take(t0, 4 * MIB);
        let w = b.take(t0 - Duration::from_secs(5), MIB);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
    }
}
