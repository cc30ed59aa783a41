//! Sleep/wake: a jump of the wall clock past the monotonic one (what a suspend looks
//! like) makes the Tailnet reconnect DERP and the coordinator at once and re-handshake
//! its peers. In its own test binary: the clock skew is process-wide.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::runtime::clock;
use common::cluster::{self, AGENT_A, Cluster, echo};
use std::time::{Duration, Instant};

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jump_reconnects_and_rehandshakes() {
    cluster::init_logs();
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let client = c.client(cluster::ALICE_TOKEN);
    assert!(client.wait_ready(Duration::from_secs(10)).await);
    let conn = client
        .agent_conn(
            AGENT_A.parse().unwrap(),
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(echo(&conn, b"before").await.unwrap(), b"before");
    let derp_connects = client.relay().status()[0].status.connects;
    let coord_connects = client.coordinator_status().unwrap().connects;
    let key = client.destinations().await[0].key.unwrap();
    let session = || async {
        client
            .tunnel()
            .peer_stats(key)
            .await
            .unwrap()
            .unwrap()
            .0
            .last_handshake
            .unwrap()
    };
    let handshake = session().await;

    // boringtun stamps handshakes with its last timer tick (250 ms); leave a few ticks so
    // a new handshake is distinguishable from the first.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // An hour of suspend, as the process sees it.
    clock::skew_wall_clock_for_tests(Duration::from_secs(3600));
    let t0 = Instant::now();
    until("wake detected", || client.wake_count() >= 1).await;
    until("DERP redialled", || {
        client.relay().status()[0].status.connects > derp_connects
    })
    .await;
    until("coordinator redialled", || {
        client.coordinator_status().unwrap().connects > coord_connects
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The handshake time is monotonic, so only a new handshake moves it.
    while session().await <= handshake {
        assert!(Instant::now() < deadline, "no fresh handshake");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "reconnected and re-handshaked {:?} after the clock jump",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "recovery took {:?}",
        t0.elapsed()
    );
    // Traffic flows on the same handle.
    assert_eq!(echo(&conn, b"after").await.unwrap(), b"after");
}
