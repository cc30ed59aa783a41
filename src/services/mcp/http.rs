//! HTTP routes: the MCP endpoint (auth, toolset, one rmcp service per request) and the
//! RFC 9728 protected-resource metadata.
//!
//! Order of checks on the endpoint: method (405) → bearer token (401/503) → toolset (400)
//! → rmcp: Host (403), Origin (403), Accept (406), Content-Type (415), body size (413),
//! JSON-RPC shape and protocol headers (400, with a JSON-RPC parse or invalid-request
//! error when the body is not a JSON-RPC message), then the request itself.

use super::McpState;
use super::cancel::CancelRegistry;
use super::front::{Front, Toolset};
use crate::services::control::{Principal, User};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;

/// The MCP endpoint.
pub const MCP_PATH: &str = "/mcp";
/// The same endpoint under the reference system's path.
pub const MCP_PATH_EXPERIMENTAL: &str = "/api/experimental/mcp/http";
/// RFC 9728 protected-resource metadata (also served with each endpoint path appended).
pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// Largest oversized body read (and discarded) so that the client sees the 413.
const DRAIN_MAX: u64 = 64 << 20;

/// How long a client may take to send a request body (headers have hyper's own timeout).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug)]
struct Shared {
    state: McpState,
    /// rmcp's transport settings, built once (hosts, origins, limits).
    http: StreamableHttpServerConfig,
    /// `WWW-Authenticate` for 401s, per endpoint path (each names its own metadata).
    challenges: Vec<(&'static str, HeaderValue)>,
    /// In-flight tool calls a legacy `notifications/cancelled` can reach.
    cancels: Arc<CancelRegistry>,
}

/// The MCP routes: [`MCP_PATH`], [`MCP_PATH_EXPERIMENTAL`] and the metadata documents.
/// Mount them at the root of a server whose address is in `state.config`.
pub fn router(state: McpState) -> Router {
    if let Some(user) = state.config.dev_user() {
        tracing::warn!(
            user,
            "MCP endpoint serves requests WITHOUT authentication as user {user}; \
             allow_unauthenticated is for local test suites only"
        );
    } else if state.config.allow_unauthenticated.is_some() {
        tracing::warn!("allow_unauthenticated ignored: the listen address is not loopback");
    }
    let cfg = &state.config;
    let mut hosts = cfg.effective_hosts();
    if hosts.is_empty() {
        // An empty list would disable Host validation altogether.
        hosts = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    }
    let http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)))
        .with_sse_retry(None)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(cfg.effective_origins())
        .enforce_origin_validation()
        .with_max_request_body_bytes(cfg.limits.max_body_bytes);
    // Each endpoint's challenge names the metadata document for that endpoint
    // (RFC 9728 §3.1: the well-known path with the resource's path appended), so a client
    // asks for a token for exactly the endpoint it called.
    let scope = if state.oauth.is_some() {
        format!(", scope=\"{}\"", crate::proto::oauth::SCOPE_MCP)
    } else {
        String::new()
    };
    let challenges = [MCP_PATH, MCP_PATH_EXPERIMENTAL]
        .into_iter()
        .map(|path| {
            let metadata_url = format!("{}{PROTECTED_RESOURCE_PATH}{path}", cfg.base_url());
            let v = HeaderValue::from_str(&format!(
                "Bearer realm=\"agentwire\", resource_metadata=\"{metadata_url}\"{scope}"
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"agentwire\""));
            (path, v)
        })
        .collect();
    let shared = Arc::new(Shared {
        state,
        http,
        challenges,
        cancels: Arc::default(),
    });
    Router::new()
        .route(MCP_PATH, any(endpoint))
        .route(MCP_PATH_EXPERIMENTAL, any(endpoint))
        .route(PROTECTED_RESOURCE_PATH, get(metadata_root))
        .route(
            &format!("{PROTECTED_RESOURCE_PATH}{MCP_PATH}"),
            get(metadata_mcp),
        )
        .route(
            &format!("{PROTECTED_RESOURCE_PATH}{MCP_PATH_EXPERIMENTAL}"),
            get(metadata_experimental),
        )
        .with_state(shared)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

async fn endpoint(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let r = answer(&s, req).await;
    s.state.stats.response(r.status().as_u16());
    r
}

