//! A typed client for the agent API.
//!
//! Every connection comes from an [`AgentDialer`] — over the tailnet that is an
//! [`AgentConn`], whose dials are pinned to one agent's address, here to port 4 — so the
//! client cannot be pointed anywhere else. Redirects are never followed: a malicious agent
//! must not be able to turn the caller into a deputy against another agent. Idle
//! keep-alive connections are kept in an [`IdlePool`] (bounded) and dropped on any error;
//! [`super::pool::AgentPools`] shares one pool among every client of a destination. The
//! pool also holds the destination's [`super::budget::ReplyBudget`]: replies are read frame by frame and
//! a destination that keeps the server reading beyond its rate waits between frames.

pub use super::pool::{ADMISSION_WAIT_MAX, IdlePool, LARGE_READS, PacingCounts, ReplyPacing};
pub use super::tenant::{TENANT_LARGE_READS, TenantReads, TenantShares};
use crate::runtime::tailnet::AgentConn;
use crate::wire::addr::AGENT_API_PORT;
use crate::wire::agent_api::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest JSON response accepted.
const JSON_LIMIT: usize = 16 << 20;
/// How long a dial to the agent API over the tailnet may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an agent call failed.
#[derive(Debug, Error)]
pub enum AgentClientError {
    /// Could not open a connection to the agent.
    #[error("cannot connect to the agent: {0}")]
    Dial(std::io::Error),
    /// The HTTP exchange broke.
    #[error("HTTP exchange with the agent failed: {0}")]
    Http(String),
    /// The agent answered with an error status.
    #[error("{message} (agent answered {code})")]
    Status {
        /// HTTP status.
        code: u16,
        /// The agent's message.
        message: String,
    },
    /// The answer did not decode.
    #[error("cannot decode the agent's answer: {0}")]
    Decode(String),
    /// The agent answered with a redirect, which is never followed.
    #[error("agent answered with a redirect ({status} to {location:?}), which is never followed")]
    Redirect {
        /// HTTP status.
        status: u16,
        /// Where it pointed.
        location: String,
    },
    /// The answer exceeded the size limit.
    #[error("agent answer too large")]
    TooLarge,
    /// The answer's body did not announce its length. The agent API always does, so a
    /// reply without one is refused unread, as if over every size limit.
    #[error("the agent's answer did not announce its length")]
    Unannounced,
    /// The call took longer than the client's timeout.
    #[error("agent request timed out")]
    Timeout,
    /// The agent broke a reply limit lately, and calls to it are admitted slowly.
    #[error(
        "the agent's recent replies broke the size limit, so calls to it are slowed for a while; \
         try again in {:.1} s", retry_after.as_secs_f64()
    )]
    Probation {
        /// When a call would be admitted.
        retry_after: Duration,
    },
}

impl AgentClientError {
    /// Whether the exchange itself broke (as opposed to the agent answering an error).
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Dial(_) | Self::Http(_) | Self::Timeout)
    }
}

/// A byte stream to the agent.
pub trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AgentStream for T {}

/// Opens connections to one agent's API.
pub trait AgentDialer: Send + Sync + std::fmt::Debug + 'static {
    /// A new connection to the agent's API.
    fn dial(&self) -> BoxFuture<'static, std::io::Result<Box<dyn AgentStream>>>;
}

/// Dials a kernel TCP address: for tests and local tools.
#[derive(Debug, Clone, Copy)]
pub struct TcpDialer(pub SocketAddr);

impl AgentDialer for TcpDialer {
    fn dial(&self) -> BoxFuture<'static, std::io::Result<Box<dyn AgentStream>>> {
        let addr = self.0;
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as Box<dyn AgentStream>)
        })
    }
}

/// A handle dials the agent API (port 4) of its own agent, and holds its lease while a
/// client dialling through it lives.
impl AgentDialer for AgentConn {
    fn dial(&self) -> BoxFuture<'static, std::io::Result<Box<dyn AgentStream>>> {
        let conn = self.clone();
        Box::pin(async move {
            let s = tokio::time::timeout(DIAL_TIMEOUT, conn.dial_tcp(AGENT_API_PORT))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting to the agent API timed out",
                    )
                })??;
            Ok(Box::new(s) as Box<dyn AgentStream>)
        })
    }
}

pub(super) type Sender = SendRequest<Full<Bytes>>;

