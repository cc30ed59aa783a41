//! The coordinator end to end: a real axum server on 127.0.0.1 with the in-memory control
//! plane, real `CoordClient`s, and raw websockets for the misbehaving peers.

mod harness;
mod identity;

use agentwire::runtime::coord::CoordEvent;
use agentwire::services::coord::{Coordinator, CoordinatorConfig};
use agentwire::wire::addr::NodeId;
use agentwire::wire::coord::{PeerKind, PeerUpdate};
use futures_util::{SinkExt, StreamExt};
use harness::*;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn client_and_two_agents_exchange_nodes() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let mut a = peer(&server.url(), "agent-a", id(AGENT_A));
    let mut b = peer(&server.url(), "agent-b", id(AGENT_B));
    let mut alice = peer(&server.url(), "alice-token", NodeId::random());
    for p in [&mut a, &mut b, &mut alice] {
        p.connected().await;
    }
    let (na, nb, nc) = (node(a.id, 1), node(b.id, 1), node(alice.id, 1));
    a.client.update_self(na.clone());
    b.client.update_self(nb.clone());
    alice.client.update_self(nc.clone());
    alice.client.add_tunnel(a.id);
    alice.client.add_tunnel(b.id);

    assert_eq!(alice.node_of(a.id).await, na);
    assert_eq!(alice.node_of(b.id).await, nb);
    assert_eq!(a.node_of(alice.id).await, nc);
    assert_eq!(b.node_of(alice.id).await, nc);

    // Latest wins: several quick updates; the last one is what arrives last.
    for t in 2..=5 {
        a.client.update_self(node(a.id, t));
    }
    let mut last = 0;
    while last != 5 {
        last = alice.node_of(a.id).await.as_of;
    }

    alice.client.ready_for_handshake(a.id);
    a.peer_event(alice.id, PeerKind::ReadyForHandshake).await;
    b.client.ready_for_handshake(alice.id);
    alice.peer_event(b.id, PeerKind::ReadyForHandshake).await;

    // Removing a tunnel tells both sides.
    alice.client.remove_tunnel(b.id);
    alice.peer_event(b.id, PeerKind::Disconnected).await;
    b.peer_event(alice.id, PeerKind::Disconnected).await;

    // A graceful shutdown is `disconnected`, not `lost`.
    alice.client.shutdown().await;
    a.peer_event(alice.id, PeerKind::Disconnected).await;
    let stats = server.coord.stats();
    assert_eq!(stats.registry.violations, 0);
    assert_eq!(stats.registry.active, 2);
    server.stop().await;
}

#[tokio::test]
async fn unauthorized_tunnel_closes_only_that_stream() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let mut c = peer(&server.url(), "agent-c", id(AGENT_C));
    let mut bob = peer(&server.url(), "bob-token", NodeId::random());
    c.connected().await;
    bob.connected().await;
    c.client.update_self(node(c.id, 1));
    bob.client.add_tunnel(c.id);
    bob.node_of(c.id).await;

    // Alice may not use bob's agent.
    let mut ws = raw_hello(server.addr, "alice-token", NodeId::random()).await;
    send(&mut ws, json!({"type": "add_tunnel", "id": AGENT_C})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("not authorized"), "{reason}");

    // Everyone else carries on.
    c.client.update_self(node(c.id, 2));
    assert_eq!(bob.node_of(c.id).await.as_of, 2);

    // A real client gets `Closed` for the same thing and is not retried in a hot loop.
    let mut alice = peer(&server.url(), "alice-token", NodeId::random());
    alice.connected().await;
    alice.client.add_tunnel(c.id);
    let reason = alice.closed().await;
    assert!(reason.contains("1008"), "{reason}");
    assert_eq!(server.coord.stats().registry.violations, 2);
    assert!(!alice.client.status().connected);
    server.stop().await;
}

#[tokio::test]
async fn agents_are_held_to_their_identity() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let (a, b) = (id(AGENT_A), id(AGENT_B));

    // Claiming another node's address.
    let mut ws = raw_hello(server.addr, "agent-a", a).await;
    let mut n = node(a, 1);
    n.allowed_ips.push(b.tailnet_prefix().parse().unwrap());
    send(&mut ws, json!({"type": "update_self", "node": n})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("not the /128"), "{reason}");

    // Saying hello with an id the token is not bound to.
    let mut ws = raw(server.addr, Some("agent-a")).await.unwrap();
    send(&mut ws, json!({"type": "hello", "version": 1, "id": b})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.contains("bound to")),
        (1008, true),
        "{reason}"
    );

    // A user's client registering under an agent's id.
    let mut ws = raw(server.addr, Some("alice-token")).await.unwrap();
    send(&mut ws, json!({"type": "hello", "version": 1, "id": b})).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.contains("belongs to an agent")),
        (1008, true),
        "{reason}"
    );

    // Opening a tunnel at all.
    let mut ws = raw_hello(server.addr, "agent-a", a).await;
    send(&mut ws, json!({"type": "add_tunnel", "id": b})).await;
    assert_eq!(close_of(&mut ws).await.0, 1008);

    // Unsupported version: an error message, then a protocol close.
    let mut ws = raw(server.addr, Some("agent-a")).await.unwrap();
    send(&mut ws, json!({"type": "hello", "version": 7, "id": a})).await;
    assert!(
        next_json(&mut ws).await["message"]
            .as_str()
            .unwrap()
            .contains("version 7")
    );
    assert_eq!(close_of(&mut ws).await.0, 1002);
    server.stop().await;
}

