//! Command-line interface of the `agentwire` binary.
