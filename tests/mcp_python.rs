//! End to end with the official Python MCP SDK (`mcp==2.3.0`, installed in a venv under
//! `target/mcp-clients/` by `tests/mcp/setup.sh`) against the real `agentwire serve`
//! binary and real `agentwire agent` processes: every tool call crosses the coordinator,
//! the WireGuard tunnel and the agent API. `tests/mcp/client_test.py` drives every tool
//! in legacy (2025-11-25) and 2026-07-28 modes, the chatgpt toolset, progress,
//! cancellation, HTTP errors and cross-user denial (alice and bob, each with a workspace).
//!
//! Without the venv the test is skipped loudly, unless `CI` is set.

#![allow(clippy::disallowed_methods)]

mod mcp_support;

use agentwire::services::control::generate_token;
use agentwire::wire::addr::NodeId;
use mcp_support::{Proc, clients_dir, serve_binary};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentwire")
}

fn serve(args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let (p, addr) = serve_binary(bin(), args, env);
    (p, format!("http://{addr}"))
}

fn agent(url: &str, token: &str, dir: &Path) -> Proc {
    Proc(
        Command::new(bin())
            .args([
                "agent",
                "--url",
                url,
                "--token",
                token,
                "--udp",
                "127.0.0.1:0",
            ])
            .arg("--dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start agent"),
    )
}

#[test]
fn python_sdk_against_agentwire_serve() {
    let python = clients_dir().join("venv/bin/python");
    if !python.exists() {
        let msg = "Python MCP SDK not installed: run tests/mcp/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    // Canonical, so `pwd` in the workspace prints the same path.
    let alice_path = alice_dir.path().canonicalize().unwrap();
    let (alice_token, bob_token) = (generate_token(), generate_token());
    let (alice_agent_token, bob_agent_token) = (generate_token(), generate_token());
    let (alice_agent, bob_agent) = (NodeId::random(), NodeId::random());
    let (alice_ws, bob_ws) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let config = data.path().join("control.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[users]]
name = "alice"
token = "{alice_token}"
[[users]]
name = "bob"
token = "{bob_token}"
[[workspaces]]
id = "{alice_ws}"
owner = "alice"
name = "dev"
[[workspaces.agents]]
id = "{alice_agent}"
token = "{alice_agent_token}"
[[workspaces]]
id = "{bob_ws}"
owner = "bob"
name = "secret"
[[workspaces.agents]]
id = "{bob_agent}"
token = "{bob_agent_token}"
"#
        ),
    )
    .unwrap();
    let (_server, url) = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.path().join("state").to_str().unwrap(),
        ],
        &[],
    );
    let _a = agent(&url, &alice_agent_token, &alice_path);
    let _b = agent(&url, &bob_agent_token, bob_dir.path());

    let started = Instant::now();
    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mcp/client_test.py"
        ))
        .env("MCP_BASE", &url)
        .env("ALICE_TOKEN", &alice_token)
        .env("BOB_TOKEN", &bob_token)
        .env("ALICE_DIR", &alice_path)
        .env("ALICE_WS_ID", alice_ws.to_string())
        .env("BOB_WS_ID", bob_ws.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("python client ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("python checks took {:?}", started.elapsed());
    assert!(out.status.success(), "python end-to-end checks failed");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// The embedded default: `agentwire serve` with no configuration creates a user, a demo
/// workspace and its in-process agent, and the SDK can use it at once.
#[test]
fn python_sdk_against_the_embedded_default() {
    let python = clients_dir().join("venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Python MCP SDK not installed"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    let token = generate_token();
    let (_server, url) = serve(
        &["--data-dir", data.to_str().unwrap()],
        &[("AGENTWIRE_TOKEN", &token)],
    );
    let script = r#"
import anyio, os, sys
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

async def main():
    async with create_mcp_http_client(headers={"Authorization": "Bearer " + os.environ["TOKEN"]}) as http:
        for mode in ("legacy", "2026-07-28"):
            async with Client(streamable_http_client(os.environ["URL"] + "/mcp", http_client=http), mode=mode) as c:
                ws = (await c.call_tool("list_workspaces", {})).structured_content
                assert [w["name"] for w in ws["workspaces"]] == ["demo"], ws
                r = await c.call_tool("workspace_bash", {"workspace": "demo", "command": "echo hi > f.txt; pwd"})
                assert not r.is_error and r.structured_content["exit_code"] == 0, r
                d = r.structured_content["output"].strip()
                r = await c.call_tool("workspace_read_file", {"workspace": "demo", "path": d + "/f.txt"})
                assert r.structured_content["content"] == "hi\n", r.structured_content
                r = await c.call_tool("workspace_read_file", {"workspace": "demo", "path": "/etc/passwd"})
                assert r.is_error, "the demo workspace is confined to its directory"
                print(mode, "ok")

anyio.run(main)
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .env("URL", &url)
        .env("TOKEN", &token)
        .output()
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The token was written for the next start, readable only by its owner.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(data.join("user-token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}
