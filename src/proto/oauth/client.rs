//! Clients: which metadata may be registered (RFC 7591) or published in a client ID
//! metadata document, and the records made from it.

use super::records::{AuthMethod, ClientRecord, ClientSource};
use super::secret::{self, SecretKind};
use super::{ErrorCode, OAuthError, Settings, UnixTime, redirect, scope_is_valid};
use crate::wire::oauth::metadata::ClientMetadata;
use crate::wire::oauth::uri::Uri;

/// Longest `client_name` shown, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Client metadata that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidClient {
    /// Redirect URIs, deduplicated, in the order given.
    pub redirect_uris: Vec<String>,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// Whether it may have refresh tokens.
    pub refresh_tokens: bool,
    /// Its display name.
    pub name: Option<String>,
    /// Its home page.
    pub client_uri: Option<String>,
    /// The metadata as accepted (defaults filled in), to store and echo.
    pub metadata: ClientMetadata,
}

fn invalid(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

fn https_url(field: &str, v: &Option<String>) -> Result<(), OAuthError> {
    if let Some(s) = v {
        let ok = Uri::parse(s).is_ok_and(|u| {
            u.scheme.eq_ignore_ascii_case("https")
                && u.authority
                    .is_some_and(|a| !a.host_raw.is_empty() && a.userinfo.is_none())
        });
        if !ok {
            return Err(invalid(format!("{field} must be an https URL")));
        }
    }
    Ok(())
}

fn printable(
    field: &str,
    v: &Option<String>,
    max_chars: usize,
) -> Result<Option<String>, OAuthError> {
    let Some(s) = v else { return Ok(None) };
    let s = s.trim();
    if s.chars().any(char::is_control) {
        return Err(invalid(format!("{field} has control characters")));
    }
    if s.chars().count() > max_chars {
        return Err(invalid(format!(
            "{field} is longer than {max_chars} characters"
        )));
    }
    Ok((!s.is_empty()).then(|| s.to_string()))
}

/// Applies the registration rules to `meta`.
///
/// - `redirect_uris`: required, at most `settings.max_redirect_uris`, each one
///   [`redirect::classify`] accepts (`invalid_redirect_uri` otherwise).
/// - `token_endpoint_auth_method`: `none`, `client_secret_basic` (RFC 7591's default
///   for registration) or `client_secret_post`; a metadata document must use `none`
///   (it cannot hold a secret) and must not carry `client_secret`.
/// - `grant_types`: `authorization_code`, optionally `refresh_token`; absent means
///   both (clients that omit it still expect to refresh).
/// - `response_types`: `code` only.
/// - `client_name`: printable, at most [`MAX_NAME_CHARS`]; `client_uri`, `logo_uri`,
///   `tos_uri`, `policy_uri`: `https` URLs; `scope`: valid syntax.
///
/// # Errors
/// `invalid_redirect_uri` or `invalid_client_metadata` naming the field.
pub fn validate(
    meta: &ClientMetadata,
    source: ClientSource,
    settings: &Settings,
) -> Result<ValidClient, OAuthError> {
    let uris = meta
        .redirect_uris
        .as_ref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            OAuthError::new(ErrorCode::InvalidRedirectUri, "redirect_uris is required")
        })?;
    if uris.len() > settings.max_redirect_uris {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            format!("at most {} redirect_uris", settings.max_redirect_uris),
        ));
    }
    let mut redirect_uris: Vec<String> = Vec::new();
    for (i, u) in uris.iter().enumerate() {
        redirect::classify(u).map_err(|e| {
            OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                format!("redirect_uris[{i}]: {e}"),
            )
        })?;
        if !redirect_uris.contains(u) {
            redirect_uris.push(u.clone());
        }
    }
    let auth_method = match (source, meta.token_endpoint_auth_method.as_deref()) {
        (ClientSource::MetadataDocument, None | Some("none")) => AuthMethod::None,
        (ClientSource::MetadataDocument, Some(_)) => {
            return Err(invalid(
                "a client ID metadata document must use token_endpoint_auth_method none",
            ));
        }
        (ClientSource::Registered, None) => AuthMethod::ClientSecretBasic,
        (ClientSource::Registered, Some(m)) => AuthMethod::parse(m).ok_or_else(|| {
            invalid("token_endpoint_auth_method must be none, client_secret_basic or client_secret_post")
        })?,
    };
    if source == ClientSource::MetadataDocument && meta.has_secret {
        return Err(invalid(
            "a client ID metadata document must not contain client_secret",
        ));
    }
    let grant_types = meta
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(invalid("grant_types must include authorization_code"));
    }
    if let Some(g) = grant_types
        .iter()
        .find(|g| *g != "authorization_code" && *g != "refresh_token")
    {
        return Err(invalid(format!("grant type {g:?} is not supported")));
    }
    let response_types = meta
        .response_types
        .clone()
        .unwrap_or_else(|| vec!["code".into()]);
    if response_types.is_empty() || response_types.iter().any(|r| r != "code") {
        return Err(invalid("response_types must be [\"code\"]"));
    }
    for (field, v) in [
        ("client_uri", &meta.client_uri),
        ("logo_uri", &meta.logo_uri),
        ("tos_uri", &meta.tos_uri),
        ("policy_uri", &meta.policy_uri),
    ] {
        https_url(field, v)?;
    }
    if meta.scope.as_deref().is_some_and(|s| !scope_is_valid(s)) {
        return Err(invalid("scope is not a valid scope value"));
    }
    let name = printable("client_name", &meta.client_name, MAX_NAME_CHARS)?;
    printable("software_id", &meta.software_id, 200)?;
    printable("software_version", &meta.software_version, 200)?;
    let refresh_tokens = grant_types.iter().any(|g| g == "refresh_token");
    let mut metadata = meta.clone();
    metadata.client_id = None;
    metadata.redirect_uris = Some(redirect_uris.clone());
    metadata.token_endpoint_auth_method = Some(auth_method.as_str().into());
    metadata.grant_types = Some(grant_types);
    metadata.response_types = Some(response_types);
    metadata.client_name.clone_from(&name);
    metadata.has_keys = false;
    metadata.has_secret = false;
    Ok(ValidClient {
        redirect_uris,
        auth_method,
        refresh_tokens,
        name,
        client_uri: meta.client_uri.clone(),
        metadata,
    })
}

