//! Replicas of `agentwire serve` on one PostgreSQL behind a round-robin load balancer
//! (the set-up of `tests/replicas.rs`: child processes of the binary, agents as
//! `agentwire agent` children). Prints:
//!
//! - peer update latency across replicas: an agent's node update on one replica until a
//!   client on another receives it (p50/p99), measured by the client, and the replicas'
//!   own NOTIFY-to-applied summary from `/metrics` (`agentwire_replica_*` quantiles);
//! - tool call latency p50 through a replica that is the agent's home and through one
//!   that is not, and their ratio, for a relay-only agent and a direct one;
//! - database transactions per second at idle, while 200 agents connect at once, and
//!   during their reconnect storm (every connection cut at the load balancer).
//!
//! Without replica mode in the binary (no `serve --replica-url`) it runs one replica and
//! prints what one replica can show.
//!
//! Run: `cargo bench --bench replicas` (needs PostgreSQL; `BENCH_AGENTS` sets the storm's
//! size, `BENCH_CALLS` the calls per latency figure).

#![allow(clippy::disallowed_methods)]

mod common;
#[path = "../tests/common/lb.rs"]
mod lb;
#[path = "../tests/common/mcp_http.rs"]
mod mcp_http;
#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "../tests/common/replicas.rs"]
mod replica_set;

use agentwire::runtime::coord::{CoordClient, CoordClientConfig, CoordEvent};
use agentwire::wire::addr::{IpCidr, NodeId};
use agentwire::wire::coord::{Node, PeerKind};
use agentwire::wire::key::NodePrivate;
use common::{figure, ms, pct};
use mcp_http::{McpHttp, Outcome};
use replica_set::ReplicaSet;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// A light agent: only its coordinator stream (what reaches the database), as the
/// library's client keeps it, reconnecting with its backoff.
struct LightNode {
    client: CoordClient,
    events: mpsc::Receiver<CoordEvent>,
    id: NodeId,
    key: NodePrivate,
}

impl LightNode {
    fn start(url: &str, token: &str, id: NodeId, name: &str) -> Self {
        let (tx, events) = mpsc::channel(256);
        let client = CoordClient::spawn(
            CoordClientConfig {
                url: url.into(),
                token: token.into(),
                id,
                name: name.into(),
                tls: Default::default(),
            },
            tx,
        );
        Self {
            client,
            events,
            id,
            key: NodePrivate::generate(),
        }
    }

    /// Publishes our node, with `port` as its one endpoint (a change each time).
    fn publish(&self, port: u16) {
        let me = IpCidr::host(IpAddr::V6(self.id.tailnet_addr()));
        self.client.update_self(Node {
            id: self.id,
            key: self.key.public(),
            preferred_derp: 999,
            addresses: vec![me],
            allowed_ips: vec![me],
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            as_of: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        });
    }

    fn connected(&self) -> bool {
        self.client.status().connected
    }
}

