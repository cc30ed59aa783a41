//! The MCP front end end to end with the official Python SDK (`mcp==2.3.0`, installed in a
//! venv under `target/mcp-clients/` by `tests/mcp/setup.sh`): a real server on 127.0.0.1:0,
//! the in-memory control plane with two users, and a real agent API server per workspace.
//! `tests/mcp/client_test.py` drives every tool in legacy (2025-11-25) and 2026-07-28
//! modes, the chatgpt toolset, progress, cancellation, HTTP errors and cross-user denial.
//!
//! Without the venv the test is skipped loudly, unless `CI` is set.

mod mcp_support;

use agentwire::services::control::{InMemoryControlPlane, generate_token};
use agentwire::services::mcp::StaticAgentProvider;
use agentwire::wire::addr::NodeId;
use mcp_support::agent::TestAgent;
use mcp_support::{McpServer, clients_dir};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_end_to_end() {
    let python = clients_dir().join("venv/bin/python");
    if !python.exists() {
        let msg = "Python MCP SDK not installed: run tests/mcp/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    // Canonical, so `pwd` in the workspace prints the same path.
    let alice_path = alice_dir.path().canonicalize().unwrap();
    let (alice_token, bob_token) = (generate_token(), generate_token());
    let (alice_agent, bob_agent) = (NodeId::random(), NodeId::random());
    let control = InMemoryControlPlane::from_toml(&format!(
        r#"
        [[users]]
        name = "alice"
        token = "{alice_token}"
        [[users]]
        name = "bob"
        token = "{bob_token}"
        [[workspaces]]
        owner = "alice"
        name = "dev"
        [[workspaces.agents]]
        id = "{alice_agent}"
        token = "{}"
        [[workspaces]]
        owner = "bob"
        name = "secret"
        [[workspaces.agents]]
        id = "{bob_agent}"
        token = "{}"
        "#,
        generate_token(),
        generate_token(),
    ))
    .unwrap();
    let ws_id = |owner: &str| {
        control
            .workspaces()
            .iter()
            .find(|w| w.owner == owner)
            .unwrap()
            .id
    };
    let (alice_ws, bob_ws) = (ws_id("alice"), ws_id("bob"));
    let a = TestAgent::start(&alice_path).await;
    let b = TestAgent::start(bob_dir.path()).await;
    let provider = StaticAgentProvider::new([(alice_agent, a.addr), (bob_agent, b.addr)]);
    let server = McpServer::start(Arc::new(control), Arc::new(provider), None, |_| {}).await;

    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/mcp/client_test.py"
    ))
    .env(
        "MCP_BASE",
        format!("http://127.0.0.1:{}", server.addr.port()),
    )
    .env("ALICE_TOKEN", &alice_token)
    .env("BOB_TOKEN", &bob_token)
    .env("ALICE_DIR", &alice_path)
    .env("ALICE_WS_ID", alice_ws.to_string())
    .env("BOB_WS_ID", bob_ws.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        cmd.spawn().expect("start python").wait_with_output(),
    )
    .await
    .expect("python client finished within 5 minutes")
    .expect("python client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        !a.any_running() && !b.any_running(),
        "a process outlived its tool call"
    );
    server.stop().await;
    assert!(out.status.success(), "python end-to-end checks failed");
}
