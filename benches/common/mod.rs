//! Shared pieces of the benchmarks: nodes on their own threads, one-stream measurement.

#![allow(dead_code, clippy::disallowed_methods)]

#[path = "../../tests/common/link.rs"]
pub mod link;
#[path = "../../tests/common/netns.rs"]
pub mod netns;

use agentwire::netstack::NetstackConfig;
use agentwire::runtime::Tunnel;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

impl Drop for Node {
    fn drop(&mut self) {
        let (dead, _) = tokio::sync::oneshot::channel();
        drop(std::mem::replace(&mut self._stop, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node on its own thread and single-threaded runtime.
pub struct Node {
    pub handle: tokio::runtime::Handle,
    pub tunnel: std::sync::Arc<Tunnel>,
    _stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}
/// Starts a node; `make` builds its tunnel inside the node's runtime.
pub fn start_node(make: impl FnOnce() -> Tunnel + Send + 'static) -> Node {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let t = std::sync::Arc::new(make());
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

/// One stream `from` → `to` for `secs`; returns Mbit/s measured at the receiver.
pub fn measure(from: &Node, to: &Node, to_addr: SocketAddr, secs: f64) -> f64 {
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

/// Netstack config with what [`tune`] reads
/// applied, for before/after comparisons in one build.
pub fn netstack(addr: &str) -> NetstackConfig {
    let mut c = NetstackConfig {
        addresses: vec![addr.parse().unwrap()],
        ..Default::default()
    };
    tune(&mut c);
    c
}

/// Applies `BENCH_MIN_RTO_MS`, `BENCH_TLP`, `BENCH_RATE_FLOOR`, `BENCH_PACING` (0 or 1),
/// `BENCH_TCP_BUF_KIB` (each TCP buffer's starting size) and `BENCH_TCP_BUF_MAX_KIB`
/// (the size each may grow to; 0 for none) to `c`.
pub fn tune(c: &mut NetstackConfig) {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    if let Some(kib) = env("BENCH_TCP_BUF_KIB") {
        c.tcp_rx_buffer = (kib as usize) << 10;
        c.tcp_tx_buffer = (kib as usize) << 10;
    }
    if let Some(kib) = env("BENCH_TCP_BUF_MAX_KIB") {
        c.tcp_rx_buffer_max = (kib as usize) << 10;
        c.tcp_tx_buffer_max = (kib as usize) << 10;
    }
    if let Some(on) = env("BENCH_PACING") {
        c.tcp_pacing = on != 0;
    }
    if let Some(ms) = env("BENCH_MIN_RTO_MS") {
        c.tcp_min_rto = Duration::from_millis(ms);
    }
    if let Some(on) = env("BENCH_TLP") {
        c.tcp_tail_loss_probe = on != 0;
    }
    if let Some(on) = env("BENCH_RATE_FLOOR") {
        c.tcp_loss_rate_floor = on != 0;
    }
}

/// Prints one figure as `name: value unit`.
pub fn figure(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.2} {unit}");
}

/// The `p` quantile (0 to 1) of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