#[tokio::test]
async fn bad_token_is_401_before_upgrade() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    for token in [None, Some("wrong"), Some("")] {
        match raw(server.addr, token).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                let h = resp
                    .headers()
                    .get("www-authenticate")
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert!(h.starts_with("Bearer"), "{h}");
            }
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    // A plain GET without a token is 401 too, not a websocket error.
    let resp = http_get(server.addr, "/api/v0/coordinate").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    let mut p = peer(&server.url(), "wrong", NodeId::random());
    let reason = p.closed().await;
    assert!(reason.contains("401"), "{reason}");
    assert!(p.client.status().last_error.unwrap().contains("401"));
    // Retried at the capped backoff (2.5 s or more), never in a hot loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.coord.stats().unauthorized, 5);
    server.stop().await;
}

#[tokio::test]
async fn clients_survive_a_coordinator_restart() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let addr = server.addr;
    let url = server.url();
    let mut a = peer(&url, "agent-a", id(AGENT_A));
    let mut alice = peer(&url, "alice-token", NodeId::random());
    a.connected().await;
    alice.connected().await;
    a.client.update_self(node(a.id, 1));
    alice.client.update_self(node(alice.id, 1));
    alice.client.add_tunnel(a.id);
    alice.node_of(a.id).await;
    a.node_of(alice.id).await;

    server.stop().await;
    // Both sides hear the coordinator go, and their peers reported lost, never removed.
    let (a_id, alice_id) = (a.id, alice.id);
    for (p, other) in [(&mut alice, a_id), (&mut a, alice_id)] {
        p.wait_for("disconnected", |e| {
            matches!(e, CoordEvent::Disconnected { .. }).then_some(())
        })
        .await;
        let seen = p.peer_event(other, PeerKind::Lost).await;
        assert!(seen.is_empty(), "{seen:?}");
    }

    // A fresh coordinator on the same port knows nothing; the clients replay.
    let server = Server::start_on(control(), CoordinatorConfig::default(), addr).await;
    let (n, seen) = alice
        .wait_for("node of a after restart", |e| match e {
            CoordEvent::Peer(PeerUpdate {
                id,
                kind: PeerKind::Node,
                node: Some(n),
                ..
            }) if *id == a.id => Some(n.clone()),
            _ => None,
        })
        .await;
    assert_eq!(n.as_of, 1);
    assert!(
        seen.iter()
            .any(|e| matches!(e, CoordEvent::Connected { .. })),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, CoordEvent::Peer(u) if u.kind == PeerKind::Disconnected)),
        "{seen:?}"
    );
    a.node_of(alice.id).await;
    assert_eq!(alice.client.status().reconnects, 1);
    assert!(alice.client.status().connected);
    assert_eq!(server.coord.stats().registry.tunnels, 1);

    // reconnect_now drops and re-registers at once, replaying again.
    alice.client.reconnect_now();
    alice
        .wait_for("disconnected", |e| {
            matches!(e, CoordEvent::Disconnected { .. }).then_some(())
        })
        .await;
    alice.node_of(a.id).await;
    assert_eq!(alice.client.status().reconnects, 2);
    server.stop().await;
}

