//! Many connections and a slow reader: resources stay bounded.

#![allow(clippy::disallowed_methods)]

use agentwire::netstack::NetstackConfig;
use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::wire::key::NodePrivate;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn pair(tag: u8) -> (Tunnel, Tunnel) {
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let addr = |n: u8| format!("10.{tag}.0.{n}");
    let mk = |k: &NodePrivate, n: u8| TunnelConfig {
        private: k.clone(),
        netstack: NetstackConfig {
            addresses: vec![addr(n).parse().unwrap()],
            ..Default::default()
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![],
    };
    let a = Tunnel::start(mk(&ka, 1)).unwrap();
    let b = Tunnel::start(mk(&kb, 2)).unwrap();
    let mut pb = PeerConfig::new(kb.public());
    pb.allowed_ips = vec![format!("{}/32", addr(2)).parse().unwrap()];
    pb.endpoint = Some(b.local_udp_addr());
    a.upsert_peer(pb).await.unwrap();
    let mut pa = PeerConfig::new(ka.public());
    pa.allowed_ips = vec![format!("{}/32", addr(1)).parse().unwrap()];
    b.upsert_peer(pa).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_connections() {
    const N: usize = 2000;
    let (a, b) = pair(30).await;
    let listener = b.listen_tcp(80).unwrap();
    let server = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..N {
            let (mut s, _) = listener.accept().await.unwrap();
            tasks.spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                s.shutdown().await.unwrap();
                let _ = s.read(&mut buf).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let rss0 = rss_kib();
    let start = Instant::now();
    let a = std::sync::Arc::new(a);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..N {
        let a = a.clone();
        clients.spawn(async move {
            let mut s = tokio::time::timeout(
                Duration::from_secs(30),
                a.dial_tcp("10.30.0.2:80".parse().unwrap()),
            )
            .await
            .expect("dial timeout")
            .expect("dial");
            let msg = format!("hello {i}");
            s.write_all(msg.as_bytes()).await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg.as_bytes());
            s
        });
    }
    // Hold every connection open at once before releasing any.
    let mut open = Vec::new();
    while let Some(r) = clients.join_next().await {
        open.push(r.unwrap());
    }
    assert_eq!(open.len(), N);
    let stats = a.stats().await.unwrap();
    assert!(stats.netstack.tcp_sockets >= N);
    let rss_peak = rss_kib();
    drop(open);
    server.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (sa, sb) = (
            a.stats().await.unwrap().netstack,
            b.stats().await.unwrap().netstack,
        );
        if sa.tcp_sockets == 0 && sb.tcp_sockets == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sockets not freed: {sa:?} {sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{N} connections in {:?}; rss before {} MiB, with all open {} MiB, after {} MiB",
        start.elapsed(),
        rss0 / 1024,
        rss_peak / 1024,
        rss_kib() / 1024
    );
    // Buffers are sized for throughput but only touched as data flows: small
    // exchanges must not cost megabytes per connection.
    assert!(
        rss_peak.saturating_sub(rss0) < (N as u64) * 64,
        "rss grew {} KiB",
        rss_peak - rss0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_bounds_memory_not_transfer_size() {
    let (a, b) = pair(31).await;
    let listener = b.listen_tcp(80).unwrap();
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let read2 = read.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // A reader far slower than the sender: 64 KiB every 2 ms, about 32 MB/s.
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    read2.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut s = a.dial_tcp("10.31.0.2:80".parse().unwrap()).await.unwrap();
    let chunk = vec![1u8; 64 << 10];
    let mut written = 0u64;
    let mut rss_after_warmup = 0;
    let mut max_ahead = 0u64;
    while written < (96 << 20) {
        s.write_all(&chunk).await.unwrap();
        written += chunk.len() as u64;
        let ahead = written - read.load(std::sync::atomic::Ordering::Relaxed);
        max_ahead = max_ahead.max(ahead);
        if written == 16 << 20 {
            rss_after_warmup = rss_kib();
        }
    }
    let rss_end = rss_kib();
    eprintln!(
        "max bytes in flight {max_ahead}; rss after 16 MiB {rss_after_warmup} KiB, after 96 MiB {rss_end} KiB"
    );
    // The sender can only get ahead by the two TCP buffers plus what is in transit.
    assert!(
        max_ahead < 3 << 20,
        "sender got {max_ahead} bytes ahead of the reader"
    );
    assert!(
        rss_end.saturating_sub(rss_after_warmup) < 8 << 10,
        "memory grew with transfer size"
    );
}
