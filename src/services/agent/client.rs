//! Placeholder for the typed agent API client being written on another branch; the same
//! signatures, no implementation. Removed when that branch is merged.
#![allow(missing_docs, clippy::unused_async, dead_code)]

use super::types::*;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentClientError {
    #[error("dial: {0}")]
    Dial(std::io::Error),
    #[error("http: {0}")]
    Http(String),
    #[error("agent answered {code}: {message}")]
    Status { code: u16, message: String },
    #[error("decode: {0}")]
    Decode(String),
    #[error("redirect")]
    Redirect,
    #[error("too large")]
    TooLarge,
    #[error("timeout")]
    Timeout,
}

pub trait AgentDialer: Send + Sync + std::fmt::Debug + 'static {}

#[derive(Debug)]
pub struct TcpDialer(pub SocketAddr);
impl AgentDialer for TcpDialer {}

#[derive(Clone, Debug)]
pub struct AgentClient(Arc<dyn AgentDialer>);

fn no<T>() -> Result<T, AgentClientError> {
    Err(AgentClientError::Http("not implemented".into()))
}

impl AgentClient {
    pub fn new(dialer: Arc<dyn AgentDialer>) -> Self { Self(dialer) }
    pub async fn health(&self) -> Result<Health, AgentClientError> { no() }
    pub async fn ls(&self, _path: &str) -> Result<LsResponse, AgentClientError> { no() }
    pub async fn read_file(&self, _path: &str, _offset: u64, _limit: Option<u64>) -> Result<(ReadFileMeta, bytes::Bytes), AgentClientError> { no() }
    pub async fn read_file_lines(&self, _path: &str, _line_offset: u64, _line_limit: Option<u64>) -> Result<ReadLinesResponse, AgentClientError> { no() }
    pub async fn write_file(&self, _path: &str, _data: bytes::Bytes) -> Result<WriteFileResponse, AgentClientError> { no() }
    pub async fn edit_files(&self, _req: &EditFilesRequest) -> Result<EditFilesResponse, AgentClientError> { no() }
    pub async fn start_process(&self, _req: &StartProcessRequest) -> Result<ProcessOutput, AgentClientError> { no() }
    pub async fn list_processes(&self) -> Result<ProcessList, AgentClientError> { no() }
    pub async fn process_output(&self, _id: &str, _offset: u64, _wait_ms: u64) -> Result<ProcessOutput, AgentClientError> { no() }
    pub async fn signal_process(&self, _id: &str, _signal: SignalName) -> Result<SignalResponse, AgentClientError> { no() }
    pub async fn listening_ports(&self) -> Result<ListeningPorts, AgentClientError> { no() }
}
