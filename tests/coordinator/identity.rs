//! Attacks on agent identity, each performed against a real coordinator: a second process
//! with a stolen agent token, another node's WireGuard key, endpoint spraying, and one user
//! hogging the coordinator's streams.

#![allow(clippy::disallowed_methods)]

use crate::harness::*;
use agentwire::runtime::coord::CoordEvent;
use agentwire::services::coord::CoordinatorConfig;
use agentwire::wire::coord::PeerKind;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn a_stolen_agent_token_cannot_displace_the_live_agent() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let a = id(AGENT_A);
    let mut agent = peer(&server.url(), "agent-a", a);
    agent.connected().await;
    let real = node(a, 1);
    agent.client.update_self(real.clone());
    let mut alice = peer(
        &server.url(),
        "alice-token",
        id("11111111-1111-4111-8111-111111111111"),
    );
    alice.connected().await;
    alice.client.add_tunnel(a);
    assert_eq!(alice.node_of(a).await.key, real.key);

    // The impersonator retries as fast as it likes; every attempt is refused with a
    // reason, and the real agent's stream is never touched.
    for i in 0..30 {
        let mut ws = raw(server.addr, Some("agent-a")).await.unwrap();
        send(
            &mut ws,
            json!({"type": "hello", "version": 1, "id": a, "name": "evil", "instance": format!("evil{i}")}),
        )
        .await;
        let err = next_json(&mut ws).await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("live on another stream"),
            "{err}"
        );
        let (code, _) = close_of(&mut ws).await;
        assert_eq!(code, agentwire::wire::coord::CLOSE_CONFLICT);
    }
    let info = server
        .coord
        .peers()
        .into_iter()
        .find(|p| p.id == a)
        .unwrap();
    assert_eq!(info.conflict.map(|c| c.count), Some(30));
    assert_eq!(server.coord.stats().registry.replacements, 0);

    // A second real copy of the agent is told why and backs off instead of flapping.
    let mut copy = peer(&server.url(), "agent-a", a);
    let reason = copy.closed().await;
    assert!(reason.contains("4001"), "{reason}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = copy.client.status().conflicts;
    assert!(
        (1..=4).contains(&tries),
        "{tries} attempts in 3 s: not backing off"
    );

    // The real agent stayed registered throughout; alice saw nothing but its node.
    assert!(agent.client.status().connected);
    assert_eq!(agent.client.status().connects, 1);
    while let Ok(ev) = alice.events.try_recv() {
        assert!(
            !matches!(&ev, CoordEvent::Peer(u) if u.id == a && u.kind != PeerKind::Node),
            "alice saw {ev:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn another_nodes_key_is_refused() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let (a, b) = (id(AGENT_A), id(AGENT_B));
    let mut victim = peer(&server.url(), "agent-a", a);
    victim.connected().await;
    let n = node(a, 1);
    victim.client.update_self(n.clone());
    let mut alice = peer(
        &server.url(),
        "alice-token",
        id("11111111-1111-4111-8111-111111111111"),
    );
    alice.connected().await;
    alice.client.add_tunnel(a);
    alice.node_of(a).await;

    let mut ws = raw_hello(server.addr, "agent-b", b).await;
    let mut stolen = node(b, 1);
    stolen.key = n.key;
    assert_ne!(node(b, 1).key, n.key);
    send(&mut ws, json!({"type": "update_self", "node": stolen})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("belongs to node"), "{reason}");
    assert!(victim.client.status().connected);
    server.stop().await;
}

#[tokio::test]
async fn sprayed_endpoints_reach_peers_deduplicated_and_capped() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let a = id(AGENT_A);
    let mut alice = peer(
        &server.url(),
        "alice-token",
        id("11111111-1111-4111-8111-111111111111"),
    );
    alice.connected().await;
    alice.client.add_tunnel(a);
    let mut ws = raw_hello(server.addr, "agent-a", a).await;
    let mut n = node(a, 1);
    n.endpoints = vec!["198.51.100.9:4242".parse().unwrap(); 3000];
    n.endpoints.push("239.1.2.3:4242".parse().unwrap());
    n.endpoints.push("0.0.0.0:4242".parse().unwrap());
    send(&mut ws, json!({"type": "update_self", "node": n})).await;
    let got = alice.node_of(a).await;
    assert_eq!(got.endpoints, vec!["198.51.100.9:4242".parse().unwrap()]);
    assert_eq!(server.coord.stats().registry.endpoints_dropped, 3001);
    server.stop().await;
}

#[tokio::test]
async fn one_user_cannot_take_every_stream() {
    let cfg = CoordinatorConfig {
        max_streams_per_principal: 5,
        ..CoordinatorConfig::default()
    };
    let server = Server::start(control(), cfg).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(raw(server.addr, Some("alice-token")).await.unwrap());
    }
    match raw(server.addr, Some("alice-token")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    assert_eq!(server.coord.stats().principal_limited, 1);
    // Another tenant's agent still registers.
    let mut agent = peer(&server.url(), "agent-c", id(AGENT_C));
    agent.connected().await;
    // Slots come back when streams end.
    held.clear();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if raw(server.addr, Some("alice-token")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
