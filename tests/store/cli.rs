//! `agentwire admin`, the binary, against a running server: what an operator types and
//! reads (the agent's run line, a token shown once, errors naming the field, the default
//! token file in the data directory, set-password, import, audit).
//!
//! The CLI speaks only to the admin API, whose behaviour on each backend the other cases
//! cover, so this runs on SQLite alone.

use super::mcp_http::{McpHttp, Outcome};
use super::{Case, Ctx};
use agentwire::services::serve::{ServeConfig, Server};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

pub const ALL: &[(&str, Case)] = &[("admin_cli", |c| Box::pin(admin_cli(c)))];

const WAIT: Duration = Duration::from_secs(10);

/// `agentwire admin ARGS` against `server`, the admin token read from `data`
/// (`--data-dir`, as on the server's own machine), with `stdin` fed in.
async fn admin(server: &Server, data: &Path, args: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentwire"));
    cmd.arg("admin")
        .args(["--url", &format!("http://{}", server.addr)])
        .args(["--data-dir", &data.display().to_string()])
        .args(args)
        .env_remove("AGENTWIRE_ADMIN_TOKEN")
        .env_remove("AGENTWIRE_URL")
        .env_remove("AGENTWIRE_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("agentwire admin runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("stdin");
    drop(input);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("agentwire admin finishes")
        .expect("its output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a command that must succeed; its standard output.
async fn ok(server: &Server, data: &Path, args: &[&str]) -> String {
    let o = admin(server, data, args, "").await;
    assert!(
        o.status.success(),
        "{args:?}: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Runs a command that must fail; its standard error.
async fn fails(server: &Server, data: &Path, args: &[&str]) -> String {
    let o = admin(server, data, args, "").await;
    assert!(
        !o.status.success(),
        "{args:?} succeeded: {}",
        text(&o.stdout)
    );
    text(&o.stderr)
}

/// The one `aw_…` word of `out`.
fn issued_token(out: &str) -> String {
    let found: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.starts_with("aw_"))
        .collect();
    assert!(!found.is_empty(), "no token in {out}");
    found[0].trim_matches('\'').to_string()
}

async fn admin_cli(ctx: Ctx) {
    if ctx.is_postgres() {
        return;
    }
    let data = ctx.scratch();
    let url = ctx.database_url().await;
    let cfg = ServeConfig {
        database_url: Some(url),
        ..ServeConfig::loopback(&data)
    };
    let server = Server::start(cfg).await.expect("serve starts");
    let (s, d) = (&server, data.as_path());

    let out = ok(s, d, &["users", "create", "alice"]).await;
    assert!(out.contains("alice"), "{out}");
    ok(s, d, &["users", "create", "bob"]).await;
    let err = fails(s, d, &["users", "create", "alice"]).await;
    assert!(
        err.contains("409") && err.contains("field: name"),
        "a duplicate names the field: {err}"
    );
    let err = fails(
        s,
        d,
        &["workspaces", "create", "alice/dev", "--share", "zed"],
    )
    .await;
    assert!(
        err.contains("400") && err.contains("field: shared_with"),
        "{err}"
    );

    // A token is printed once, with its row; listing shows the row, never the secret.
    let out = ok(
        s,
        d,
        &[
            "tokens",
            "create",
            "--user",
            "alice",
            "--name",
            "laptop",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    let alice = issued_token(&out);
    let listed = ok(s, d, &["tokens", "list", "--user", "alice"]).await;
    assert!(
        listed.contains("laptop") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&alice), "the secret is not listed again");

    // The agent's run line, exactly, and the same in JSON.
    ok(
        s,
        d,
        &["workspaces", "create", "alice/dev", "--share", "bob"],
    )
    .await;
    let out = ok(s, d, &["agents", "create", "alice/dev"]).await;
    let agent_token = issued_token(&out);
    let run_line = format!(
        "agentwire agent --url {} --token {agent_token}",
        server.public_url
    );
    assert!(
        out.lines().any(|l| l.trim() == run_line),
        "the run line {run_line:?} in {out}"
    );
    assert!(out.contains("--token-file agent-token"), "{out}");
    let shown: Value =
        serde_json::from_str(&ok(s, d, &["--json", "agents", "show", "alice/dev.main"]).await)
            .expect("--json prints JSON");
    assert_eq!(shown["full_name"], "alice/dev.main", "{shown}");
    let out = ok(s, d, &["workspaces", "unshare", "alice/dev", "bob"]).await;
    assert!(!out.contains("bob"), "{out}");

    // A password read from standard input, checked by the store.
    let o = admin(
        s,
        d,
        &["users", "set-password", "alice", "--password-stdin"],
        "correct horse\n",
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let store = server.store().expect("a store");
    let signed_in = store.verify_password("alice", "correct horse").await;
    assert!(signed_in.unwrap().is_some());

    // A tool call shows in the audit log.
    let mut mcp = McpHttp::new(server.addr, &alice);
    assert!(matches!(
        mcp.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    assert!(store.flush_audit(WAIT).await);
    let log = ok(s, d, &["audit", "--user", "alice", "--since", "1h"]).await;
    assert!(
        log.contains("list_workspaces") && log.contains("ok"),
        "{log}"
    );
    let err = fails(s, d, &["audit", "--since", "yesterday"]).await;
    assert!(err.contains("field: since"), "{err}");

    // Import a control.toml.
    let file = data.join("control.toml");
    std::fs::write(
        &file,
        "[[users]]\nname = \"zed\"\ntoken = \"zed-token-123\"\n",
    )
    .unwrap();
    let out = ok(s, d, &["import", &file.display().to_string()]).await;
    assert!(out.contains('1'), "{out}");
    let users = ok(s, d, &["users", "list"]).await;
    assert!(users.contains("zed"), "{users}");

    // Revoking the token: the next MCP request is refused.
    let id: Value =
        serde_json::from_str(&ok(s, d, &["--json", "tokens", "list", "--user", "alice"]).await)
            .unwrap();
    let id = id[0]["id"].as_str().expect("a token id").to_string();
    let out = ok(s, d, &["tokens", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    match mcp.call("list_workspaces", json!({}), WAIT).await {
        Outcome::Failed(m) => assert!(m.contains("401"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Without the token file the CLI says where it looked.
    let err = fails(s, &ctx.scratch(), &["users", "list"]).await;
    assert!(err.contains("admin-token"), "{err}");
    server.shutdown().await;
}
