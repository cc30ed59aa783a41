//! The tokio shell. The only layer that spawns tasks, does IO or reads the clock.

pub mod clock;
pub mod coord;
pub mod derp;
