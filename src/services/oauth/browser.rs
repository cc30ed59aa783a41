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
        .route("/oauth/login", post(login))
        .route("/oauth/consent", post(consent))
        .route("/oauth/logout", post(logout))
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

/// `POST /oauth/login`.
async fn login(
    State(s): S,
    ci: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form_post(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    // Either a pending authorization, or the sign-in of the connected-apps page.
    let flow = match flow_or_bound(&s, &headers, &form, BROWSER, "login").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (base, host) = (s.base_path(), s.host());
    let (request, csrf) = match &flow {
        Some((_, r, c)) => (r.clone(), c.clone()),
        None => (
            String::new(),
            form.one("csrf").ok().flatten().unwrap_or("").to_string(),
        ),
    };
    let f = Flow {
        base: &base,
        host: &host,
        request: &request,
        csrf: &csrf,
    };
    let pending = flow.as_ref().map(|(p, _, _)| p);
    macro_rules! again {
        ($error:expr, $status:expr) => {
            s.login_page(&f, pending, Some($error), $status)
                .await
                .into_response()
        };
    }

    let addr = address(ci.as_ref().map(|e| &e.0));
    let method = form.one("method").ok().flatten().unwrap_or("password");
    let username = form
        .one("username")
        .ok()
        .flatten()
        .unwrap_or("")
        .trim()
        .to_string();
    let user_key = format!("user:{username}");
    let addr_key = format!("addr:{addr}");
    let wait = {
        let now = crate::runtime::clock::now();
        let l = s.limits();
        l.addresses.check(&addr_key, now).err().or_else(|| {
            (method == "password")
                .then(|| l.users.check(&user_key, now).err())
                .flatten()
        })
    };
    if let Some(wait) = wait {
        s.stats.login_limited.fetch_add(1, Relaxed);
        let mins = wait.as_secs().div_ceil(60);
        return again!(
            &format!("Too many failed sign-ins. Try again in {mins} minute(s)."),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let verified = match method {
        "password" => {
            let password = form.one("password").ok().flatten().unwrap_or("");
            if !s.accounts.passwords() {
                return again!(
                    "Password sign-in is not available here; use a user token.",
                    StatusCode::BAD_REQUEST
                );
            }
            if username.is_empty() || password.is_empty() {
                return again!(
                    "Enter your user name and password.",
                    StatusCode::BAD_REQUEST
                );
            }
            let Ok(_slot) = s.password_slots.acquire().await else {
                return again!(
                    "The server is shutting down.",
                    StatusCode::SERVICE_UNAVAILABLE
                );
            };
            s.accounts.verify_password(&username, password).await
        }
        "token" => {
            let token = form.one("token").ok().flatten().unwrap_or("").trim();
            if token.is_empty() {
                return again!("Enter your user token.", StatusCode::BAD_REQUEST);
            }
            s.accounts.verify_token(token).await
        }
        _ => return again!("Choose how to sign in.", StatusCode::BAD_REQUEST),
    };
    let user = match verified {
        Ok(Some(u)) => u,
        Ok(None) => {
            {
                let now = crate::runtime::clock::now();
                let mut l = s.limits();
                l.addresses.failed(&addr_key, now);
                if method == "password" {
                    l.users.failed(&user_key, now);
                }
            }
            s.stats.login_failures.fetch_add(1, Relaxed);
            tracing::info!(method, user = %username, %addr, "OAuth sign-in failed");
            let msg = if method == "password" {
                "The user name or password is not right."
            } else {
                "That is not a valid user token."
            };
            return again!(msg, StatusCode::UNAUTHORIZED);
        }
        Err(e) => {
            tracing::warn!(error = %e, "user directory unavailable for sign-in");
            return again!(
                "The server cannot check sign-ins right now; try again later.",
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
    };
    s.limits().users.succeeded(&user_key);
    let (sid, sid_digest) = secret::generate(&mut rand::rng(), SecretKind::Session);
    let t = now();
    let session = SessionRecord {
        id: sid_digest,
        user: user.name.clone(),
        created_at: t,
        expires_at: t.plus(s.cfg.settings.session_ttl),
    };
    if s.store.put_session(&session).await.is_err() {
        return again!(
            "The server cannot sign you in right now; try again later.",
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    s.stats.logins.fetch_add(1, Relaxed);
    tracing::info!(user = %user.name, method, "OAuth sign-in");
    let cookie = s.set_cookie(SESSION, &sid, s.cfg.settings.session_ttl.as_secs());
    let r = match pending {
        Some(p) => s.consent_page(&f, p, &user).await,
        None => super::grants::page(&s, &user, &sid, None).await,
    };
    with_cookie(r, Some(cookie))
}

/// `POST /oauth/consent`.
async fn consent(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form_post(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let (p, request, csrf) = match pending_of(&s, &headers, &form).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (base, host) = (s.base_path(), s.host());
    let f = Flow {
        base: &base,
        host: &host,
        request: &request,
        csrf: &csrf,
    };
    let user = match s.signed_in(&headers).await {
        Err(r) => return r,
        Ok(Some((u, _))) => u,
        Ok(None) => {
            return s
                .login_page(
                    &f,
                    Some(&p),
                    Some("Your session ended. Sign in again."),
                    StatusCode::UNAUTHORIZED,
                )
                .await
                .into_response();
        }
    };
    let decision = form.one("decision").ok().flatten();
    if !matches!(decision, Some("approve" | "deny")) {
        return s.page_error(
            StatusCode::BAD_REQUEST,
            "Request refused",
            "Choose Allow or Deny.",
        );
    }
    // Taken exactly once: a second submit of the same form finds nothing.
    let p = match s.store.take_pending(&p.id, now()).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return s.page_error(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired",
                "It was finished already. Start connecting again from the app.",
            );
        }
        Err(_) => {
            return s.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The server cannot finish the sign-in right now.",
            );
        }
    };
    let req = &p.request;
    if decision == Some("deny") {
        s.stats.consents_denied.fetch_add(1, Relaxed);
        tracing::info!(user = %user.name, client_id = %req.client_id, "OAuth consent denied");
        let e = OAuthError::new(ErrorCode::AccessDenied, "the user denied access");
        return see_other(&authorize::error_redirect(
            &req.redirect_uri,
            &e,
            req.state.as_deref(),
            &s.cfg.settings,
        ));
    }
    let (code, record) =
        authorize::issue_code(now(), req, &user.name, &s.cfg.settings, &mut rand::rng());
    if s.store.put_code(&record).await.is_err() {
        let e = OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the server could not store the authorization",
        );
        return see_other(&authorize::error_redirect(
            &req.redirect_uri,
            &e,
            req.state.as_deref(),
            &s.cfg.settings,
        ));
    }
    s.stats.codes_issued.fetch_add(1, Relaxed);
    tracing::info!(user = %user.name, client_id = %req.client_id, "OAuth consent given; code issued");
    see_other(&authorize::success_redirect(req, &code, &s.cfg.settings))
}

/// `POST /oauth/logout`.
async fn logout(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form_post(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    // From a consent page: the pending request's token; from the connected-apps page:
    // the session's.
    let flow = match flow_or_bound(&s, &headers, &form, SESSION, "grants").await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(sid) = s.cookie_value(&headers, SESSION) {
        let _ = s.store.delete_session(&Digest::of(sid)).await;
    }
    let clear = s.set_cookie(SESSION, "", 0);
    let (base, host) = (s.base_path(), s.host());
    let r = match &flow {
        Some((p, request, csrf)) => {
            let f = Flow {
                base: &base,
                host: &host,
                request,
                csrf,
            };
            s.login_page(&f, Some(p), None, StatusCode::OK)
                .await
                .into_response()
        }
        None => pages::message(
            &host,
            "Signed out",
            "You are signed out of agentwire in this browser.",
        )
        .into_response(),
    };
    with_cookie(r, Some(clear))
}
