//! The one place the runtime reads the clock.
//!
//! Uses tokio's clock so `#[tokio::test(start_paused = true)]` tests control time.

/// The current monotonic time.
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds added to the wall clock; tests use it to simulate a suspend.
static WALL_SKEW_SECS: AtomicU64 = AtomicU64::new(0);

/// The current wall-clock time, for timestamps that leave the process.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> std::time::SystemTime {
    std::time::SystemTime::now()
        + std::time::Duration::from_secs(WALL_SKEW_SECS.load(Ordering::Relaxed))
}

/// Moves this process's view of the wall clock forward, as a suspend would. For tests of
/// sleep/wake handling; never called by the library itself.
#[doc(hidden)]
pub fn skew_wall_clock_for_tests(by: std::time::Duration) {
    WALL_SKEW_SECS.fetch_add(by.as_secs(), Ordering::Relaxed);
}
