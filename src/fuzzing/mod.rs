//! Entry points for the fuzz targets in `fuzz/fuzz_targets/`. Compiled under
//! `cfg(fuzzing)` (and in unit tests, so they cannot rot). Each function asserts its
//! target's invariants (round trips, counters, no unauthorized state), not just the
//! absence of panics.

pub mod agent;
pub mod coord;
pub mod derp;
pub mod disco;
pub mod mcp;
pub mod oauth;
pub mod packet;
pub mod stun;
pub mod tailnet;
pub mod text;
