//! The admin API: JSON under `/api/v0/admin/…`, for admin tokens only (a user token whose
//! user is an admin). `agentwire admin` is its client; `docs/protocol.md` lists every
//! route.
//!
//! Answers: 200/201 with JSON, 204 without a body; errors are `{"message", "field"?}` with
//! 400 (invalid input, naming the field), 401 (no or unknown token), 403 (not an admin),
//! 404, 409 (a duplicate, naming the field) or 503 (the store is unavailable; nothing was
//! written).

mod routes;

use crate::services::control::{ControlPlane, Principal, User, bearer};
use crate::services::store::{Store, StoreError};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Where the admin API is mounted.
pub const ADMIN_PREFIX: &str = "/api/v0/admin";

/// What the admin routes share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The store.
    pub store: Arc<Store>,
    /// The server's public URL, for the agent join command.
    pub public_url: String,
}

/// The admin API's routes, to merge at the root.
pub fn router(state: AdminState) -> Router {
    routes::router(Arc::new(state))
}

/// An error answer: status and `{"message", "field"?}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = e.status();
        if status.is_server_error() {
            tracing::warn!(error = %e, "admin request failed");
        }
        Self {
            status,
            field: e.field(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "message": self.message });
        if let Some(f) = self.field {
            body["field"] = f.into();
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"agentwire admin\""),
            );
        }
        r
    }
}

/// The admin behind a request, or the refusal.
pub(crate) async fn admin(store: &Store, headers: &HeaderMap) -> Result<User, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an admin token is required: send Authorization: Bearer TOKEN",
        ));
    };
    match store.authenticate(token).await {
        Ok(Some(Principal::User(u))) if u.admin => Ok(u),
        Ok(Some(Principal::User(u))) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("user {:?} is not an admin", u.name),
        )),
        Ok(Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this API takes an admin user's token",
        )),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown, revoked or expired token",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("authentication is unavailable: {e}"),
        )),
    }
}

/// The command an agent joins with, token included. A token on a command line is visible
/// to every local user (`ps`); `agentwire admin` prints this line with the
/// `--token-file` form beside it (see `docs/config.md`).
pub fn join_command(public_url: &str, token: &str) -> String {
    format!(
        "agentwire agent --url {} --token {token}",
        public_url.trim_end_matches('/')
    )
}