async fn answer(s: &Shared, req: Request) -> Response {
    if req.method() != Method::POST {
        // Stateless server: no standalone SSE stream (GET), no sessions to end (DELETE).
        let mut r = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "this MCP endpoint accepts POST only",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let user = match authenticate(s, req.uri().path(), req.headers()).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let toolset = match Toolset::parse(toolset_param(req.uri()).as_deref()) {
        Ok(t) => t,
        Err(bad) => {
            let shown: String = bad.chars().take(100).collect();
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid toolset: {shown}"),
            );
        }
    };
    // Read the (bounded) body once to route cancellations and learn the call's id, then
    // hand it on unchanged.
    let (parts, body) = req.into_parts();
    let limit = s.state.config.limits.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        // Many clients (urllib, for one) send the whole body before reading any answer
        // and never see a refusal sent mid-upload; read and discard a moderately
        // oversized body so they do. An absurd one is refused at once.
        if n <= DRAIN_MAX {
            let drain = async {
                let mut body = body;
                while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
            };
            let _ = tokio::time::timeout(BODY_READ_TIMEOUT, drain).await;
        }
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is larger than {limit} bytes"),
        );
    }
    let read = axum::body::to_bytes(body, limit);
    let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, read).await else {
        return json_error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        );
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) if too_large(&e) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body is larger than {limit} bytes"),
            );
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            );
        }
    };
    let call_id = match peek(&bytes) {
        Peek::Cancelled(id) => {
            if s.cancels.cancel(&user.name, &id) {
                tracing::debug!(user = %user.name, request = %id, "tool call cancelled");
            }
            None
        }
        Peek::ToolCall(id) => Some(id),
        Peek::Other => None,
    };
    let declared_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    let slot = call_id.map(|id| (s.cancels.clone(), id));
    let front = Front::new(s.state.clone(), user, toolset, slot);
    let service = StreamableHttpService::new(
        move || Ok(front.clone()),
        Arc::new(NeverSessionManager::default()),
        s.http.clone(),
    );
    let r = service.handle(req).await.map(Body::new);
    // rmcp answers a body it cannot decode with 415 and plain text; for a body declared as
    // JSON the caller deserves what JSON-RPC prescribes: 400 and a parse or invalid-request
    // error it can read.
    if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE && declared_json {
        return undecodable(&bytes);
    }
    r
}

/// 400 with a JSON-RPC error (no id) for a body that is not a JSON-RPC message.
fn undecodable(body: &[u8]) -> Response {
    let (code, message) = match serde_json::from_slice::<serde_json::Value>(body) {
        Err(e) => (-32700, format!("Parse error: {e}")),
        Ok(_) => (
            -32600,
            "Invalid Request: not a single JSON-RPC 2.0 request, notification or response"
                .to_string(),
        ),
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

/// Whether a body read failed on the size limit (rather than a cut-off or bad framing).
fn too_large(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What a request body is, as far as the endpoint itself cares.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// `notifications/cancelled` for this JSON-RPC id (as JSON text).
    Cancelled(String),
    /// A `tools/call` with this id.
    ToolCall(String),
    /// Anything else, including malformed JSON (rmcp answers it).
    Other,
}

/// The first pass skips `params` without building it: a tool call's arguments can be a
/// whole file to write, and rmcp parses them again anyway. Only a cancellation, small and
/// rare, is read a second time for its `requestId`.
pub(crate) fn peek(body: &[u8]) -> Peek {
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
        id: Option<serde_json::Value>,
        params: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Cancel {
        params: serde_json::Value,
    }
    let Ok(m) = serde_json::from_slice::<Msg>(body) else {
        return Peek::Other;
    };
    match (m.method.as_deref(), m.id, m.params) {
        (Some("notifications/cancelled"), None, Some(_)) => serde_json::from_slice::<Cancel>(body)
            .map_or(Peek::Other, |c| {
                c.params
                    .get("requestId")
                    .filter(|id| id.is_string() || id.is_number())
                    .map_or(Peek::Other, |id| Peek::Cancelled(id.to_string()))
            }),
        (Some("tools/call"), Some(id), _) if id.is_string() || id.is_number() => {
            Peek::ToolCall(id.to_string())
        }
        _ => Peek::Other,
    }
}

/// The `toolset` query parameter (the last one if repeated).
fn toolset_param(uri: &axum::http::Uri) -> Option<String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .rev()
        .find(|(k, _)| k == "toolset")
        .map(|(_, v)| v)
}

pub(crate) use crate::services::control::bearer;

async fn authenticate(s: &Shared, path: &str, headers: &HeaderMap) -> Result<User, Response> {
    let unauthorized = |error, message: &str| unauthorized(s, path, error, message);
    let Some(token) = bearer(headers) else {
        if let Some(name) = s.state.config.dev_user() {
            tracing::warn!(
                user = name,
                "serving an unauthenticated MCP request (allow_unauthenticated)"
            );
            return Ok(User {
                name: name.to_string(),
                admin: false,
            });
        }
        return Err(unauthorized(None, "missing bearer token"));
    };
    if let Some(oauth) = &s.state.oauth {
        use crate::services::oauth::AccessCheck;
        match oauth.verify_access(token).await {
            Ok(AccessCheck::NotOurs) => {}
            Ok(AccessCheck::User(u)) => return Ok(u),
            Ok(AccessCheck::Refused(why)) => {
                tracing::debug!(why, "OAuth access token refused on the MCP endpoint");
                return Err(unauthorized(Some("invalid_token"), why));
            }
            Err(e) => {
                tracing::warn!(error = %e, "OAuth store unavailable for MCP authentication");
                return Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication is unavailable; try again later",
                ));
            }
        }
    }
    match s.state.control.authenticate(token).await {
        Ok(Some(Principal::User(u))) => Ok(u),
        Ok(Some(p)) => {
            tracing::debug!(principal = %p.describe(), "non-user token on the MCP endpoint");
            Err(unauthorized(
                Some("invalid_token"),
                "this endpoint takes a user token",
            ))
        }
        Ok(None) => Err(unauthorized(Some("invalid_token"), "unknown token")),
        Err(e) => {
            tracing::warn!(error = %e, "control plane unavailable for MCP authentication");
            Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication is unavailable; try again later",
            ))
        }
    }
}

