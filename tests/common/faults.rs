//! Fault injection for tests: a UDP proxy that drops, delays, duplicates, reorders and
//! corrupts datagrams at set rates, both directions, with a seeded generator and counters.
//! Put it on a node's direct path by advertising its address instead of the node's own.

#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Rates are probabilities per datagram, each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub corrupt: f64,
    /// Hold a datagram back and send it after the next one.
    pub reorder: f64,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub corrupted: AtomicU64,
    pub reordered: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub reordered: u64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() * n as f64) as usize % n.max(1)
    }
}

struct Shared {
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    counters: Counters,
    /// One held-back datagram per direction, for reordering.
    held: Mutex<HashMap<bool, (Vec<u8>, SocketAddr)>>,
}

/// The proxy. Dropping it stops every task.
pub struct UdpFaultProxy {
    /// Where clients send (the address to advertise).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl UdpFaultProxy {
    /// Forwards datagrams arriving at a new loopback port to `target`, and the replies
    /// back to whoever sent them.
    pub async fn start(target: SocketAddr, seed: u64) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(Rng(seed | 1)),
            counters: Counters::default(),
            held: Mutex::new(HashMap::new()),
        });
        // The single client we proxy for (the last source seen on the front socket).
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut tasks = Vec::new();
        {
            let (front, back, shared, client) =
                (front.clone(), back.clone(), shared.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    pass(&shared, &back, &buf[..n], target, true).await;
                }
            }));
        }
        {
            let (front, back, shared) = (front.clone(), back.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, _)) = back.recv_from(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let Some(to) = to {
                        pass(&shared, &front, &buf[..n], to, false).await;
                    }
                }
            }));
        }
        Self {
            addr,
            shared,
            tasks,
        }
    }

    /// Changes the fault rates (both directions).
    pub fn set(&self, f: Faults) {
        *self.shared.faults.lock().unwrap() = f;
    }

    pub fn stats(&self) -> FaultStats {
        let c = &self.shared.counters;
        FaultStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            corrupted: c.corrupted.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UdpFaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn pass(shared: &Shared, out: &UdpSocket, data: &[u8], to: SocketAddr, dir: bool) {
    let f = *shared.faults.lock().unwrap();
    let c = &shared.counters;
    let (drop, dup, corrupt, reorder, flip_at) = {
        let mut r = shared.rng.lock().unwrap();
        (
            r.next() < f.drop,
            r.next() < f.duplicate,
            r.next() < f.corrupt,
            r.next() < f.reorder,
            r.below(data.len()),
        )
    };
    if drop {
        c.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut d = data.to_vec();
    if corrupt && !d.is_empty() {
        d[flip_at] ^= 0x5a;
        c.corrupted.fetch_add(1, Ordering::Relaxed);
    }
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    if reorder {
        let prev = shared.held.lock().unwrap().insert(dir, (d, to));
        c.reordered.fetch_add(1, Ordering::Relaxed);
        if let Some((p, t)) = prev {
            let _ = out.send_to(&p, t).await;
        }
        return;
    }
    let _ = out.send_to(&d, to).await;
    c.forwarded.fetch_add(1, Ordering::Relaxed);
    if dup {
        let _ = out.send_to(&d, to).await;
        c.duplicated.fetch_add(1, Ordering::Relaxed);
    }
    let held = shared.held.lock().unwrap().remove(&dir);
    if let Some((p, t)) = held {
        let _ = out.send_to(&p, t).await;
    }
}
