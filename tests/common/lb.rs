//! A small TCP load balancer on 127.0.0.1 for tests of several `serve` replicas: each
//! accepted connection goes to the next backend in turn (websocket upgrades are plain TCP
//! to it), skipping backends that refuse the connection, are marked down, or fail their
//! health check. No affinity: a client that reconnects may land anywhere.
//!
//! It counts connections per backend and keeps the order in which connections were
//! placed, so a test can tell which replica a given connection reached.

#![allow(dead_code, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long a backend has to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

struct Backend {
    addr: Mutex<SocketAddr>,
    /// Marked down by the test: no new connections.
    down: AtomicBool,
    /// Failed its last health check: no new connections.
    unhealthy: AtomicBool,
    accepted: AtomicU64,
    active: AtomicU64,
    /// Cancelled to cut every connection to this backend; replaced after.
    cut: Mutex<CancellationToken>,
}

struct Shared {
    backends: Vec<Backend>,
    next: AtomicUsize,
    /// The backend each accepted connection went to, in order (`None`: none would take it).
    placed: Mutex<Vec<Option<usize>>>,
}

/// A running load balancer; stops (and cuts every connection) on drop.
pub struct Lb {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    _accept: AbortOnDropHandle<()>,
    _health: Option<AbortOnDropHandle<()>>,
}

impl Lb {
    /// Listens on a free loopback port in front of `backends`.
    pub async fn start(backends: &[SocketAddr]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("lb binds");
        let addr = listener.local_addr().expect("lb address");
        let shared = Arc::new(Shared {
            backends: backends
                .iter()
                .map(|a| Backend {
                    addr: Mutex::new(*a),
                    down: AtomicBool::new(false),
                    unhealthy: AtomicBool::new(false),
                    accepted: AtomicU64::new(0),
                    active: AtomicU64::new(0),
                    cut: Mutex::new(CancellationToken::new()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            placed: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Self {
            addr,
            shared,
            stop,
            _accept: AbortOnDropHandle::new(accept),
            _health: None,
        }
    }

    /// Also checks `GET /healthz` on every backend each `every`: a backend that does not
    /// answer within `every` takes no new connections until it answers again (what a
    /// load balancer's health check does for a stopped process, whose kernel still
    /// accepts connections).
    pub fn with_health_checks(mut self, every: Duration) -> Self {
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        self._health = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                let checks = shared.backends.iter().map(|b| {
                    let addr = *b.addr.lock().unwrap();
                    async move {
                        let ok = tokio::time::timeout(every, healthz(addr))
                            .await
                            .unwrap_or(false);
                        b.unhealthy.store(!ok, Ordering::Relaxed);
                    }
                });
                futures_util::future::join_all(checks).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        })));
        self
    }

    /// The number of backends.
    pub fn len(&self) -> usize {
        self.shared.backends.len()
    }

    /// Takes backend `i` out of (or back into) the rotation; open connections stay.
    pub fn set_down(&self, i: usize, down: bool) {
        self.shared.backends[i].down.store(down, Ordering::Relaxed);
    }

    /// Puts only backend `i` in the rotation (`None`: all of them).
    pub fn only(&self, i: Option<usize>) {
        for j in 0..self.len() {
            self.set_down(j, i.is_some_and(|i| i != j));
        }
    }

    /// Points backend `i` at a new address (a replica restarted elsewhere).
    pub fn set_addr(&self, i: usize, addr: SocketAddr) {
        *self.shared.backends[i].addr.lock().unwrap() = addr;
    }

    /// Closes every open connection to backend `i`.
    pub fn cut(&self, i: usize) {
        let mut t = self.shared.backends[i].cut.lock().unwrap();
        t.cancel();
        *t = CancellationToken::new();
    }

    /// Whether backend `i` passed its last health check (always, without checks).
    pub fn healthy(&self, i: usize) -> bool {
        !self.shared.backends[i].unhealthy.load(Ordering::Relaxed)
    }

    /// Waits until backends `which` pass their health checks; whether they did in time.
    pub async fn wait_healthy(&self, which: &[usize], within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !which.iter().all(|i| self.healthy(*i)) {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Connections ever placed on backend `i`.
    pub fn accepted(&self, i: usize) -> u64 {
        self.shared.backends[i].accepted.load(Ordering::Relaxed)
    }

    /// Connections open to backend `i`.
    pub fn active(&self, i: usize) -> u64 {
        self.shared.backends[i].active.load(Ordering::Relaxed)
    }

    /// How many connections have been accepted so far.
    pub fn placed_count(&self) -> usize {
        self.shared.placed.lock().unwrap().len()
    }

    /// The backends connections `from..` went to, in order.
    pub fn placed_since(&self, from: usize) -> Vec<Option<usize>> {
        let p = self.shared.placed.lock().unwrap();
        p.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn healthz(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 2")
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((c, _)) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let seq = {
            let mut p = shared.placed.lock().unwrap();
            p.push(None);
            p.len() - 1
        };
        tokio::spawn(serve_one(client, seq, shared.clone(), stop.clone()));
    }
}

/// Dials the backends in turn from the next one; the first that takes the connection.
/// When every backend in the rotation fails its health check, they are tried anyway
/// (failing open, as load balancers do: a health check can be wrong).
async fn pick(shared: &Shared) -> Option<(usize, TcpStream)> {
    let n = shared.backends.len();
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    for check_health in [true, false] {
        for k in 0..n {
            let i = (start + k) % n;
            let b = &shared.backends[i];
            if b.down.load(Ordering::Relaxed)
                || (check_health && b.unhealthy.load(Ordering::Relaxed))
            {
                continue;
            }
            let addr = *b.addr.lock().unwrap();
            let dial = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
            if let Ok(Ok(s)) = dial.await {
                return Some((i, s));
            }
        }
    }
    None
}

async fn serve_one(
    mut client: TcpStream,
    seq: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Some((i, mut upstream)) = pick(&shared).await else {
        return;
    };
    shared.placed.lock().unwrap()[seq] = Some(i);
    let b = &shared.backends[i];
    b.accepted.fetch_add(1, Ordering::Relaxed);
    b.active.fetch_add(1, Ordering::Relaxed);
    let cut = b.cut.lock().unwrap().clone();
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
    }
    b.active.fetch_sub(1, Ordering::Relaxed);
}
