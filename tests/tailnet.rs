//! The shared Tailnet against the real coordinator and DERP relay on loopback, with agents
//! as tailnet nodes serving an echo on port 7.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::proto::wg::PathAddr;
use agentwire::runtime::tailnet::{ConnError, DialMode, Tailnet, TailnetConfig};
use agentwire::services::agent::client::AgentClient;
use common::cluster::{self, AGENT_A, AGENT_B, AGENT_C, Cluster, echo, fd_count, task_count};
use std::time::Duration;
use tokio::time::Instant;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_reaches_two_agents() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let _b = c.agent(AGENT_B).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let ca = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    let cb = client
        .agent_conn(AGENT_B.parse().unwrap(), soon())
        .await
        .unwrap();
    assert_eq!(echo(&ca, b"to a").await.unwrap(), b"to a");
    assert_eq!(echo(&cb, b"to b").await.unwrap(), b"to b");
    let big = vec![9u8; 2 << 20];
    assert_eq!(echo(&ca, &big).await.unwrap().len(), big.len());
    let d = client.destinations().await;
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .all(|d| d.stage == "ready" && d.leases == 1 && d.last_handshake.is_some())
    );
    // Loopback agents advertise their UDP socket, so the path goes direct.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let _ = echo(&ca, b"x").await;
        let d = client.destinations().await;
        if d.iter().any(|d| matches!(d.path, Some(PathAddr::Udp(_)))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never moved to a direct path: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_client_stays_on_derp() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let mut cfg = TailnetConfig::client(c.url(), cluster::ALICE_TOKEN);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    cfg.relay_only = true;
    let client = Tailnet::start(cfg).unwrap();
    let ca = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(echo(&ca, b"hello").await.unwrap(), b"hello");
    }
    let d = client.destinations().await;
    assert_eq!(
        d[0].path,
        Some(PathAddr::Derp(agentwire::services::hub::EMBEDDED_REGION))
    );
    assert_eq!(
        client
            .tunnel()
            .stats()
            .await
            .unwrap()
            .driver
            .udp_tx_datagrams,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_acquire_drop_cycles_create_no_sockets_or_tasks() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let id = AGENT_A.parse().unwrap();
    // Warm up: the destination is set up once.
    let first = client.agent_conn(id, soon()).await.unwrap();
    assert_eq!(echo(&first, b"warm").await.unwrap(), b"warm");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (fds, tasks) = (fd_count(), task_count());
    for _ in 0..1000 {
        let conn = client.agent_conn(id, soon()).await.unwrap();
        let clone = conn.clone();
        drop(conn);
        drop(clone);
    }
    assert_eq!(fd_count(), fds, "file descriptors changed");
    assert_eq!(task_count(), tasks, "tasks changed");
    let d = client.destinations().await;
    assert_eq!(d[0].leases, 0);
    assert_eq!(d[0].leases_total, 2001);
}

/// `DialMode::PerCall` exists for benchmarks: each handle gets a whole stack of its own
/// (a fresh key, UDP socket, coordinator and relay connections), which must reach the
/// agent (after a reachability ping, as the reference's per-call path does) and go away
/// entirely when the handle drops, with or without a DERP map fetched for the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_handles_build_a_stack_each_and_leave_nothing_behind() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let mut cfg = TailnetConfig::client(c.url(), cluster::ALICE_TOKEN);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    cfg.dial_mode = DialMode::PerCall;
    let client = Tailnet::start(cfg).unwrap();
    let id = AGENT_A.parse().unwrap();
    // Warm the process (first TLS and logging setup), then count.
    let first = client.agent_conn(id, soon()).await.unwrap();
    assert_eq!(echo(&first, b"warm").await.unwrap(), b"warm");
    drop(first);
    // The cluster's relay runs in this process too. With the map known at start, the
    // stack logs in to the relay before the coordinator has its node, and a call on the
    // direct path can end while that login still waits for admission: the relay must
    // let it go when the stack closes (it used to hold it for its 5 s admission wait).
    let settled = |want: (usize, usize)| async move {
        let until = Instant::now() + Duration::from_secs(2);
        while (fd_count(), task_count()) != want && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (fd_count(), task_count())
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = (fd_count(), task_count());
    for i in 0..4 {
        let conn = if i % 2 == 0 {
            client.agent_conn(id, soon()).await.unwrap()
        } else {
            client
                .agent_conn_with_map(id, soon(), c.hub.derp_map.clone())
                .await
                .unwrap()
        };
        assert_eq!(echo(&conn, b"per call").await.unwrap(), b"per call");
        // The long-lived Tailnet itself never holds the destination.
        assert!(client.destinations().await.is_empty());
        drop(conn);
        assert_eq!(
            settled(before).await,
            before,
            "call {i} left a stack behind"
        );
    }
    client.shutdown().await;
}

