//! The authorization endpoint (RFC 6749 §4.1.1 as tightened by OAuth 2.1): validating
//! the request, issuing the code, building the redirect back to the client.
//!
//! Until the client and its redirect URI are known to belong together, nothing is sent
//! to the redirect URI: problems there are shown to the user as a page
//! ([`AuthorizeError::Page`]), so an attacker cannot use the server as an open
//! redirector. After that, errors go back to the client ([`AuthorizeError::Redirect`])
//! with its `state` and the issuer (`iss`, RFC 9207).

use super::records::{AuthorizationRequest, ClientRecord, CodeRecord};
use super::secret::{self, SecretKind};
use super::{ErrorCode, OAuthError, SCOPE_MCP, Settings, UnixTime, pkce, redirect, scope_is_valid};
use crate::wire::oauth::form::Form;

/// Longest `state` echoed back.
pub const MAX_STATE_BYTES: usize = 1024;

/// Parameters read from an authorization request; any of them repeated is an error.
const SINGLE: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Show this to the user; do not redirect.
    Page(OAuthError),
    /// Redirect to the client with this error.
    Redirect {
        /// Where.
        redirect_uri: String,
        /// The error.
        error: OAuthError,
        /// The client's `state`.
        state: Option<String>,
    },
}

/// The request's `client_id`, the first thing the shell needs (to look the client up).
///
/// # Errors
/// `invalid_request` (as a page) when it is missing or repeated.
pub fn client_id(query: &Form) -> Result<&str, OAuthError> {
    query
        .one("client_id")?
        .ok_or_else(|| OAuthError::request("client_id is required"))
}

/// Validates an authorization request from `client`.
///
/// # Errors
/// [`AuthorizeError::Page`] for a redirect URI that is missing (with several registered),
/// repeated or not registered; [`AuthorizeError::Redirect`] for everything after that:
/// `invalid_request` (repeated or malformed parameters, PKCE missing or not S256),
/// `unsupported_response_type`, `invalid_scope`, `invalid_target`.
pub fn validate(
    query: &Form,
    client: &ClientRecord,
    settings: &Settings,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = AuthorizeError::Page;
    let (redirect_uri, redirect_explicit) =
        match query.one("redirect_uri").map_err(|e| page(e.into()))? {
            Some(given) => {
                if redirect::find(&client.redirect_uris, given).is_none() {
                    return Err(page(OAuthError::request(
                        "redirect_uri is not registered for this client",
                    )));
                }
                (given.to_string(), true)
            }
            None => match client.redirect_uris.as_slice() {
                [only] => (only.clone(), false),
                _ => {
                    return Err(page(OAuthError::request(
                        "redirect_uri is required: the client registered several",
                    )));
                }
            },
        };
    // From here on the redirect URI is the client's own: errors go there.
    let state = query.one("state").ok().flatten().map(str::to_string);
    let fail = |error: OAuthError, state: Option<String>| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        state,
    };
    for p in SINGLE {
        if let Err(e) = query.one(p) {
            let state = if *p == "state" { None } else { state.clone() };
            return Err(fail(e.into(), state));
        }
    }
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE_BYTES) {
        return Err(fail(OAuthError::request("state is too long"), None));
    }
    let one = |p: &str| query.one(p).ok().flatten();
    if one("request").is_some() || one("request_uri").is_some() {
        return Err(fail(
            OAuthError::request("request objects are not supported"),
            state,
        ));
    }
    match one("response_type") {
        None => {
            return Err(fail(
                OAuthError::request("response_type is required"),
                state,
            ));
        }
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ),
                state,
            ));
        }
    }
    let code_challenge =
        match pkce::check_challenge(one("code_challenge"), one("code_challenge_method")) {
            Ok(c) => c,
            Err(e) => return Err(fail(e, state)),
        };
    if one("scope").is_some_and(|s| !scope_is_valid(s)) {
        return Err(fail(
            OAuthError::new(ErrorCode::InvalidScope, "scope is malformed"),
            state,
        ));
    }
    let resource = match resource_of(query, settings) {
        Ok(r) => r,
        Err(e) => return Err(fail(e, state)),
    };
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_explicit,
        code_challenge,
        scope: SCOPE_MCP.to_string(),
        resource,
        state,
    })
}

