//! Wire formats. Owns byte layouts and their parse/emit code.
//!
//! Must not import tokio, read the clock, or do IO. The parse contract, after smoltcp:
//! a `parse`/`new_checked` either returns a value whose accessors cannot panic, or a
//! typed error; no input of any length or content panics. Lengths read from the wire are
//! never used to index without a bounds check.

pub mod addr;
pub mod agent_api;
pub mod coord;
pub mod derp;
pub mod derpmap;
pub mod disco;
pub mod ip;
pub mod key;
pub mod oauth;
pub mod stun;
pub mod wg;
pub mod wgconf;

use thiserror::Error;

/// Why bytes did not parse. Hot-path callers count these and drop the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// Fewer bytes than the format needs; more may arrive (stream formats only).
    #[error("truncated input")]
    Truncated,
    /// The bytes can never be valid for this format.
    #[error("malformed input")]
    Malformed,
    /// A length or size exceeds the format's limit.
    #[error("input exceeds size limit")]
    TooLarge,
}
