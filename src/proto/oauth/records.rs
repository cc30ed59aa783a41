//! What the authorization server stores. Secrets appear only as [`Digest`]s.
//!
//! A **grant** is one user's authorization of one client for one resource: a token
//! family. It holds the current refresh token; every access token and every earlier
//! refresh token points at it. Revoking the grant ends all of them at once, which is
//! what a reused code or refresh token, a revocation request and an admin's or user's
//! "disconnect" do.

use super::UnixTime;
use super::secret::Digest;

/// Where a client's metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// Dynamic client registration (RFC 7591): self-asserted, unverified.
    Registered,
    /// A client ID metadata document: the `client_id` is an `https` URL whose host
    /// vouches for the metadata.
    MetadataDocument,
}

impl ClientSource {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::MetadataDocument => "metadata_document",
        }
    }

    /// From the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registered" => Some(Self::Registered),
            "metadata_document" => Some(Self::MetadataDocument),
            _ => None,
        }
    }
}

/// How a client authenticates at the token and revocation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A public client: only its `client_id`; PKCE is what protects its codes.
    None,
    /// `Authorization: Basic` with the client secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    /// The RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    /// From the RFC 7591 name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }
}

/// A client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The id: generated for registered clients, the document URL otherwise.
    pub client_id: String,
    /// Where its metadata came from.
    pub source: ClientSource,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// The digest of its secret, for confidential clients.
    pub secret: Option<Digest>,
    /// Registered redirect URIs (validated, exact strings).
    pub redirect_uris: Vec<String>,
    /// Whether it registered the `refresh_token` grant.
    pub refresh_tokens: bool,
    /// `client_name`, if any.
    pub name: Option<String>,
    /// `client_uri`, if any.
    pub client_uri: Option<String>,
    /// The accepted metadata as JSON (what registration echoed), for inspection.
    pub metadata: String,
    /// When it was registered or first fetched.
    pub created_at: UnixTime,
    /// For metadata documents: when the cached document must be fetched again.
    pub fetched_until: Option<UnixTime>,
}

#[cfg(any(test, fuzzing))]
impl ClientRecord {
    /// A registered public client with these redirect URIs (a test and fuzzing fixture).
    pub fn fixture(client_id: &str, redirect_uris: &[&str]) -> Self {
        Self {
            client_id: client_id.into(),
            source: ClientSource::Registered,
            auth_method: AuthMethod::None,
            secret: None,
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            refresh_tokens: true,
            name: None,
            client_uri: None,
            metadata: "{}".into(),
            created_at: UnixTime(0),
            fetched_until: None,
        }
    }
}

/// The parameters of an authorization request, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The redirect URI the response goes to (the one requested, or the only one
    /// registered).
    pub redirect_uri: String,
    /// Whether the request named it (then the token request must repeat it).
    pub redirect_explicit: bool,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The scope granted.
    pub scope: String,
    /// The resource (canonical).
    pub resource: String,
    /// The client's `state`, returned unchanged.
    pub state: Option<String>,
}

/// An authorization request waiting for the user to sign in and consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// Digest of the id in the forms.
    pub id: Digest,
    /// The request.
    pub request: AuthorizationRequest,
    /// Digest of the browser-binding cookie set with it: only the browser that started
    /// the request can finish it.
    pub browser: Digest,
    /// Digest of the CSRF token in its forms.
    pub csrf: Digest,
    /// When it lapses.
    pub expires_at: UnixTime,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Digest of the session cookie.
    pub id: Digest,
    /// The user.
    pub user: String,
    /// When the user signed in.
    pub created_at: UnixTime,
    /// When the session ends.
    pub expires_at: UnixTime,
}

/// An authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// Digest of the code.
    pub digest: Digest,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI it was delivered to.
    pub redirect_uri: String,
    /// Whether the authorization request named the redirect URI.
    pub redirect_explicit: bool,
    /// The PKCE challenge.
    pub code_challenge: String,
    /// The scope granted.
    pub scope: String,
    /// The resource (canonical).
    pub resource: String,
    /// The user who consented.
    pub user: String,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it lapses.
    pub expires_at: UnixTime,
}

/// What the store knew about a code when it was presented; presenting it marks it used
/// (atomically: of two concurrent presentations, one sees `Fresh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeState {
    /// First use.
    Fresh(CodeRecord),
    /// Used before; `grant` is what that use created, if it succeeded.
    Used {
        /// The code.
        code: CodeRecord,
        /// The grant its first use created.
        grant: Option<String>,
    },
    /// No such code (or purged after expiry).
    Unknown,
}

/// Why a grant ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// When.
    pub at: UnixTime,
    /// Why, for the admin and the user (`revoked by the user`, `refresh token reused`…).
    pub reason: String,
}

/// A grant: one token family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// Opaque id, shown to admins and users.
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The user.
    pub user: String,
    /// The scope granted.
    pub scope: String,
    /// The resource (canonical).
    pub resource: String,
    /// When the user consented.
    pub created_at: UnixTime,
    /// When tokens were last issued.
    pub refreshed_at: UnixTime,
    /// Digest of the one refresh token that is valid now, if the client gets them.
    pub refresh: Option<Digest>,
    /// When that refresh token lapses unused.
    pub refresh_expires_at: UnixTime,
    /// Set once revoked; a revoked grant's tokens are all dead.
    pub revoked: Option<Revocation>,
}

impl GrantRecord {
    /// Whether the grant can still be used at `now`: not revoked, and either an access
    /// token issued from it may still be live or its refresh token is.
    pub fn is_live(&self, now: UnixTime, access_ttl: std::time::Duration) -> bool {
        self.revoked.is_none()
            && (now < self.refresh_expires_at || now < self.refreshed_at.plus(access_ttl))
    }
}

/// An access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Digest of the token.
    pub digest: Digest,
    /// Its grant.
    pub grant_id: String,
    /// When it lapses.
    pub expires_at: UnixTime,
}

/// What the store knew about a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLookup {
    /// Its grant.
    pub grant: GrantRecord,
    /// Whether it is the grant's current refresh token (otherwise it was rotated away:
    /// presenting it again is reuse).
    pub current: bool,
}

/// A presented secret the store found, for revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLookup {
    /// An access token of this grant.
    Access(GrantRecord),
    /// A refresh token (current or rotated) of this grant.
    Refresh(GrantRecord),
}

impl TokenLookup {
    /// The grant either way.
    pub fn grant(&self) -> &GrantRecord {
        match self {
            Self::Access(g) | Self::Refresh(g) => g,
        }
    }
}
