//! Sleep/wake detection from two clocks.
//!
//! The monotonic clock stops while a machine is suspended (and stalls with the process);
//! the wall clock keeps going. A tick that finds the wall clock ran ahead of the monotonic
//! one, or finds the monotonic clock moved much more than a tick, means the node was
//! asleep or frozen: connections are probably dead and timers stale, so the caller should
//! reconnect at once rather than wait out keepalives.

use std::time::{Duration, Instant, SystemTime};

/// Detects gaps between consecutive observations.
#[derive(Debug, Clone)]
pub struct WakeDetector {
    last: Option<(Instant, SystemTime)>,
    threshold: Duration,
}

/// What an observation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// Nothing unusual.
    None,
    /// The wall clock advanced this much more than the monotonic one (suspend, or the
    /// clock was stepped).
    WallJump(Duration),
    /// The monotonic clock advanced this much since the last observation (the process or
    /// VM was frozen, or the runtime was starved).
    Stall(Duration),
}

impl WakeDetector {
    /// A detector that reports gaps longer than `threshold` beyond the expected tick.
    pub fn new(threshold: Duration) -> Self {
        Self {
            last: None,
            threshold,
        }
    }

    /// Records an observation, expected about `tick` after the previous one.
    pub fn observe(&mut self, mono: Instant, wall: SystemTime, tick: Duration) -> Gap {
        let prev = self.last.replace((mono, wall));
        let Some((pm, pw)) = prev else {
            return Gap::None;
        };
        let dm = mono.saturating_duration_since(pm);
        let dw = wall.duration_since(pw).unwrap_or(Duration::ZERO);
        if dw > dm + self.threshold {
            return Gap::WallJump(dw - dm);
        }
        if dm > tick + self.threshold {
            return Gap::Stall(dm);
        }
        Gap::None
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn detects_wall_jumps_and_stalls() {
        let tick = Duration::from_millis(250);
        let mut d = WakeDetector::new(Duration::from_secs(3));
        let (m, w) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        );
        assert_eq!(d.observe(m, w, tick), Gap::None);
        assert_eq!(d.observe(m + tick, w + tick, tick), Gap::None);
        // Suspended for an hour: monotonic barely moved.
        let (m2, w2) = (m + 2 * tick, w + tick + Duration::from_secs(3600));
        assert!(
            matches!(d.observe(m2, w2, tick), Gap::WallJump(j) if j > Duration::from_secs(3500))
        );
        // Frozen for 10 s.
        let (m3, w3) = (m2 + Duration::from_secs(10), w2 + Duration::from_secs(10));
        assert_eq!(d.observe(m3, w3, tick), Gap::Stall(Duration::from_secs(10)));
        // A wall clock stepped backwards is not a wake.
        assert_eq!(
            d.observe(m3 + tick, w3 - Duration::from_secs(60), tick),
            Gap::None
        );
    }
}