/// A newly registered client: the record to store, its secret (shown once), and the
/// registration response (RFC 7591 §3.2.1).
#[derive(Debug)]
pub struct Registered {
    /// Store this.
    pub record: ClientRecord,
    /// Answer with this (201).
    pub response: serde_json::Value,
}

/// Registers `v` at `now`: a fresh client id, and a secret unless it is a public client.
pub fn register(now: UnixTime, v: ValidClient, rng: &mut impl rand::Rng) -> Registered {
    let client_id = format!("aw-{}", secret::generate_id(rng));
    let secret = (v.auth_method != AuthMethod::None)
        .then(|| secret::generate(rng, SecretKind::ClientSecret));
    let mut response = v.metadata.to_json();
    response.insert("client_id".into(), client_id.clone().into());
    response.insert("client_id_issued_at".into(), now.0.into());
    if let Some((s, _)) = &secret {
        response.insert("client_secret".into(), s.clone().into());
        response.insert("client_secret_expires_at".into(), 0.into());
    }
    let record = ClientRecord {
        client_id,
        source: ClientSource::Registered,
        auth_method: v.auth_method,
        secret: secret.map(|(_, d)| d),
        redirect_uris: v.redirect_uris,
        refresh_tokens: v.refresh_tokens,
        name: v.name,
        client_uri: v.client_uri,
        metadata: serde_json::Value::Object(v.metadata.to_json()).to_string(),
        created_at: now,
        fetched_until: None,
    };
    Registered {
        record,
        response: serde_json::Value::Object(response),
    }
}

