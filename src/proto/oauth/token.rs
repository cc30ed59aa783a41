//! The token endpoint (RFC 6749 §4.1.3 and §6 as tightened by OAuth 2.1) and token
//! revocation (RFC 7009).
//!
//! Codes are single use: the store marks a code used as it hands it over, and a second
//! presentation revokes whatever the first one produced (RFC 6749 §4.1.2). Refresh
//! tokens rotate: each refresh returns a new one and retires the old, and presenting a
//! retired one revokes the whole grant (OAuth 2.1 §4.3.1; RFC 9700 §4.14.2), since either
//! the client or an attacker holds a copy it should not. A failed code exchange burns
//! the code, so a stolen code cannot be tried against many verifiers.

use super::records::{
    AccessRecord, AuthMethod, ClientRecord, CodeRecord, CodeState, GrantRecord, RefreshLookup,
    TokenLookup,
};
use super::secret::{self, Digest, SecretKind};
use super::{ErrorCode, OAuthError, Refusal, Settings, UnixTime, pkce, scope_is_valid};
use crate::wire::oauth::form::Form;
use crate::wire::oauth::header::BasicCredentials;

/// How a client identified itself at the token or revocation endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `client_id` only (a public client).
    Id(String),
    /// `client_id` and `client_secret` in the body.
    Post {
        /// The id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// `Authorization: Basic`.
    Basic {
        /// The id.
        client_id: String,
        /// The secret.
        secret: String,
    },
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, id) = match self {
            Self::Id(id) => ("Id", id),
            Self::Post { client_id, .. } => ("Post", client_id),
            Self::Basic { client_id, .. } => ("Basic", client_id),
        };
        write!(f, "ClientCredentials::{kind}({id:?})")
    }
}

impl ClientCredentials {
    /// The client id claimed.
    pub fn client_id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Post { client_id: id, .. } | Self::Basic { client_id: id, .. } => {
                id
            }
        }
    }

    /// Whether HTTP Basic was used (a failure then answers `WWW-Authenticate: Basic`).
    pub fn is_basic(&self) -> bool {
        matches!(self, Self::Basic { .. })
    }
}

/// Reads the client's credentials from the form and `Authorization` header.
///
/// # Errors
/// `invalid_client` for malformed Basic credentials, ids that disagree or none at all;
/// `invalid_request` for two methods at once or repeated parameters.
pub fn client_credentials(
    form: &Form,
    authorization: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    let basic = match authorization {
        Some(h) => BasicCredentials::parse(h)
            .map_err(|_| OAuthError::client("malformed HTTP Basic credentials"))?,
        None => None,
    };
    let form_id = form.one("client_id")?;
    let form_secret = form.one("client_secret")?;
    match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => Err(OAuthError::request(
            "use one client authentication method, not Basic and client_secret together",
        )),
        (Some(b), Some(id), None) if id != b.client_id => Err(OAuthError::client(
            "client_id does not match the Basic credentials",
        )),
        (Some(b), _, None) => Ok(ClientCredentials::Basic {
            client_id: b.client_id,
            secret: b.secret,
        }),
        (None, Some(id), Some(s)) => Ok(ClientCredentials::Post {
            client_id: id.to_string(),
            secret: s.to_string(),
        }),
        (None, Some(id), None) => Ok(ClientCredentials::Id(id.to_string())),
        (None, None, _) => Err(OAuthError::client("client_id is required")),
    }
}

/// Checks `creds` against the client's record. A confidential client may use either
/// secret method; a public client must not present a secret.
///
/// # Errors
/// `invalid_client`.
pub fn authenticate(creds: &ClientCredentials, client: &ClientRecord) -> Result<(), OAuthError> {
    let secret = match creds {
        ClientCredentials::Id(_) => None,
        ClientCredentials::Post { secret, .. } | ClientCredentials::Basic { secret, .. } => {
            Some(secret)
        }
    };
    match (client.auth_method, client.secret, secret) {
        (AuthMethod::None, _, None) => Ok(()),
        (AuthMethod::None, _, Some(_)) => Err(OAuthError::client(
            "this client is public and has no secret",
        )),
        (_, _, None) => Err(OAuthError::client(
            "client authentication is required for this client",
        )),
        (_, Some(stored), Some(given)) if stored.ct_eq(&Digest::of(given)) => Ok(()),
        _ => Err(OAuthError::client("client authentication failed")),
    }
}

/// A token request's grant.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// `authorization_code`.
    Code {
        /// The code.
        code: String,
        /// `redirect_uri`, if sent.
        redirect_uri: Option<String>,
        /// `code_verifier`.
        verifier: String,
        /// `resource`, if sent.
        resource: Option<String>,
    },
    /// `refresh_token`.
    Refresh {
        /// The refresh token.
        token: String,
        /// A narrower `scope`, if asked.
        scope: Option<String>,
        /// `resource`, if sent.
        resource: Option<String>,
    },
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code { redirect_uri, .. } => write!(f, "TokenRequest::Code({redirect_uri:?})"),
            Self::Refresh { scope, .. } => write!(f, "TokenRequest::Refresh({scope:?})"),
        }
    }
}

