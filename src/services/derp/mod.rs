//! The DERP relay server: `/derp` over `Upgrade: DERP` or websocket, and
//! `/derp/latency-check`.
//!
//! [`DerpServer`] holds the key, the registry and the counters; [`DerpServer::router`]
//! is an axum router to mount in a larger app, and [`run`] serves it alone. Every
//! connection runs as one task tracked by the server; [`DerpServer::shutdown`] tells
//! clients it is restarting, closes them and waits for the tasks.
//!
//! Per client: a bounded packet queue that drops the oldest packet when full, a writer
//! that flushes whatever is queued in one write, a write timeout after which the client
//! is dropped (a client that stops reading must not hold memory or stall senders), a
//! KeepAlive every 60 s plus up to 5 s of jitter, frame size limits, a login deadline,
//! and an optional mesh key for privileged frames. A misbehaving connection is closed
//! and counted; the others are not affected.
//!
//! Server-wide limits (see "Relay limits" in the reliability notes): concurrent
//! connections per source address and in total, an idle timeout for logged-in clients
//! that send nothing, an optional admission check on the client's key at login, and a
//! budget of queued packet bytes shared by all clients.

mod conn;
mod http;
mod limits;
mod mesh;
mod queue;

pub use mesh::{Mesh, MeshConfig, MeshLinkStats, MeshPeer, MeshStats};

use crate::proto::derp::server::{Effects, MeshKey, Registry, ServerCounters, ServerStats};
use crate::wire::derp::PeerGoneReason;
use crate::wire::key::{NodePrivate, NodePublic};
use axum::Router;
use limits::ConnSlots;
use queue::{Budget, ConnHandle};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Decides at login whether a client key may use the relay ("verify clients"). Called
/// without locks held, once per login attempt (and again while a login waits for
/// admission, see [`DerpServerConfig::admit_wait`]); must be cheap and must not block.
#[derive(Clone)]
pub struct Admission(Arc<dyn Fn(&NodePublic) -> bool + Send + Sync>);

impl Admission {
    /// An admission check from a predicate.
    pub fn new(f: impl Fn(&NodePublic) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Whether `key` is admitted.
    pub fn admits(&self, key: &NodePublic) -> bool {
        (self.0)(key)
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Admission(..)")
    }
}

/// Server settings. The defaults follow Tailscale's server, plus the limits.
#[derive(Debug, Clone)]
pub struct DerpServerConfig {
    /// Pre-shared key that lets a client use WatchConns, ClosePeer and ForwardPacket.
    /// A client presenting it skips [`Self::admission`]. Can be changed later with
    /// [`DerpServer::set_mesh_key`].
    pub mesh_key: Option<String>,
    /// Packets queued per client before the oldest is dropped.
    pub queue_depth: usize,
    /// How long a write to a client may block before the client is dropped.
    pub write_timeout: Duration,
    /// KeepAlive period per client.
    pub keepalive: Duration,
    /// Random extra added to each client's KeepAlive period.
    pub keepalive_jitter: Duration,
    /// Time from connect to a valid ClientInfo.
    pub login_timeout: Duration,
    /// On shutdown, send clients Restarting(reconnect_in, try_for); `None` to just close.
    pub restart_hint: Option<(Duration, Duration)>,
    /// Concurrent connections (login phase included) from one source address; more are
    /// refused with 429.
    pub max_conns_per_ip: usize,
    /// Whether [`Self::max_conns_per_ip`] applies to loopback sources too. Off by
    /// default: a relay on loopback is reached by local processes only.
    pub limit_loopback: bool,
    /// Concurrent connections in total; more are refused with 503.
    pub max_conns: usize,
    /// A logged-in client that sends nothing (not even a Ping) for this long is closed.
    /// agentwire clients ping every 20–25 s.
    pub idle_timeout: Duration,
    /// Bytes of queued packets across all clients. A packet that does not fit is
    /// dropped (counted as `budget_full`); bytes come back as writers drain.
    pub queue_budget: usize,
    /// Which keys may log in; `None` admits everyone. A refused key is closed after
    /// login and counted as `not_admitted`.
    pub admission: Option<Admission>,
    /// How long a login whose key is not (yet) admitted waits for the check to pass
    /// before it is refused: a node may dial the relay just before it tells the
    /// coordinator its key. Part of the login, so [`Self::login_timeout`] bounds it too.
    pub admit_wait: Duration,
}

impl Default for DerpServerConfig {
    fn default() -> Self {
        Self {
            mesh_key: None,
            queue_depth: 512,
            write_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(60),
            keepalive_jitter: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            restart_hint: Some((Duration::from_millis(250), Duration::from_secs(10))),
            max_conns_per_ip: 64,
            limit_loopback: false,
            max_conns: 4096,
            idle_timeout: Duration::from_secs(300),
            queue_budget: 64 << 20,
            admission: None,
            admit_wait: Duration::from_secs(5),
        }
    }
}

/// Counters plus current gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerpServerStats {
    /// Traffic and drop counters since start.
    pub counters: ServerStats,
    /// Connected keys.
    pub clients: usize,
    /// Clients that sent NotePreferred(true).
    pub home_clients: usize,
    /// Mesh watchers.
    pub watchers: usize,
    /// Open connections, logged in or not.
    pub conns: usize,
    /// Bytes of packets queued for clients, charged to the queue budget.
    pub queued_bytes: usize,
    /// Outbound mesh links watching peer relays.
    pub mesh_links: usize,
    /// Keys connected to peer relays, reachable through a mesh link.
    pub forwarded_keys: usize,
}