#[tokio::test]
async fn malformed_floods_do_not_disturb_other_streams() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let mut b = peer(&server.url(), "agent-b", id(AGENT_B));
    let mut alice = peer(&server.url(), "alice-token", NodeId::random());
    b.connected().await;
    alice.connected().await;
    b.client.update_self(node(b.id, 1));
    alice.client.add_tunnel(b.id);
    alice.node_of(b.id).await;

    // 1000 malformed messages with a valid one every tenth: answered one by one, never
    // closed, while the honest streams keep working.
    let ws = raw_hello(server.addr, "agent-a", id(AGENT_A)).await;
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let mut errors = 0;
        while errors < 1000 {
            match tokio::time::timeout(WAIT, rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"error\"") => errors += 1,
                Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => {}
                other => panic!("after {errors} errors: {other:?}"),
            }
        }
        errors
    });
    let bad = [
        "{",
        "[]",
        "null",
        r#"{"type":"warp"}"#,
        r#"{"type":"add_tunnel","id":"x"}"#,
    ];
    for i in 0..1000 {
        tx.send(Message::text(bad[i % bad.len()])).await.unwrap();
        if i % 10 == 9 {
            let ok = json!({"type": "remove_tunnel", "id": NodeId::random()});
            tx.send(Message::text(ok.to_string())).await.unwrap();
        }
        if i == 500 {
            b.client.update_self(node(b.id, 2));
        }
    }
    assert_eq!(reader.await.unwrap(), 1000);
    assert_eq!(alice.node_of(b.id).await.as_of, 2);

    // Without the valid ones, the stream is closed after a bounded number.
    let mut ws = raw_hello(server.addr, "agent-c", id(AGENT_C)).await;
    for _ in 0..1000 {
        if ws.send(Message::text("{garbage")).await.is_err() {
            break;
        }
    }
    assert_eq!(close_of(&mut ws).await.0, 1002);

    // Oversized: closed at once with 1009.
    let mut ws = raw_hello(server.addr, "agent-c", id(AGENT_C)).await;
    let big = json!({"type": "disconnect", "pad": "x".repeat(100 * 1024)});
    send(&mut ws, big).await;
    assert_eq!(close_of(&mut ws).await.0, 1009);

    b.client.update_self(node(b.id, 3));
    assert_eq!(alice.node_of(b.id).await.as_of, 3);
    let stats = server.coord.stats();
    assert!(stats.registry.bad_messages >= 1000 + 33, "{stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn slow_reader_is_closed_not_buffered() {
    let cfg = CoordinatorConfig {
        queue: 8,
        ..CoordinatorConfig::default()
    };
    let server = Server::start(control(), cfg).await;
    // Alice opens a tunnel and then never reads.
    let alice_id = NodeId::random();
    let mut alice = raw_hello(server.addr, "alice-token", alice_id).await;
    send(&mut alice, json!({"type": "add_tunnel", "id": AGENT_A})).await;
    let mut a = raw_hello(server.addr, "agent-a", id(AGENT_A)).await;
    let mut sent = 0u64;
    while server.coord.stats().slow_closed == 0 {
        for _ in 0..500 {
            sent += 1;
            let n = json!({"type": "update_self", "node": node(id(AGENT_A), sent)});
            a.send(Message::text(n.to_string())).await.unwrap();
        }
        assert!(sent < 500_000, "never closed");
        tokio::task::yield_now().await;
    }
    // The agent heard that alice was lost; its own stream is fine.
    let lost = next_json(&mut a).await;
    assert_eq!(
        (lost["kind"].as_str(), lost["id"].as_str()),
        (Some("lost"), Some(alice_id.to_string().as_str()))
    );
    assert_eq!(server.coord.stats().registry.active, 1);
    server.stop().await;
}

#[tokio::test]
async fn coordinator_mounts_into_a_larger_app() {
    let coord = Coordinator::new(control(), CoordinatorConfig::default());
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(coord.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(http_get(addr, "/healthz").await.ends_with("ok"));
    let mut ws = raw_hello(addr, "agent-a", id(AGENT_A)).await;
    // Shutting the coordinator down closes its streams with 1001 even though the app lives.
    coord.shutdown().await;
    assert_eq!(close_of(&mut ws).await.0, 1001);
    assert!(http_get(addr, "/healthz").await.ends_with("ok"));
    match raw(addr, Some("agent-a")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    task.abort();
}

/// Prints node propagation latency and recovery time after a coordinator restart.
/// Run with `cargo test --test coordinator measure -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement, not a check"]
#[allow(clippy::disallowed_methods)] // wall time is what is being measured
async fn measure_latency_and_recovery() {
    let server = Server::start(control(), CoordinatorConfig::default()).await;
    let (addr, url) = (server.addr, server.url());
    let mut a = peer(&url, "agent-a", id(AGENT_A));
    let mut alice = peer(&url, "alice-token", NodeId::random());
    a.connected().await;
    alice.connected().await;
    alice.client.add_tunnel(a.id);
    let mut samples = Vec::new();
    for t in 1..=200 {
        let start = std::time::Instant::now();
        a.client.update_self(node(a.id, t));
        while alice.node_of(a.id).await.as_of != t {}
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "update_self -> peer: median {:?}, p99 {:?}",
        samples[100], samples[197]
    );

    server.stop().await;
    let start = std::time::Instant::now();
    let _server = Server::start_on(control(), CoordinatorConfig::default(), addr).await;
    alice.node_of(a.id).await;
    println!("restart -> node again: {:?}", start.elapsed());
}
