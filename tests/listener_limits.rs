//! Limits and secrets on `serve`'s listeners: oversized request heads are refused with 431
//! and the server keeps serving; `/metrics` is open only where nobody else can reach it, or
//! with its token, or on its own listener; a secrets file left readable by others is put
//! back to owner-only; the demo workspace lives beside the data directory and its commands
//! cannot read the secrets in it.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::services::serve::{ServeConfig, Server};
use common::mcp_http::{McpHttp, Outcome};
use common::raw_http::{exchange, head};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "limits-user-token-0123456789";

fn config(data: &std::path::Path) -> ServeConfig {
    ServeConfig {
        token: Some(TOKEN.into()),
        ..ServeConfig::loopback(data)
    }
}

async fn get(addr: SocketAddr, path: &str, extra: &[String]) -> (u16, String) {
    let mut headers = vec![format!("Host: {addr}")];
    headers.extend_from_slice(extra);
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let r = exchange(
        s,
        &head("GET", path, &headers, None),
        b"",
        false,
        Duration::from_secs(10),
    )
    .await
    .response();
    (r.status, String::from_utf8_lossy(&r.body).to_string())
}

async fn tool_works(addr: SocketAddr) {
    let out = McpHttp::new(addr, TOKEN)
        .call(
            "workspace_bash",
            json!({"workspace": "demo", "command": "echo still"}),
            Duration::from_secs(20),
        )
        .await;
    match out {
        Outcome::Ok(v) => assert!(v.to_string().contains("still"), "{v}"),
        other => panic!("a tool call after the refusals: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_refused_with_431() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(&tmp.path().join("state")))
        .await
        .expect("serve");
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let addr = server.addr;

    // One 100 KB header, and many small ones adding up to the same.
    let big = format!("X-Filler: {}", "a".repeat(100 * 1024));
    let many: Vec<String> = (0..200)
        .map(|i| format!("X-Filler-{i}: {}", "b".repeat(500)))
        .collect();
    for extra in [vec![big], many] {
        let (status, _) = get(addr, "/healthz", &extra).await;
        assert_eq!(status, 431, "an oversized request head");
    }
    // A request with ordinary headers of a few KiB is served.
    let ok = format!("X-Filler: {}", "c".repeat(8 * 1024));
    assert_eq!(get(addr, "/healthz", &[ok]).await.0, 200);
    tool_works(addr).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_unless_only_this_host_can_reach_them() {
    // Loopback listener, loopback public URL: open, as before.
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(&tmp.path().join("a")))
        .await
        .expect("serve");
    let (status, body) = get(server.addr, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("agentwire_tailnet_destinations"), "{body}");
    // Connection attempts the shared tunnel's listeners turned away are counted.
    assert!(
        body.contains("agentwire_netstack_syn_backlog_full_total"),
        "{body}"
    );
    server.shutdown().await;

    // A public URL that names another host: whoever it was handed to could read them.
    let mut cfg = config(&tmp.path().join("b"));
    cfg.public_url = Some("https://agentwire.example.com".into());
    let server = Server::start(cfg).await.expect("serve");
    let (status, body) = get(server.addr, "/metrics", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("--metrics-listen"),
        "the refusal says what to do: {body}"
    );
    server.shutdown().await;

    // With a metrics token: refused without it or with a wrong one, served with it.
    let mut cfg = config(&tmp.path().join("c"));
    cfg.metrics_token = Some("metrics-secret".into());
    let server = Server::start(cfg).await.expect("serve");
    assert_eq!(get(server.addr, "/metrics", &[]).await.0, 401);
    let wrong = "Authorization: Bearer metrics-secreT".to_string();
    assert_eq!(get(server.addr, "/metrics", &[wrong]).await.0, 401);
    // The user's own token is not the metrics token.
    let user = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(get(server.addr, "/metrics", &[user]).await.0, 401);
    let right = "Authorization: Bearer metrics-secret".to_string();
    let (status, body) = get(server.addr, "/metrics", &[right]).await;
    assert_eq!(status, 200);
    let refused = body
        .lines()
        .find(|l| l.starts_with("agentwire_metrics_refused_total "))
        .expect("refusal counter");
    assert_eq!(refused, "agentwire_metrics_refused_total 3");
    server.shutdown().await;

    // A separate metrics listener: open there, closed on the main one.
    let mut cfg = config(&tmp.path().join("d"));
    cfg.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = Server::start(cfg).await.expect("serve");
    let m = server.metrics_addr().expect("metrics listener");
    assert_eq!(get(m, "/metrics", &[]).await.0, 200);
    assert_eq!(get(m, "/healthz", &[]).await.0, 200);
    assert_eq!(get(m, "/mcp", &[]).await.0, 404, "only metrics there");
    assert_eq!(get(server.addr, "/metrics", &[]).await.0, 403);
    tool_works(server.addr).await;
    server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(m).await.is_err(),
        "the metrics listener closes with the server"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_files_readable_by_others_are_made_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("state");
    std::fs::create_dir_all(&data).expect("mkdir");
    // As an older version, a copy or a hand edit may leave them.
    for name in ["user-token", "derp.key"] {
        let p = data.join(name);
        let value = if name == "derp.key" {
            agentwire::wire::key::NodePrivate::generate().to_base64()
        } else {
            "old-user-token-0123456789".to_string()
        };
        std::fs::write(&p, value).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    // A token given at start rewrites user-token; derp.key is only read.
    let server = Server::start(config(&data)).await.expect("serve");
    for name in ["user-token", "derp.key"] {
        let mode = std::fs::metadata(data.join(name))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_workspace_cannot_read_the_servers_secrets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("state");
    let server = Server::start(config(&data)).await.expect("serve");
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let data = data.canonicalize().expect("data dir");
    let embedded = server.embedded.as_ref().expect("embedded default");
    assert_eq!(embedded.workspace_dir, data.with_file_name("state-demo"));
    let key = std::fs::read_to_string(data.join("derp.key")).expect("derp.key");
    let d = data.display();
    let out = McpHttp::new(server.addr, TOKEN)
        .call(
            "workspace_bash",
            json!({"workspace": "demo",
                   "command": format!("cat {d}/user-token {d}/derp.key; ls {d}; env")}),
            Duration::from_secs(20),
        )
        .await;
    let text = match (&out, embedded.commands.mode()) {
        (Outcome::Ok(v), _) => v.to_string(),
        // Without Landlock the demo's commands are refused rather than run unconfined.
        (Outcome::Failed(m), "refused") => m.clone(),
        (other, mode) => panic!("{mode}: {other:?}"),
    };
    for secret in [TOKEN, key.trim(), "demo-agent-id"] {
        assert!(!text.contains(secret), "a command read {secret:?}: {text}");
    }
    server.shutdown().await;
}

/// A client that goes away takes its tool call with it: the call stops holding one of the
/// user's in-flight slots (and the agent's command) at once, not at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_cancels_its_tool_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn in_flight(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.lines()
            .filter(|l| l.starts_with("agentwire_mcp_tool_calls_in_flight"))
            .collect()
    }
    let token = "cancel-on-close-token-0123456789";
    let (server, _tmp) = common::mcp_http::embedded_server(token).await;
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let addr = server.addr;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "workspace_bash",
        "arguments": {"workspace": "demo", "command": "sleep 20", "timeout_ms": 30000}}})
    .to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while in_flight(addr).await != "agentwire_mcp_tool_calls_in_flight 1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed = std::time::Instant::now();
    drop(s);
    while in_flight(addr).await != "agentwire_mcp_tool_calls_in_flight 0" {
        assert!(
            closed.elapsed() < Duration::from_secs(2),
            "the call outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}
