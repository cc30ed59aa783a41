//! The shared Tailnet against the real coordinator and relay on loopback.
//!
//! Prints: warm `agent_conn` acquire+drop latency; a small request/response (dial the
//! agent's echo port, 64 bytes there and back) over a warm handle; the same call in
//! per-call mode (a whole new stack per handle) and the ratio; a cold first dial to an
//! agent through DERP, over plain HTTP and through a TLS hub (coordinator and relay), with
//! the ratio; sockets and tasks before, during and after 1000 concurrent calls.
//!
//! Run: `cargo bench --bench tailnet`.

#![allow(clippy::disallowed_methods)]

#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/pki.rs"]
mod pki;

use agentwire::runtime::tailnet::{DialMode, Tailnet, TailnetConfig};
use cluster::{AGENT_A, AGENT_B, Cluster, echo, fd_count, task_count};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

fn client_cfg(c: &Cluster) -> TailnetConfig {
    let mut cfg = TailnetConfig::client(c.url(), cluster::SERVICE_TOKEN);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    if let Some(t) = &c.tls {
        cfg.tls = t.clone();
    }
    cfg
}

/// Thirty cold first dials to agent B from a relay-only client of `c`, sorted.
async fn cold_dials(c: &Cluster) -> Vec<Duration> {
    let mut cold_cfg = client_cfg(c);
    cold_cfg.relay_only = true;
    cold_cfg.idle_timeout = Duration::from_millis(1);
    let cold_client = Tailnet::start(cold_cfg).unwrap();
    assert!(cold_client.wait_ready(Duration::from_secs(10)).await);
    let b_id = AGENT_B.parse().unwrap();
    let mut cold = Vec::new();
    for _ in 0..30 {
        while !cold_client.destinations().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the coordinator and the agent forget the old tunnel.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let h = cold_client.agent_conn(b_id, deadline()).await.unwrap();
        cold.push(t.elapsed());
        drop(h);
    }
    cold_client.shutdown().await;
    cold.sort();
    cold
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("BENCH_WORKERS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let c = Cluster::start().await;
    let _a = c.agent(AGENT_A).await;
    let _b = c.agent(AGENT_B).await;
    let a_id = AGENT_A.parse().unwrap();
    let client = Tailnet::start(client_cfg(&c)).unwrap();
    let warm = client.agent_conn(a_id, deadline()).await.unwrap();
    echo(&warm, b"warm").await.unwrap();

    // Warm acquire + drop.
    let mut lat = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        let h = client.agent_conn(a_id, deadline()).await.unwrap();
        drop(h);
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "agent_conn_warm_acquire_drop_p50: {:.2} us",
        us(pct(&lat, 0.5))
    );
    println!(
        "agent_conn_warm_acquire_drop_p99: {:.2} us",
        us(pct(&lat, 0.99))
    );

    // A small call over a warm handle: dial, 64 bytes each way, close.
    let msg = [7u8; 64];
    let mut shared = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let h = client.agent_conn(a_id, deadline()).await.unwrap();
        let back = echo(&h, &msg).await.unwrap();
        drop(h);
        shared.push(t.elapsed());
        assert_eq!(back.len(), 64);
    }
    shared.sort();
    let shared_p50 = pct(&shared, 0.5);
    println!("small_call_shared_p50: {:.0} us", us(shared_p50));
    println!("small_call_shared_p99: {:.0} us", us(pct(&shared, 0.99)));

    // A small request/response on a warm connection through a warm handle (as an HTTP
    // client with keep-alive does): 64 bytes there and back.
    let conn = client.agent_conn(a_id, deadline()).await.unwrap();
    let mut s = conn.dial_tcp(7).await.unwrap();
    let mut rr = Vec::new();
    let mut buf = [0u8; 64];
    for _ in 0..5000 {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        rr.push(t.elapsed());
    }
    drop(s);
    drop(conn);
    rr.sort();
    let rr_p50 = pct(&rr, 0.5);
    println!("request_response_warm_p50: {:.0} us", us(rr_p50));
    println!("request_response_warm_p99: {:.0} us", us(pct(&rr, 0.99)));

    // The same call with a whole stack per handle.
    let mut per_call_cfg = client_cfg(&c);
    per_call_cfg.dial_mode = DialMode::PerCall;
    let per_call = Tailnet::start(per_call_cfg).unwrap();
    let mut pc = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let h = per_call.agent_conn(a_id, deadline()).await.unwrap();
        let back = echo(&h, &msg).await.unwrap();
        // Per-call teardown is part of the call, as with a deferred close.
        h.close().await;
        pc.push(t.elapsed());
        assert_eq!(back.len(), 64);
    }
    pc.sort();
    let pc_p50 = pct(&pc, 0.5);
    println!("small_call_per_call_p50: {:.0} us", us(pc_p50));
    println!("small_call_per_call_p99: {:.0} us", us(pct(&pc, 0.99)));
    println!(
        "ratio_per_call_vs_shared_dial_p50: {:.1} x",
        pc_p50.as_secs_f64() / shared_p50.as_secs_f64()
    );
    println!(
        "ratio_per_call_vs_shared_warm_p50: {:.1} x",
        pc_p50.as_secs_f64() / rr_p50.as_secs_f64()
    );

    // Cold first dial through DERP: a relay-only client whose destination is evicted
    // between samples, so every dial redoes tunnel, node, ready and handshake.
    let cold = cold_dials(&c).await;
    println!(
        "cold_dial_derp_p50: {:.2} ms",
        pct(&cold, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "cold_dial_derp_p99: {:.2} ms",
        pct(&cold, 0.99).as_secs_f64() * 1e3
    );
    // The same through a hub that terminates TLS (coordinator wss, relay https).
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(dir.path(), "hub", &["127.0.0.1"], pki::Validity::Good);
    let tls_hub = Cluster::start_tls(
        agentwire::runtime::tls::ServerTls::load(&leaf.cert, &leaf.key).unwrap(),
        agentwire::runtime::tls::ClientTls::with_ca_file(&ca.file).unwrap(),
    )
    .await;
    let _tls_b = tls_hub.agent(AGENT_B).await;
    let cold_tls = cold_dials(&tls_hub).await;
    println!(
        "cold_dial_derp_tls_p50: {:.2} ms",
        pct(&cold_tls, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "cold_dial_derp_tls_p99: {:.2} ms",
        pct(&cold_tls, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "cold_dial_derp_tls_vs_plain_p50_ratio: {:.2} x",
        pct(&cold_tls, 0.5).as_secs_f64() / pct(&cold, 0.5).as_secs_f64()
    );
    tls_hub.stop().await;

    // Resources around 1000 concurrent calls.
    let client = std::sync::Arc::new(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fd0, t0) = (fd_count(), task_count());
    let peak = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize)));
    let mut set = tokio::task::JoinSet::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1001));
    for _ in 0..1000 {
        let (client, barrier) = (client.clone(), barrier.clone());
        set.spawn(async move {
            let h = client.agent_conn(a_id, deadline()).await.unwrap();
            let s = h.dial_tcp(7).await.unwrap();
            barrier.wait().await;
            drop(s);
            drop(h);
        });
    }
    barrier.wait().await;
    {
        let mut p = peak.lock().unwrap();
        *p = (fd_count(), task_count());
    }
    while set.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd1, t1) = *peak.lock().unwrap();
    println!("fds_before_1000_calls: {fd0} fds");
    println!("fds_during_1000_calls: {fd1} fds");
    println!("fds_after_1000_calls: {} fds", fd_count());
    println!("tasks_before_1000_calls: {t0} tasks");
    println!("tasks_during_1000_calls: {t1} tasks");
    println!("tasks_after_1000_calls: {} tasks", task_count());
    drop(warm);
}
