//! The forms the browser posts: sign-in, consent, sign-out. The defences are described in
//! the parent module.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `POST /oauth/login`.
pub(super) async fn login(
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
        None => super::super::grants::page(&s, &user, &sid, None).await,
    };
    with_cookie(r, Some(cookie))
}

/// `POST /oauth/consent`.
pub(super) async fn consent(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
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
pub(super) async fn logout(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
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
