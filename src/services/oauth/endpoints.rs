//! The machine-facing endpoints: metadata, token, revocation, registration. JSON
//! answers, `Cache-Control: no-store` on anything carrying a secret, CORS open (they use
//! no cookies, so any origin may call them: browser-based MCP clients do).

use super::{OAuthServer, now};
use crate::proto::oauth::discovery::{self, METADATA_PATH, REGISTER_PATH, REVOKE_PATH, TOKEN_PATH};
use crate::proto::oauth::records::ClientRecord;
use crate::proto::oauth::secret::Digest;
use crate::proto::oauth::token::{self, ClientCredentials, TokenRequest};
use crate::proto::oauth::{ErrorCode, OAuthError, Refusal, Settings, client};
use crate::wire::oauth::form::{Form, FormLimits};
use crate::wire::oauth::metadata::ClientMetadata;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

type S = State<Arc<OAuthServer>>;

const FORM_LIMITS: FormLimits = FormLimits {
    max_bytes: 16 << 10,
    max_fields: 32,
};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) fn routes(settings: &Settings) -> Router<Arc<OAuthServer>> {
    let mut r = Router::new()
        .route(METADATA_PATH, get(metadata).options(preflight))
        .route(TOKEN_PATH, post(token_endpoint).options(preflight))
        .route(REVOKE_PATH, post(revoke).options(preflight))
        .route(REGISTER_PATH, post(register).options(preflight));
    // RFC 8414 §3: an issuer with a path has its metadata at the well-known path with
    // the issuer's path appended.
    if let Ok(u) = crate::wire::oauth::uri::Uri::parse(&settings.issuer) {
        let p = u.path.trim_end_matches('/');
        if !p.is_empty() {
            r = r.route(
                &format!("{METADATA_PATH}{p}"),
                get(metadata).options(preflight),
            );
        }
    }
    r
}

fn cors(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&mut r);
    r
}

fn json(status: StatusCode, v: &serde_json::Value, no_store: bool) -> Response {
    let mut r = (status, axum::Json(v)).into_response();
    if no_store {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    cors(&mut r);
    r
}

/// An OAuth error response; `basic` when the client tried HTTP Basic (then a failed
/// client authentication is a 401 with a challenge, RFC 6749 §5.2).
fn error(s: &OAuthServer, e: &OAuthError, basic: bool) -> Response {
    s.stats.error(e);
    let status = match e.code {
        ErrorCode::InvalidClient if basic => StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidClient => StatusCode::BAD_REQUEST,
        c => StatusCode::from_u16(c.status()).unwrap_or(StatusCode::BAD_REQUEST),
    };
    let mut r = json(status, &e.to_json(), true);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"agentwire\""),
        );
    }
    r
}

fn unavailable(s: &OAuthServer, what: &str) -> Response {
    error(
        s,
        &OAuthError::new(ErrorCode::TemporarilyUnavailable, what),
        false,
    )
}

async fn metadata(State(s): S) -> Response {
    let mut r = json(
        StatusCode::OK,
        &discovery::authorization_server_metadata(&s.cfg.settings),
        false,
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Why a body could not be read.
enum BodyError {
    TooLarge(usize),
    Other(String),
}

/// Reads a body of at most `limit` bytes, refusing a larger declared length unread.
async fn read_body(req: Request, limit: usize) -> Result<(HeaderMap, Bytes), BodyError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(Body::new(body), limit)).await {
        Err(_) => Err(BodyError::Other(
            "the request body did not arrive in time".into(),
        )),
        Ok(Ok(b)) => Ok((parts.headers, b)),
        Ok(Err(e)) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cur {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(BodyError::TooLarge(limit));
                }
                cur = err.source();
            }
            Err(BodyError::Other(format!(
                "could not read the request body: {e}"
            )))
        }
    }
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// A token or revocation request's form and authenticated client.
async fn client_request(
    s: &OAuthServer,
    req: Request,
) -> Result<(Form, ClientRecord, ClientCredentials), Response> {
    let (headers, body) = match read_body(req, FORM_LIMITS.max_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => {
            return Err(error(
                s,
                &OAuthError::request(format!("the request body is larger than {n} bytes")),
                false,
            ));
        }
        Err(BodyError::Other(m)) => return Err(error(s, &OAuthError::request(m), false)),
    };
    if !content_type_is(&headers, "application/x-www-form-urlencoded") {
        return Err(error(
            s,
            &OAuthError::request("the body must be application/x-www-form-urlencoded"),
            false,
        ));
    }
    let form = Form::parse(&body, &FORM_LIMITS).map_err(|e| error(s, &e.into(), false))?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let creds = token::client_credentials(&form, authorization).map_err(|e| {
        let basic = authorization.is_some_and(|a| {
            a.trim_start()
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case("basic "))
        });
        error(s, &e, basic)
    })?;
    let client = match s.store.client(creds.client_id()).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(error(
                s,
                &OAuthError::client("unknown client"),
                creds.is_basic(),
            ));
        }
        Err(_) => {
            return Err(unavailable(
                s,
                "the server cannot look up clients right now",
            ));
        }
    };
    token::authenticate(&creds, &client).map_err(|e| error(s, &e, creds.is_basic()))?;
    Ok((form, client, creds))
}

