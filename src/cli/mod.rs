//! Command-line interface of the `agentwire` binary.

pub mod derp;
