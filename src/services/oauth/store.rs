//! Where the authorization server keeps its records: [`OAuthStore`].
//!
//! Every operation that decides something under concurrency is one atomic call here
//! (using a code marks it used; rotating a refresh token is a compare-and-swap on the
//! grant's current token; taking a pending request removes it), so two replicas or two
//! requests racing cannot both win. Everything else — which code is acceptable, which
//! refresh is reuse — is decided by `proto::oauth` on the records these calls return.
//!
//! Secrets are stored as digests only. Implementations: [`super::MemoryStore`] (tests,
//! and `serve` until a database is configured).

use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{
    AccessRecord, ClientRecord, CodeRecord, CodeState, GrantRecord, PendingRecord, RefreshLookup,
    SessionRecord, TokenLookup,
};
use crate::proto::oauth::secret::Digest;
use crate::services::control::BoxFuture;
use std::fmt;
use thiserror::Error;

/// The store failed; answer "try again later" (503 / `temporarily_unavailable`), never
/// "denied".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("OAuth store unavailable: {0}")]
pub struct StoreError(pub String);

/// Which grants an admin or user query covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Only this user's.
    pub user: Option<String>,
    /// Only this client's.
    pub client_id: Option<String>,
    /// Include revoked grants (they are kept for a while after revocation).
    pub include_revoked: bool,
}

impl GrantFilter {
    /// Whether `g` is covered.
    pub fn matches(&self, g: &GrantRecord) -> bool {
        self.user.as_ref().is_none_or(|u| *u == g.user)
            && self.client_id.as_ref().is_none_or(|c| *c == g.client_id)
            && (self.include_revoked || g.revoked.is_none())
    }
}

/// What [`OAuthStore::purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Codes past their lifetime (kept a while after it, so late reuse is still seen).
    pub codes: u64,
    /// Access tokens past their lifetime.
    pub access_tokens: u64,
    /// Grants revoked or lapsed longer ago than the retention, with their tokens.
    pub grants: u64,
    /// Sessions and pending requests past their lifetime.
    pub browser: u64,
    /// Registered clients that never obtained a grant within the retention.
    pub clients: u64,
}

/// Counts for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Clients (registered and cached metadata documents).
    pub clients: u64,
    /// Codes (used or not, until purged).
    pub codes: u64,
    /// Grants that are not revoked.
    pub live_grants: u64,
    /// Access tokens (until purged).
    pub access_tokens: u64,
    /// Signed-in browser sessions.
    pub sessions: u64,
}

/// How long things are kept after they stop being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Codes after expiry (reuse of an expired code is then still recognised).
    pub codes: std::time::Duration,
    /// Revoked or lapsed grants (so admins and users can see what happened).
    pub grants: std::time::Duration,
    /// Registered clients with no grant at all.
    pub unused_clients: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            codes: std::time::Duration::from_secs(600),
            grants: std::time::Duration::from_secs(30 * 24 * 3600),
            unused_clients: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

type R<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Clients, browser flows, codes, grants and tokens.
pub trait OAuthStore: Send + Sync + fmt::Debug {
    /// Inserts or replaces a client.
    fn put_client<'a>(&'a self, c: &'a ClientRecord) -> R<'a, ()>;
    /// The client with this id.
    fn client<'a>(&'a self, id: &'a str) -> R<'a, Option<ClientRecord>>;
    /// Every client.
    fn clients(&self) -> R<'_, Vec<ClientRecord>>;
    /// How many registered (not metadata-document) clients exist.
    fn registered_clients(&self) -> R<'_, u64>;
    /// Deletes a client and revokes its grants; whether it existed.
    fn delete_client<'a>(&'a self, id: &'a str, now: UnixTime) -> R<'a, bool>;

    /// Stores a pending authorization request.
    fn put_pending<'a>(&'a self, p: &'a PendingRecord) -> R<'a, ()>;
    /// A pending request, if not expired at `now`.
    fn pending<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<PendingRecord>>;
    /// Removes and returns a pending request, if not expired at `now` (consent uses it
    /// exactly once).
    fn take_pending<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<PendingRecord>>;
    /// Stores a session.
    fn put_session<'a>(&'a self, s: &'a SessionRecord) -> R<'a, ()>;
    /// A session, if not expired at `now`.
    fn session<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<SessionRecord>>;
    /// Ends a session.
    fn delete_session<'a>(&'a self, id: &'a Digest) -> R<'a, ()>;

    /// Stores a new code.
    fn put_code<'a>(&'a self, c: &'a CodeRecord) -> R<'a, ()>;
    /// Marks a code used and says what it was before (atomically).
    fn use_code<'a>(&'a self, digest: &'a Digest) -> R<'a, CodeState>;

    /// Stores a new grant with its first access token, remembering that `code` created
    /// it (so reuse of the code can revoke it).
    fn create_grant<'a>(
        &'a self,
        g: &'a GrantRecord,
        access: &'a AccessRecord,
        code: &'a Digest,
    ) -> R<'a, ()>;
    /// The grant a refresh token belongs to, and whether it is the current one.
    fn find_refresh<'a>(&'a self, digest: &'a Digest) -> R<'a, Option<RefreshLookup>>;
    /// Replaces the grant (new refresh token, times) and adds an access token, only if
    /// the grant's current refresh token is still `old` and it is not revoked; the old
    /// token is kept as retired. `false` means another refresh won the race.
    fn rotate<'a>(
        &'a self,
        old: &'a Digest,
        g: &'a GrantRecord,
        access: &'a AccessRecord,
    ) -> R<'a, bool>;
    /// An access token and its grant.
    fn access<'a>(&'a self, digest: &'a Digest) -> R<'a, Option<(AccessRecord, GrantRecord)>>;
    /// An access or refresh token (current or retired), for revocation.
    fn find_token<'a>(&'a self, digest: &'a Digest) -> R<'a, Option<TokenLookup>>;
    /// The grant with this id.
    fn grant<'a>(&'a self, id: &'a str) -> R<'a, Option<GrantRecord>>;
    /// Revokes a grant; whether it was live.
    fn revoke_grant<'a>(&'a self, id: &'a str, at: UnixTime, reason: &'a str) -> R<'a, bool>;
    /// Grants matching `filter`, newest first.
    fn grants<'a>(&'a self, filter: &'a GrantFilter) -> R<'a, Vec<GrantRecord>>;
    /// Revokes every live grant matching `filter`; how many.
    fn revoke_grants<'a>(
        &'a self,
        filter: &'a GrantFilter,
        at: UnixTime,
        reason: &'a str,
    ) -> R<'a, u64>;

    /// Removes what can no longer be used (see [`Purged`]).
    fn purge(&self, now: UnixTime, retention: Retention) -> R<'_, Purged>;
    /// Counts.
    fn counts(&self) -> R<'_, StoreCounts>;
}