fn single_resource(form: &Form) -> Result<Option<String>, OAuthError> {
    let mut all = form.all("resource");
    let first = all.next().map(str::to_string);
    if all.any(|r| Some(r) != first.as_deref()) {
        return Err(OAuthError::target("one resource per request"));
    }
    Ok(first)
}

/// Reads the grant from a token request.
///
/// # Errors
/// `invalid_request` for missing or repeated parameters (a missing `code_verifier`
/// included: PKCE is mandatory), `unsupported_grant_type`, `invalid_scope`,
/// `invalid_target` for several different resources.
pub fn parse(form: &Form) -> Result<TokenRequest, OAuthError> {
    let need = |p: &str| -> Result<String, OAuthError> {
        form.one(p)?
            .map(str::to_string)
            .ok_or_else(|| OAuthError::request(format!("{p} is required")))
    };
    match form.one("grant_type")? {
        None => Err(OAuthError::request("grant_type is required")),
        Some("authorization_code") => Ok(TokenRequest::Code {
            code: need("code")?,
            redirect_uri: form.one("redirect_uri")?.map(str::to_string),
            verifier: form
                .one("code_verifier")?
                .map(str::to_string)
                .ok_or_else(|| OAuthError::request("code_verifier is required (PKCE)"))?,
            resource: single_resource(form)?,
        }),
        Some("refresh_token") => {
            let scope = form.one("scope")?.map(str::to_string);
            if scope.as_deref().is_some_and(|s| !scope_is_valid(s)) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "scope is malformed",
                ));
            }
            Ok(TokenRequest::Refresh {
                token: need("refresh_token")?,
                scope,
                resource: single_resource(form)?,
            })
        }
        Some(_) => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type must be authorization_code or refresh_token",
        )),
    }
}

/// Decides a code exchange, given what the store knew about the code (it has already
/// been marked used).
///
/// # Errors
/// A [`Refusal`]: `invalid_grant` (unknown, expired, reused — then the grant the first
/// use created is revoked —, another client's, another redirect URI's, a verifier that
/// does not match), `invalid_target` (a resource other than the code's).
pub fn check_code(
    now: UnixTime,
    redirect_uri: Option<&str>,
    verifier: &str,
    resource: Option<&str>,
    client: &ClientRecord,
    state: CodeState,
    settings: &Settings,
) -> Result<CodeRecord, Refusal> {
    let code = match state {
        CodeState::Unknown => {
            return Err(OAuthError::grant("authorization code is invalid or expired").into());
        }
        CodeState::Used { grant, .. } => {
            return Err(Refusal {
                error: OAuthError::grant(
                    "authorization code was already used; tokens issued with it are revoked",
                ),
                revoke: grant.map(|g| (g, "authorization code reused")),
            });
        }
        CodeState::Fresh(c) => c,
    };
    if now >= code.expires_at {
        return Err(OAuthError::grant("authorization code expired").into());
    }
    if code.client_id != client.client_id {
        return Err(OAuthError::grant("authorization code was issued to another client").into());
    }
    match (code.redirect_explicit, redirect_uri) {
        (true, None) => {
            return Err(OAuthError::grant(
                "redirect_uri is required: the authorization request named one",
            )
            .into());
        }
        (_, Some(r)) if r != code.redirect_uri => {
            return Err(OAuthError::grant(
                "redirect_uri does not match the authorization request's",
            )
            .into());
        }
        _ => {}
    }
    if !pkce::verify(verifier, &code.code_challenge) {
        return Err(OAuthError::grant("code_verifier does not match the code_challenge").into());
    }
    if let Some(r) = resource
        && settings.accept_resource(Some(r))? != code.resource
    {
        return Err(OAuthError::target("resource differs from the authorization request's").into());
    }
    Ok(code)
}

/// Tokens issued: what to store and what to answer.
#[derive(Debug)]
pub struct Issued {
    /// The grant, new or with its refresh token rotated.
    pub grant: GrantRecord,
    /// The new access token's record.
    pub access: AccessRecord,
    /// The token response body (RFC 6749 §5.1).
    pub response: serde_json::Value,
}

fn issue(
    now: UnixTime,
    mut grant: GrantRecord,
    refresh_tokens: bool,
    settings: &Settings,
    rng: &mut impl rand::Rng,
) -> Issued {
    let (access, access_digest) = secret::generate(rng, SecretKind::AccessToken);
    let mut response = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": settings.access_ttl.as_secs(),
        "scope": grant.scope,
    });
    grant.refreshed_at = now;
    if refresh_tokens {
        let (refresh, refresh_digest) = secret::generate(rng, SecretKind::RefreshToken);
        response["refresh_token"] = refresh.into();
        grant.refresh = Some(refresh_digest);
        grant.refresh_expires_at = now.plus(settings.refresh_ttl);
    } else {
        grant.refresh = None;
        grant.refresh_expires_at = now;
    }
    let access = AccessRecord {
        digest: access_digest,
        grant_id: grant.id.clone(),
        expires_at: now.plus(settings.access_ttl),
    };
    Issued {
        grant,
        access,
        response,
    }
}

