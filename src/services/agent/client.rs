//! Minimal stand-in for the typed agent API client being written on another branch: the
//! same public signatures over plain HTTP/1 (one connection per request, no pool). It is
//! replaced wholesale when that branch is merged.
#![allow(missing_docs)]

use super::types::*;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, Error)]
pub enum AgentClientError {
    #[error("cannot connect to the agent: {0}")]
    Dial(std::io::Error),
    #[error("HTTP exchange with the agent failed: {0}")]
    Http(String),
    #[error("{message} (agent answered {code})")]
    Status { code: u16, message: String },
    #[error("cannot decode the agent's answer: {0}")]
    Decode(String),
    #[error("agent answered with a redirect ({status}), which is never followed")]
    Redirect { status: u16, location: String },
    #[error("agent answer too large")]
    TooLarge,
    #[error("agent request timed out")]
    Timeout,
}

pub trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AgentStream for T {}

pub trait AgentDialer: Send + Sync + std::fmt::Debug + 'static {
    fn dial(&self) -> BoxFuture<'static, std::io::Result<Box<dyn AgentStream>>>;
}

#[derive(Debug)]
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

#[derive(Clone, Debug)]
pub struct AgentClient {
    dialer: Arc<dyn AgentDialer>,
}

fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Resp {
    headers: http::HeaderMap,
    body: Bytes,
}

impl AgentClient {
    pub fn new(dialer: Arc<dyn AgentDialer>) -> Self {
        Self { dialer }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        json: bool,
    ) -> Result<Resp, AgentClientError> {
        let stream = self.dialer.dial().await.map_err(AgentClientError::Dial)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AgentClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let ct = if json {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(http::header::HOST, "agent")
            .header(http::header::CONTENT_TYPE, ct)
            .body(Full::new(body))
            .map_err(|e| AgentClientError::Http(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| AgentClientError::Http(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| AgentClientError::Http(e.to_string()))?
            .to_bytes();
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
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| match e.detail {
                    Some(d) => format!("{}: {d}", e.message),
                    None => e.message,
                })
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(AgentClientError::Status {
                code: status.as_u16(),
                message,
            });
        }
        Ok(Resp { headers, body })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, AgentClientError> {
        let r = self
            .call(http::Method::GET, path, Bytes::new(), true)
            .await?;
        serde_json::from_slice(&r.body).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AgentClientError> {
        let b = serde_json::to_vec(body).map_err(|e| AgentClientError::Decode(e.to_string()))?;
        let r = self
            .call(http::Method::POST, path, Bytes::from(b), true)
            .await?;
        serde_json::from_slice(&r.body).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    pub async fn health(&self) -> Result<Health, AgentClientError> {
        self.get_json("/health").await
    }

    pub async fn ls(&self, path: &str) -> Result<LsResponse, AgentClientError> {
        self.get_json(&format!("/ls?path={}", q(path))).await
    }

    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<(ReadFileMeta, Bytes), AgentClientError> {
        let mut p = format!("/read-file?path={}&offset={offset}", q(path));
        if let Some(l) = limit {
            p.push_str(&format!("&limit={l}"));
        }
        let r = self.call(http::Method::GET, &p, Bytes::new(), true).await?;
        let num = |h: &str| {
            r.headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let meta = ReadFileMeta {
            size: num(HEADER_FILE_SIZE).unwrap_or(r.body.len() as u64),
            offset: num(HEADER_OFFSET).unwrap_or(offset),
            mime_type: r
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string(),
        };
        Ok((meta, r.body))
    }

    pub async fn read_file_lines(
        &self,
        path: &str,
        line_offset: u64,
        line_limit: Option<u64>,
    ) -> Result<ReadLinesResponse, AgentClientError> {
        let mut p = format!(
            "/read-file-lines?path={}&line_offset={line_offset}",
            q(path)
        );
        if let Some(l) = line_limit {
            p.push_str(&format!("&line_limit={l}"));
        }
        self.get_json(&p).await
    }

    pub async fn write_file(
        &self,
        path: &str,
        data: Bytes,
    ) -> Result<WriteFileResponse, AgentClientError> {
        let r = self
            .call(
                http::Method::POST,
                &format!("/write-file?path={}", q(path)),
                data,
                false,
            )
            .await?;
        serde_json::from_slice(&r.body).map_err(|e| AgentClientError::Decode(e.to_string()))
    }

    pub async fn edit_files(
        &self,
        req: &EditFilesRequest,
    ) -> Result<EditFilesResponse, AgentClientError> {
        self.post_json("/edit-files", req).await
    }

    pub async fn start_process(
        &self,
        req: &StartProcessRequest,
    ) -> Result<ProcessOutput, AgentClientError> {
        self.post_json("/processes/start", req).await
    }

    pub async fn list_processes(&self) -> Result<ProcessList, AgentClientError> {
        self.get_json("/processes/list").await
    }

    pub async fn process_output(
        &self,
        id: &str,
        offset: u64,
        wait_ms: u64,
    ) -> Result<ProcessOutput, AgentClientError> {
        self.get_json(&format!(
            "/processes/{}/output?offset={offset}&wait_ms={wait_ms}",
            q(id)
        ))
        .await
    }

    pub async fn signal_process(
        &self,
        id: &str,
        signal: SignalName,
    ) -> Result<SignalResponse, AgentClientError> {
        self.post_json(
            &format!("/processes/{}/signal", q(id)),
            &SignalRequest { signal },
        )
        .await
    }

    pub async fn listening_ports(&self) -> Result<ListeningPorts, AgentClientError> {
        self.get_json("/listening-ports").await
    }
}
