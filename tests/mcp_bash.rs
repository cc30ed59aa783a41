//! `workspace_bash` through the MCP endpoint against the real agent API on loopback, with
//! every request the front end makes to the agent recorded: a short command costs one
//! agent request (start and first wait together); a longer one polls and reports progress;
//! the timeout and a cancellation kill the process group; an agent that predates the
//! start request's `wait_ms` (simulated by removing the field on the way in) still runs
//! every command, by polling.

#![allow(clippy::disallowed_methods)]

mod mcp_support;

use agentwire::services::agent::api::{self, AgentApi, AgentApiConfig};
use agentwire::services::agent::client::{AgentClient, TcpDialer};
use agentwire::services::control::{DemoSetup, Secret};
use agentwire::services::mcp::StaticAgentProvider;
use agentwire::wire::addr::NodeId;
use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_support::McpServer;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "bash-one-trip-token-0123456789";

struct Rig {
    mcp: McpServer,
    /// `METHOD /path` of every agent request, in order.
    log: Arc<Mutex<Vec<String>>>,
    /// A client straight to the agent (not recorded), to inspect processes.
    agent: AgentClient,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Rig {
    async fn start(old_agent: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api = AgentApi::new(AgentApiConfig {
            workdir: dir.path().to_path_buf(),
            ..Default::default()
        });
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = log.clone();
        let app = api::router(api).layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method(), req.uri().path()));
                    let req = if old_agent && req.uri().path().ends_with("/processes/start") {
                        without_wait(req).await
                    } else {
                        req
                    };
                    next.run(req).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, app, async move {
            let _ = rx.await;
        }));
        let agent_id = NodeId::random();
        let (control, _) = DemoSetup {
            user_token: Some(Secret(TOKEN.to_string())),
            agent_id: Some(agent_id),
            ..Default::default()
        }
        .build()
        .unwrap();
        let mcp = McpServer::start(
            Arc::new(control),
            Arc::new(StaticAgentProvider::new([(agent_id, addr)])),
            None,
            |_| {},
        )
        .await;
        Self {
            mcp,
            log,
            agent: AgentClient::new(Arc::new(TcpDialer(addr))),
            dir,
            _stop: tx,
        }
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// POSTs one JSON-RPC message; returns the messages of the answer (one for JSON, each
    /// event for an SSE stream).
    async fn post(&self, msg: Value) -> Vec<Value> {
        let s = tokio::net::TcpStream::connect(self.mcp.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("/mcp")
            .header(http::header::HOST, self.mcp.addr.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(Full::new(Bytes::from(msg.to_string())))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert!(resp.status().is_success(), "HTTP {}", resp.status());
        let sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        if !sse {
            return if text.is_empty() {
                vec![]
            } else {
                vec![serde_json::from_str(&text).unwrap()]
            };
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    /// Calls `workspace_bash`; returns the progress notifications and the result.
    async fn bash(&self, id: u64, args: Value, progress: bool) -> (Vec<Value>, Value) {
        let mut params = json!({"name": "workspace_bash", "arguments": args});
        if progress {
            params["_meta"] = json!({"progressToken": format!("t{id}")});
        }
        let mut msgs = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
            .await;
        let last = msgs.pop().expect("an answer");
        assert_eq!(last["id"], json!(id), "{last}");
        (msgs, last["result"].clone())
    }

    /// Waits until no process the agent knows of is running.
    async fn all_exited(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let list = self.agent.list_processes().await.unwrap();
            if list.processes.iter().all(|p| !p.running) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The start request as an agent before `wait_ms` saw it: the field is not there.
async fn without_wait(req: Request) -> Request {
    let (mut parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v.as_object_mut().unwrap().remove("wait_ms");
    let bytes = serde_json::to_vec(&v).unwrap();
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(bytes.len()),
    );
    Request::from_parts(parts, Body::from(bytes))
}

fn structured(result: &Value) -> &Value {
    assert_ne!(result["isError"], json!(true), "{result}");
    &result["structuredContent"]
}

const START: &str = "POST /api/v0/processes/start";

fn is_poll(entry: &str) -> bool {
    entry.starts_with("GET /api/v0/processes/") && entry.ends_with("/output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_command_is_one_agent_request() {
    let rig = Rig::start(false).await;
    for (i, progress) in [false, true].into_iter().enumerate() {
        let (notes, result) = rig
            .bash(
                i as u64 + 1,
                json!({"workspace": "demo", "command": "echo hi; echo err >&2; exit 3"}),
                progress,
            )
            .await;
        let s = structured(&result);
        assert_eq!(s["output"], "hi\nerr\n", "{s}");
        assert_eq!(s["exit_code"], 3);
        assert_eq!(s["timed_out"], false);
        assert_eq!(s["running"], false);
        // Finished within the first wait: no progress to report, one request to the agent.
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(rig.take_log(), vec![START.to_string()]);
    }
    rig.mcp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_command_polls_and_reports_progress() {
    let rig = Rig::start(false).await;
    let (notes, result) = rig
        .bash(
            1,
            json!({"workspace": "demo",
                   "command": "for i in 1 2 3; do echo line$i; sleep 0.3; done"}),
            true,
        )
        .await;
    assert_eq!(structured(&result)["output"], "line1\nline2\nline3\n");
    assert!(notes.len() >= 2, "{notes:?}");
    let values: Vec<f64> = notes
        .iter()
        .map(|n| {
            assert_eq!(n["method"], "notifications/progress", "{n}");
            assert_eq!(n["params"]["progressToken"], "t1");
            n["params"]["progress"].as_f64().unwrap()
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(
        notes[0]["params"]["message"]
            .as_str()
            .unwrap()
            .contains("line1"),
        "{notes:?}"
    );
    let log = rig.take_log();
    assert_eq!(log[0], START);
    assert!(
        log.len() >= 2 && log[1..].iter().all(|e| is_poll(e)),
        "{log:?}"
    );
    rig.mcp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_kills_the_command_and_keeps_its_output() {
    let rig = Rig::start(false).await;
    for timeout_ms in [100, 700] {
        let t = Instant::now();
        let (_, result) = rig
            .bash(
                1,
                json!({"workspace": "demo", "command": "echo start; sleep 30",
                       "timeout_ms": timeout_ms}),
                false,
            )
            .await;
        let s = structured(&result);
        assert_eq!(s["timed_out"], true, "{s}");
        assert_eq!(s["output"], "start\n");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(s["duration_ms"].as_u64().unwrap() >= timeout_ms, "{s}");
        assert!(rig.all_exited(Duration::from_secs(5)).await);
        let log = rig.take_log();
        assert_eq!(log[0], START);
        assert!(
            log.iter()
                .any(|e| e.starts_with("POST") && e.ends_with("/signal")),
            "{log:?}"
        );
    }
    rig.mcp.stop().await;
}

/// A legacy `notifications/cancelled` kills the command, whether it arrives during the
/// start request's wait or during a later poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_command() {
    let rig = Arc::new(Rig::start(false).await);
    for (id, after) in [(11u64, Duration::ZERO), (12, Duration::from_millis(600))] {
        let marker = rig.path(&format!("started-{id}"));
        let call = {
            let rig = rig.clone();
            let marker = marker.clone();
            tokio::spawn(async move {
                rig.bash(
                    id,
                    json!({"workspace": "demo",
                           "command": format!("touch {marker}; sleep 30")}),
                    false,
                )
                .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&marker).exists() {
            assert!(Instant::now() < deadline, "the command never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(after).await;
        let cancelled = Instant::now();
        rig.post(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": id}}),
        )
        .await;
        let (_, result) = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call ends when cancelled")
            .unwrap();
        assert_eq!(result["isError"], json!(true), "{result}");
        assert!(
            result["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("killed"),
            "{result}"
        );
        assert!(rig.all_exited(Duration::from_secs(5)).await);
        assert!(cancelled.elapsed() < Duration::from_secs(2));
        let last = rig.agent.list_processes().await.unwrap().processes;
        assert_eq!(last[0].signal, Some(9), "{last:?}");
    }
    Arc::into_inner(rig).unwrap().mcp.stop().await;
}

/// Version skew: an agent that ignores `wait_ms` answers the start at once, and the front
/// end polls for the rest, as it did before the two were one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_wait_ms_still_runs_every_command() {
    let rig = Rig::start(true).await;
    let (_, result) = rig
        .bash(
            1,
            json!({"workspace": "demo", "command": "sleep 0.1; echo done"}),
            false,
        )
        .await;
    let s = structured(&result);
    assert_eq!(
        (s["output"].as_str(), s["exit_code"].as_i64()),
        (Some("done\n"), Some(0))
    );
    let log = rig.take_log();
    assert_eq!(log[0], START);
    assert!(
        log.len() >= 2 && log[1..].iter().all(|e| is_poll(e)),
        "{log:?}"
    );
    let (_, result) = rig
        .bash(
            2,
            json!({"workspace": "demo", "command": "echo start; sleep 30", "timeout_ms": 300}),
            false,
        )
        .await;
    assert_eq!(structured(&result)["timed_out"], true);
    assert!(rig.all_exited(Duration::from_secs(5)).await);
    rig.mcp.stop().await;
}
