//! The OAuth 2.1 authorization server for hosted MCP clients (Claude.ai, ChatGPT, …):
//! the HTTP shell around `proto::oauth`.
//!
//! ```text
//!  GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
//!  GET  /oauth/authorize   validate (proto) → sign-in page, or consent page if signed in
//!  POST /oauth/login       password (argon2id, via Accounts) or user token → consent page
//!  POST /oauth/consent     CSRF + browser binding checked → code → 303 to the client
//!  POST /oauth/logout      ends the browser session
//!  POST /oauth/token       code (PKCE) → access + refresh; refresh rotates; reuse revokes
//!  POST /oauth/revoke      RFC 7009
//!  POST /oauth/register    RFC 7591 (can be turned off)
//!  GET  /oauth/grants      the signed-in user's connected apps, with revoke buttons
//!  GET/DELETE /api/oauth/grants[/ID]  the same for a bearer user token (admins: anyone's)
//! ```
//!
//! The MCP endpoint asks [`OAuthServer::verify_access`] about bearer tokens that look like
//! ours; everything it accepts maps to a user whose per-user authorization applies, and
//! only for a token issued for this server's MCP endpoints (audience binding).
//!
//! Module map: [`store`] (the [`OAuthStore`] trait) and [`memory`] (in memory),
//! [`accounts`] (who may sign in), `fetch` (client ID metadata documents), `pages`
//! (HTML), `browser` (authorize/login/consent/logout), `endpoints` (token, revoke,
//! register, metadata), `grants` (users' and admins' views), [`admin`] (operations the
//! CLI and the API share).

pub mod accounts;
pub mod admin;
mod browser;
mod endpoints;
pub mod fetch;
mod grants;
pub mod memory;
mod pages;
pub mod store;
#[doc(hidden)]
pub mod store_tests;

pub use accounts::{Accounts, ControlAccounts, StoreAccounts};
pub use fetch::FetchConfig;
pub use memory::MemoryStore;
pub use store::{GrantFilter, OAuthStore, Retention, StoreError};

use crate::proto::oauth::limiter::AttemptLimiter;
use crate::proto::oauth::records::{ClientRecord, GrantRecord};
use crate::proto::oauth::secret::{self, Digest, SecretKind};
use crate::proto::oauth::token::{AccessRefused, check_access};
use crate::proto::oauth::{OAuthError, Settings, UnixTime, cimd};
use crate::services::control::User;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything that configures the authorization server.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Issuer, resources, lifetimes, what client identification is accepted.
    pub settings: Settings,
    /// How client ID metadata documents are fetched.
    pub fetch: FetchConfig,
    /// How long ended records are kept.
    pub retention: Retention,
    /// Failed sign-ins per user name per `attempt_window`.
    pub max_failures_per_user: u32,
    /// Failed sign-ins per client address per `attempt_window` (behind a reverse proxy
    /// every client shares the proxy's address).
    pub max_failures_per_address: u32,
    /// Registrations per client address per `attempt_window`.
    pub max_registrations_per_address: u32,
    /// The window for the three limits above.
    pub attempt_window: Duration,
    /// Password checks (argon2id, CPU-heavy) running at once.
    pub password_checks: usize,
    /// Registered clients in total; beyond it registration answers 503.
    pub max_registered_clients: u64,
}

impl OAuthConfig {
    /// Defaults around `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            fetch: FetchConfig::default(),
            retention: Retention::default(),
            max_failures_per_user: 10,
            max_failures_per_address: 50,
            max_registrations_per_address: 30,
            attempt_window: Duration::from_secs(15 * 60),
            password_checks: 2,
            max_registered_clients: 10_000,
        }
    }
}

/// How `serve` runs the authorization server.
#[derive(Clone)]
pub struct OAuthOptions {
    /// Run it (default). Off, the MCP endpoint takes static tokens only and its metadata
    /// names no authorization server.
    pub enabled: bool,
    /// Accept dynamic client registration (RFC 7591).
    pub registration: bool,
    /// Accept client ID metadata documents.
    pub metadata_documents: bool,
    /// Access token lifetime, if not the default hour.
    pub access_ttl: Option<Duration>,
    /// How metadata documents are fetched, if not the default (tests trust a private CA
    /// and allow loopback addresses here).
    pub fetch: Option<FetchConfig>,
    /// The user directory, if not the control plane's users.
    pub accounts: Option<Arc<dyn Accounts>>,
    /// Where records are kept, if not in the control-plane store (or, without one, in
    /// memory).
    pub store: Option<Arc<dyn OAuthStore>>,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            registration: true,
            metadata_documents: true,
            access_ttl: None,
            fetch: None,
            accounts: None,
            store: None,
        }
    }
}

