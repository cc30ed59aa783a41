//! A whole `agentwire serve` on the store: the admin API, revocation reaching live
//! coordinator streams and the MCP endpoint within 1 s, restarts, two processes
//! migrating one database at once, a database that goes away.

use super::mcp_http::{McpHttp, Outcome};
use super::{Case, Ctx};
use agentwire::runtime::tls::ClientTls;
use agentwire::services::public_url::BaseUrl;
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::services::store::{StoreOptions, migrations};
use agentwire::wire::addr::NodeId;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const ALL: &[(&str, Case)] = &[
    ("serve_admin_api", |c| Box::pin(admin_api(c))),
    ("serve_revocation_within_1s", |c| Box::pin(revocation(c))),
    ("serve_restart_keeps_everything", |c| Box::pin(restart(c))),
    ("serve_two_processes_migrate_at_once", |c| {
        Box::pin(two_processes(c))
    }),
    ("serve_store_down_is_503", |c| Box::pin(store_down(c))),
    ("serve_oauth_grants_survive_restart", |c| {
        Box::pin(oauth_restart(c))
    }),
    ("serve_embedded_default_and_corrupt_file", |c| {
        Box::pin(embedded_default(c))
    }),
];

const WAIT: Duration = Duration::from_secs(10);

fn config(url: Option<&str>, data: &Path) -> ServeConfig {
    ServeConfig {
        database_url: url.map(str::to_string),
        store: StoreOptions {
            poll: Duration::from_millis(200),
            ..StoreOptions::default()
        },
        ..ServeConfig::loopback(data)
    }
}

async fn start(url: Option<&str>, data: &Path) -> Server {
    Server::start(config(url, data))
        .await
        .expect("serve starts")
}

/// The admin API as a test calls it.
struct Admin {
    base: BaseUrl,
    token: String,
}

impl Admin {
    fn of(server: &Server) -> Self {
        let token = std::fs::read_to_string(&server.admin.as_ref().expect("a store").token_file)
            .expect("admin token file")
            .trim()
            .to_string();
        Self::with(server, &token)
    }

    fn with(server: &Server, token: &str) -> Self {
        Self {
            base: BaseUrl::parse("url", &format!("http://{}", server.addr), false).unwrap(),
            token: token.into(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let (status, bytes) = agentwire::cli::http::request(
            &ClientTls::default(),
            &self.base,
            method.parse().unwrap(),
            &format!("/api/v0/admin{path}"),
            &self.token,
            body,
        )
        .await
        .expect("admin request");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status.as_u16(), v)
    }

    /// Creates user `name`.
    async fn user(&self, name: &str) {
        self.ok("POST", "/users", Some(json!({ "name": name })))
            .await;
    }

    /// Issues a token for user `name`; the issued token's JSON.
    async fn token(&self, name: &str) -> Value {
        self.ok("POST", "/tokens", Some(json!({ "user": name })))
            .await
    }

    /// Creates workspace `owner/name` shared with `shares`.
    async fn workspace(&self, owner: &str, name: &str, shares: &[&str]) {
        let body = json!({"owner": owner, "name": name, "shared_with": shares});
        self.ok("POST", "/workspaces", Some(body)).await;
    }

    /// Adds an agent to workspace `full`; the created agent's JSON.
    async fn agent(&self, full: &str) -> Value {
        self.ok("POST", "/agents", Some(json!({ "workspace": full })))
            .await
    }

    /// A call that must succeed; its JSON.
    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A coordinator stream with `token` as node `id`, after its welcome.
async fn stream(server: &Server, token: &str, id: NodeId) -> Ws {
    let mut req = format!("ws://{}/api/v0/coordinate", server.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade");
    let hello = json!({"type": "hello", "version": 1, "id": id, "name": "test"});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("welcome");
        if let Some(Ok(Message::Text(t))) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["type"], "welcome", "{v}");
            return ws;
        }
    }
}

