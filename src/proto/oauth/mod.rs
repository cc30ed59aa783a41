//! The OAuth 2.1 authorization server's rules, sans-IO: what `services::oauth` (the
//! HTTP shell) asks before it stores or issues anything.
//!
//! Time comes in as [`UnixTime`] (records outlive the process, so wall-clock seconds);
//! randomness comes in as an `rng` argument, so tests are deterministic. Nothing here
//! stores anything: each function takes the records the shell looked up and returns
//! the records to store, the response to send, or a [`Refusal`] saying which OAuth
//! error to answer and what to revoke.
//!
//! | module | what it decides |
//! |---|---|
//! | [`redirect`] | which redirect URIs may be registered; exact matching (any port for loopback, RFC 8252 §7.3); where a redirect goes |
//! | [`resource`] | RFC 8707 resource indicators: canonical form, which ones are this server's |
//! | [`pkce`] | S256 challenges and verifiers (RFC 7636); `plain` is refused |
//! | [`client`] | dynamic registration (RFC 7591) and client records, auth methods |
//! | [`cimd`] | client ID metadata documents: the URL, the addresses it may resolve to, the document, how long to cache it |
//! | [`authorize`] | the authorization request: what is shown as a page and what goes back to the client; codes |
//! | [`token`] | the token endpoint: client authentication, code exchange, refresh rotation and reuse, revocation (RFC 7009) |
//! | [`discovery`] | RFC 8414 authorization server metadata and the RFC 9728 fields the resource adds |
//! | [`limiter`] | failed sign-in attempts per key |
//! | [`records`] | what the store keeps: clients, codes, grants (token families), tokens, sessions, pending requests |
//!
//! Must not import tokio or read the clock.

pub mod authorize;
pub mod cimd;
pub mod client;
pub mod discovery;
mod error;
pub mod limiter;
pub mod pkce;
pub mod records;
pub mod redirect;
pub mod resource;
pub mod secret;
mod settings;
pub mod token;

pub use error::{ErrorCode, OAuthError, Refusal};
pub use settings::{SCOPE_MCP, Settings, scope_is_valid};

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Seconds since the Unix epoch: when records were made and when they expire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// From a wall-clock reading (the shell passes `runtime::clock::wall()`); times before
    /// the epoch read as 0.
    pub fn from_system(t: SystemTime) -> Self {
        Self(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    /// `d` later (saturating).
    #[must_use]
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_secs()))
    }

    /// Seconds from `self` until `later`, 0 if it has passed.
    pub fn until(self, later: Self) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl std::fmt::Display for UnixTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