fn unauthorized(s: &Shared, path: &str, error: Option<&str>, message: &str) -> Response {
    let mut r = json_error(StatusCode::UNAUTHORIZED, message);
    let challenge = s
        .challenges
        .iter()
        .find(|(p, _)| *p == path)
        .or(s.challenges.first())
        .map_or_else(|| HeaderValue::from_static("Bearer"), |(_, v)| v.clone());
    let value = match error {
        None => challenge,
        Some(code) => {
            let base = challenge.to_str().unwrap_or("Bearer realm=\"agentwire\"");
            let with = format!("{base}, error=\"{code}\", error_description=\"{message}\"");
            HeaderValue::from_str(&with).unwrap_or(challenge)
        }
    };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    r
}

/// The metadata document for `resource`. With the OAuth authorization server on, it is
/// listed (with its scope); without it, callers present static bearer tokens issued by the
/// operator and `authorization_servers` is absent.
fn metadata(s: &Shared, path: &str) -> Response {
    let base = s.state.config.base_url();
    let mut doc = serde_json::json!({
        "resource": format!("{base}{path}"),
        "bearer_methods_supported": ["header"],
        "resource_name": "agentwire MCP",
    });
    if let Some(oauth) = &s.state.oauth {
        for (k, v) in crate::proto::oauth::discovery::resource_fields(oauth.settings()) {
            doc[k] = v;
        }
    }
    let mut r = axum::Json(doc).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

async fn metadata_root(State(s): State<Arc<Shared>>) -> Response {
    metadata(&s, "")
}

async fn metadata_mcp(State(s): State<Arc<Shared>>) -> Response {
    metadata(&s, MCP_PATH)
}

async fn metadata_experimental(State(s): State<Arc<Shared>>) -> Response {
    metadata(&s, MCP_PATH_EXPERIMENTAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearer ")), None);
        assert_eq!(bearer(&h("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn peeking() {
        let p = |s: &str| peek(s.as_bytes());
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#),
            Peek::Cancelled("3".into())
        );
        assert_eq!(
            p(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{}}"#),
            Peek::ToolCall("\"a\"".into())
        );
        // Params of any shape are skipped, escapes in the method name still read.
        assert_eq!(
            p(
                r#"{"id":7,"method":"tools\/call","params":{"arguments":{"content":"x\ny","n":[1,{}]}}}"#
            ),
            Peek::ToolCall("7".into())
        );
        assert_eq!(
            p(r#"{"id":7,"method":"tools/call","params":"not an object"}"#),
            Peek::ToolCall("7".into())
        );
        assert_eq!(
            p(r#"{"method":"notifications/cancelled","params":{"reason":"x","requestId":"r-1"}}"#),
            Peek::Cancelled("\"r-1\"".into())
        );
        for other in [
            "",
            "{",
            "[]",
            r#"{"method":"tools/list","id":1}"#,
            r#"{"method":"notifications/cancelled","params":{"requestId":{}}}"#,
            r#"{"method":"tools/call","id":null}"#,
        ] {
            assert_eq!(p(other), Peek::Other, "{other}");
        }
    }

    #[test]
    fn toolset_from_query() {
        let u = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(toolset_param(&u("/mcp")), None);
        assert_eq!(
            toolset_param(&u("/mcp?toolset=chatgpt")).as_deref(),
            Some("chatgpt")
        );
        assert_eq!(
            toolset_param(&u("/mcp?a=1&toolset=x%20y")).as_deref(),
            Some("x y")
        );
    }
}
