//! One TCP stream between two agentwire nodes over UDP on loopback, each direction.

#![allow(clippy::disallowed_methods)]
//!
//! Each node runs on its own single-threaded tokio runtime on its own OS thread, as two
//! processes would. Prints one figure per line: `metric: value unit`.
//!
//! Run: `cargo bench --bench throughput` (`BENCH_SECS` sets seconds per direction).

use agentwire::netstack::NetstackConfig;
use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::wire::key::NodePrivate;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Node {
    handle: tokio::runtime::Handle,
    tunnel: std::sync::Arc<Tunnel>,
    _stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start_node(cfg: TunnelConfig) -> Node {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let t = std::sync::Arc::new(Tunnel::start(cfg).unwrap());
            tx.send((tokio::runtime::Handle::current(), t.clone()))
                .unwrap();
            let _ = stop_rx.await;
        });
    });
    let (handle, tunnel) = rx.recv().unwrap();
    Node {
        handle,
        tunnel,
        _stop: stop_tx,
        thread: Some(thread),
    }
}

fn measure(from: &Node, to: &Node, to_addr: SocketAddr, secs: f64) -> f64 {
    let listener = to.tunnel.listen_tcp(to_addr.port()).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    to.handle.spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        let mut start = None;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            if start.is_none() {
                start = Some(Instant::now());
            }
            total += n as u64;
        }
        let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
        done_tx.send((total, elapsed)).unwrap();
    });
    let tunnel = from.tunnel.clone();
    let dur = Duration::from_secs_f64(secs);
    from.handle.spawn(async move {
        let mut s = tokio::time::timeout(Duration::from_secs(10), tunnel.dial_tcp(to_addr))
            .await
            .unwrap()
            .unwrap();
        let chunk = vec![0x5au8; 256 << 10];
        let start = Instant::now();
        while start.elapsed() < dur {
            s.write_all(&chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
        s.drained().await.unwrap();
    });
    let (bytes, elapsed) = done_rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let s = from.handle.block_on(from.tunnel.stats());
            let s2 = to.handle.block_on(to.tunnel.stats());
            panic!("timeout: {s:?} {s2:?}")
        });
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
}

fn netstack(addr: &str) -> NetstackConfig {
    let mut c = NetstackConfig {
        addresses: vec![addr.parse().unwrap()],
        ..Default::default()
    };
    if let Some(kib) = std::env::var("BENCH_TCP_BUF_KIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        c.tcp_rx_buffer = kib << 10;
        c.tcp_tx_buffer = kib << 10;
    }
    c
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let mut pa = PeerConfig::new(kb.public());
    pa.allowed_ips = vec!["10.20.0.2/32".parse().unwrap()];
    let mut pb = PeerConfig::new(ka.public());
    pb.allowed_ips = vec!["10.20.0.1/32".parse().unwrap()];
    let cfg_b = TunnelConfig {
        private: kb,
        netstack: netstack("10.20.0.2"),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![pb],
    };
    let b = start_node(cfg_b);
    pa.endpoint = Some(b.tunnel.local_udp_addr());
    let cfg_a = TunnelConfig {
        private: ka,
        netstack: netstack("10.20.0.1"),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![pa],
    };
    let a = start_node(cfg_a);
    // Warm-up: handshake and a first transfer so both directions have sessions.
    measure(&a, &b, "10.20.0.2:5000".parse().unwrap(), 0.5);
    let up = measure(&a, &b, "10.20.0.2:5201".parse().unwrap(), secs);
    let down = measure(&b, &a, "10.20.0.1:5202".parse().unwrap(), secs);
    if std::env::var("BENCH_VERBOSE").is_ok() {
        eprintln!("a: {:?}", a.handle.block_on(a.tunnel.stats()));
        eprintln!("b: {:?}", b.handle.block_on(b.tunnel.stats()));
    }
    println!("tcp_throughput_a_to_b: {up:.0} Mbit/s");
    println!("tcp_throughput_b_to_a: {down:.0} Mbit/s");
    for mut n in [a, b] {
        drop(n._stop);
        if let Some(t) = n.thread.take() {
            let _ = t.join();
        }
    }
}
