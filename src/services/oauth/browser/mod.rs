//! What the user's browser does: the authorization request, sign-in, consent, sign-out.
//!
//! Defences, each on its own:
//! - **No open redirect.** The browser is only ever sent to a redirect URI registered by
//!   the client the request names (`proto::oauth::authorize`); sign-in and consent never
//!   take a URL, only the id of a pending request.
//! - **CSRF.** Every form carries a token: a pending request's own random token, or one
//!   derived from the `HttpOnly` session or browser cookie. A pending request is also
//!   bound to the browser that started it (a cookie digest stored with it), so a request
//!   started by an attacker cannot be approved in the victim's browser.
//! - **Same-site.** Cookies are `HttpOnly; SameSite=Lax` (and `Secure` with the
//!   `__Host-` prefix over HTTPS), and form posts from another origin (`Origin`,
//!   `Sec-Fetch-Site`) are refused before anything else.
//! - **Clickjacking.** `frame-ancestors 'none'` and `X-Frame-Options: DENY`.
//! - **Guessing.** Failed sign-ins are limited per user name and per address; password
//!   checks run a few at a time.

use super::pages::{self, ClientView, Consent, Flow, Page};
use super::{OAuthServer, now};
use crate::proto::oauth::authorize::{self, AuthorizeError};
use crate::proto::oauth::records::{ClientRecord, ClientSource, PendingRecord, SessionRecord};
use crate::proto::oauth::secret::{self, Digest, SecretKind};
use crate::proto::oauth::{ErrorCode, OAuthError, redirect};
use crate::services::control::User;
use crate::wire::oauth::form::{Form, FormLimits};
use crate::wire::oauth::header::cookie;
use crate::wire::oauth::uri::Uri;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri as HttpUri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

mod forms;

type S = State<Arc<OAuthServer>>;

/// Form bodies and query strings: small.
const LIMITS: FormLimits = FormLimits {
    max_bytes: 16 << 10,
    max_fields: 32,
};

pub(super) fn routes() -> Router<Arc<OAuthServer>> {
    Router::new()
        .route(
            crate::proto::oauth::discovery::AUTHORIZE_PATH,
            get(authorize),
        )
        .route("/oauth/login", post(forms::login))
        .route("/oauth/consent", post(forms::consent))
        .route("/oauth/logout", post(forms::logout))
}