/// A new grant and its first tokens for an accepted code.
pub fn issue_for_code(
    now: UnixTime,
    code: &CodeRecord,
    client: &ClientRecord,
    settings: &Settings,
    rng: &mut impl rand::Rng,
) -> Issued {
    let grant = GrantRecord {
        id: secret::generate_id(rng),
        client_id: code.client_id.clone(),
        user: code.user.clone(),
        scope: code.scope.clone(),
        resource: code.resource.clone(),
        created_at: now,
        refreshed_at: now,
        refresh: None,
        refresh_expires_at: now,
        revoked: None,
    };
    issue(now, grant, client.refresh_tokens, settings, rng)
}

/// Decides a refresh, given what the store knew about the token.
///
/// # Errors
/// A [`Refusal`]: `invalid_grant` (unknown, revoked, expired, another client's, or
/// retired — then the grant is revoked), `invalid_scope` (beyond the grant's),
/// `invalid_target` (another resource).
pub fn check_refresh(
    now: UnixTime,
    scope: Option<&str>,
    resource: Option<&str>,
    client: &ClientRecord,
    lookup: Option<RefreshLookup>,
    settings: &Settings,
) -> Result<GrantRecord, Refusal> {
    let Some(RefreshLookup { grant, current }) = lookup else {
        return Err(OAuthError::grant("refresh token is invalid").into());
    };
    if grant.revoked.is_some() {
        return Err(OAuthError::grant("refresh token was revoked").into());
    }
    if grant.client_id != client.client_id {
        return Err(OAuthError::grant("refresh token was issued to another client").into());
    }
    if !current {
        return Err(Refusal {
            error: OAuthError::grant(
                "refresh token was already used; every token of this grant is revoked",
            ),
            revoke: Some((grant.id, "refresh token reused")),
        });
    }
    if now >= grant.refresh_expires_at {
        return Err(OAuthError::grant("refresh token expired").into());
    }
    if let Some(s) = scope {
        let granted: Vec<&str> = grant.scope.split(' ').collect();
        if !s.split(' ').all(|t| granted.contains(&t)) {
            return Err(
                OAuthError::new(ErrorCode::InvalidScope, "scope exceeds what was granted").into(),
            );
        }
    }
    if let Some(r) = resource
        && settings.accept_resource(Some(r))? != grant.resource
    {
        return Err(OAuthError::target("resource differs from the grant's").into());
    }
    Ok(grant)
}

/// The grant with its refresh token rotated and a new access token. The store must
/// replace the grant only if its refresh token is still the one presented (a concurrent
/// refresh that lost the race is reuse).
pub fn issue_for_refresh(
    now: UnixTime,
    grant: GrantRecord,
    settings: &Settings,
    rng: &mut impl rand::Rng,
) -> Issued {
    issue(now, grant, true, settings, rng)
}

/// A revocation request (RFC 7009 §2.1). `token_type_hint` is only a hint: both kinds
/// are looked up whatever it says.
///
/// # Errors
/// `invalid_request` without `token`.
pub fn parse_revocation(form: &Form) -> Result<String, OAuthError> {
    form.one("token_type_hint")?;
    form.one("token")?
        .map(str::to_string)
        .ok_or_else(|| OAuthError::request("token is required"))
}

/// Decides a revocation: the grant to revoke, if the token was found. An unknown token
/// is not an error (RFC 7009 §2.2).
///
/// # Errors
/// `unauthorized_client` when the token belongs to another client.
pub fn check_revocation(
    client: &ClientRecord,
    found: Option<&TokenLookup>,
) -> Result<Option<String>, OAuthError> {
    match found {
        None => Ok(None),
        Some(l) if l.grant().client_id != client.client_id => Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the token was not issued to this client",
        )),
        Some(l) => Ok(Some(l.grant().id.clone())),
    }
}

/// Why an access token was refused at the MCP endpoint (all answer 401 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRefused {
    /// Not a token of ours.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// Its grant was revoked.
    Revoked,
    /// Issued for another resource (audience).
    WrongAudience,
}

impl AccessRefused {
    /// For the `error_description` and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unknown => "unknown token",
            Self::Expired => "token expired",
            Self::Revoked => "token revoked",
            Self::WrongAudience => "token was issued for another resource",
        }
    }
}

/// Decides whether an access token (as the store found it) may be used at this
/// server's MCP endpoint at `now`; on success, the grant (whose `user` the call acts as).
///
/// # Errors
/// [`AccessRefused`].
pub fn check_access(
    now: UnixTime,
    found: Option<(AccessRecord, GrantRecord)>,
    settings: &Settings,
) -> Result<GrantRecord, AccessRefused> {
    let Some((access, grant)) = found else {
        return Err(AccessRefused::Unknown);
    };
    if grant.revoked.is_some() {
        return Err(AccessRefused::Revoked);
    }
    if now >= access.expires_at {
        return Err(AccessRefused::Expired);
    }
    if !settings.resources.contains(&grant.resource) {
        return Err(AccessRefused::WrongAudience);
    }
    Ok(grant)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
