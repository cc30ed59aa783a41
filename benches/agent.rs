//! The agent API through a warm `AgentConn` over the shared Tailnet (coordinator, relay,
//! agent and client in one process on loopback): latency of a 4 KiB read, and 64 MiB read
//! and write throughput. For reference, the same calls against the same API over kernel
//! loopback TCP, measured in the same run.
//!
//! Run: `cargo bench --bench agent`.

#![allow(clippy::disallowed_methods)]

#[path = "../tests/common/cluster.rs"]
mod cluster;

use agentwire::services::agent::api::{self, AgentApi, AgentApiConfig};
use agentwire::services::agent::client::{AgentClient, TcpDialer};
use agentwire::services::agent::{Agent, AgentConfig};
use bytes::Bytes;
use cluster::{AGENT_A, Cluster};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Figures {
    p50: Duration,
    p99: Duration,
    read_mbs: f64,
    write_mbs: f64,
}

async fn measure(api: &AgentClient, dir: &std::path::Path) -> Figures {
    let small = dir.join("small.txt").display().to_string();
    let big = dir.join("big.bin").display().to_string();
    api.write_file(&small, Bytes::from(vec![b'x'; 4096]))
        .await
        .unwrap();
    for _ in 0..200 {
        api.read_file(&small, 0, None).await.unwrap();
    }
    let mut lat = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let t = Instant::now();
        let (_, b) = api.read_file(&small, 0, None).await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(b.len(), 4096);
    }
    let data = Bytes::from(vec![0xa5u8; 64 << 20]);
    let mut write = Vec::new();
    let mut read = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        api.write_file(&big, data.clone()).await.unwrap();
        write.push(t.elapsed());
        let t = Instant::now();
        let (_, b) = api.read_file(&big, 0, Some(64 << 20)).await.unwrap();
        read.push(t.elapsed());
        assert_eq!(b.len(), 64 << 20);
    }
    let mbs = |d: Duration| 64.0 * 1.048576 / d.as_secs_f64();
    Figures {
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        read_mbs: mbs(pct(&mut read, 0.5)),
        write_mbs: mbs(pct(&mut write, 0.5)),
    }
}

fn api_config(dir: &std::path::Path) -> AgentApiConfig {
    AgentApiConfig {
        workdir: dir.to_path_buf(),
        body_limit: 80 << 20,
        ..Default::default()
    }
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start().await;
    let id = AGENT_A.parse().unwrap();
    let mut cfg = AgentConfig::new(
        &c.url(),
        &cluster::agent_token(AGENT_A),
        id,
        dir.path().to_path_buf(),
    );
    cfg.api = api_config(dir.path());
    cfg.tailnet.udp_listen = "127.0.0.1:0".parse().unwrap();
    let agent = Agent::start(cfg).unwrap();
    assert!(agent.wait_ready(Duration::from_secs(10)).await);
    let client = c.client(cluster::SERVICE_TOKEN);
    let conn = client
        .agent_conn(id, tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    let tunnel = measure(&AgentClient::over(&conn), dir.path()).await;

    // The same API over kernel loopback TCP.
    let api = AgentApi::new(api_config(dir.path()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(api::serve(l, api::router(api), std::future::pending()));
    let direct = measure(&AgentClient::new(Arc::new(TcpDialer(addr))), dir.path()).await;

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("read_4k_warm_p50: {:.0} us", us(tunnel.p50));
    println!("read_4k_warm_p99: {:.0} us", us(tunnel.p99));
    println!("read_64m_throughput: {:.0} MB/s", tunnel.read_mbs);
    println!("write_64m_throughput: {:.0} MB/s", tunnel.write_mbs);
    println!("loopback_tcp_read_4k_p50: {:.0} us", us(direct.p50));
    println!(
        "loopback_tcp_read_64m_throughput: {:.0} MB/s",
        direct.read_mbs
    );
    println!(
        "loopback_tcp_write_64m_throughput: {:.0} MB/s",
        direct.write_mbs
    );
    println!(
        "ratio_tunnel_vs_loopback_read_4k_p50: {:.2} x",
        tunnel.p50.as_secs_f64() / direct.p50.as_secs_f64()
    );
    println!(
        "ratio_tunnel_vs_loopback_read_64m: {:.2} x",
        tunnel.read_mbs / direct.read_mbs
    );
    drop(conn);
    agent.shutdown().await;
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
