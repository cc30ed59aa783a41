//! The agent's HTTP API (port 4 on the tailnet), transport-independent: `router` builds
//! the axum app, `serve_connection` serves it on any `AsyncRead + AsyncWrite` stream (the
//! tunnel's `TcpStream` or a kernel socket), `serve` runs an accept loop on a kernel
//! listener for tests and tools. Endpoints are documented in `docs/protocol.md`.

mod confine;
mod edit;
mod files;
#[cfg(target_os = "linux")]
mod inline;
pub mod paths;
mod ports;
mod process;
mod sandbox;
mod warm;

pub use edit::{EditError, apply_edits};
pub use process::ProcessManager;
pub use sandbox::{CommandPolicy, CommandSandbox};

use super::types::{API_PREFIX, ApiError, CommandConfinement, Health};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Limits and locations.
#[derive(Debug, Clone)]
pub struct AgentApiConfig {
    /// When set, every path must resolve inside this directory.
    pub root: Option<PathBuf>,
    /// Default working directory for processes.
    pub workdir: PathBuf,
    /// Largest request body (write-file, JSON), bytes.
    pub body_limit: usize,
    /// `read-file` limit when none is given.
    pub read_default_limit: u64,
    /// Largest `read-file` limit accepted.
    pub read_max_limit: u64,
    /// `read-file-lines`: lines returned when no limit is given.
    pub lines_default: u64,
    /// `read-file-lines`: longest line returned before truncation.
    pub max_line_bytes: usize,
    /// `read-file-lines`: largest response.
    pub max_response_bytes: usize,
    /// Largest file `edit-files` reads or produces, bytes.
    pub edit_max_bytes: usize,
    /// Output kept per process (older output is dropped).
    pub process_output_cap: usize,
    /// Processes tracked at once (finished ones are pruned first).
    pub max_processes: usize,
    /// How commands are confined under `root` (Landlock unless opted out) and what else
    /// they may reach.
    pub commands: CommandPolicy,
    /// Foreground timeout when the request gives none.
    pub default_timeout: Duration,
    /// Largest foreground timeout and output long-poll accepted.
    pub max_wait: Duration,
    /// Keep a shell started ahead of the next command (unconfined agents on Linux; see
    /// `warm`). Saves starting `sh` on a short command's path.
    pub warm_shell: bool,
}

impl Default for AgentApiConfig {
    fn default() -> Self {
        Self {
            root: None,
            workdir: std::env::temp_dir(),
            body_limit: 16 << 20,
            read_default_limit: 1 << 20,
            read_max_limit: 64 << 20,
            lines_default: 2000,
            max_line_bytes: 4096,
            max_response_bytes: 1 << 20,
            edit_max_bytes: 64 << 20,
            process_output_cap: 1 << 20,
            max_processes: 256,
            commands: CommandPolicy::default(),
            default_timeout: Duration::from_secs(60),
            max_wait: Duration::from_secs(600),
            warm_shell: true,
        }
    }
}

/// The API's state: configuration and the process table. Cheap to clone. Dropping the
/// last clone (or [`AgentApi::shutdown`]) kills every process group it started.
#[derive(Debug, Clone)]
pub struct AgentApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: AgentApiConfig,
    procs: ProcessManager,
    started: std::time::Instant,
    hostname: String,
    /// 4xx answers, for [`Health`].
    rejected: std::sync::atomic::AtomicU64,
}

impl AgentApi {
    /// An API with the given configuration.
    pub fn new(cfg: AgentApiConfig) -> Self {
        let spawner = sandbox::Spawner::new(cfg.root.as_deref(), &cfg.commands);
        let procs = ProcessManager::new(
            cfg.process_output_cap,
            cfg.max_processes,
            spawner,
            cfg.warm_shell.then(|| cfg.workdir.clone()),
        );
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                cfg,
                procs,
                started: crate::runtime::clock::now(),
                hostname,
                rejected: Default::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AgentApiConfig {
        &self.inner.cfg
    }

    /// The process table.
    pub fn processes(&self) -> &ProcessManager {
        &self.inner.procs
    }

    /// Kills every running process group and stops the output readers.
    pub async fn shutdown(&self) {
        self.inner.procs.shutdown().await;
    }

    pub(crate) fn root(&self) -> Option<&Path> {
        self.inner.cfg.root.as_deref()
    }

    pub(crate) fn path(&self, raw: &str) -> Result<PathBuf, Error> {
        paths::resolve(self.root(), raw).map_err(path_error)
    }

    /// [`Self::path`] for a file that is then opened for reading through `confine`. When
    /// the kernel confines that open, a lexical check is enough, and the symlink walk of
    /// the path (a `readlink` per component, on the worker thread) is spared.
    pub(crate) fn path_to_open(&self, raw: &str) -> Result<PathBuf, Error> {
        if confine::kernel_confines(self.root()) {
            paths::resolve_lexically(self.root(), raw).map_err(path_error)
        } else {
            self.path(raw)
        }
    }
}

fn path_error(e: paths::PathError) -> Error {
    match e {
        paths::PathError::Invalid(m) => Error::bad_request(m),
        paths::PathError::Outside(_) => Error::new(StatusCode::FORBIDDEN, e.to_string()),
    }
}

/// An error response: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct Error {
    status: StatusCode,
    body: ApiError,
}