/// The one resource a request names (RFC 8707 allows several `resource` parameters;
/// they must all name the same one of ours).
fn resource_of(query: &Form, settings: &Settings) -> Result<String, OAuthError> {
    let mut chosen: Option<String> = None;
    for r in query.all("resource") {
        let c = settings.accept_resource(Some(r))?;
        match &chosen {
            Some(prev) if *prev != c => {
                return Err(OAuthError::target("one resource per request"));
            }
            _ => chosen = Some(c),
        }
    }
    match chosen {
        Some(c) => Ok(c),
        None => settings.accept_resource(None),
    }
}

/// A code for `req`, consented to by `user` at `now`: the code to send and its record.
pub fn issue_code(
    now: UnixTime,
    req: &AuthorizationRequest,
    user: &str,
    settings: &Settings,
    rng: &mut impl rand::Rng,
) -> (String, CodeRecord) {
    let (code, digest) = secret::generate(rng, SecretKind::Code);
    let record = CodeRecord {
        digest,
        client_id: req.client_id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        redirect_explicit: req.redirect_explicit,
        code_challenge: req.code_challenge.clone(),
        scope: req.scope.clone(),
        resource: req.resource.clone(),
        user: user.to_string(),
        issued_at: now,
        expires_at: now.plus(settings.code_ttl),
    };
    (code, record)
}

/// The redirect delivering `code` (RFC 6749 §4.1.2, RFC 9207 `iss`).
pub fn success_redirect(req: &AuthorizationRequest, code: &str, settings: &Settings) -> String {
    let mut p = vec![("code", code)];
    if let Some(s) = &req.state {
        p.push(("state", s));
    }
    p.push(("iss", &settings.issuer));
    redirect::with_params(&req.redirect_uri, &p)
}