impl OAuthServer {
    /// The issuer's path (`""` at the root): forms post below it.
    pub(crate) fn base_path(&self) -> String {
        Uri::parse(&self.cfg.settings.issuer)
            .map(|u| u.path.trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    /// The issuer's `host[:port]`, shown on every page.
    pub(crate) fn host(&self) -> String {
        Uri::parse(&self.cfg.settings.issuer)
            .ok()
            .and_then(|u| u.authority)
            .map(|a| match a.port {
                Some(p) => format!("{}:{p}", a.host_raw),
                None => a.host_raw.to_string(),
            })
            .unwrap_or_default()
    }

    pub(crate) fn cookie_name(&self, base: &str) -> String {
        if self.cfg.settings.is_plain_http() {
            base.to_string()
        } else {
            format!("__Host-{base}")
        }
    }

    pub(crate) fn set_cookie(&self, base: &str, value: &str, max_age: u64) -> String {
        let secure = if self.cfg.settings.is_plain_http() {
            ""
        } else {
            "; Secure"
        };
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
            self.cookie_name(base)
        )
    }

    pub(crate) fn cookie_value<'h>(&self, headers: &'h HeaderMap, base: &str) -> Option<&'h str> {
        let name = self.cookie_name(base);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| cookie(v, &name))
    }

    pub(crate) fn page_error(&self, status: StatusCode, title: &str, detail: &str) -> Response {
        pages::error(status, &self.host(), title, detail).into_response()
    }

    /// The signed-in user and their session secret, if the session cookie is valid and
    /// the user still exists.
    pub(crate) async fn signed_in(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(User, String)>, Response> {
        let Some(sid) = self
            .cookie_value(headers, SESSION)
            .filter(|v| secret::looks_like(v, SecretKind::Session))
        else {
            return Ok(None);
        };
        let unavailable = |_| {
            self.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The server cannot check your session right now.",
            )
        };
        let Some(session) = self
            .store
            .session(&Digest::of(sid), now())
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        match self.accounts.user(&session.user).await {
            Ok(Some(u)) => Ok(Some((u, sid.to_string()))),
            Ok(None) => Ok(None),
            Err(_) => Err(self.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The user directory is unavailable.",
            )),
        }
    }

    /// This browser's binding secret, and a `Set-Cookie` when it is new.
    pub(crate) fn browser(&self, headers: &HeaderMap) -> (String, Option<String>) {
        if let Some(b) = self
            .cookie_value(headers, BROWSER)
            .filter(|v| secret::looks_like(v, SecretKind::Browser))
        {
            return (b.to_string(), None);
        }
        let (b, _) = secret::generate(&mut rand::rng(), SecretKind::Browser);
        let c = self.set_cookie(BROWSER, &b, 30 * 24 * 3600);
        (b, Some(c))
    }

    /// The refusal of a form post that did not come from one of our own pages' origin
    /// (`None`: it did).
    pub(crate) fn cross_origin(&self, headers: &HeaderMap) -> Option<Response> {
        // `Sec-Fetch-Site` cannot be set by a page; where a browser sends it, it decides.
        // Older browsers send only `Origin` (`null` from opaque origins: refused).
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let foreign = match site {
            Some(s) => s != "same-origin",
            None => headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|origin| {
                    let authority =
                        Uri::parse(origin)
                            .ok()
                            .and_then(|u| u.authority)
                            .map(|a| match a.port {
                                Some(p) => format!("{}:{p}", a.host_raw),
                                None => a.host_raw.to_string(),
                            });
                    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                    !authority.is_some_and(|a| {
                        Some(a.as_str()) == host || a.eq_ignore_ascii_case(&self.host())
                    })
                }),
        };
        if !foreign {
            return None;
        }
        self.stats.csrf_refused.fetch_add(1, Relaxed);
        Some(self.page_error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was sent from another site.",
        ))
    }

    fn view(&self, c: &ClientRecord) -> ClientView {
        ClientView {
            name: c.name.clone().unwrap_or_else(|| c.client_id.clone()),
            client_id: c.client_id.clone(),
            document: c.source == ClientSource::MetadataDocument,
        }
    }

    async fn consent_page(&self, flow: &Flow<'_>, p: &PendingRecord, user: &User) -> Response {
        let client = match self.store.client(&p.request.client_id).await {
            Ok(Some(c)) => c,
            _ => {
                return self.page_error(
                    StatusCode::BAD_REQUEST,
                    "Unknown app",
                    "The app asking for access is no longer registered.",
                );
            }
        };
        let grants_url = format!(
            "{}{}",
            self.base_path(),
            crate::proto::oauth::discovery::GRANTS_PATH
        );
        pages::consent(
            flow,
            &Consent {
                client: &self.view(&client),
                user: &user.name,
                target: redirect::target(&p.request.redirect_uri),
                resource: &p.request.resource,
                refresh_days: self.cfg.settings.refresh_ttl.as_secs() / 86_400,
                grants_url: &grants_url,
            },
        )
        .into_response()
    }

    async fn login_page(
        &self,
        flow: &Flow<'_>,
        p: Option<&PendingRecord>,
        error: Option<&str>,
        status: StatusCode,
    ) -> Page {
        let view = match p {
            Some(p) => match self.store.client(&p.request.client_id).await {
                Ok(Some(c)) => Some(self.view(&c)),
                _ => None,
            },
            None => None,
        };
        pages::login(
            flow,
            view.as_ref(),
            self.accounts.passwords(),
            error,
            status,
        )
    }
}

/// Cookie holding the session secret.
pub(crate) const SESSION: &str = "aw_session";
/// Cookie binding pending requests to the browser that started them.
pub(crate) const BROWSER: &str = "aw_browser";

fn see_other(location: &str) -> Response {
    let body = format!(
        "<!doctype html><title>Redirecting</title><p><a href=\"{}\">Continue</a></p>",
        pages::esc(location)
    );
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    pages::secure_headers(&mut r);
    r
}

