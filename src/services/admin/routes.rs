//! The admin routes and their request bodies.

use super::{ADMIN_PREFIX, AdminState, ApiError, admin, join_command};
use crate::services::control::ControlConfig;
use crate::services::store::TokenHolder;
use crate::services::store::model::AuditFilter;
use crate::services::time::{parse_duration, parse_rfc3339_ms};
use crate::wire::addr::NodeId;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

type S = State<Arc<AdminState>>;
type Answer = Result<Response, ApiError>;

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Answer {
    Ok((status, axum::Json(v)).into_response())
}

fn ok<T: serde::Serialize>(v: &T) -> Answer {
    json(StatusCode::OK, v)
}

fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses a JSON body; unknown fields are refused (a typo must not be ignored).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let field = if e.is_data() { "body" } else { "json" };
        ApiError::invalid(field, format!("invalid request body: {e}"))
    })
}

fn expires(v: Option<&str>) -> Result<Option<Duration>, ApiError> {
    v.map(|s| parse_duration(s).map_err(|m| ApiError::invalid("expires_in", m)))
        .transpose()
}

fn token_id(s: &str) -> Result<Uuid, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid("id", format!("{s:?} is not a token id")))
}

pub(super) fn router(state: Arc<AdminState>) -> Router {
    let p = |path: &str| format!("{ADMIN_PREFIX}{path}");
    Router::new()
        .route(&p("/users"), get(users).post(create_user))
        .route(
            &p("/users/{name}"),
            get(user).patch(update_user).delete(delete_user),
        )
        .route(
            &p("/users/{name}/password"),
            put(set_password).delete(clear_password),
        )
        .route(&p("/users/{name}/revoke"), post(revoke_user))
        .route(&p("/workspaces"), get(workspaces).post(create_workspace))
        .route(
            &p("/workspaces/{owner}/{name}"),
            get(workspace).delete(delete_workspace),
        )
        .route(
            &p("/workspaces/{owner}/{name}/shares/{user}"),
            put(share).delete(unshare),
        )
        .route(&p("/agents"), get(agents).post(create_agent))
        .route(&p("/agents/{agent}"), get(agent).delete(delete_agent))
        .route(&p("/agents/{agent}/revoke"), post(revoke_agent))
        .route(&p("/tokens"), get(tokens).post(create_token))
        .route(&p("/tokens/{id}"), get(token).delete(delete_token))
        .route(&p("/tokens/{id}/revoke"), post(revoke_token))
        .route(&p("/audit"), get(audit))
        .route(&p("/import"), post(import))
        .with_state(state)
}

// ---- users ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
    password: Option<String>,
}

async fn users(State(s): S, h: HeaderMap) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.users().await?)
}

async fn create_user(State(s): S, h: HeaderMap, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let u: NewUser = body(&b)?;
    let info = s
        .store
        .create_user(&u.name, u.admin, u.password.as_deref())
        .await?;
    json(StatusCode::CREATED, &info)
}

async fn user(State(s): S, h: HeaderMap, Path(name): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.user(&name).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    admin: bool,
}

async fn update_user(State(s): S, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let u: UserUpdate = body(&b)?;
    ok(&s.store.set_admin(&name, u.admin).await?)
}

#[derive(Debug, Default, Deserialize)]
struct Cascade {
    #[serde(default)]
    cascade: bool,
}

async fn delete_user(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Cascade>,
) -> Answer {
    admin(&s.store, &h).await?;
    s.store.delete_user(&name, q.cascade).await?;
    no_content()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
}

async fn set_password(State(s): S, h: HeaderMap, Path(name): Path<String>, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let p: Password = body(&b)?;
    s.store.set_password(&name, Some(&p.password)).await?;
    no_content()
}

async fn clear_password(State(s): S, h: HeaderMap, Path(name): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    s.store.set_password(&name, None).await?;
    no_content()
}

async fn revoke_user(State(s): S, h: HeaderMap, Path(name): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    let n = s.store.revoke_user_tokens(&name).await?;
    ok(&serde_json::json!({ "revoked": n }))
}

// ---- workspaces ----

#[derive(Debug, Default, Deserialize)]
struct OwnerQuery {
    owner: Option<String>,
}

async fn workspaces(State(s): S, h: HeaderMap, Query(q): Query<OwnerQuery>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.workspaces(q.owner.as_deref()).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    owner: String,
    name: String,
    #[serde(default)]
    shared_with: Vec<String>,
}

async fn create_workspace(State(s): S, h: HeaderMap, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let w: NewWorkspace = body(&b)?;
    let info = s
        .store
        .create_workspace(&w.owner, &w.name, &w.shared_with)
        .await?;
    json(StatusCode::CREATED, &info)
}

async fn workspace(State(s): S, h: HeaderMap, Path((o, n)): Path<(String, String)>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.workspace(&format!("{o}/{n}")).await?)
}

async fn delete_workspace(
    State(s): S,
    h: HeaderMap,
    Path((o, n)): Path<(String, String)>,
) -> Answer {
    admin(&s.store, &h).await?;
    s.store.delete_workspace(&format!("{o}/{n}")).await?;
    no_content()
}