/// The redirect delivering an error (RFC 6749 §4.1.2.1).
pub fn error_redirect(
    redirect_uri: &str,
    error: &OAuthError,
    state: Option<&str>,
    settings: &Settings,
) -> String {
    let mut p = vec![
        ("error", error.code.as_str()),
        ("error_description", error.description.as_str()),
    ];
    if let Some(s) = state {
        p.push(("state", s));
    }
    p.push(("iss", &settings.issuer));
    redirect::with_params(redirect_uri, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::oauth::form::FormLimits;
    use rand::SeedableRng;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn settings() -> Settings {
        Settings::new(
            "https://as.example",
            &[
                "https://as.example/mcp".into(),
                "https://as.example/api/experimental/mcp/http".into(),
            ],
        )
    }

    fn client(uris: &[&str]) -> ClientRecord {
        ClientRecord::fixture("aw-1", uris)
    }

    fn query(extra: &[(&str, &str)], skip: &[&str]) -> Form {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", "aw-1"),
            ("redirect_uri", "https://app.example/cb"),
            ("state", "xyz"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        pairs.retain(|(k, _)| !skip.contains(k));
        pairs.extend_from_slice(extra);
        let enc = Form::from_pairs(pairs).encode();
        Form::parse(enc.as_bytes(), &FormLimits::default()).unwrap()
    }

    fn redirect_error(
        r: Result<AuthorizationRequest, AuthorizeError>,
    ) -> (ErrorCode, Option<String>) {
        match r {
            Err(AuthorizeError::Redirect {
                error,
                state,
                redirect_uri,
            }) => {
                assert_eq!(redirect_uri, "https://app.example/cb");
                (error.code, state)
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request() {
        let c = client(&["https://app.example/cb"]);
        let q = query(
            &[
                ("resource", "https://as.example/mcp"),
                ("scope", "mcp offline_access"),
            ],
            &[],
        );
        let r = validate(&q, &c, &settings()).unwrap();
        assert_eq!(r.redirect_uri, "https://app.example/cb");
        assert!(r.redirect_explicit);
        assert_eq!(r.scope, "mcp");
        assert_eq!(r.resource, "https://as.example/mcp");
        assert_eq!(r.state.as_deref(), Some("xyz"));
        assert_eq!(client_id(&q), Ok("aw-1"));

        // No redirect_uri: the only registered one; no resource: the default.
        let q = query(&[], &["redirect_uri"]);
        let r = validate(&q, &c, &settings()).unwrap();
        assert!(!r.redirect_explicit);
        assert_eq!(r.resource, "https://as.example/mcp");

        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (code, rec) = issue_code(UnixTime(100), &r, "alice", &settings(), &mut rng);
        assert_eq!(rec.expires_at, UnixTime(160));
        assert_eq!(rec.digest, super::super::secret::Digest::of(&code));
        let url = success_redirect(&r, &code, &settings());
        assert_eq!(
            url,
            format!("https://app.example/cb?code={code}&state=xyz&iss=https%3A%2F%2Fas.example")
        );
    }

    #[test]
    fn redirect_problems_are_pages() {
        let c = client(&["https://app.example/cb", "http://127.0.0.1/cb"]);
        let s = settings();
        for bad in [
            "https://evil.example/cb",
            "https://app.example/cb/",
            "https://app.example:443/cb",
            "https://APP.example/cb",
            "https://app.example/%63b",
            "https://app.example/cb?x=1",
            "http://localhost/cb",
        ] {
            let q = query(&[("redirect_uri", bad)], &["redirect_uri"]);
            assert!(
                matches!(validate(&q, &c, &s), Err(AuthorizeError::Page(_))),
                "{bad}"
            );
        }
        // Several registered and none named.
        let q = query(&[], &["redirect_uri"]);
        assert!(matches!(validate(&q, &c, &s), Err(AuthorizeError::Page(_))));
        // Repeated redirect_uri.
        let q = query(&[("redirect_uri", "https://app.example/cb")], &[]);
        assert!(matches!(validate(&q, &c, &s), Err(AuthorizeError::Page(_))));
        // A loopback port of the client's choosing is fine.
        let q = query(
            &[("redirect_uri", "http://127.0.0.1:51234/cb")],
            &["redirect_uri"],
        );
        assert_eq!(
            validate(&q, &c, &s).unwrap().redirect_uri,
            "http://127.0.0.1:51234/cb"
        );
        assert!(client_id(&query(&[], &["client_id"])).is_err());
        assert!(client_id(&query(&[("client_id", "x")], &[])).is_err());
    }

    #[test]
    fn other_problems_go_back_to_the_client() {
        let c = client(&["https://app.example/cb"]);
        let s = settings();
        use ErrorCode::*;
        let some = Some("xyz".to_string());
        for (extra, skip, want, state) in [
            (vec![], vec!["response_type"], InvalidRequest, some.clone()),
            (
                vec![("response_type", "token")],
                vec!["response_type"],
                UnsupportedResponseType,
                some.clone(),
            ),
            (vec![], vec!["code_challenge"], InvalidRequest, some.clone()),
            (
                vec![],
                vec!["code_challenge_method"],
                InvalidRequest,
                some.clone(),
            ),
            (
                vec![("code_challenge_method", "plain")],
                vec!["code_challenge_method"],
                InvalidRequest,
                some.clone(),
            ),
            (vec![("scope", "a  b")], vec![], InvalidScope, some.clone()),
            (
                vec![("resource", "https://evil.example/mcp")],
                vec![],
                InvalidTarget,
                some.clone(),
            ),
            (
                vec![("resource", "https://as.example/mcp#x")],
                vec![],
                InvalidTarget,
                some.clone(),
            ),
            (
                vec![
                    ("resource", "https://as.example/mcp"),
                    ("resource", "https://as.example/api/experimental/mcp/http"),
                ],
                vec![],
                InvalidTarget,
                some.clone(),
            ),
            (
                vec![("scope", "mcp"), ("scope", "mcp")],
                vec![],
                InvalidRequest,
                some.clone(),
            ),
            (vec![("state", "again")], vec![], InvalidRequest, None),
            (
                vec![("request", "eyJ...")],
                vec![],
                InvalidRequest,
                some.clone(),
            ),
        ] {
            let q = query(&extra, &skip);
            assert_eq!(
                redirect_error(validate(&q, &c, &s)),
                (want, state),
                "{extra:?} {skip:?}"
            );
        }
        let long = "s".repeat(MAX_STATE_BYTES + 1);
        let q = query(&[("state", &long)], &["state"]);
        assert_eq!(redirect_error(validate(&q, &c, &s)), (InvalidRequest, None));
        // The same resource twice is one resource.
        let q = query(
            &[
                ("resource", "https://as.example/mcp"),
                ("resource", "https://as.example/mcp/"),
            ],
            &[],
        );
        assert!(validate(&q, &c, &s).is_ok());

        let url = error_redirect(
            "https://app.example/cb",
            &OAuthError::new(AccessDenied, "the user said no"),
            Some("xyz"),
            &s,
        );
        assert_eq!(
            url,
            "https://app.example/cb?error=access_denied&error_description=the%20user%20said%20no&state=xyz&iss=https%3A%2F%2Fas.example"
        );
    }
}