/// Waits for the server's close frame: its code, reason, and how long it took from `t0`.
async fn closed(ws: &mut Ws, t0: Instant) -> (u16, String, Duration) {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => {
                return (f.code.into(), f.reason.to_string(), t0.elapsed());
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a frame"),
            Some(Err(e)) => panic!("error before the close: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

async fn tunnels(server: &Server, n: usize) {
    let deadline = Instant::now() + WAIT;
    while server.hub().coordinator().stats().registry.tunnels != n {
        assert!(Instant::now() < deadline, "tunnels registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn add_tunnel(ws: &mut Ws, to: NodeId) {
    let m = json!({"type": "add_tunnel", "id": to});
    ws.send(Message::text(m.to_string())).await.unwrap();
}

async fn admin_api(ctx: Ctx) {
    let url = ctx.database_url().await;
    let server = start(Some(&url), &ctx.scratch()).await;
    let admin = Admin::of(&server);
    let (s, v) = Admin::with(&server, "aw_wrong")
        .call("GET", "/users", None)
        .await;
    assert_eq!(s, 401, "{v}");
    admin.user("alice").await;
    let (s, v) = admin
        .call("POST", "/users", Some(json!({"name": "alice"})))
        .await;
    assert_eq!((s, v["field"].as_str()), (409, Some("name")), "{v}");
    let (s, v) = admin
        .call("POST", "/users", Some(json!({"name": "a/b"})))
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("name")), "{v}");
    let (s, v) = admin
        .call("POST", "/users", Some(json!({"name": "x", "admn": true})))
        .await;
    assert_eq!(s, 400, "unknown field refused: {v}");
    let t = admin
        .ok(
            "POST",
            "/tokens",
            Some(json!({"user": "alice", "expires_in": "30d"})),
        )
        .await;
    let alice = t["token"].as_str().unwrap();
    assert!(t["info"]["expires_at"].is_string(), "{t}");
    let (s, _) = Admin::with(&server, alice)
        .call("GET", "/users", None)
        .await;
    assert_eq!(s, 403, "a user who is not an admin");
    let (s, v) = admin
        .call(
            "POST",
            "/tokens",
            Some(json!({"user": "alice", "expires_in": "30x"})),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("expires_in")), "{v}");
    admin.workspace("alice", "dev", &[]).await;
    let a = admin.agent("alice/dev").await;
    let join = a["join_command"].as_str().unwrap();
    assert_eq!(
        join,
        format!(
            "agentwire agent --url {} --token {}",
            server.public_url,
            a["token"]["token"].as_str().unwrap()
        )
    );
    let id = a["agent"]["id"].as_str().unwrap();
    // Agents by id or by name, the latter with its slash escaped in one path segment.
    admin.ok("GET", &format!("/agents/{id}"), None).await;
    let by_name = admin.ok("GET", "/agents/alice%2Fdev.main", None).await;
    assert_eq!(by_name["id"], id);
    let (s, _) = admin.call("GET", "/workspaces/alice/nope", None).await;
    assert_eq!(s, 404);
    // What a tool call leaves in the audit log, read back through the API.
    let mut mcp = McpHttp::new(server.addr, alice);
    assert!(matches!(
        mcp.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    assert!(server.store().expect("a store").flush_audit(WAIT).await);
    let log = admin.ok("GET", "/audit?user=alice&since=1h", None).await;
    let entry = &log[0];
    assert_eq!(
        (entry["tool"].as_str(), entry["outcome"].as_str()),
        (Some("list_workspaces"), Some("ok")),
        "{log}"
    );
    assert!(entry["result_bytes"].as_u64().unwrap() > 0, "{entry}");
    let (s, v) = admin.call("GET", "/audit?since=yesterday", None).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("since")), "{v}");
    // The import route takes today's control.toml.
    let (status, bytes) = agentwire::cli::http::request(
        &ClientTls::default(),
        &admin.base,
        http::Method::POST,
        "/api/v0/admin/import",
        &admin.token,
        Some((
            "application/toml",
            b"[[users]]\nname = \"zed\"\ntoken = \"zed-token\"\n".to_vec(),
        )),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let mut zed = McpHttp::new(server.addr, "zed-token");
    assert!(matches!(
        zed.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    server.shutdown().await;
}

async fn revocation(ctx: Ctx) {
    let url = ctx.database_url().await;
    let server = start(Some(&url), &ctx.scratch()).await;
    let admin = Admin::of(&server);
    for u in ["alice", "bob", "carol"] {
        admin.user(u).await;
    }
    let (alice, bob, carol) = (
        admin.token("alice").await,
        admin.token("bob").await,
        admin.token("carol").await,
    );
    let secret = |t: &Value| t["token"].as_str().unwrap().to_string();
    admin.workspace("alice", "dev", &["bob"]).await;
    admin.workspace("carol", "w", &[]).await;
    let agent = admin.agent("alice/dev").await;
    let agent2 = admin.agent("carol/w").await;
    let aid: NodeId = agent["agent"]["id"].as_str().unwrap().parse().unwrap();
    let aid2: NodeId = agent2["agent"]["id"].as_str().unwrap().parse().unwrap();

    let mut agent_ws = stream(&server, agent["token"]["token"].as_str().unwrap(), aid).await;
    let mut agent2_ws = stream(&server, agent2["token"]["token"].as_str().unwrap(), aid2).await;
    let mut alice_ws = stream(&server, &secret(&alice), NodeId::random()).await;
    let mut bob_ws = stream(&server, &secret(&bob), NodeId::random()).await;
    let mut carol_ws = stream(&server, &secret(&carol), NodeId::random()).await;
    add_tunnel(&mut alice_ws, aid).await;
    add_tunnel(&mut bob_ws, aid).await;
    add_tunnel(&mut carol_ws, aid2).await;
    tunnels(&server, 3).await;
    let mut alice_mcp = McpHttp::new(server.addr, &secret(&alice));
    let mut bob_mcp = McpHttp::new(server.addr, &secret(&bob));
    assert!(matches!(
        bob_mcp
            .call("get_workspace", json!({"workspace": "alice/dev"}), WAIT)
            .await,
        Outcome::Ok(_)
    ));

    // Unsharing closes bob's stream, naming the agent; bob no longer finds the workspace.
    let t0 = Instant::now();
    admin
        .ok("DELETE", "/workspaces/alice/dev/shares/bob", None)
        .await;
    let (code, reason, took) = closed(&mut bob_ws, t0).await;
    println!(
        "  unshare: bob's stream closed after {} ms ({code}: {reason})",
        took.as_millis()
    );
    assert_eq!(code, 1008);
    assert!(reason.contains(&aid.to_string()), "{reason}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    match bob_mcp
        .call("get_workspace", json!({"workspace": "alice/dev"}), WAIT)
        .await
    {
        Outcome::Failed(m) => assert!(m.contains("not found"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Revoking the agent's tokens closes the agent's stream.
    let t0 = Instant::now();
    admin
        .ok("POST", &format!("/agents/{aid}/revoke"), None)
        .await;
    let (code, reason, took) = closed(&mut agent_ws, t0).await;
    println!(
        "  agent token revoked: its stream closed after {} ms ({code}: {reason})",
        took.as_millis()
    );
    assert_eq!(code, 1008);
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Revoking a user's token closes their stream and their next MCP request is a 401.
    assert!(matches!(
        alice_mcp.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    let t0 = Instant::now();
    let id = alice["info"]["id"].as_str().unwrap();
    admin
        .ok("POST", &format!("/tokens/{id}/revoke"), None)
        .await;
    let (code, reason, took) = closed(&mut alice_ws, t0).await;
    println!(
        "  user token revoked: the stream closed after {} ms ({code}: {reason})",
        took.as_millis()
    );
    assert_eq!(code, 1008);
    assert!(took < Duration::from_secs(1), "{took:?}");
    match alice_mcp.call("list_workspaces", json!({}), WAIT).await {
        Outcome::Failed(m) => assert!(m.contains("401"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Deleting a workspace closes its agent's stream and its users' tunnels.
    let t0 = Instant::now();
    admin.ok("DELETE", "/workspaces/carol/w", None).await;
    let (code2, _, took2) = closed(&mut agent2_ws, t0).await;
    let (code3, reason3, took3) = closed(&mut carol_ws, t0).await;
    println!(
        "  workspace deleted: agent stream closed after {} ms, user stream after {} ms",
        took2.as_millis(),
        took3.as_millis()
    );
    assert_eq!((code2, code3), (1008, 1008));
    assert!(reason3.contains(&aid2.to_string()), "{reason3}");
    assert!(took2 < Duration::from_secs(1) && took3 < Duration::from_secs(1));
    assert!(server.hub().coordinator().stats().registry.revoked >= 5);
    server.shutdown().await;
}

async fn restart(ctx: Ctx) {
    let url = ctx.database_url().await;
    let data = ctx.scratch();
    let server = start(Some(&url), &data).await;
    let admin = Admin::of(&server);
    admin
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "alice", "password": "correct horse"})),
        )
        .await;
    let t = admin.token("alice").await;
    let token = t["token"].as_str().unwrap().to_string();
    admin.workspace("alice", "dev", &[]).await;
    let a = admin.agent("alice/dev").await;
    let mut mcp = McpHttp::new(server.addr, &token);
    assert!(matches!(
        mcp.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    let before_users = admin.ok("GET", "/users", None).await;
    server.shutdown().await;

    let server = start(Some(&url), &data).await;
    assert!(
        server.admin.as_ref().unwrap().created.is_none(),
        "the admin is not created twice"
    );
    let admin = Admin::of(&server);
    assert_eq!(admin.ok("GET", "/users", None).await, before_users);
    let agents = admin.ok("GET", "/agents", None).await;
    assert_eq!(agents[0]["id"], a["agent"]["id"]);
    let log = admin.ok("GET", "/audit?user=alice", None).await;
    assert_eq!(
        log[0]["tool"], "list_workspaces",
        "the audit log survived: {log}"
    );
    let mut mcp = McpHttp::new(server.addr, &token);
    match mcp.call("list_workspaces", json!({}), WAIT).await {
        Outcome::Ok(v) => assert!(v.to_string().contains("alice/dev"), "{v}"),
        other => panic!("{other:?}"),
    }
    assert!(
        server
            .store()
            .expect("a store")
            .verify_password("alice", "correct horse")
            .await
            .unwrap()
            .is_some()
    );
    server.shutdown().await;
}

async fn two_processes(ctx: Ctx) {
    let url = ctx.database_url().await;
    let bin = env!("CARGO_BIN_EXE_agentwire");
    let (d1, d2) = (ctx.scratch(), ctx.scratch());
    let spawn = |d: &Path| {
        let d = d.display().to_string();
        let url = url.clone();
        std::thread::spawn(move || {
            super::mcp_support::serve_binary(
                bin,
                &["--data-dir", &d, "--stun-listen", "off"],
                &[("AGENTWIRE_DATABASE_URL", &url)],
            )
        })
    };
    let (a, b) = (spawn(&d1), spawn(&d2));
    let (pa, addr_a) = a.join().expect("first serve");
    let (pb, addr_b) = b.join().expect("second serve");
    // Each is a replica of the other: ready once they have meshed (503 "starting" until
    // then, at most the startup grace).
    for addr in [&addr_a, &addr_b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let body = reqwest_healthz(addr).await;
            if body.starts_with("ok") {
                break;
            }
            assert!(
                body.starts_with("starting") && std::time::Instant::now() < deadline,
                "{addr}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let store = ctx.open(&url, StoreOptions::default()).await;
    assert_eq!(store.schema_version().await.unwrap(), migrations::latest());
    let admins: Vec<_> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.admin)
        .collect();
    assert_eq!(
        admins.len(),
        1,
        "one admin created between the two: {admins:?}"
    );
    let files = [&d1, &d2]
        .iter()
        .filter(|d| d.join("admin-token").exists())
        .count();
    assert_eq!(files, 1, "its token is kept by the process that created it");
    store.close().await;
    drop((pa, pb));
}

async fn reqwest_healthz(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

async fn store_down(ctx: Ctx) {
    let super::Backend::Postgres(cluster) = &ctx.backend else {
        // SQLite has no server to lose; a writer holding the lock past the busy timeout
        // is its outage, covered by the unit tests of the SQLite backend.
        return;
    };
    let url = ctx.database_url().await;
    let server = start(Some(&url), &ctx.scratch()).await;
    let admin = Admin::of(&server);
    admin.user("alice").await;
    let cached = admin.token("alice").await;
    let uncached = admin.token("alice").await;
    let mut warm = McpHttp::new(server.addr, cached["token"].as_str().unwrap());
    assert!(matches!(
        warm.call("list_workspaces", json!({}), WAIT).await,
        Outcome::Ok(_)
    ));
    cluster.stop();
    let (s, v) = admin
        .call("POST", "/users", Some(json!({"name": "bob"})))
        .await;
    assert_eq!(s, 503, "{v}");
    let mut cold = McpHttp::new(server.addr, uncached["token"].as_str().unwrap());
    match cold.call("list_workspaces", json!({}), WAIT).await {
        Outcome::Failed(m) => assert!(m.contains("503"), "{m}"),
        other => panic!("{other:?}"),
    }
    cluster.start_again();
    // Back: the refused write left nothing behind, and writes work again.
    let deadline = Instant::now() + WAIT;
    loop {
        let (s, _) = admin.call("GET", "/users/bob", None).await;
        if s == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "store back ({s})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.user("bob").await;
    server.shutdown().await;
}

async fn embedded_default(ctx: Ctx) {
    if ctx.is_postgres() {
        return;
    }
    let data = ctx.scratch();
    let server = start(None, &data).await;
    let e = server.embedded.clone().expect("the embedded default");
    let token = e
        .new_token
        .clone()
        .expect("a token generated on first start");
    assert!(server.admin.as_ref().unwrap().created.is_some());
    let agent_id = std::fs::read_to_string(data.join("demo-agent-id")).unwrap();
    server.shutdown().await;
    let server = start(None, &data).await;
    let e = server.embedded.clone().unwrap();
    assert!(e.new_token.is_none(), "the kept token is reused");
    assert!(server.admin.as_ref().unwrap().created.is_none());
    assert_eq!(
        std::fs::read_to_string(data.join("demo-agent-id")).unwrap(),
        agent_id
    );
    let admin = Admin::of(&server);
    let users = admin.ok("GET", "/users", None).await;
    assert_eq!(
        users.as_array().unwrap().len(),
        2,
        "admin and demo, once: {users}"
    );
    let ws = admin.ok("GET", "/workspaces", None).await;
    assert_eq!(ws[0]["full_name"], "demo/demo");
    assert_eq!(ws[0]["agents"][0]["id"].as_str().unwrap(), agent_id.trim());
    assert!(server.wait_ready(WAIT).await);
    let mut mcp = McpHttp::new(server.addr, &token);
    match mcp
        .call(
            "workspace_bash",
            json!({"workspace": "demo", "command": "echo hi"}),
            WAIT,
        )
        .await
    {
        Outcome::Ok(v) => assert!(v.to_string().contains("hi"), "{v}"),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;

    // A damaged database stops the start with a clear message and is left as it was.
    let bad = ctx.scratch();
    let garbage = vec![0x42u8; 4096];
    std::fs::write(bad.join("agentwire.db"), &garbage).unwrap();
    let err = Server::start(config(None, &bad))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agentwire.db") && err.contains("left untouched"),
        "{err}"
    );
    assert_eq!(std::fs::read(bad.join("agentwire.db")).unwrap(), garbage);
}

/// An OAuth connector signed in with a password keeps working across a restart: its
/// access token, its refresh token (which rotates), and a revocation made before the
/// restart still holds after it. The second server listens on the same port, so the
/// issuer and the resource the tokens are bound to do not change.
async fn oauth_restart(ctx: Ctx) {
    use super::oauth_support::{Browser, pkce_pair, query};
    let url = ctx.database_url().await;
    let data = ctx.scratch();
    let server = start(Some(&url), &data).await;
    let admin = Admin::of(&server);
    admin
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "alice", "password": "correct horse"})),
        )
        .await;
    let mut b = Browser {
        base: format!("http://{}", server.addr),
        cookies: Default::default(),
    };
    let cb = "http://127.0.0.1/callback";
    let reg = b
        .post_json(
            "/oauth/register",
            &json!({"client_name": "Restart", "redirect_uris": [cb],
                    "token_endpoint_auth_method": "none"}),
            &[],
        )
        .await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    let client = reg.json()["client_id"].as_str().unwrap().to_string();
    // Two grants: one kept, one revoked before the restart.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let (verifier, challenge) = pkce_pair();
        let page = b.authorize(&client, cb, &challenge, &[]).await;
        let page = if page.body.contains("name=\"password\"") {
            let request = page.field("request").unwrap_or_default();
            let csrf = page.field("csrf").expect("csrf");
            b.post_form(
                "/oauth/login",
                &[
                    ("request", &request),
                    ("csrf", &csrf),
                    ("method", "password"),
                    ("username", "alice"),
                    ("password", "correct horse"),
                ],
            )
            .await
        } else {
            page
        };
        assert_eq!(page.status, 200, "{}", page.body);
        let r = b.consent(&page, "approve").await;
        assert_eq!(r.status, 303, "{}", r.body);
        let q = query(r.location());
        let t = b.exchange(&client, &q["code"], &verifier, cb).await;
        assert_eq!(t.status, 200, "{}", t.body);
        tokens.push(t.json());
    }
    let (kept, gone) = (&tokens[0], &tokens[1]);
    let access = kept["access_token"].as_str().unwrap().to_string();
    assert_eq!(b.mcp("/mcp", &access).await.status, 200);
    let r = b
        .post_form(
            "/oauth/revoke",
            &[
                ("client_id", &client),
                ("token", gone["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let addr = server.addr;
    server.shutdown().await;

    let server = Server::start(ServeConfig {
        listen: addr,
        ..config(Some(&url), &data)
    })
    .await
    .expect("serve restarts on the same port");
    assert_eq!(
        b.mcp("/mcp", &access).await.status,
        200,
        "access token kept"
    );
    let gone_access = gone["access_token"].as_str().unwrap();
    assert_eq!(
        b.mcp("/mcp", gone_access).await.status,
        401,
        "revocation kept"
    );
    let r = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", kept["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(r.status, 200, "refresh after restart: {}", r.body);
    let fresh = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(b.mcp("/mcp", &fresh).await.status, 200);
    // The rotated-away refresh token is reuse, and reuse ends the grant.
    let r = b
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", kept["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(b.mcp("/mcp", &fresh).await.status, 401);
    server.shutdown().await;
}