async fn share(
    State(s): S,
    h: HeaderMap,
    Path((o, n, u)): Path<(String, String, String)>,
) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.share(&format!("{o}/{n}"), &u).await?)
}

async fn unshare(
    State(s): S,
    h: HeaderMap,
    Path((o, n, u)): Path<(String, String, String)>,
) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.unshare(&format!("{o}/{n}"), &u).await?)
}

// ---- agents ----

#[derive(Debug, Default, Deserialize)]
struct WorkspaceQuery {
    workspace: Option<String>,
}

async fn agents(State(s): S, h: HeaderMap, Query(q): Query<WorkspaceQuery>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.agents(q.workspace.as_deref()).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgent {
    workspace: String,
    #[serde(default = "default_agent_name")]
    name: String,
    id: Option<String>,
    expires_in: Option<String>,
}

fn default_agent_name() -> String {
    crate::services::store::DEMO_AGENT.into()
}

async fn create_agent(State(s): S, h: HeaderMap, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let a: NewAgent = body(&b)?;
    let id =
        a.id.as_deref()
            .map(|i| {
                i.parse::<NodeId>()
                    .map_err(|_| ApiError::invalid("id", format!("{i:?} is not a UUID")))
            })
            .transpose()?;
    let exp = expires(a.expires_in.as_deref())?;
    let mut created = s.store.create_agent(&a.workspace, &a.name, id, exp).await?;
    created.join_command = join_command(&s.public_url, &created.token.token);
    json(StatusCode::CREATED, &created)
}

async fn agent(State(s): S, h: HeaderMap, Path(spec): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.agent(&spec).await?)
}

async fn delete_agent(State(s): S, h: HeaderMap, Path(spec): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    s.store.delete_agent(&spec).await?;
    no_content()
}

async fn revoke_agent(State(s): S, h: HeaderMap, Path(spec): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    let n = s.store.revoke_agent_tokens(&spec).await?;
    ok(&serde_json::json!({ "revoked": n }))
}

// ---- tokens ----

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    user: Option<String>,
    agent: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn tokens(State(s): S, h: HeaderMap, Query(q): Query<TokenQuery>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s
        .store
        .tokens(q.user.as_deref(), q.agent.as_deref(), q.all)
        .await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: Option<String>,
    agent: Option<String>,
    name: Option<String>,
    expires_in: Option<String>,
}

async fn create_token(State(s): S, h: HeaderMap, b: Bytes) -> Answer {
    let by = admin(&s.store, &h).await?;
    let t: NewToken = body(&b)?;
    let holder = match (t.user, t.agent) {
        (Some(u), None) => TokenHolder::User(u),
        (None, Some(a)) => TokenHolder::Agent(a),
        _ => {
            return Err(ApiError::invalid(
                "user",
                "give exactly one of user and agent",
            ));
        }
    };
    let name = t.name.unwrap_or_else(|| format!("issued by {}", by.name));
    let issued = s
        .store
        .create_token(&holder, &name, expires(t.expires_in.as_deref())?)
        .await?;
    json(StatusCode::CREATED, &issued)
}

async fn token(State(s): S, h: HeaderMap, Path(id): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.token(token_id(&id)?).await?)
}

async fn revoke_token(State(s): S, h: HeaderMap, Path(id): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    ok(&s.store.revoke_token(token_id(&id)?).await?)
}

async fn delete_token(State(s): S, h: HeaderMap, Path(id): Path<String>) -> Answer {
    admin(&s.store, &h).await?;
    s.store.delete_token(token_id(&id)?).await?;
    no_content()
}

// ---- audit, import ----

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    user: Option<String>,
    workspace: Option<String>,
    /// A duration back from now (`1h`) or an RFC 3339 time.
    since: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// `since` as Unix ms: a duration back from now, or a timestamp.
pub(crate) fn since_ms(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(t) = parse_rfc3339_ms(s) {
        return Ok(t);
    }
    parse_duration(s)
        .map(|d| now_ms - d.as_millis() as i64)
        .map_err(|_| {
            format!("{s:?}: give a duration back from now (90m, 24h, 7d) or an RFC 3339 time")
        })
}

async fn audit(State(s): S, h: HeaderMap, Query(q): Query<AuditQuery>) -> Answer {
    admin(&s.store, &h).await?;
    let since_ms = q
        .since
        .as_deref()
        .map(|v| {
            since_ms(v, crate::services::store::now_ms()).map_err(|m| ApiError::invalid("since", m))
        })
        .transpose()?;
    let filter = AuditFilter {
        user: q.user,
        workspace: q.workspace,
        since_ms,
        before_id: q.before,
        limit: q.limit,
    };
    ok(&s.store.audit_log(filter).await?)
}

async fn import(State(s): S, h: HeaderMap, b: Bytes) -> Answer {
    admin(&s.store, &h).await?;
    let text =
        std::str::from_utf8(&b).map_err(|_| ApiError::invalid("config", "not UTF-8 text"))?;
    let cfg: ControlConfig =
        toml::from_str(text).map_err(|e| ApiError::invalid("config", format!("{e}")))?;
    ok(&s.store.import(&cfg).await?)
}
