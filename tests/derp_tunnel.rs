//! Two devices whose only path is the DERP relay: a TCP stream through the netstack, and
//! new connections resuming after the relay is killed and restarted mid-run.

#![allow(clippy::disallowed_methods)]

mod derp_support;

use agentwire::netstack::NetstackConfig;
use agentwire::proto::wg::{PathAddr, PeerConfig};
use agentwire::runtime::derp::DerpClientOptions;
use agentwire::runtime::relay::{DerpRelay, RelayConfig};
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::services::derp::DerpServerConfig;
use agentwire::wire::derpmap::DerpMap;
use agentwire::wire::key::NodePrivate;
use derp_support::TestServer;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node(key: &NodePrivate, addr: &str, map: &DerpMap) -> (Tunnel, DerpRelay) {
    let (relay, rx) = DerpRelay::new(RelayConfig {
        private: key.clone(),
        map: map.clone(),
        home: Some(1),
        headers: vec![],
        options: DerpClientOptions::default(),
        tls: Default::default(),
        allow_insecure_http: false,
    });
    let cfg = TunnelConfig {
        private: key.clone(),
        netstack: NetstackConfig {
            addresses: vec![addr.parse().unwrap()],
            ..Default::default()
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![],
    };
    let t = Tunnel::start_with_relay(cfg, Some((Box::new(relay.clone()), rx))).unwrap();
    (t, relay)
}

async fn relay_pair(map: &DerpMap) -> (Arc<Tunnel>, Arc<Tunnel>, DerpRelay, DerpRelay) {
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let (a, ra) = node(&ka, "10.40.0.1", map);
    let (b, rb) = node(&kb, "10.40.0.2", map);
    for (t, key, ip) in [
        (&a, kb.public(), "10.40.0.2/32"),
        (&b, ka.public(), "10.40.0.1/32"),
    ] {
        let mut p = PeerConfig::new(key);
        p.allowed_ips = vec![ip.parse().unwrap()];
        p.derp_region = Some(1);
        p.relay_only = true;
        t.upsert_peer(p).await.unwrap();
    }
    assert!(ra.wait_home(Duration::from_secs(10)).await);
    assert!(rb.wait_home(Duration::from_secs(10)).await);
    (Arc::new(a), Arc::new(b), ra, rb)
}

fn echo_server(t: Arc<Tunnel>, port: u16) {
    let l = t.listen_tcp(port).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
}

async fn echo(t: &Tunnel, addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = t.dial_tcp(addr).await?;
    let (mut r, mut w) = tokio::io::split(s);
    let d = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&d).await?;
        w.shutdown().await
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await?;
    writer.await.map_err(std::io::Error::other)??;
    Ok(back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_stream_over_relay_only() {
    let server = TestServer::start(DerpServerConfig::default()).await;
    let map = DerpMap::single(1, "test", server.addr.ip(), server.addr.port());
    let (a, b, _ra, _rb) = relay_pair(&map).await;
    echo_server(b.clone(), 7);
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let back = tokio::time::timeout(
        Duration::from_secs(60),
        echo(&a, "10.40.0.2:7".parse().unwrap(), &data),
    )
    .await
    .expect("transfer timed out")
    .unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let (stats, path) = a.peer_stats(b.public()).await.unwrap().unwrap();
    assert_eq!(path, Some(PathAddr::Derp(1)));
    assert!(stats.tx_bytes >= 6 << 20);
    assert_eq!(
        a.stats().await.unwrap().driver.udp_tx_datagrams,
        0,
        "nothing went over UDP"
    );
    assert!(server.stats().counters.packets_relayed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_resume_after_relay_restart() {
    let key = NodePrivate::generate();
    let server = TestServer::start_on(
        "127.0.0.1:0".parse().unwrap(),
        key.clone(),
        DerpServerConfig::default(),
    )
    .await;
    let addr = server.addr;
    let map = DerpMap::single(1, "test", addr.ip(), addr.port());
    let (a, b, _ra, _rb) = relay_pair(&map).await;
    echo_server(b.clone(), 7);
    let dst: SocketAddr = "10.40.0.2:7".parse().unwrap();
    assert_eq!(echo(&a, dst, b"before").await.unwrap(), b"before");

    // Kill the relay, then bring it back on the same port (with a new key, as a fresh
    // deployment would have).
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted_at = Instant::now();
    let server =
        TestServer::start_on(addr, NodePrivate::generate(), DerpServerConfig::default()).await;

    let mut resumed = None;
    while restarted_at.elapsed() < Duration::from_secs(10) {
        let r = tokio::time::timeout(Duration::from_millis(500), echo(&a, dst, b"after")).await;
        if let Ok(Ok(v)) = r {
            assert_eq!(v, b"after");
            resumed = Some(restarted_at.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("new connections never resumed");
    eprintln!("new connections resumed {resumed:?} after the relay restarted");
    assert!(
        resumed <= Duration::from_secs(2),
        "resumed after {resumed:?}"
    );
    // And a bulk transfer works again.
    let data = vec![7u8; 1 << 20];
    assert_eq!(echo(&a, dst, &data).await.unwrap().len(), data.len());
    drop(server);
}