/// The record for a client whose metadata document at `url` was fetched at `now` and may
/// be cached until `until`. `created_at` is kept from an earlier fetch, if any.
pub fn from_document(
    url: &str,
    v: ValidClient,
    now: UnixTime,
    until: UnixTime,
    created_at: Option<UnixTime>,
) -> ClientRecord {
    let mut metadata = v.metadata.to_json();
    metadata.insert("client_id".into(), url.into());
    ClientRecord {
        client_id: url.to_string(),
        source: ClientSource::MetadataDocument,
        auth_method: AuthMethod::None,
        secret: None,
        redirect_uris: v.redirect_uris,
        refresh_tokens: v.refresh_tokens,
        name: v.name,
        client_uri: v.client_uri,
        metadata: serde_json::Value::Object(metadata).to_string(),
        created_at: created_at.unwrap_or(now),
        fetched_until: Some(until),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn settings() -> Settings {
        Settings::new("https://as.example", &["https://as.example/mcp".into()])
    }

    fn meta(json: &str) -> ClientMetadata {
        ClientMetadata::parse(json.as_bytes(), 1 << 16).unwrap()
    }

    fn check(json: &str, source: ClientSource) -> Result<ValidClient, OAuthError> {
        validate(&meta(json), source, &settings())
    }

    #[test]
    fn defaults_and_registration_response() {
        let v = check(
            r#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback","https://claude.ai/api/mcp/auth_callback"],"client_name":"  Claude  "}"#,
            ClientSource::Registered,
        )
        .unwrap();
        assert_eq!(v.redirect_uris.len(), 1, "duplicates dropped");
        assert_eq!(
            v.auth_method,
            AuthMethod::ClientSecretBasic,
            "RFC 7591 default"
        );
        assert!(v.refresh_tokens);
        assert_eq!(v.name.as_deref(), Some("Claude"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let r = register(UnixTime(1000), v, &mut rng);
        let resp = &r.response;
        assert!(resp["client_id"].as_str().unwrap().starts_with("aw-"));
        let s = resp["client_secret"].as_str().unwrap();
        assert_eq!(r.record.secret, Some(super::super::secret::Digest::of(s)));
        assert_eq!(resp["client_secret_expires_at"], 0);
        assert_eq!(resp["client_id_issued_at"], 1000);
        assert_eq!(resp["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(resp["grant_types"][1], "refresh_token");
        assert_eq!(resp["response_types"][0], "code");
        assert!(!r.record.metadata.contains(s), "the secret is not stored");

        let v = check(
            r#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code"]}"#,
            ClientSource::Registered,
        )
        .unwrap();
        assert!(!v.refresh_tokens);
        let r = register(UnixTime(1), v, &mut rng);
        assert!(r.record.secret.is_none() && r.response.get("client_secret").is_none());
    }

    #[test]
    fn refused_metadata() {
        let reg = ClientSource::Registered;
        let code = |json: &str, source| check(json, source).unwrap_err().code;
        use ErrorCode::{InvalidClientMetadata as Meta, InvalidRedirectUri as Redir};
        for (json, want) in [
            (r#"{}"#, Redir),
            (r#"{"redirect_uris":[]}"#, Redir),
            (r#"{"redirect_uris":["http://evil.example/cb"]}"#, Redir),
            (r#"{"redirect_uris":["https://a.example/cb#f"]}"#, Redir),
            (r#"{"redirect_uris":["javascript:alert(1)"]}"#, Redir),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["client_credentials"]}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["authorization_code","implicit"]}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"response_types":[]}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"client_uri":"http://a.example"}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"logo_uri":"javascript:x"}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"scope":"a  b"}"#,
                Meta,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"client_name":"a\u0007b"}"#,
                Meta,
            ),
        ] {
            assert_eq!(code(json, reg), want, "{json}");
        }
        let long = format!(
            r#"{{"redirect_uris":["https://a.example/cb"],"client_name":"{}"}}"#,
            "é".repeat(MAX_NAME_CHARS + 1)
        );
        assert_eq!(code(&long, reg), Meta);
        let many: Vec<String> = (0..11)
            .map(|i| format!("\"https://a.example/{i}\""))
            .collect();
        let many = format!(r#"{{"redirect_uris":[{}]}}"#, many.join(","));
        assert_eq!(code(&many, reg), Redir);
    }

    #[test]
    fn metadata_documents_are_public_clients() {
        let doc = ClientSource::MetadataDocument;
        let v = check(r#"{"redirect_uris":["https://a.example/cb"]}"#, doc).unwrap();
        assert_eq!(v.auth_method, AuthMethod::None);
        for bad in [
            r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_post"}"#,
            r#"{"redirect_uris":["https://a.example/cb"],"client_secret":"x"}"#,
        ] {
            assert_eq!(
                check(bad, doc).unwrap_err().code,
                ErrorCode::InvalidClientMetadata
            );
        }
        let rec = from_document(
            "https://a.example/c.json",
            v,
            UnixTime(5),
            UnixTime(65),
            None,
        );
        assert_eq!(rec.client_id, "https://a.example/c.json");
        assert_eq!(rec.fetched_until, Some(UnixTime(65)));
        assert!(
            rec.metadata
                .contains("\"client_id\":\"https://a.example/c.json\"")
        );
    }
}