/// Answers a refused token request, first revoking what it proved compromised.
async fn refused(s: &OAuthServer, client_id: &str, r: Refusal) -> Response {
    if let Some((grant, why)) = &r.revoke {
        s.stats.reuse_revocations.fetch_add(1, Relaxed);
        tracing::warn!(grant, client_id, why, "revoking an OAuth grant");
        let _ = s.revoke(grant, why).await;
    }
    error(s, &r.error, false)
}

/// `POST /oauth/token`.
async fn token_endpoint(State(s): S, req: Request) -> Response {
    let (form, client, creds) = match client_request(&s, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let grant = match token::parse(&form) {
        Ok(g) => g,
        Err(e) => return error(&s, &e, creds.is_basic()),
    };
    let settings = &s.cfg.settings;
    let now = now();
    match grant {
        TokenRequest::Code {
            code,
            redirect_uri,
            verifier,
            resource,
        } => {
            let digest = Digest::of(&code);
            let state = match s.store.use_code(&digest).await {
                Ok(st) => st,
                Err(_) => return unavailable(&s, "the server cannot read codes right now"),
            };
            let code = match token::check_code(
                now,
                redirect_uri.as_deref(),
                &verifier,
                resource.as_deref(),
                &client,
                state,
                settings,
            ) {
                Ok(c) => c,
                Err(r) => return refused(&s, &client.client_id, r).await,
            };
            let issued = token::issue_for_code(now, &code, &client, settings, &mut rand::rng());
            if s.store
                .create_grant(&issued.grant, &issued.access, &digest)
                .await
                .is_err()
            {
                return unavailable(&s, "the server cannot store tokens right now");
            }
            s.stats.grants_created.fetch_add(1, Relaxed);
            tracing::info!(grant = %issued.grant.id, user = %issued.grant.user, client_id = %client.client_id, "OAuth grant created");
            json(StatusCode::OK, &issued.response, true)
        }
        TokenRequest::Refresh {
            token,
            scope,
            resource,
        } => {
            let digest = Digest::of(&token);
            let lookup = match s.store.find_refresh(&digest).await {
                Ok(l) => l,
                Err(_) => return unavailable(&s, "the server cannot read tokens right now"),
            };
            let grant = match token::check_refresh(
                now,
                scope.as_deref(),
                resource.as_deref(),
                &client,
                lookup,
                settings,
            ) {
                Ok(g) => g,
                Err(r) => return refused(&s, &client.client_id, r).await,
            };
            let id = grant.id.clone();
            let issued = token::issue_for_refresh(now, grant, settings, &mut rand::rng());
            match s.store.rotate(&digest, &issued.grant, &issued.access).await {
                Ok(true) => {
                    s.stats.refreshes.fetch_add(1, Relaxed);
                    json(StatusCode::OK, &issued.response, true)
                }
                Ok(false) => {
                    // Another refresh with the same token got there first: that is reuse.
                    refused(&s, &client.client_id, Refusal {
                        error: OAuthError::grant("refresh token was already used; every token of this grant is revoked"),
                        revoke: Some((id, "refresh token reused")),
                    })
                    .await
                }
                Err(_) => unavailable(&s, "the server cannot store tokens right now"),
            }
        }
    }
}

/// `POST /oauth/revoke` (RFC 7009): `200` whether or not the token was known.
async fn revoke(State(s): S, req: Request) -> Response {
    let (form, client, creds) = match client_request(&s, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let tok = match token::parse_revocation(&form) {
        Ok(t) => t,
        Err(e) => return error(&s, &e, creds.is_basic()),
    };
    let found = match s.store.find_token(&Digest::of(&tok)).await {
        Ok(f) => f,
        Err(_) => return unavailable(&s, "the server cannot read tokens right now"),
    };
    match token::check_revocation(&client, found.as_ref()) {
        Ok(None) => {}
        Ok(Some(grant)) => match s.revoke(&grant, "revoked by the client").await {
            Ok(true) => {
                s.stats.revocations.fetch_add(1, Relaxed);
            }
            Ok(false) => {}
            Err(_) => return unavailable(&s, "the server cannot revoke tokens right now"),
        },
        Err(e) => return error(&s, &e, creds.is_basic()),
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors(&mut r);
    r
}

/// `POST /oauth/register` (RFC 7591).
async fn register(
    State(s): S,
    ci: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    req: Request,
) -> Response {
    let settings = &s.cfg.settings;
    let meta_error = |d: String| OAuthError::new(ErrorCode::InvalidClientMetadata, d);
    if !settings.registration {
        let e = OAuthError::new(
            ErrorCode::AccessDenied,
            "dynamic client registration is turned off on this server",
        );
        s.stats.error(&e);
        return json(StatusCode::FORBIDDEN, &e.to_json(), true);
    }
    if req.method() != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let addr = ci.map_or_else(|| "unknown".to_string(), |c| c.0.0.ip().to_string());
    let key = format!("register:{addr}");
    let t = crate::runtime::clock::now();
    if let Err(wait) = s.limits().registrations.check(&key, t) {
        let e = OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            format!(
                "too many registrations from this address; try again in {} s",
                wait.as_secs()
            ),
        );
        s.stats.error(&e);
        let mut r = json(StatusCode::TOO_MANY_REQUESTS, &e.to_json(), true);
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let (headers, body) = match read_body(req, settings.max_registration_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => {
            let e = meta_error(format!("the registration request is larger than {n} bytes"));
            s.stats.error(&e);
            return json(StatusCode::PAYLOAD_TOO_LARGE, &e.to_json(), true);
        }
        Err(BodyError::Other(m)) => return error(&s, &meta_error(m), false),
    };
    if !content_type_is(&headers, "application/json") {
        return error(
            &s,
            &meta_error("the body must be application/json".into()),
            false,
        );
    }
    let meta = match ClientMetadata::parse(&body, settings.max_registration_bytes) {
        Ok(m) => m,
        Err(e) => return error(&s, &meta_error(e.to_string()), false),
    };
    let valid = match client::validate(
        &meta,
        crate::proto::oauth::records::ClientSource::Registered,
        settings,
    ) {
        Ok(v) => v,
        Err(e) => return error(&s, &e, false),
    };
    match s.store.registered_clients().await {
        Ok(n) if n >= s.cfg.max_registered_clients => {
            return unavailable(
                &s,
                "this server has as many registered clients as it accepts",
            );
        }
        Ok(_) => {}
        Err(_) => return unavailable(&s, "the server cannot register clients right now"),
    }
    // Counted as an attempt whether or not it is the last one allowed.
    s.limits().registrations.failed(&key, t);
    let reg = client::register(now(), valid, &mut rand::rng());
    if s.store.put_client(&reg.record).await.is_err() {
        return unavailable(&s, "the server cannot register clients right now");
    }
    s.stats.registrations.fetch_add(1, Relaxed);
    tracing::info!(client_id = %reg.record.client_id, name = ?reg.record.name, %addr, "OAuth client registered");
    json(StatusCode::CREATED, &reg.response, true)
}
