//! Entry points for the fuzz targets in `fuzz/fuzz_targets/`. Compiled only under
//! `cfg(fuzzing)`. Each function asserts its target's invariants (round trips, no
//! unauthorized state), not just the absence of panics.

pub mod derp;