fn with_cookie(mut r: Response, c: Option<String>) -> Response {
    if let Some(v) = c.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /oauth/authorize`.
async fn authorize(State(s): S, headers: HeaderMap, uri: HttpUri) -> Response {
    let r = authorize_inner(&s, &headers, &uri).await;
    if r.status().is_success() {
        s.stats.authorize_ok.fetch_add(1, Relaxed);
    } else {
        s.stats.authorize_refused.fetch_add(1, Relaxed);
    }
    r
}

async fn authorize_inner(s: &OAuthServer, headers: &HeaderMap, uri: &HttpUri) -> Response {
    let bad = |e: &OAuthError| {
        s.page_error(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            &e.description,
        )
    };
    let q = match Form::parse(uri.query().unwrap_or("").as_bytes(), &LIMITS) {
        Ok(q) => q,
        Err(e) => return bad(&e.into()),
    };
    let client_id = match authorize::client_id(&q) {
        Ok(c) => c,
        Err(e) => return bad(&e),
    };
    let client = match s.client(client_id).await {
        Ok(c) => c,
        Err(super::ClientLookupError::Refused(e)) => {
            return s.page_error(
                StatusCode::BAD_REQUEST,
                "This app cannot be identified",
                &e.description,
            );
        }
        Err(super::ClientLookupError::Store(e)) => {
            tracing::warn!(error = %e, "OAuth store unavailable");
            return s.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The server cannot look up the app right now.",
            );
        }
    };
    let req = match authorize::validate(&q, &client, &s.cfg.settings) {
        Ok(r) => r,
        Err(AuthorizeError::Page(e)) => return bad(&e),
        Err(AuthorizeError::Redirect {
            redirect_uri,
            error,
            state,
        }) => {
            tracing::debug!(client_id, error = %error, "authorization request refused");
            return see_other(&authorize::error_redirect(
                &redirect_uri,
                &error,
                state.as_deref(),
                &s.cfg.settings,
            ));
        }
    };
    let (browser, browser_cookie) = s.browser(headers);
    // ThreadRng is not Send: generate before any await.
    let ((request, request_digest), (csrf, csrf_digest)) = {
        let mut rng = rand::rng();
        (
            secret::generate(&mut rng, SecretKind::Pending),
            secret::generate(&mut rng, SecretKind::Csrf),
        )
    };
    let pending = PendingRecord {
        id: request_digest,
        request: req,
        browser: Digest::of(&browser),
        csrf: csrf_digest,
        expires_at: now().plus(s.cfg.settings.pending_ttl),
    };
    if let Err(e) = s.store.put_pending(&pending).await {
        tracing::warn!(error = %e, "OAuth store unavailable");
        return s.page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again later",
            "The server cannot start the sign-in right now.",
        );
    }
    let (base, host) = (s.base_path(), s.host());
    let flow = Flow {
        base: &base,
        host: &host,
        request: &request,
        csrf: &csrf,
    };
    let r = match s.signed_in(headers).await {
        Err(r) => return r,
        Ok(Some((user, _))) => s.consent_page(&flow, &pending, &user).await,
        Ok(None) => s
            .login_page(&flow, Some(&pending), None, StatusCode::OK)
            .await
            .into_response(),
    };
    with_cookie(r, browser_cookie)
}

/// A form post belonging to a pending request: its record, after the CSRF token and the
/// browser binding were checked.
async fn pending_of(
    s: &OAuthServer,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(PendingRecord, String, String), Response> {
    let csrf_refused = || {
        s.stats.csrf_refused.fetch_add(1, Relaxed);
        s.page_error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form could not be verified (missing or wrong CSRF token). Start again from the app.",
        )
    };
    let request = form.one("request").ok().flatten();
    let csrf = form.one("csrf").ok().flatten();
    let (Some(request), Some(csrf)) = (request, csrf) else {
        return Err(csrf_refused());
    };
    let p = match s.store.pending(&Digest::of(request), now()).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(s.page_error(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired",
                "It was finished already or waited too long. Start connecting again from the app.",
            ));
        }
        Err(_) => {
            return Err(s.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The server cannot continue the sign-in right now.",
            ));
        }
    };
    let browser_ok = s
        .cookie_value(headers, BROWSER)
        .is_some_and(|b| Digest::of(b).ct_eq(&p.browser));
    if !browser_ok || !Digest::of(csrf).ct_eq(&p.csrf) {
        return Err(csrf_refused());
    }
    Ok((p, request.to_string(), csrf.to_string()))
}

fn address(ci: Option<&ConnectInfo<SocketAddr>>) -> String {
    ci.map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

/// The form of a post from one of our pages: refused when it came from another site or
/// does not parse.
pub(super) fn form_post(
    s: &OAuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Form, Box<Response>> {
    if let Some(r) = s.cross_origin(headers) {
        return Err(Box::new(r));
    }
    Form::parse(body, &LIMITS).map_err(|_| {
        Box::new(s.page_error(
            StatusCode::BAD_REQUEST,
            "Request refused",
            "The form was malformed.",
        ))
    })
}

/// A post that belongs either to a pending authorization (its `request` and CSRF token,
/// checked by [`pending_of`]) or to a page outside one, whose CSRF token is bound to the
/// `cookie` secret for `purpose`.
async fn flow_or_bound(
    s: &OAuthServer,
    headers: &HeaderMap,
    form: &Form,
    cookie: &str,
    purpose: &str,
) -> Result<Option<(PendingRecord, String, String)>, Response> {
    if form.one("request").ok().flatten().is_some() {
        return pending_of(s, headers, form).await.map(Some);
    }
    let secret = s.cookie_value(headers, cookie).unwrap_or("");
    let given = form.one("csrf").ok().flatten().unwrap_or("");
    if secret.is_empty() || !secret::ct_str_eq(given, &secret::bound_token(secret, purpose)) {
        s.stats.csrf_refused.fetch_add(1, Relaxed);
        return Err(s.page_error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form could not be verified. Open the page again.",
        ));
    }
    Ok(None)
}
