//! Two `serve` replicas in one process on one PostgreSQL database: coordinator state
//! shared through the database. An agent registered on one is present on the other, a
//! tool call through the other reaches it, its goodbye reads as `disconnected` there and
//! its replica's loss as `lost`, and nothing is left in the tables afterwards.
//! (The failover suite with real processes and a load balancer is `tests/replicas.rs`.)

use super::mcp_http::{McpHttp, Outcome};
use super::{Case, Ctx};
use agentwire::proto::coord::server::Presence;
use agentwire::services::agent::{Agent, AgentConfig};
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub const ALL: &[(&str, Case)] = &[("replica_shared_coordinator", |c| {
    Box::pin(shared_coordinator(c))
})];

const WAIT: Duration = Duration::from_secs(10);

async fn start(url: &str, data: &Path) -> Server {
    let cfg = ServeConfig {
        database_url: Some(url.to_string()),
        stun_listen: None,
        ..ServeConfig::loopback(data)
    };
    Server::start(cfg).await.expect("serve starts")
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_ok(server: &Server, path: &str, body: serde_json::Value) -> serde_json::Value {
    let token = std::fs::read_to_string(&server.admin.as_ref().expect("a store").token_file)
        .expect("admin token")
        .trim()
        .to_string();
    let base = agentwire::services::public_url::BaseUrl::parse(
        "url",
        &format!("http://{}", server.addr),
        false,
    )
    .unwrap();
    let (status, bytes) = agentwire::cli::http::request(
        &agentwire::runtime::tls::ClientTls::default(),
        &base,
        "POST".parse().unwrap(),
        &format!("/api/v0/admin{path}"),
        &token,
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
    .expect("admin request");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn shared_coordinator(ctx: Ctx) {
    if !ctx.is_postgres() {
        return;
    }
    let url = ctx.database_url().await;
    let a = start(&url, &ctx.scratch()).await;
    let b = start(&url, &ctx.scratch()).await;
    let (ra, rb) = (
        a.replica().expect("replica a"),
        b.replica().expect("replica b"),
    );
    assert_ne!(ra.id(), rb.id());
    until("both replicas live", || {
        ra.stats().live == 2 && rb.stats().live == 2
    })
    .await;

    admin_ok(&a, "/users", json!({"name": "u"})).await;
    let user = admin_ok(&a, "/tokens", json!({"user": "u"})).await;
    let user = user["token"].as_str().unwrap().to_string();
    admin_ok(
        &a,
        "/workspaces",
        json!({"owner": "u", "name": "dev", "shared_with": []}),
    )
    .await;
    let agent = admin_ok(&a, "/agents", json!({"workspace": "u/dev"})).await;
    let id: NodeId = agent["agent"]["id"].as_str().unwrap().parse().unwrap();
    let agent_token = agent["token"]["token"].as_str().unwrap().to_string();

    let dir = ctx.scratch();
    let file = dir.join("hello.txt");
    std::fs::write(&file, "hi from the workspace").unwrap();
    let mut cfg = AgentConfig::new(&format!("http://{}", a.addr), &agent_token, id, dir);
    cfg.tailnet.udp_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // Relay only: b's shared tunnel reaches it through b's relay, the mesh, a's relay.
    cfg.tailnet.relay_only = true;
    let agent = Agent::start(cfg).expect("agent starts");
    assert!(agent.wait_ready(WAIT).await, "agent connected to replica a");

    // Registered on a, present on b.
    let b_coord = b.hub().coordinator();
    until("the agent is online at replica b", || {
        matches!(b_coord.presence(id), Presence::Online { .. })
    })
    .await;

    // A tool call through b reaches the agent held by a.
    let mut mcp = McpHttp::new(b.addr, &user);
    let t0 = Instant::now();
    let out = mcp
        .call(
            "workspace_read_file",
            json!({"workspace": "dev", "path": file}),
            Duration::from_secs(20),
        )
        .await;
    match out {
        Outcome::Ok(v) => assert!(v.to_string().contains("hi from the workspace"), "{v}"),
        other => panic!("call through replica b: {other:?}"),
    }
    println!(
        "first call through the other replica: {} ms",
        t0.elapsed().as_millis()
    );
    let rows = ra.row_counts().await.unwrap();
    assert_eq!(rows[0], 2, "two replicas registered");
    assert!(rows[1] >= 3, "agent and both services bound: {rows:?}");
    assert!(
        rows[2] >= 1,
        "b's service has a tunnel to the agent: {rows:?}"
    );

    // A goodbye reads as disconnected at b.
    agent.shutdown().await;
    until("the agent is offline at b, gracefully", || {
        matches!(
            b_coord.presence(id),
            Presence::Offline { graceful: true, .. }
        )
    })
    .await;
    let remote = b_coord.remote_stats();
    assert_eq!(remote.remote_lost, 0, "{remote:?}");

    // Replica a going away: its rows go with it, and b no longer lists it.
    a.shutdown().await;
    until("b sees one replica", || rb.stats().live == 1).await;
    until("a's peers gone at b", || {
        b_coord.remote_stats().remote_peers == 0
    })
    .await;
    let stats = rb.stats();
    assert_eq!(stats.bad_rows, 0, "{stats:?}");
    assert_eq!(stats.bad_notifications, 0, "{stats:?}");
    let rb_rows = rb.clone();
    b.shutdown().await;
    assert_eq!(
        rb_rows.row_counts().await.ok(),
        None,
        "pool closed at shutdown"
    );
    // Nothing left behind in the database.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    for table in ["replicas", "coord_peers", "coord_tunnels"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "rows left in {table}");
    }
    drop(client);
    let _ = task.await;
}