/// The typed client. Cheap to clone; clones share the dialer (and so any lease it holds)
/// and the idle pool.
#[derive(Clone)]
pub struct AgentClient {
    dialer: Arc<dyn AgentDialer>,
    pool: Arc<IdlePool>,
    tenant: Option<Arc<TenantReads>>,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("dialer", &self.dialer)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl AgentClient {
    /// A client dialling through `dialer`, with a pool of its own and a 10-minute
    /// per-call safety timeout.
    pub fn new(dialer: Arc<dyn AgentDialer>) -> Self {
        Self::pooled(dialer, Arc::default())
    }

    /// A client dialling through `dialer` that keeps idle connections in `pool`, which
    /// other clients of the same agent may share.
    pub fn pooled(dialer: Arc<dyn AgentDialer>, pool: Arc<IdlePool>) -> Self {
        Self {
            dialer,
            pool,
            tenant: None,
            timeout: Duration::from_secs(600),
        }
    }

    /// Counts this client's large file reads in `tenant`'s share too, beside its
    /// destination's (see [`super::tenant`]).
    #[must_use]
    pub fn with_tenant(mut self, tenant: Arc<TenantReads>) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// A client of `conn`'s agent with a pool of its own; it holds a lease on the agent
    /// until it and its clones are dropped. Share pools with [`super::pool::AgentPools`].
    pub fn over(conn: &AgentConn) -> Self {
        Self::new(Arc::new(conn.clone()))
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    async fn connect(&self) -> Result<Sender, AgentClientError> {
        let stream = self.dialer.dial().await.map_err(AgentClientError::Dial)?;
        tracing::trace!("new connection to the agent's API");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AgentClientError::Http(e.to_string()))?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection closed");
            }
        });
        Ok(sender)
    }

    /// Reads a reply's body, at most `limit` bytes, within the destination's budget. A
    /// body announced longer than `limit`, or not announced at all, is refused before a
    /// byte of it is read.
    async fn read_body(
        &self,
        mut body: hyper::body::Incoming,
        limit: usize,
    ) -> Result<Bytes, AgentClientError> {
        use hyper::body::Body;
        // Every agent API reply has a known length (a content length, or none at all for
        // an empty body). A chunked or close-delimited body could only end at the limit,
        // after the server had read and paid for all of it: a hostile agent's way of
        // making every call cost a whole limit's worth of reading.
        let announced = body.size_hint();
        if announced.upper().is_none() {
            self.pool.broken();
            return Err(AgentClientError::Unannounced);
        }
        if announced.lower() > limit as u64 {
            self.pool.broken();
            return Err(AgentClientError::TooLarge);
        }
        let mut first: Option<Bytes> = None;
        let mut rest = bytes::BytesMut::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| AgentClientError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len += data.len();
            if len > limit {
                self.pool.broken();
                return Err(AgentClientError::TooLarge);
            }
            let wait = self.pool.charge(data.len());
            // Most replies are one frame: keep it without a copy.
            match &first {
                None => first = Some(data),
                Some(f) => {
                    if rest.is_empty() {
                        rest.reserve(len);
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&data);
                }
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        })
    }

    /// Sends one request; returns status, headers and the body (up to `limit` bytes). A
    /// `file_read` waits for one of the destination's [`LARGE_READS`] (and a place in
    /// the client's tenant share, if any) while it answers large.
    async fn call(
        &self,
        method: Method,
        path_and_query: String,
        content_type: Option<&'static str>,
        body: Bytes,
        limit: usize,
        file_read: bool,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), AgentClientError> {
        let fut = async {
            self.pool
                .admit()
                .await
                .map_err(|retry_after| AgentClientError::Probation { retry_after })?;
            let _large_read = if file_read {
                self.pool.large_read(self.tenant.as_deref()).await
            } else {
                None
            };
            // A pooled connection may have been closed by the agent since; retry once on
            // a fresh one if the request never got out.
            for attempt in 0..2 {
                let mut sender = match self.pool.take() {
                    Some(s) if attempt == 0 => s,
                    _ => self.connect().await?,
                };
                if sender.ready().await.is_err() {
                    continue;
                }
                let mut b = Request::builder()
                    .method(method.clone())
                    .uri(&path_and_query)
                    .header(http::header::HOST, "agent");
                if let Some(ct) = content_type {
                    b = b.header(http::header::CONTENT_TYPE, ct);
                }
                let req = b
                    .body(Full::new(body.clone()))
                    .map_err(|e| AgentClientError::Http(e.to_string()))?;
                let resp = match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(e) if attempt == 0 && e.is_canceled() => continue,
                    Err(e) => return Err(AgentClientError::Http(e.to_string())),
                };
                let status = resp.status();
                let headers = resp.headers().clone();
                let bytes = self.read_body(resp.into_body(), limit).await?;
                self.pool.replied(bytes.len());
                self.pool.put(sender);
                return Ok((status, headers, bytes));
            }
            Err(AgentClientError::Http(
                "connection closed before the request was sent".into(),
            ))
        };
        let (status, headers, bytes) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| AgentClientError::Timeout)??;
        if status.is_redirection() {
            let location = headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Err(AgentClientError::Redirect {
                status: status.as_u16(),
                location,
            });
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| match e.detail {
                    Some(d) => format!("{} ({d})", e.message),
                    None => e.message,
                })
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            return Err(AgentClientError::Status {
                code: status.as_u16(),
                message,
            });
        }
        Ok((status, headers, bytes))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        pq: String,
    ) -> Result<T, AgentClientError> {
        let (_, _, b) = self
            .call(Method::GET, pq, None, Bytes::new(), JSON_LIMIT, false)
            .await?;
        serde_json::from_slice(&b).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        pq: String,
        body: &B,
    ) -> Result<T, AgentClientError> {
        let body = serde_json::to_vec(body).map_err(|e| AgentClientError::Decode(e.to_string()))?;
        let (_, _, b) = self
            .call(
                Method::POST,
                pq,
                Some("application/json"),
                body.into(),
                JSON_LIMIT,
                false,
            )
            .await?;
        serde_json::from_slice(&b).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    /// `GET /api/v0/health`.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn health(&self) -> Result<Health, AgentClientError> {
        self.get_json(format!("{API_PREFIX}/health")).await
    }

    /// Lists a directory.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn ls(&self, path: &str) -> Result<LsResponse, AgentClientError> {
        self.get_json(format!("{API_PREFIX}/ls?path={}", enc(path)))
            .await
    }

    /// Reads up to `limit` bytes (agent default 1 MiB) from `offset`.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<(ReadFileMeta, Bytes), AgentClientError> {
        let mut pq = format!("{API_PREFIX}/read-file?path={}&offset={offset}", enc(path));
        if let Some(l) = limit {
            pq.push_str(&format!("&limit={l}"));
        }
        let cap = limit.map_or(64 << 20, |l| l as usize).saturating_add(1);
        let (_, h, body) = self
            .call(Method::GET, pq, None, Bytes::new(), cap, true)
            .await?;
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mime_type = h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        Ok((
            ReadFileMeta {
                size: num(HEADER_FILE_SIZE),
                offset: num(HEADER_OFFSET),
                mime_type,
            },
            body,
        ))
    }

    /// Reads lines.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn read_file_lines(
        &self,
        path: &str,
        line_offset: u64,
        line_limit: Option<u64>,
    ) -> Result<ReadLinesResponse, AgentClientError> {
        let mut pq = format!(
            "{API_PREFIX}/read-file-lines?path={}&line_offset={line_offset}",
            enc(path)
        );
        if let Some(l) = line_limit {
            pq.push_str(&format!("&line_limit={l}"));
        }
        self.get_json(pq).await
    }

    /// Writes a file atomically.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn write_file(
        &self,
        path: &str,
        data: Bytes,
    ) -> Result<WriteFileResponse, AgentClientError> {
        let pq = format!("{API_PREFIX}/write-file?path={}", enc(path));
        let (_, _, b) = self
            .call(
                Method::POST,
                pq,
                Some("application/octet-stream"),
                data,
                JSON_LIMIT,
                false,
            )
            .await?;
        serde_json::from_slice(&b).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    /// Applies search/replace edits.
    ///
    /// # Errors
    /// [`AgentClientError`]; conflicts are `Status { code: 409 }`.
    pub async fn edit_files(
        &self,
        req: &EditFilesRequest,
    ) -> Result<EditFilesResponse, AgentClientError> {
        self.post_json(format!("{API_PREFIX}/edit-files"), req)
            .await
    }

    /// Starts a process.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn start_process(
        &self,
        req: &StartProcessRequest,
    ) -> Result<ProcessOutput, AgentClientError> {
        self.post_json(format!("{API_PREFIX}/processes/start"), req)
            .await
    }

    /// Lists processes.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn list_processes(&self) -> Result<ProcessList, AgentClientError> {
        self.get_json(format!("{API_PREFIX}/processes/list")).await
    }

    /// A process's output from `offset`, waiting up to `wait_ms` for more.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn process_output(
        &self,
        id: &str,
        offset: u64,
        wait_ms: u64,
    ) -> Result<ProcessOutput, AgentClientError> {
        self.get_json(format!(
            "{API_PREFIX}/processes/{}/output?offset={offset}&wait_ms={wait_ms}",
            enc(id)
        ))
        .await
    }

    /// Signals a process group.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn signal_process(
        &self,
        id: &str,
        signal: SignalName,
    ) -> Result<SignalResponse, AgentClientError> {
        self.post_json(
            format!("{API_PREFIX}/processes/{}/signal", enc(id)),
            &SignalRequest { signal },
        )
        .await
    }

    /// TCP ports listening on the agent host.
    ///
    /// # Errors
    /// [`AgentClientError`].
    pub async fn listening_ports(&self) -> Result<ListeningPorts, AgentClientError> {
        self.get_json(format!("{API_PREFIX}/listening-ports")).await
    }
}
