//! Users see and revoke their own grants (the connected-apps page, or the JSON API with
//! their user token); admins see and revoke anyone's, and delete clients, through the
//! same API.
//!
//! ```text
//!  GET    /oauth/grants                      page (signed-in browser)
//!  POST   /oauth/grants/revoke               grant=ID, csrf
//!  GET    /api/oauth/grants[?user=&client=&all=1]   Bearer user token; non-admins: own only
//!  DELETE /api/oauth/grants/{id}             owner or admin
//!  GET    /api/oauth/clients                 admin
//!  DELETE /api/oauth/clients/{id}            admin (revokes its grants)
//! ```

use super::pages::{self, Flow, GrantRow};
use super::store::GrantFilter;
use super::{OAuthServer, admin, now};
use crate::proto::oauth::discovery::GRANTS_PATH;
use crate::proto::oauth::secret;
use crate::services::control::{User, bearer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use std::sync::Arc;

type S = State<Arc<OAuthServer>>;

pub(super) fn routes() -> Router<Arc<OAuthServer>> {
    Router::new()
        .route(GRANTS_PATH, get(grants_page))
        .route("/oauth/grants/revoke", post(revoke_from_page))
        .route("/api/oauth/grants", get(api_list))
        .route("/api/oauth/grants/{id}", delete(api_revoke))
        .route("/api/oauth/clients", get(api_clients))
        .route("/api/oauth/clients/{id}", delete(api_delete_client))
}

/// The connected-apps page for `user`, whose session secret is `sid`.
pub(super) async fn page(
    s: &OAuthServer,
    user: &User,
    sid: &str,
    notice: Option<&str>,
) -> Response {
    let filter = GrantFilter {
        user: Some(user.name.clone()),
        ..Default::default()
    };
    let now = now();
    let views = match admin::grants(s.store.as_ref(), &filter, now, s.cfg.settings.access_ttl).await
    {
        Ok(v) => v,
        Err(_) => {
            return s.page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "The server cannot list your apps right now.",
            );
        }
    };
    let rows: Vec<GrantRow> = views
        .into_iter()
        .filter(|g| g.status == "active")
        .map(|g| GrantRow {
            id: g.id,
            app: g.client_name.unwrap_or(g.client_id),
            since: pages::date(crate::proto::oauth::UnixTime(g.created_at)),
            last: pages::date(crate::proto::oauth::UnixTime(g.refreshed_at)),
        })
        .collect();
    let csrf = secret::bound_token(sid, "grants");
    pages::grants(&s.base_path(), &s.host(), &user.name, &csrf, &rows, notice).into_response()
}

async fn grants_page(State(s): S, headers: HeaderMap) -> Response {
    match s.signed_in(&headers).await {
        Err(r) => r,
        Ok(Some((user, sid))) => page(&s, &user, &sid, None).await,
        Ok(None) => {
            let (browser, set) = s.browser(&headers);
            let csrf = secret::bound_token(&browser, "login");
            let (base, host) = (s.base_path(), s.host());
            let f = Flow {
                base: &base,
                host: &host,
                request: "",
                csrf: &csrf,
            };
            let mut p = pages::login(&f, None, s.accounts.passwords(), None, StatusCode::OK);
            if let Some(c) = set {
                p = p.with_cookie(c);
            }
            p.into_response()
        }
    }
}

async fn revoke_from_page(State(s): S, headers: HeaderMap, body: Bytes) -> Response {
    let form = match super::browser::form_post(&s, &headers, &body) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let (user, sid) = match s.signed_in(&headers).await {
        Err(r) => return r,
        Ok(Some(x)) => x,
        Ok(None) => {
            return s.page_error(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Sign in again to manage your apps.",
            );
        }
    };
    let given = form.one("csrf").ok().flatten().unwrap_or("");
    if !secret::ct_str_eq(given, &secret::bound_token(&sid, "grants")) {
        s.stats
            .csrf_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return s.page_error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form could not be verified. Open the page again.",
        );
    }
    let id = form.one("grant").ok().flatten().unwrap_or("");
    let notice = match s.store.grant(id).await {
        Ok(Some(g)) if g.user == user.name => match s.revoke(&g.id, "revoked by the user").await {
            Ok(_) => format!("Disconnected {}.", s.client_name(&g).await),
            Err(_) => "The server could not disconnect the app; try again.".to_string(),
        },
        Ok(_) => "That app is not connected to your account.".to_string(),
        Err(_) => "The server could not disconnect the app; try again.".to_string(),
    };
    page(&s, &user, &sid, Some(&notice)).await
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// The caller of the JSON API: a static user token.
async fn api_user(s: &OAuthServer, headers: &HeaderMap) -> Result<User, Response> {
    let Some(token) = bearer(headers) else {
        return Err(json_error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    match s.accounts.verify_token(token).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "this API takes a user token",
        )),
        Err(_) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the user directory is unavailable",
        )),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    user: Option<String>,
    client: Option<String>,
    all: Option<String>,
}

async fn api_list(State(s): S, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let me = match api_user(&s, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let user = match (q.user, me.admin) {
        (Some(u), true) => Some(u),
        (None, true) => None,
        (Some(u), false) if u != me.name => {
            return json_error(
                StatusCode::FORBIDDEN,
                "only admins may list other users' grants",
            );
        }
        (_, false) => Some(me.name.clone()),
    };
    let filter = GrantFilter {
        user,
        client_id: q.client,
        include_revoked: q.all.is_some_and(|a| a == "1" || a == "true"),
    };
    match admin::grants(s.store.as_ref(), &filter, now(), s.cfg.settings.access_ttl).await {
        Ok(v) => axum::Json(serde_json::json!({ "grants": v })).into_response(),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the OAuth store is unavailable",
        ),
    }
}

async fn api_revoke(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let me = match api_user(&s, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match s.store.grant(&id).await {
        Ok(Some(g)) if me.admin || g.user == me.name => {
            let reason = if g.user == me.name {
                "revoked by the user"
            } else {
                "revoked by an admin"
            };
            match s.revoke(&id, reason).await {
                Ok(revoked) => {
                    axum::Json(serde_json::json!({ "revoked": revoked })).into_response()
                }
                Err(_) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the OAuth store is unavailable",
                ),
            }
        }
        // Someone else's grant reads as not found, so ids cannot be probed.
        Ok(_) => json_error(StatusCode::NOT_FOUND, "no such grant"),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the OAuth store is unavailable",
        ),
    }
}

async fn api_clients(State(s): S, headers: HeaderMap) -> Response {
    match api_user(&s, &headers).await {
        Ok(u) if u.admin => {}
        Ok(_) => return json_error(StatusCode::FORBIDDEN, "admins only"),
        Err(r) => return r,
    }
    match admin::clients(s.store.as_ref()).await {
        Ok(v) => axum::Json(serde_json::json!({ "clients": v })).into_response(),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the OAuth store is unavailable",
        ),
    }
}

async fn api_delete_client(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match api_user(&s, &headers).await {
        Ok(u) if u.admin => {}
        Ok(_) => return json_error(StatusCode::FORBIDDEN, "admins only"),
        Err(r) => return r,
    }
    match s.store.delete_client(&id, now()).await {
        Ok(true) => axum::Json(serde_json::json!({ "deleted": true })).into_response(),
        Ok(false) => json_error(StatusCode::NOT_FOUND, "no such client"),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the OAuth store is unavailable",
        ),
    }
}
