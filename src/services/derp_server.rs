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

mod conn;
mod http;
mod queue;

use crate::proto::derp_server::{Effects, MeshKey, Registry, ServerCounters, ServerStats};
use crate::wire::derp::PeerGoneReason;
use crate::wire::key::{NodePrivate, NodePublic};
use axum::Router;
use queue::ConnHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Server settings. The defaults follow Tailscale's server.
#[derive(Debug, Clone)]
pub struct DerpServerConfig {
    /// Pre-shared key that lets a client use WatchConns, ClosePeer and ForwardPacket.
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
}

/// A DERP relay.
#[derive(Debug)]
pub struct DerpServer {
    private: NodePrivate,
    public: NodePublic,
    config: DerpServerConfig,
    mesh_key: Option<MeshKey>,
    /// Short critical sections only; never held across an await.
    registry: Mutex<Registry<Arc<ConnHandle>>>,
    counters: ServerCounters,
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
            mesh_key,
            config,
            registry: Mutex::new(Registry::new(public)),
            counters: ServerCounters::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
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
        }
    }

    /// Whether a client with this key is connected.
    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.registry().is_connected(key)
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

    fn registry(&self) -> MutexGuard<'_, Registry<Arc<ConnHandle>>> {
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
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = server
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let s = Arc::clone(&server);
    let stop = async move {
        shutdown.await;
        s.begin_shutdown();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    server.shutdown().await;
    Ok(())
}
