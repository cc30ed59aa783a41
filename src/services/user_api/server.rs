//! The user API's routes inside `serve`.

use super::{
    ErrorBody, MAX_STATUS_AGENTS, ME_PATH, RESOLVE_PATH, STATUS_PATH, StatusRequest,
    StatusResponse, WORKSPACES_PATH, WorkspaceList, status_of,
};
use crate::services::control::{
    AgentChoice, ControlPlane, Principal, ResolveError, User, bearer, valid_name,
};
use crate::services::mcp::AgentProvider;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// What the routes share.
#[derive(Debug, Clone)]
pub struct UserApi {
    control: Arc<dyn ControlPlane>,
    agents: Arc<dyn AgentProvider>,
}

/// The largest request body the user API reads (a status request for the most agents).
const MAX_BODY: usize = 64 << 10;

fn error(kind: &str, message: impl Into<String>) -> Response {
    (status_of(kind), Json(ErrorBody::new(kind, message))).into_response()
}

fn resolve_error(e: &ResolveError) -> Response {
    let body = ErrorBody::from(e);
    (status_of(&body.error), Json(body)).into_response()
}

impl UserApi {
    /// The API over the server's control plane and agent provider.
    pub fn new(control: Arc<dyn ControlPlane>, agents: Arc<dyn AgentProvider>) -> Self {
        Self { control, agents }
    }

    /// The routes, to merge into the server's router.
    pub fn router(self) -> Router {
        Router::new()
            .route(ME_PATH, get(me))
            .route(WORKSPACES_PATH, get(list))
            .route(RESOLVE_PATH, get(resolve))
            .route("/api/v0/workspaces/{id}", get(by_id))
            .route(STATUS_PATH, post(status))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self)
    }

    /// The user a request's token stands for, or the answer refusing it.
    async fn user(&self, headers: &http::HeaderMap) -> Result<User, Response> {
        let Some(token) = bearer(headers) else {
            return Err(unauthorized("a user token is required"));
        };
        match self.control.authenticate(token).await {
            Ok(Some(Principal::User(u))) => Ok(u),
            Ok(Some(p)) => Err(error(
                "forbidden",
                format!(
                    "{} may not use the user API; use a user token",
                    p.describe()
                ),
            )),
            Ok(None) => Err(unauthorized("the token is not valid")),
            Err(e) => Err(error("unavailable", e.to_string())),
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = error("unauthorized", message);
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"agentwire\""),
    );
    r
}

async fn me(State(api): State<UserApi>, headers: http::HeaderMap) -> Response {
    match api.user(&headers).await {
        Ok(u) => Json(u).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    owner: Option<String>,
}

async fn list(
    State(api): State<UserApi>,
    headers: http::HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let user = match api.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(Query(q)) = q else {
        return error("invalid_request", "the query string is not valid");
    };
    let owner = q.owner.as_deref().map(str::trim).filter(|o| !o.is_empty());
    if owner.is_some_and(|o| !valid_name(o)) {
        return error("invalid_request", "owner is not a valid user name");
    }
    match api.control.list_workspaces(&user, owner).await {
        Ok(workspaces) => Json(WorkspaceList { workspaces }).into_response(),
        Err(e) => error("unavailable", e.to_string()),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ResolveQuery {
    spec: Option<String>,
}

async fn resolve(
    State(api): State<UserApi>,
    headers: http::HeaderMap,
    q: Result<Query<ResolveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let user = match api.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(spec) = q.ok().and_then(|Query(q)| q.spec) else {
        return error("invalid_request", "spec=[owner/]name[.agent] is required");
    };
    match api.control.resolve_workspace(&user, &spec).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => resolve_error(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ByIdQuery {
    agent: Option<String>,
}

async fn by_id(
    State(api): State<UserApi>,
    headers: http::HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<ByIdQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let user = match api.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return error("invalid_request", "the workspace id is not a UUID");
    };
    let agent = q.ok().and_then(|Query(q)| q.agent);
    let choice = match agent.as_deref() {
        Some(a) if !valid_name(a) => {
            return error("invalid_request", "agent is not a valid agent name");
        }
        Some(a) => AgentChoice::Named(a),
        None => AgentChoice::Default,
    };
    match api.control.resolve_workspace_id(&user, id, choice).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => resolve_error(&e),
    }
}

async fn status(
    State(api): State<UserApi>,
    headers: http::HeaderMap,
    body: Result<Json<StatusRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let user = match api.user(&headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(Json(req)) = body else {
        return error(
            "invalid_request",
            "the body must be {\"agents\": [agent ids]}",
        );
    };
    if req.agents.len() > MAX_STATUS_AGENTS {
        return error(
            "invalid_request",
            format!("at most {MAX_STATUS_AGENTS} agents per request"),
        );
    }
    // Only agents of workspaces the caller may use: the rest is none of its business.
    let workspaces = match api.control.list_workspaces(&user, None).await {
        Ok(w) => w,
        Err(e) => return error("unavailable", e.to_string()),
    };
    let allowed: Vec<_> = req
        .agents
        .into_iter()
        .filter(|id| workspaces.iter().any(|w| w.agent(*id).is_some()))
        .collect();
    let agents: HashMap<_, _> = api.agents.status(allowed).await;
    Json(StatusResponse { agents }).into_response()
}