/// A client that goes away without a goodbye (its process crashed) is reported lost,
/// and the agent keeps its peer while its sessions may still be in use; once its tunnel
/// has been idle for the lost-client timeout the agent forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_forget_clients_lost_without_a_goodbye() {
    let c = Cluster::start().await;
    let a = cluster::agent_node(&c.url(), AGENT_A, |cfg| {
        cfg.lost_client_timeout = Duration::from_millis(500);
    })
    .await;
    let client = c.client(cluster::ALICE_TOKEN);
    let conn = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    assert_eq!(echo(&conn, b"hi").await.unwrap(), b"hi");
    let key = client.tunnel().public();
    assert!(a.tunnel().peer_stats(key).await.unwrap().is_some());
    drop(conn);
    // Dropped, not shut down: no goodbye reaches the coordinator.
    drop(client);
    let t = Instant::now();
    while a.tunnel().peer_stats(key).await.unwrap().is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the agent kept a client lost without a goodbye"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        a.peer_update_counts().disconnected,
        0,
        "it was lost, not disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_destinations_are_evicted_and_come_back() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let mut cfg = TailnetConfig::client(c.url(), cluster::ALICE_TOKEN);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    cfg.idle_timeout = Duration::from_millis(500);
    let client = Tailnet::start(cfg).unwrap();
    let id = AGENT_A.parse().unwrap();
    let conn = client.agent_conn(id, soon()).await.unwrap();
    assert_eq!(echo(&conn, b"1").await.unwrap(), b"1");
    // Held: never evicted.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(client.destinations().await.len(), 1);
    drop(conn);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !client.destinations().await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "not evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        client.tunnel().stats().await.unwrap().driver.peers,
        0,
        "peer removed"
    );
    // The coordinator forgets the tunnel too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.hub.coordinator().stats().registry.tunnels > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "tunnel not removed at the coordinator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = client.agent_conn(id, soon()).await.unwrap();
    assert_eq!(echo(&conn, b"2").await.unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_tunnel_is_refused_and_others_keep_working() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let _c3 = c.agent(AGENT_C).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let ok = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    let err = client
        .agent_conn(
            AGENT_C.parse().unwrap(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnError::Refused(..) | ConnError::NoNode(_)),
        "{err}"
    );
    // alice's other destination keeps working after her stream was closed and replayed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(2), echo(&ok, b"still")).await {
            assert_eq!(v, b"still");
            break;
        }
        assert!(std::time::Instant::now() < deadline);
    }
    // A fresh dial to an authorized agent also works.
    let again = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    assert_eq!(echo(&again, b"ok").await.unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_foreign_identity_is_refused() {
    let c = Cluster::start().await;
    // Agent B's token, claiming agent A's id (so A's address).
    let id: agentwire::wire::addr::NodeId = AGENT_A.parse().unwrap();
    let mut cfg = TailnetConfig::agent(c.url(), cluster::agent_token(AGENT_B), id);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    let impostor = Tailnet::start(cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!impostor.coordinator_connected());
    assert!(c.hub.coordinator().peers().iter().all(|p| p.id != id));
    let client = c.client(cluster::ALICE_TOKEN);
    let err = client
        .agent_conn(id, Instant::now() + Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err, ConnError::NoNode(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_a_coordinator_restart() {
    let c = Cluster::start().await;
    let addr = c.addr;
    let _a = cluster::agent_node(&c.url(), AGENT_A, |_| {}).await;
    let _b = cluster::agent_node(&c.url(), AGENT_B, |_| {}).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let ca = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    assert_eq!(echo(&ca, b"before").await.unwrap(), b"before");
    // Wait for the direct path, so the session does not depend on the relay that goes
    // down with the hub.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !client
        .destinations()
        .await
        .iter()
        .any(|d| matches!(d.path, Some(PathAddr::Udp(_))))
    {
        let _ = echo(&ca, b".").await;
        assert!(std::time::Instant::now() < deadline, "no direct path");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    // Existing tunnel keeps working while the coordinator is away.
    for i in 0..5 {
        let msg = format!("during {i}");
        assert_eq!(echo(&ca, msg.as_bytes()).await.unwrap(), msg.as_bytes());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !client.destinations().await[0].lost {
        assert!(std::time::Instant::now() < deadline, "peer not marked lost");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.destinations().await.len(), 1, "lost, not removed");
    let c = Cluster::start_on(addr).await;
    // After: existing and new tunnels work.
    assert_eq!(echo(&ca, b"after").await.unwrap(), b"after");
    let cb = client
        .agent_conn(AGENT_B.parse().unwrap(), soon())
        .await
        .unwrap();
    assert_eq!(echo(&cb, b"new").await.unwrap(), b"new");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_agent_fails_within_the_callers_deadline() {
    let c = Cluster::start().await;
    let a = cluster::api_agent(&c.url(), AGENT_A, &std::env::temp_dir()).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let id = AGENT_A.parse().unwrap();
    let conn = client.agent_conn(id, soon()).await.unwrap();
    assert!(AgentClient::over(&conn).health().await.is_ok());
    let tasks = task_count();

    // Gone without a word: its tunnel stops, its coordinator stream says nothing yet.
    a.tailnet().tunnel().close_now();
    let t = Instant::now();
    let err = AgentClient::over(&conn)
        .with_timeout(Duration::from_secs(1))
        .health()
        .await
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}: {err}",
        t.elapsed()
    );
    drop(conn);

    // An agent the coordinator has never seen: the caller's deadline, not ours.
    let t = Instant::now();
    let b = AGENT_B.parse().unwrap();
    let err = client
        .agent_conn(b, Instant::now() + Duration::from_millis(800))
        .await
        .unwrap_err();
    assert_eq!(err, ConnError::NoNode(b));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );

    // Nothing the failed calls started outlives them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(task_count() <= tasks, "tasks {} → {}", tasks, task_count());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_api_connections_are_shared_and_let_go_when_the_destination_goes() {
    use agentwire::services::agent::pool::AgentPools;
    let c = Cluster::start().await;
    let _a = cluster::api_agent(&c.url(), AGENT_A, &std::env::temp_dir()).await;
    let mut cfg = TailnetConfig::client(c.url(), cluster::ALICE_TOKEN);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    cfg.idle_timeout = Duration::from_millis(500);
    let client = Tailnet::start(cfg).unwrap();
    let pools = AgentPools::new(&client);
    let id = AGENT_A.parse().unwrap();
    let conn = client.agent_conn(id, soon()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks = task_count();

    let first = pools.client(&conn);
    assert!(first.health().await.is_ok());
    drop(first);
    assert_eq!(pools.idle(), vec![(id, 1)], "the call left its connection");
    // A later call, through another handle, takes that connection instead of dialling:
    // had it dialled, both would be idle now.
    let again = conn.clone();
    drop(conn);
    let second = pools.client(&again);
    assert!(second.health().await.is_ok());
    drop(second);
    assert_eq!(pools.idle(), vec![(id, 1)], "the connection was reused");

    // The pool holds no lease: with the last handle gone the destination idles out, and
    // the Tailnet's departure empties and forgets its pool.
    drop(again);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !pools.idle().is_empty() || !client.destinations().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pool kept after the destination went: {:?}",
            pools.idle()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        task_count() <= tasks,
        "the pooled connection's task outlived its destination"
    );

    // And it comes back on next use.
    let conn = client.agent_conn(id, soon()).await.unwrap();
    assert!(pools.client(&conn).health().await.is_ok());
    assert_eq!(pools.idle(), vec![(id, 1)]);
}