impl std::fmt::Debug for OAuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthOptions")
            .field("enabled", &self.enabled)
            .field("registration", &self.registration)
            .field("metadata_documents", &self.metadata_documents)
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl OAuthOptions {
    /// The authorization server for the MCP endpoints at `base` + each of `paths` (the
    /// issuer is `base`), signing users in through `accounts` and keeping its records in
    /// `store` unless the options name others (records default to memory). `Ok(None)`
    /// when turned off.
    ///
    /// # Errors
    /// Why it cannot run: the issuer must be `https`, or plain `http` on loopback only
    /// (OAuth 2.1 §1.5), and there must be a user directory; the caller logs it and
    /// serves static tokens only.
    pub fn build(
        &self,
        base: &str,
        paths: &[&str],
        accounts: Option<Arc<dyn Accounts>>,
        store: Option<Arc<dyn OAuthStore>>,
    ) -> Result<Option<Arc<OAuthServer>>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(accounts) = self.accounts.clone().or(accounts) else {
            return Err(
                "OAuth for MCP connectors is off: an embedder's control plane brings no \
                        user directory to sign in against (set OAuthOptions::accounts)"
                    .into(),
            );
        };
        let secure = base.starts_with("https://") || crate::runtime::tls::url_is_loopback(base);
        if !secure {
            return Err(format!(
                "OAuth for MCP connectors is off: its issuer {base} is plain http on a non-loopback \
                 host; serve over https (--tls-cert, or a TLS proxy with --public-url https://…)"
            ));
        }
        let mut resources = vec![base.to_string()];
        resources.extend(paths.iter().map(|p| format!("{base}{p}")));
        let mut settings = Settings::new(base, &resources);
        // The first resource is the default for clients that name none: the MCP endpoint.
        settings.resources.rotate_left(1);
        settings.registration = self.registration;
        settings.metadata_documents = self.metadata_documents;
        if let Some(t) = self.access_ttl {
            settings.access_ttl = t;
        }
        let mut cfg = OAuthConfig::new(settings);
        if let Some(f) = &self.fetch {
            cfg.fetch = f.clone();
        }
        let store = self
            .store
            .clone()
            .or(store)
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        Ok(Some(Arc::new(OAuthServer::new(cfg, store, accounts))))
    }
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct OAuthStats {
    /// Authorization requests that reached the sign-in or consent page.
    pub authorize_ok: AtomicU64,
    /// Authorization requests refused (error page or error redirect).
    pub authorize_refused: AtomicU64,
    /// Sign-ins that succeeded.
    pub logins: AtomicU64,
    /// Sign-ins refused (wrong credentials).
    pub login_failures: AtomicU64,
    /// Sign-ins refused by the attempt limits.
    pub login_limited: AtomicU64,
    /// Form posts refused by the CSRF or browser-binding check.
    pub csrf_refused: AtomicU64,
    /// Codes issued.
    pub codes_issued: AtomicU64,
    /// Consents denied by the user.
    pub consents_denied: AtomicU64,
    /// Grants created (codes exchanged).
    pub grants_created: AtomicU64,
    /// Refresh tokens rotated.
    pub refreshes: AtomicU64,
    /// Reused codes or refresh tokens that revoked a grant.
    pub reuse_revocations: AtomicU64,
    /// Revocation requests that revoked a grant.
    pub revocations: AtomicU64,
    /// Clients registered.
    pub registrations: AtomicU64,
    /// Metadata documents fetched.
    pub document_fetches: AtomicU64,
    /// Metadata document fetches or validations that failed.
    pub document_failures: AtomicU64,
    /// MCP requests accepted with an OAuth access token.
    pub access_ok: AtomicU64,
    /// Token, revocation and registration errors by `error` code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl OAuthStats {
    pub(crate) fn error(&self, e: &OAuthError) {
        let mut m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(e.code.as_str()).or_default() += 1;
    }

    /// Endpoint errors by code.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        let m = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Value of a counter, for tests.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

pub(crate) struct Limits {
    users: AttemptLimiter,
    addresses: AttemptLimiter,
    registrations: AttemptLimiter,
}

/// The authorization server: settings, store, user directory, limits, counters.
pub struct OAuthServer {
    cfg: OAuthConfig,
    store: Arc<dyn OAuthStore>,
    accounts: Arc<dyn Accounts>,
    fetcher: fetch::Fetcher,
    limits: Mutex<Limits>,
    password_slots: tokio::sync::Semaphore,
    /// Counters.
    pub stats: OAuthStats,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServer")
            .field("issuer", &self.cfg.settings.issuer)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What [`OAuthServer::verify_access`] decided about a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessCheck {
    /// Not shaped like one of our access tokens: ask the control plane.
    NotOurs,
    /// A valid access token for this resource, acting as this user.
    User(User),
    /// One of ours, refused.
    Refused(&'static str),
}

pub(crate) fn now() -> UnixTime {
    UnixTime::from_system(crate::runtime::clock::wall())
}

impl OAuthServer {
    /// An authorization server over `store`, signing users in through `accounts`.
    pub fn new(cfg: OAuthConfig, store: Arc<dyn OAuthStore>, accounts: Arc<dyn Accounts>) -> Self {
        let window = cfg.attempt_window;
        let limits = Limits {
            users: AttemptLimiter::new(cfg.max_failures_per_user, window, 100_000),
            addresses: AttemptLimiter::new(cfg.max_failures_per_address, window, 100_000),
            registrations: AttemptLimiter::new(cfg.max_registrations_per_address, window, 100_000),
        };
        Self {
            fetcher: fetch::Fetcher::new(cfg.fetch.clone()),
            password_slots: tokio::sync::Semaphore::new(cfg.password_checks.max(1)),
            limits: Mutex::new(limits),
            cfg,
            store,
            accounts,
            stats: OAuthStats::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.cfg.settings
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OAuthStore> {
        &self.store
    }

    /// The routes (see the module docs). Mount at the root.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        browser::routes()
            .merge(endpoints::routes(&self.cfg.settings))
            .merge(grants::routes())
            .with_state(self.clone())
    }

    /// Decides a bearer token presented to the MCP endpoint.
    ///
    /// # Errors
    /// The store or the user directory is unavailable (answer 503).
    pub async fn verify_access(&self, token: &str) -> Result<AccessCheck, StoreError> {
        if !secret::looks_like(token, SecretKind::AccessToken) {
            return Ok(AccessCheck::NotOurs);
        }
        let found = self.store.access(&Digest::of(token)).await?;
        let grant = match check_access(now(), found, &self.cfg.settings) {
            Ok(g) => g,
            Err(e) => return Ok(AccessCheck::Refused(e.describe())),
        };
        match self.accounts.user(&grant.user).await {
            Ok(Some(u)) => {
                self.stats.access_ok.fetch_add(1, Relaxed);
                Ok(AccessCheck::User(u))
            }
            Ok(None) => Ok(AccessCheck::Refused(AccessRefused::Unknown.describe())),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    /// The client `client_id` names: a registered one from the store, or a metadata
    /// document (from the store while its cache time lasts, else fetched).
    pub(crate) async fn client(&self, client_id: &str) -> Result<ClientRecord, ClientLookupError> {
        let now = now();
        let stored = self.store.client(client_id).await?;
        if !cimd::is_document_url(client_id) {
            return stored.ok_or_else(|| {
                ClientLookupError::Refused(OAuthError::client("unknown client_id"))
            });
        }
        if !self.cfg.settings.metadata_documents {
            return Err(ClientLookupError::Refused(OAuthError::client(
                "this server does not accept client ID metadata documents",
            )));
        }
        if let Some(c) = &stored
            && c.fetched_until.is_some_and(|t| now < t)
        {
            return Ok(c.clone());
        }
        self.stats.document_fetches.fetch_add(1, Relaxed);
        let fetched = self.fetcher.fetch(client_id).await.and_then(|f| {
            let v = cimd::parse_document(&f.body, client_id, &self.cfg.settings)?;
            let until = cimd::cache_until(now, f.cache_control.as_deref());
            Ok(crate::proto::oauth::client::from_document(
                client_id,
                v,
                now,
                until,
                stored.as_ref().map(|c| c.created_at),
            ))
        });
        match fetched {
            Ok(c) => {
                self.store.put_client(&c).await?;
                Ok(c)
            }
            Err(e) => {
                self.stats.document_failures.fetch_add(1, Relaxed);
                tracing::info!(client_id, error = %e, "client metadata document refused");
                Err(ClientLookupError::Refused(e))
            }
        }
    }

    /// Removes expired records (run periodically by [`OAuthServer::spawn_maintenance`]).
    ///
    /// # Errors
    /// The store failed.
    pub async fn purge(&self) -> Result<store::Purged, StoreError> {
        self.store.purge(now(), self.cfg.retention).await
    }

    /// Purges every `every` until the returned handle is dropped or aborted.
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        every: Duration,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let me = Arc::downgrade(self);
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                match me.purge().await {
                    Ok(p) => tracing::debug!(?p, "OAuth records purged"),
                    Err(e) => tracing::warn!(error = %e, "purging OAuth records"),
                }
            }
        }))
    }

    /// Revokes a grant and counts it.
    pub(crate) async fn revoke(&self, grant: &str, reason: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_grant(grant, now(), reason).await?;
        if revoked {
            tracing::info!(grant, reason, "OAuth grant revoked");
        }
        Ok(revoked)
    }

    pub(crate) fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A grant's client, for display (`None` if it was deleted).
    pub(crate) async fn client_name(&self, g: &GrantRecord) -> String {
        match self.store.client(&g.client_id).await {
            Ok(Some(c)) => c.name.unwrap_or_else(|| g.client_id.clone()),
            _ => g.client_id.clone(),
        }
    }
}

/// Why a client could not be found.
#[derive(Debug)]
pub(crate) enum ClientLookupError {
    /// Not a client (unknown, or its document failed the rules).
    Refused(OAuthError),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for ClientLookupError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
