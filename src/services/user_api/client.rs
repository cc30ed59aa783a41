//! The client side of the user API: a kept-alive HTTP/1.1 connection to the server, the
//! control plane a client-side MCP server resolves workspaces through, and the server's
//! view of agent status.

use super::directory::{Directory, Lookup};
use super::{
    ErrorBody, ME_PATH, RESOLVE_PATH, STATUS_PATH, StatusRequest, StatusResponse,
    WORKSPACE_BY_ID_PREFIX, WORKSPACES_PATH, WorkspaceList,
};
use crate::runtime::clock;
use crate::runtime::tls::{ClientTls, TlsTarget};
use crate::services::control::{
    AgentChoice, BoxFuture, ControlError, ControlPlane, Principal, ResolveError, ResolvedAgent,
    User, Workspace,
};
use crate::services::mcp::AgentStatus;
use crate::services::public_url::BaseUrl;
use crate::wire::addr::NodeId;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A request to the server may take this long, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: usize = 4 << 20;

/// Why a request to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached (connection, TLS or timeout).
    #[error("the server at {url} cannot be reached: {reason}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message} ({status})")]
    Refused {
        /// The HTTP status.
        status: http::StatusCode,
        /// The error kind (`unauthorized`, `not_found`, …).
        kind: String,
        /// The server's sentence.
        message: String,
        /// The whole answer, for callers that map it back to a typed error.
        body: Box<ErrorBody>,
    },
    /// The answer was not what the API defines.
    #[error("the server's answer to {path} is not valid: {reason}")]
    BadAnswer {
        /// The request path.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

impl ApiError {
    /// Whether the token was refused (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if *status == http::StatusCode::UNAUTHORIZED)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A client of the server's HTTP API with one kept-alive connection (reopened when the
/// server closed it), so repeated requests cost one round trip each.
#[derive(Debug)]
pub struct ServerClient {
    base: BaseUrl,
    url: String,
    token: String,
    tls: ClientTls,
    conn: tokio::sync::Mutex<Option<Sender>>,
}

impl ServerClient {
    /// A client of the server at `base`, presenting `token`.
    pub fn new(base: BaseUrl, token: impl Into<String>, tls: ClientTls) -> Self {
        Self {
            url: base.to_url(),
            base,
            token: token.into(),
            tls,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ApiError {
        ApiError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<Sender, ApiError> {
        let target = self
            .base
            .tls
            .then(|| TlsTarget::named(self.base.host.clone()));
        let stream = self
            .tls
            .dial(&self.base.host, self.base.port, target.as_ref())
            .await
            .map_err(|e| self.unreachable(e))?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(e))?;
        // The connection task ends when the sender is dropped or the server closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request and reads the whole answer, reusing the connection when it is
    /// still open. A request on a connection the server had closed is retried once on a
    /// fresh one (it never reached the server).
    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Bytes), ApiError> {
        let work = async {
            let mut slot = self.conn.lock().await;
            for attempt in 0..2 {
                let mut send = match slot.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => self.connect().await?,
                };
                if send.ready().await.is_err() {
                    continue;
                }
                let mut req = http::Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header(http::header::HOST, self.authority())
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", self.token),
                    )
                    .header(http::header::ACCEPT, "application/json");
                if body.is_some() {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                }
                let req = req
                    .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                    .map_err(|e| self.unreachable(e))?;
                let resp = match send.send_request(req).await {
                    Ok(r) => r,
                    Err(e) if attempt == 0 && e.is_canceled() => continue,
                    Err(e) => return Err(self.unreachable(e)),
                };
                let status = resp.status();
                let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| self.unreachable(format!("reading the answer: {e}")))?
                    .to_bytes();
                *slot = Some(send);
                return Ok((status, bytes));
            }
            Err(self.unreachable("the connection closed"))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
    }

    fn authority(&self) -> String {
        let host = if self.base.host.contains(':') {
            format!("[{}]", self.base.host)
        } else {
            self.base.host.clone()
        };
        let default = if self.base.tls { 443 } else { 80 };
        if self.base.port == default {
            host
        } else {
            format!("{host}:{}", self.base.port)
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        if !status.is_success() {
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
                ErrorBody::new("http", format!("the server answered {status}: {text}"))
            });
            return Err(ApiError::Refused {
                status,
                kind: body.error.clone(),
                message: body.message.clone(),
                body: Box::new(body),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadAnswer {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET path`, decoded.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.json(http::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, decoded.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::BadAnswer {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        self.json(http::Method::POST, path, Some(body)).await
    }

    /// Who the token belongs to.
    ///
    /// # Errors
    /// [`ApiError`]; 401 for a token the server does not know.
    pub async fn me(&self) -> Result<User, ApiError> {
        self.get(ME_PATH).await
    }
}

/// `%`-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long a resolution is reused without asking the server again. Workspaces change
/// rarely; a revoked share still fails at the coordinator, which authorizes every tunnel.
pub const RESOLVE_TTL: Duration = Duration::from_secs(30);
/// Resolutions kept at most.
const RESOLVE_CACHE: usize = 1024;

/// The control plane as a client sees it: the logged-in user, and the server's answers,
/// resolutions cached for [`RESOLVE_TTL`] so a warm tool call asks the server nothing,
/// and the user's workspace listing (a [`Directory`]) so a first call usually does not
/// either.
#[derive(Debug)]
pub struct RemoteControlPlane {
    server: Arc<ServerClient>,
    me: User,
    cache: std::sync::Mutex<HashMap<String, (Instant, ResolvedAgent)>>,
    directory: Arc<std::sync::Mutex<Directory>>,
    /// The listing refresh under way, if any: aborted when the plane goes.
    refresh: std::sync::Mutex<Option<tokio_util::task::AbortOnDropHandle<()>>>,
    caching: bool,
}

impl RemoteControlPlane {
    /// A control plane for the user `me` (as [`ServerClient::me`] answered).
    pub fn new(server: Arc<ServerClient>, me: User) -> Self {
        Self {
            server,
            me,
            cache: std::sync::Mutex::new(HashMap::new()),
            directory: Arc::new(std::sync::Mutex::new(Directory::new())),
            refresh: std::sync::Mutex::new(None),
            caching: true,
        }
    }

    /// Every resolution asked of the server: no cache, no directory (`--per-call`, the
    /// benchmark's stand-in for the reference's per-call path).
    pub fn uncached(mut self) -> Self {
        self.caching = false;
        self
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the user's workspaces in the background unless a fresh listing is held or a
    /// refresh is under way. The task ends with its request (at most [`REQUEST_TIMEOUT`])
    /// or with the plane.
    pub fn refresh_directory(&self) {
        if !self.caching || !self.directory().claim_refresh(clock::now()) {
            return;
        }
        let server = self.server.clone();
        let directory = self.directory.clone();
        let task = tokio::spawn(async move {
            let got = server.get::<WorkspaceList>(WORKSPACES_PATH).await;
            let mut d = directory.lock().unwrap_or_else(|e| e.into_inner());
            match got {
                Ok(list) => d.store(list.workspaces, clock::now()),
                Err(e) => {
                    tracing::debug!(error = %e, "listing workspaces");
                    d.refresh_failed();
                }
            }
        });
        // `claim_refresh` admits one refresh at a time: a handle still here is finished, or
        // was given up as stuck, and replacing it aborts it.
        *self.refresh.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio_util::task::AbortOnDropHandle::new(task));
    }

    /// Lookups the directory answered, and those it sent to the server.
    pub fn directory_counts(&self) -> (u64, u64) {
        self.directory().counts()
    }

    fn cached(&self, key: &str) -> Option<ResolvedAgent> {
        let now = clock::now();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < RESOLVE_TTL)
            .map(|(_, r)| r.clone())
    }

    fn remember(&self, key: String, r: &ResolvedAgent) {
        if !self.caching {
            return;
        }
        let now = clock::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= RESOLVE_CACHE {
            cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < RESOLVE_TTL);
            if cache.len() >= RESOLVE_CACHE {
                cache.clear();
            }
        }
        cache.insert(key, (now, r.clone()));
    }

    /// Forgets every cached resolution (after a call failed in a way a stale answer
    /// could explain).
    pub fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    async fn resolve_at(
        &self,
        key: String,
        path: String,
        listed: impl FnOnce(&mut Directory, Instant) -> Lookup,
    ) -> Result<ResolvedAgent, ResolveError> {
        if self.caching {
            if let Some(r) = self.cached(&key) {
                return Ok(r);
            }
            let found = listed(&mut self.directory(), clock::now());
            self.refresh_directory();
            if let Lookup::Hit(r) = found {
                tracing::trace!(%key, agent = %r.agent.id, "resolved from the workspace listing");
                return Ok(r);
            }
        }
        tracing::debug!(%key, "resolving at the server");
        match self.server.get::<ResolvedAgent>(&path).await {
            Ok(r) => {
                self.remember(key, &r);
                Ok(r)
            }
            Err(ApiError::Refused { body, .. }) => Err(ResolveError::from(*body)),
            Err(e) => Err(ResolveError::Unavailable(ControlError(e.to_string()))),
        }
    }
}

fn unavailable(e: ApiError) -> ControlError {
    ControlError(e.to_string())
}

impl ControlPlane for RemoteControlPlane {
    /// Only the logged-in user's own token: the local endpoint (`agentwire mcp --http`)
    /// asks for the same token the server knows this user by.
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, ControlError>> {
        let ok = constant_time_eq(token.as_bytes(), self.server.token.as_bytes());
        let me = self.me.clone();
        Box::pin(async move { Ok(ok.then_some(Principal::User(me))) })
    }

    fn list_workspaces<'a>(
        &'a self,
        _user: &'a User,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Workspace>, ControlError>> {
        Box::pin(async move {
            let path = match owner {
                Some(o) => format!("{WORKSPACES_PATH}?owner={}", encode(o)),
                None => WORKSPACES_PATH.to_string(),
            };
            let list: WorkspaceList = self.server.get(&path).await.map_err(unavailable)?;
            if owner.is_none() {
                self.directory()
                    .store(list.workspaces.clone(), clock::now());
            }
            Ok(list.workspaces)
        })
    }

    fn resolve_workspace<'a>(
        &'a self,
        _user: &'a User,
        spec: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>> {
        Box::pin(async move {
            // Checked here too, so a malformed spec costs no request.
            let parsed = crate::services::control::WorkspaceSpec::parse(spec)?;
            let spec = spec.trim();
            self.resolve_at(
                format!("spec:{spec}"),
                format!("{RESOLVE_PATH}?spec={}", encode(spec)),
                |d, now| d.resolve_spec(&self.me, &parsed, now),
            )
            .await
        })
    }

    fn resolve_workspace_id<'a>(
        &'a self,
        _user: &'a User,
        id: Uuid,
        choice: AgentChoice<'a>,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>> {
        Box::pin(async move {
            let (key, query) = match choice {
                AgentChoice::Named(a) => (format!("id:{id}.{a}"), format!("?agent={}", encode(a))),
                AgentChoice::Only | AgentChoice::Default => (format!("id:{id}"), String::new()),
            };
            let r = self
                .resolve_at(
                    key,
                    format!("{WORKSPACE_BY_ID_PREFIX}{id}{query}"),
                    |d, now| d.resolve_id(id, choice, now),
                )
                .await?;
            if choice == AgentChoice::Only && r.workspace.agents.len() > 1 {
                return Err(ResolveError::AmbiguousAgent {
                    workspace: r.workspace.full_name(),
                    agents: r.workspace.agents.iter().map(|a| a.name.clone()).collect(),
                });
            }
            Ok(r)
        })
    }

    /// The server decides at the coordinator; a client never authorizes anyone.
    fn may_use_agent<'a>(&'a self, _p: &'a Principal, _agent: NodeId) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }

    fn workspace_by_id<'a>(
        &'a self,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(async move {
            let me = self.me.clone();
            match self
                .resolve_workspace_id(&me, id, AgentChoice::Default)
                .await
            {
                Ok(r) => Ok(Some(r.workspace)),
                Err(ResolveError::Unavailable(e)) => Err(e),
                Err(_) => Ok(None),
            }
        })
    }

    fn workspace_by_agent<'a>(
        &'a self,
        _agent_id: NodeId,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(async { Ok(None) })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's view of agents' status (presence at its coordinator).
///
/// # Errors
/// [`ApiError`].
pub async fn server_status(
    server: &ServerClient,
    agents: Vec<NodeId>,
) -> Result<HashMap<NodeId, AgentStatus>, ApiError> {
    let mut out = HashMap::new();
    for chunk in agents.chunks(super::MAX_STATUS_AGENTS) {
        let r: StatusResponse = server
            .post(
                STATUS_PATH,
                &StatusRequest {
                    agents: chunk.to_vec(),
                },
            )
            .await?;
        out.extend(r.agents);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("alice/dev.main"), "alice%2Fdev.main");
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
