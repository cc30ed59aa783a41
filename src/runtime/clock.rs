//! The one place the runtime reads the clock.
//!
//! Uses tokio's clock so `#[tokio::test(start_paused = true)]` tests control time.

/// The current monotonic time.
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The current wall-clock time, for timestamps that leave the process.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