/// A DERP relay.
#[derive(Debug)]
pub struct DerpServer {
    private: NodePrivate,
    public: NodePublic,
    config: DerpServerConfig,
    /// Read at each login; a meshed relay sets it when its mesh starts.
    mesh_key: RwLock<Option<MeshKey>>,
    /// Short critical sections only; never held across an await.
    registry: Mutex<Registry<Arc<ConnHandle>, Arc<mesh::queue::LinkHandle>>>,
    counters: ServerCounters,
    /// Queued packet bytes, shared by every connection's queue.
    budget: Arc<Budget>,
    /// Connection caps.
    slots: Arc<ConnSlots>,
    /// Cancelled at shutdown; every connection watches it.
    shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl DerpServer {
    /// A server with this identity and settings.
    pub fn new(private: NodePrivate, config: DerpServerConfig) -> Arc<Self> {
        let public = private.public();
        let mesh_key = config.mesh_key.as_deref().and_then(MeshKey::new);
        Arc::new(Self {
            private,
            public,
            mesh_key: RwLock::new(mesh_key),
            registry: Mutex::new(Registry::new(public)),
            counters: ServerCounters::default(),
            budget: Arc::new(Budget::new(config.queue_budget)),
            slots: Arc::new(ConnSlots::new(
                config.max_conns_per_ip,
                config.max_conns,
                config.limit_loopback,
            )),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config,
        })
    }

    /// The server's public key (the `Derp-Public-Key` header, in hex).
    pub fn public_key(&self) -> NodePublic {
        self.public
    }

    /// The settings.
    pub fn config(&self) -> &DerpServerConfig {
        &self.config
    }

    /// Counters and gauges.
    pub fn stats(&self) -> DerpServerStats {
        let r = self.registry();
        DerpServerStats {
            counters: self.counters.snapshot(),
            clients: r.len(),
            home_clients: r.home_clients(),
            watchers: r.watchers(),
            conns: self.slots.open(),
            queued_bytes: self.budget.used(),
            mesh_links: r.links(),
            forwarded_keys: r.forwarded_keys(),
        }
    }

    /// Sets the mesh key later logins are checked against; `None` (or blank) turns
    /// meshing off for new logins. Connections already logged in keep what they had.
    pub fn set_mesh_key(&self, key: Option<&str>) {
        *self
            .mesh_key
            .write()
            .unwrap_or_else(PoisonError::into_inner) = key.and_then(MeshKey::new);
    }

    fn mesh_key(&self) -> Option<MeshKey> {
        self.mesh_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a client with this key is connected.
    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.registry().is_connected(key)
    }

    /// Whether packets for `key` would go to a peer relay: it is connected there and
    /// not here.
    pub fn forwards(&self, key: &NodePublic) -> bool {
        let r = self.registry();
        !r.is_connected(key) && r.forwarder_link(key).is_some()
    }

    /// Connection tasks still running (for leak checks).
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// The `/derp` routes with this server as their state.
    pub fn router(self: &Arc<Self>) -> Router {
        http::router(Arc::clone(self))
    }

    /// Starts shutting down: new upgrades are refused, clients get Restarting (per
    /// [`DerpServerConfig::restart_hint`]) and are closed. Does not wait.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits until every connection task has finished.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn registry(&self) -> MutexGuard<'_, Registry<Arc<ConnHandle>, Arc<mesh::queue::LinkHandle>>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out a registry change's consequences; called without the lock held.
    fn apply(&self, fx: Effects<Arc<ConnHandle>>) {
        for h in fx.close {
            h.close.cancel();
        }
        for h in fx.wake {
            h.wake_mesh();
        }
        for (h, peer, reason) in fx.peer_gone {
            conn::queue_peer_gone(&self.counters, &h, peer, reason);
            debug_assert!(matches!(reason, PeerGoneReason::Disconnected));
        }
    }
}

/// Serves `server` alone on `listener` until `shutdown` resolves, then shuts the server
/// down and waits for its connections.
///
/// # Errors
/// IO errors from the HTTP server.
pub async fn run(
    listener: TcpListener,
    server: Arc<DerpServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_tls(listener, server, None, shutdown).await
}

/// [`run`], terminating TLS with `tls` when given.
///
/// # Errors
/// IO errors from the HTTP server.
pub async fn run_tls(
    listener: TcpListener,
    server: Arc<DerpServer>,
    tls: Option<crate::runtime::tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let s = Arc::clone(&server);
    let stop = async move {
        shutdown.await;
        s.begin_shutdown();
    };
    super::http::serve_tls(listener, server.router(), tls, stop).await?;
    server.shutdown().await;
    Ok(())
}