async fn wait_all_connected(nodes: &[LightNode], within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while !nodes.iter().all(LightNode::connected) {
        if t.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(t.elapsed())
}

/// Waits until every node has registered again since its count of `connects`; how
/// long that took.
async fn wait_all_reconnected(
    nodes: &[LightNode],
    connects: &[u64],
    within: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    let again = |(n, c): (&LightNode, &u64)| {
        let s = n.client.status();
        s.connected && s.connects > *c
    };
    while !nodes.iter().zip(connects).all(again) {
        if t.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(t.elapsed())
}

/// Waits (up to 10 s) for a node update of the client's peer with `port` as its
/// endpoint; whether it came.
async fn wait_for_port(client: &mut LightNode, port: u16) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, client.events.recv()).await {
            Ok(Some(CoordEvent::Peer(u)))
                if u.kind == PeerKind::Node
                    && u.node
                        .as_ref()
                        .is_some_and(|n| n.endpoints.first().is_some_and(|e| e.port() == port)) =>
            {
                return true;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Transactions per second in the set's database over the next `secs`.
async fn tps_over(set: &ReplicaSet, secs: u64) -> f64 {
    let a = set.transactions().await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let b = set.transactions().await;
    b.saturating_sub(a) as f64 / secs as f64
}

async fn run() {
    let Some(pg) = replica_set::postgres_or_skip() else {
        return;
    };
    let set = ReplicaSet::start(Arc::new(pg), 3).await;
    let n = set.replicas.len();
    let other = 1 % n;
    println!(
        "replicas: {n}{}",
        if set.multi {
            ""
        } else {
            " (no replica mode in the binary)"
        }
    );
    let alice = set.user("alice").await;

    // Tool calls: agents homed on replica 0, calls through 0 (same) and 1 (other).
    let mut agents = Vec::new();
    let mut targets = Vec::new();
    set.lb.only(Some(0));
    for (name, relay_only) in [("relay", true), ("direct", false)] {
        let (_, token) = set.workspace("alice", name).await;
        agents.push(set.spawn_agent(name, &token, relay_only));
        targets.push((
            name,
            format!("alice/{name}"),
            set.agent_dir(name).display().to_string(),
        ));
    }
    set.lb.only(None);
    let calls = env("BENCH_CALLS", 200);
    // A relay-only agent is reachable through another replica only over the relays' mesh.
    let meshed = !set.multi || set.meshed(Duration::from_secs(5)).await;
    for (name, ws, dir) in &targets {
        let mut p50s = Vec::new();
        for (label, r) in [("same", 0), ("other", other)] {
            if label == "other" && n == 1 {
                continue;
            }
            if label == "other" && *name == "relay" && !meshed {
                println!(
                    "tool_call_p50_other_home_relay: n/a (the replicas' relays are not meshed)"
                );
                continue;
            }
            let mut mcp = McpHttp::new(set.replicas[r].addr, &alice);
            let args = json!({"workspace": ws, "path": dir});
            // Warm: the replica's tunnel to the agent is set up by the first calls.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !matches!(
                mcp.call("workspace_ls", args.clone(), Duration::from_secs(10))
                    .await,
                Outcome::Ok(_)
            ) {
                assert!(Instant::now() < deadline, "{ws} reachable through {r}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut lat = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                let out = mcp
                    .call("workspace_ls", args.clone(), Duration::from_secs(10))
                    .await;
                assert!(matches!(out, Outcome::Ok(_)), "{out:?}");
                lat.push(t.elapsed());
            }
            lat.sort();
            figure(
                &format!("tool_call_p50_{label}_home_{name}"),
                ms(pct(&lat, 0.5)),
                "ms",
            );
            figure(
                &format!("tool_call_p99_{label}_home_{name}"),
                ms(pct(&lat, 0.99)),
                "ms",
            );
            p50s.push(pct(&lat, 0.5));
        }
        if let [same, other] = p50s[..] {
            figure(
                &format!("tool_call_p50_other_over_same_{name}"),
                other.as_secs_f64() / same.as_secs_f64(),
                "x",
            );
        }
    }

    // Peer updates across replicas: a light agent on replica 0, a client on the other
    // with a tunnel to it; each node update timed until the client has it.
    let (ws_agent, ws_token) = set.workspace("alice", "updates").await;
    let agent_id: NodeId = ws_agent.parse().unwrap();
    let replica_url = |i: usize| set.replicas[i].url();
    let agent = LightNode::start(&replica_url(0), &ws_token, agent_id, "updates");
    let mut client = LightNode::start(&replica_url(other), &alice, NodeId::random(), "client");
    agent.publish(10_000);
    client.client.add_tunnel(agent_id);
    let updates = env("BENCH_CALLS", 200).min(200);
    let mut lat = Vec::with_capacity(updates);
    let mut port = 10_000u16;
    assert!(
        wait_for_port(&mut client, port).await,
        "the client sees the agent"
    );
    for _ in 0..updates {
        port += 1;
        let t = Instant::now();
        agent.publish(port);
        assert!(
            wait_for_port(&mut client, port).await,
            "update {port} arrives"
        );
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat.sort();
    let across = if n > 1 {
        "across_replicas"
    } else {
        "same_replica"
    };
    figure(
        &format!("peer_update_p50_{across}"),
        ms(pct(&lat, 0.5)),
        "ms",
    );
    figure(
        &format!("peer_update_p99_{across}"),
        ms(pct(&lat, 0.99)),
        "ms",
    );
    replica_summaries(&set).await;
    client.client.shutdown().await;
    agent.client.shutdown().await;

    // Database load: idle, 200 agents connecting at once, then reconnecting at once.
    // Idle means after the work above has been written and re-read everywhere: give the
    // outboxes and listeners a few seconds first.
    let idle_secs = 10;
    let settle = Duration::from_secs(5);
    tokio::time::sleep(settle).await;
    figure("db_tps_idle", tps_over(&set, idle_secs).await, "tx/s");
    let storm = env("BENCH_AGENTS", 200);
    set.admin(
        "POST",
        "/workspaces",
        Some(json!({"owner": "alice", "name": "storm", "shared_with": []})),
    )
    .await;
    let mut creds = Vec::with_capacity(storm);
    for i in 0..storm {
        let a = set
            .admin(
                "POST",
                "/agents",
                Some(json!({"workspace": "alice/storm", "name": format!("n{i}")})),
            )
            .await;
        let id: NodeId = a["agent"]["id"].as_str().unwrap().parse().unwrap();
        creds.push((id, a["token"]["token"].as_str().unwrap().to_string()));
    }
    let url = set.public_url();
    let before = set.transactions().await;
    let t = Instant::now();
    let nodes: Vec<LightNode> = creds
        .iter()
        .enumerate()
        .map(|(i, (id, token))| {
            let node = LightNode::start(&url, token, *id, &format!("n{i}"));
            node.publish(20_000 + i as u16);
            node
        })
        .collect();
    let up = wait_all_connected(&nodes, Duration::from_secs(60)).await;
    let connect_secs = t.elapsed().as_secs_f64().max(1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = set.transactions().await;
    match up {
        Some(d) => figure("storm_connect_all_s", d.as_secs_f64(), "s"),
        None => println!("storm_connect_all_s: not all connected in 60 s"),
    }
    figure(
        "db_tps_storm_connect",
        after.saturating_sub(before) as f64 / (connect_secs + 2.0),
        "tx/s",
    );
    figure(
        "db_tx_per_agent_connect",
        after.saturating_sub(before) as f64 / storm as f64,
        "tx",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = set.transactions().await;
    let connects: Vec<u64> = nodes.iter().map(|n| n.client.status().connects).collect();
    let t = Instant::now();
    for i in 0..set.lb.len() {
        set.lb.cut(i);
    }
    let up = wait_all_reconnected(&nodes, &connects, Duration::from_secs(60)).await;
    let storm_secs = t.elapsed().as_secs_f64().max(1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = set.transactions().await;
    match up {
        Some(d) => figure("storm_reconnect_all_s", d.as_secs_f64(), "s"),
        None => println!("storm_reconnect_all_s: not all reconnected in 60 s"),
    }
    figure(
        "db_tps_reconnect_storm",
        after.saturating_sub(before) as f64 / (storm_secs + 2.0),
        "tx/s",
    );
    tokio::time::sleep(settle).await;
    let idle = tps_over(&set, idle_secs).await;
    figure("db_tps_idle_with_agents", idle, "tx/s");
    for node in nodes {
        node.client.shutdown().await;
    }
    drop(agents);
}

/// The replicas' own summaries of NOTIFY-to-applied latency: every `agentwire_replica_*`
/// sample with a 0.5 or 0.99 quantile, per replica.
async fn replica_summaries(set: &ReplicaSet) {
    let mut any = false;
    for i in set.up() {
        let Some(page) = set.metrics(i).await else {
            continue;
        };
        for l in page.lines() {
            if l.starts_with("agentwire_replica_")
                && (l.contains("quantile=\"0.5\"") || l.contains("quantile=\"0.99\""))
                && let Some((key, v)) = l.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                any = true;
                let q = if key.contains("0.99") { "p99" } else { "p50" };
                let name = key.split('{').next().unwrap_or(key);
                figure(&format!("replica{i}.{name}.{q}"), v * 1e3, "ms");
            }
        }
    }
    if !any {
        println!("replica NOTIFY-to-applied summary: none on /metrics (no replica mode)");
    }
}
