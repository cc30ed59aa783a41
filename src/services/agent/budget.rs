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
//!
//! A destination whose reply broke a limit (longer than the call accepts, announced or
//! read) goes on **probation** for [`PROBATION`]: its replies are read at a sixty-fourth
//! of the rate with a small burst, and each new call to it is admitted only when the
//! bucket is out of debt, paying [`PROBATION_CALL_COST`] up front. A broken reply costs
//! the server more than its bytes — the connection is torn down and the next call dials
//! anew — and the bucket cannot see those costs; admission bounds them. An agent that
//! keeps its replies within their limits never meets probation.

use std::time::{Duration, Instant};

/// How long a destination stays on probation after its last broken reply.
pub const PROBATION: Duration = Duration::from_secs(10);
/// On probation, the sustained rate is the normal one divided by this.
pub const PROBATION_DIVISOR: u64 = 64;
/// On probation, the most that may be read at once.
pub const PROBATION_BURST: u64 = 256 << 10;
/// What admitting a call to a destination on probation costs: a broken reply's teardown
/// and the next dial, in bytes of budget.
pub const PROBATION_CALL_COST: u64 = 64 << 10;

/// A reply at least this long is large.
pub const LARGE_REPLY: u64 = 64 << 10;
/// How long after its last large reply a destination counts as answering large.
pub const LARGE_SPELL: Duration = Duration::from_secs(1);

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

    /// The rate while on probation.
    fn probation(self) -> Self {
        Self {
            bytes_per_sec: (self.bytes_per_sec / PROBATION_DIVISOR).max(1),
            burst: self.burst.min(PROBATION_BURST),
        }
    }
}

/// One destination's bucket.
#[derive(Debug)]
pub struct ReplyBudget {
    rate: ReplyRate,
    /// May go below zero: readers take what arrived and then wait off the debt, so the
    /// bytes read over any long spell stay at the rate however many read at once.
    tokens: f64,
    last: Option<Instant>,
    /// End of the current probation, if one was ever imposed.
    probation_until: Option<Instant>,
    /// When the destination last answered with a large reply.
    last_large: Option<Instant>,
}

impl ReplyBudget {
    /// A full bucket.
    pub fn new(rate: ReplyRate) -> Self {
        Self {
            rate,
            tokens: rate.burst as f64,
            last: None,
            probation_until: None,
            last_large: None,
        }
    }

    /// A reply of `len` bytes was read at `now`.
    pub fn replied(&mut self, now: Instant, len: u64) {
        if len >= LARGE_REPLY {
            self.last_large = Some(self.last_large.map_or(now, |l| l.max(now)));
        }
    }

    /// Whether the destination has answered with a large reply within [`LARGE_SPELL`]
    /// of `now`. Never for an unlimited destination.
    pub fn answering_large(&self, now: Instant) -> bool {
        self.rate != ReplyRate::UNLIMITED
            && self
                .last_large
                .is_some_and(|l| now.saturating_duration_since(l) < LARGE_SPELL)
    }

    /// Whether the destination is on probation at `now`.
    pub fn on_probation(&self, now: Instant) -> bool {
        self.probation_until.is_some_and(|u| now < u)
    }

    fn rate_at(&self, now: Instant) -> ReplyRate {
        if self.on_probation(now) {
            self.rate.probation()
        } else {
            self.rate
        }
    }

