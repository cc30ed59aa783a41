//! A plain HTTP/1 MCP client for load and fault tests: one keep-alive connection, JSON-RPC
//! `tools/call` in the 2025-11-25 style, each call classified.

#![allow(dead_code, clippy::disallowed_methods)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(serde_json::Value),
    /// A tool error or an HTTP/JSON-RPC error, with its message.
    Failed(String),
    /// No answer within the bound.
    Hung,
}

pub struct McpHttp {
    addr: SocketAddr,
    token: String,
    /// TLS trust and the name to verify, for an https endpoint.
    tls: Option<(agentwire::runtime::tls::ClientTls, String)>,
    send: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    /// The connection's task: dropped (closing the connection) with a call that is given
    /// up, so the server cancels it rather than keeping it in flight.
    conn: Option<tokio_util::task::AbortOnDropHandle<Result<(), hyper::Error>>>,
    next_id: u64,
}

impl McpHttp {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Self {
            addr,
            token: token.to_string(),
            tls: None,
            send: None,
            conn: None,
            next_id: 1,
        }
    }

    /// Over TLS, verifying the server's certificate for `name` with `tls`.
    pub fn with_tls(
        mut self,
        tls: agentwire::runtime::tls::ClientTls,
        name: impl Into<String>,
    ) -> Self {
        self.tls = Some((tls, name.into()));
        self
    }

    async fn sender(
        &mut self,
    ) -> std::io::Result<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let dead = self.send.as_ref().is_none_or(|s| s.is_closed());
        if dead {
            let (trust, target) = match &self.tls {
                Some((t, name)) => (
                    t.clone(),
                    Some(agentwire::runtime::tls::TlsTarget::named(name.clone())),
                ),
                None => (Default::default(), None),
            };
            let s = trust
                .dial(
                    &self.addr.ip().to_string(),
                    self.addr.port(),
                    target.as_ref(),
                )
                .await
                .map_err(std::io::Error::other)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(std::io::Error::other)?;
            self.conn = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn)));
            self.send = Some(send);
        }
        Ok(self.send.as_mut().expect("just set"))
    }

    /// Calls a tool; `bound` is how long before the call counts as hung.
    pub async fn call(&mut self, tool: &str, args: serde_json::Value, bound: Duration) -> Outcome {
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}})
        .to_string();
        let (addr, token) = (self.addr, self.token.clone());
        let fut = async {
            let send = match self.sender().await {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(format!("connect: {e}")),
            };
            if send.ready().await.is_err() {
                self.send = None;
                return Outcome::Failed("connection closed".into());
            }
            let req = http::Request::post("/mcp")
                .header(http::header::HOST, addr.to_string())
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .body(Full::new(Bytes::from(body)))
                .expect("request");
            let resp = match send.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    self.send = None;
                    return Outcome::Failed(format!("http: {e}"));
                }
            };
            let status = resp.status();
            let bytes = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Outcome::Failed(format!("body: {e}")),
            };
            if !status.is_success() {
                return Outcome::Failed(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            let v: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return Outcome::Failed(format!("bad JSON: {e}")),
            };
            if let Some(err) = v.get("error") {
                return Outcome::Failed(format!("JSON-RPC error: {err}"));
            }
            let result = v.get("result").cloned().unwrap_or_default();
            if result.get("isError").and_then(|e| e.as_bool()) == Some(true) {
                let text = result["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return Outcome::Failed(text);
            }
            Outcome::Ok(result)
        };
        match tokio::time::timeout(bound, fut).await {
            Ok(o) => o,
            Err(_) => {
                self.send = None;
                self.conn = None;
                Outcome::Hung
            }
        }
    }
}

/// Tasks, descriptors and RSS (KiB) of this process.
pub fn resources() -> (usize, usize, u64) {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    (tasks, fds, rss)
}

/// `agentwire serve` in-process with its embedded default (workspace `demo`), on a free
/// loopback port, with `token` as the user's token.
pub async fn embedded_server(
    token: &str,
) -> (agentwire::services::serve::Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server =
        agentwire::services::serve::Server::start(agentwire::services::serve::ServeConfig {
            token: Some(token.into()),
            ..agentwire::services::serve::ServeConfig::loopback(tmp.path().join("state"))
        })
        .await
        .expect("serve starts");
    assert!(
        server.wait_ready(Duration::from_secs(10)).await,
        "serve not ready"
    );
    (server, tmp)
}