impl Error {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                message: message.into(),
                detail: None,
            },
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn detail(mut self, d: impl std::fmt::Display) -> Self {
        self.body.detail = Some(d.to_string());
        self
    }
    /// Maps a filesystem error on `path` to a status and message.
    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let (status, what) = match e.kind() {
            NotFound => (StatusCode::NOT_FOUND, "no such file or directory"),
            PermissionDenied => (StatusCode::FORBIDDEN, "permission denied"),
            IsADirectory => (StatusCode::BAD_REQUEST, "is a directory"),
            NotADirectory => (StatusCode::BAD_REQUEST, "not a directory"),
            AlreadyExists => (StatusCode::CONFLICT, "already exists"),
            StorageFull | QuotaExceeded => (StatusCode::INSUFFICIENT_STORAGE, "no space left"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "filesystem error"),
        };
        Self::new(status, format!("{}: {what}", path.display())).detail(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Maps an axum extractor rejection (bad query, bad or oversized body) to a JSON error
/// with the rejection's own status, except that JSON of the wrong shape is 400 like any
/// other bad input (422 means a file is not text).
pub(crate) fn rejection(r: impl IntoResponse + std::fmt::Display) -> Error {
    let message = r.to_string();
    let status = match r.into_response().status() {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    Error::new(status, message)
}

async fn health(axum::extract::State(api): axum::extract::State<AgentApi>) -> axum::Json<Health> {
    let (commands_started, commands_started_warm) = api.processes().started();
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: api.inner.started.elapsed().as_secs(),
        hostname: api.inner.hostname.clone(),
        rejected_requests: api
            .inner
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        commands: Some(CommandConfinement {
            mode: api.processes().sandbox().mode().into(),
            detail: api.processes().sandbox().to_string(),
        }),
        commands_started,
        commands_started_warm,
    })
}

async fn method_not_allowed() -> Error {
    Error::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

async fn not_found() -> Error {
    Error::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The API's routes.
pub fn router(api: AgentApi) -> Router {
    let body_limit = api.inner.cfg.body_limit;
    let p = |s: &str| format!("{API_PREFIX}{s}");
    Router::new()
        .route(&p("/health"), get(health))
        .route(&p("/version"), get(health))
        .route(&p("/ls"), get(files::ls))
        .route(&p("/read-file"), get(files::read_file))
        .route(&p("/read-file-lines"), get(files::read_file_lines))
        .route(&p("/write-file"), post(files::write_file))
        .route(&p("/edit-files"), post(edit::edit_files))
        .route(&p("/processes/start"), post(process::start))
        .route(&p("/processes/list"), get(process::list))
        .route(&p("/processes/{id}/output"), get(process::output))
        .route(&p("/processes/{id}/signal"), post(process::signal))
        .route(&p("/listening-ports"), get(ports::listening_ports))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            count_rejections,
        ))
        .with_state(api)
}

/// Refuses queries that do not decode to UTF-8, and counts every 4xx answer.
async fn count_rejections(
    axum::extract::State(api): axum::extract::State<AgentApi>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let bad_query = req.uri().query().is_some_and(|q| !paths::query_is_utf8(q));
    let r = if bad_query {
        Error::bad_request("the query string is not valid UTF-8 once decoded").into_response()
    } else {
        next.run(req).await
    };
    if r.status().is_client_error() {
        api.inner
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    r
}

/// How long a client may take to send a request's headers; also how long an idle
/// keep-alive connection stays open. The server's client sends its headers at once and
/// retries a request once on a pooled connection found closed, so this only bounds what
/// half-open or silent connections can hold.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request head (request line and headers) the agent API reads (431 beyond).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `app` on one connection (HTTP/1.1 with keep-alive) until the peer closes it.
pub async fn serve_connection<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(tower_oneshot(app, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "agent API connection ended");
    }
}

async fn tower_oneshot(app: Router, req: hyper::Request<hyper::body::Incoming>) -> Response {
    use tower::ServiceExt;
    match app.oneshot(req.map(axum::body::Body::new)).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// Serves the API on a kernel listener until `shutdown` (tests and tools; agents serve it
/// over the tunnel with [`serve_connection`]).
///
/// # Errors
/// Never in practice; accept errors are retried after a pause.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::services::hub::serve(listener, app, shutdown).await
}