    /// Brings the bucket up to `now`: the part of the spell spent on probation refills at
    /// the probation rate, the rest at the normal one.
    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last.filter(|l| now > *l) {
            let split = self.probation_until.map_or(last, |u| u.clamp(last, now));
            let slow = split.duration_since(last).as_secs_f64();
            let fast = now.duration_since(split).as_secs_f64();
            self.tokens += slow * self.rate.probation().bytes_per_sec as f64
                + fast * self.rate.bytes_per_sec as f64;
        }
        self.tokens = self.tokens.min(self.rate_at(now).burst as f64);
        self.last = Some(now.max(self.last.unwrap_or(now)));
    }

    fn debt_wait(&self, now: Instant) -> Duration {
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            let rate = self.rate_at(now).bytes_per_sec.max(1) as f64;
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }

    /// Takes `n` bytes read at `now`; returns how long the reader should wait before
    /// reading more (zero while the bucket holds enough).
    pub fn take(&mut self, now: Instant, n: u64) -> Duration {
        if self.rate == ReplyRate::UNLIMITED {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= n as f64;
        self.debt_wait(now)
    }

    /// Whether a new call may go to the destination at `now`: zero if so (on probation
    /// the call's cost is taken), else how long to wait before asking again.
    pub fn admit(&mut self, now: Instant) -> Duration {
        if self.rate == ReplyRate::UNLIMITED || !self.on_probation(now) {
            return Duration::ZERO;
        }
        self.refill(now);
        let wait = self.debt_wait(now);
        if wait.is_zero() {
            self.tokens -= PROBATION_CALL_COST as f64;
        }
        wait
    }

    /// A reply broke its limit at `now`: probation starts (or is extended), and what the
    /// bucket held beyond the probation burst is forfeit.
    pub fn broken(&mut self, now: Instant) {
        if self.rate == ReplyRate::UNLIMITED {
            return;
        }
        self.refill(now);
        self.probation_until = Some(now + PROBATION);
        self.tokens = self.tokens.min(0.0);
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
    fn a_destination_answers_large_for_a_spell_after_a_large_reply() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        assert!(!b.answering_large(t0));
        b.replied(t0, LARGE_REPLY - 1);
        assert!(!b.answering_large(t0), "a small reply is not large");
        b.replied(t0, LARGE_REPLY);
        assert!(b.answering_large(t0));
        assert!(b.answering_large(t0 + LARGE_SPELL - Duration::from_millis(1)));
        assert!(!b.answering_large(t0 + LARGE_SPELL));
        // A reply timed before the last one (readers finish out of order) does not
        // shorten the spell.
        b.replied(t0 + Duration::from_millis(500), LARGE_REPLY);
        b.replied(t0 + Duration::from_millis(100), LARGE_REPLY);
        assert!(b.answering_large(t0 + Duration::from_millis(1400)));
        assert!(!b.answering_large(t0 + Duration::from_millis(1500)));
        // Reply limits turned off turn this off too.
        let mut u = ReplyBudget::new(ReplyRate::UNLIMITED);
        u.replied(t0, 16 << 20);
        assert!(!u.answering_large(t0));
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
    fn a_broken_reply_puts_the_destination_on_probation() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        assert_eq!(b.admit(t0), Duration::ZERO);
        b.take(t0, MIB);
        b.broken(t0);
        assert!(b.on_probation(t0));
        // The first call is admitted at once (the bucket is out of debt) and pays its
        // cost; the next waits that cost off at a sixty-fourth of the rate.
        assert_eq!(b.admit(t0), Duration::ZERO);
        let w = b.admit(t0);
        let slow = (10 * MIB / PROBATION_DIVISOR) as f64;
        assert!(
            (w.as_secs_f64() - PROBATION_CALL_COST as f64 / slow).abs() < 1e-9,
            "{w:?}"
        );
        // Bytes read are owed at the probation rate too.
        let w = b.take(t0 + w, 64 << 10);
        assert!(
            (w.as_secs_f64() - (64 << 10) as f64 / slow).abs() < 1e-9,
            "{w:?}"
        );
    }

    #[test]
    fn probation_bounds_the_calls_a_hostile_destination_gets() {
        // Sixty-four callers each admitted, reading 256 KiB and breaking the limit, for
        // thirty simulated seconds: the destination gets a handful of calls a second, not
        // the hundreds the normal rate would allow.
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(ReplyRate::default());
        let mut now = t0;
        let mut calls = 0u64;
        b.broken(now);
        while now < t0 + Duration::from_secs(30) {
            let w = b.admit(now);
            if !w.is_zero() {
                now += w;
                continue;
            }
            calls += 1;
            now += b.take(now, 256 << 10);
            b.broken(now);
        }
        let per_sec = calls as f64 / 30.0;
        assert!((3.0..=4.5).contains(&per_sec), "{per_sec} calls/s");
    }

    #[test]
    fn probation_ends_and_the_full_rate_returns() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        b.broken(t0);
        let after = t0 + PROBATION;
        assert!(!b.on_probation(after));
        assert_eq!(b.admit(after), Duration::ZERO);
        // The spell on probation refilled slowly (10 s at 160 KiB/s), then the normal
        // rate applies: a whole burst again after a quiet second.
        let later = after + Duration::from_secs(1);
        assert_eq!(b.take(later, 4 * MIB), Duration::ZERO);
    }

    #[test]
    fn a_good_destination_is_never_held_at_admission() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::new(rate());
        // Deep in debt from concurrent readers, but never broken: calls go at once.
        for _ in 0..8 {
            b.take(t0, MIB);
        }
        assert_eq!(b.admit(t0), Duration::ZERO);
        let mut u = ReplyBudget::new(ReplyRate::UNLIMITED);
        u.broken(t0);
        assert!(!u.on_probation(t0));
        assert_eq!(u.admit(t0), Duration::ZERO);
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
