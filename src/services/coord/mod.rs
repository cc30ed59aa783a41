//! The coordinator server: the websocket endpoint `GET /api/v0/coordinate` over the
//! sans-IO [`Registry`].
//!
//! Owns the streams: authenticates the upgrade request, reads `hello`, maps the caller's
//! [`Principal`] to the registry's [`PeerAuth`], and moves messages between sockets and the
//! registry. Each stream has a bounded outbound queue; a peer that does not read fast enough
//! is closed ([`coord::CLOSE_TRY_AGAIN`]) rather than buffered without bound.
//!
//! The registry sits behind a `std::sync::Mutex` rather than in its own task: every input
//! is a short, synchronous state change followed by non-blocking `try_send`s, the lock is
//! never held across an `.await`, and control-plane traffic is light, so a task would add a
//! channel hop and a second queue to bound without buying any concurrency.

mod revalidate;
mod stream;

use crate::proto::coord::server::{
    Change, ConnId, Output, PeerInfo, Presence, Registry, RegistryStats, RemoteStats, ReplicaId,
};
use crate::runtime::clock;
use crate::services::control::{ControlPlane, Principal, bearer};
use crate::wire::coord;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The path the coordinator serves.
pub const COORDINATE_PATH: &str = "/api/v0/coordinate";

/// Tunables; [`CoordinatorConfig::default`] suits a single server.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Handed to every client in `welcome` (Tailscale's DERP map JSON), opaque here.
    pub derp_map: Option<serde_json::Value>,
    /// Messages queued per stream before the peer is considered too slow and closed.
    pub queue: usize,
    /// How long a new stream has to send `hello`.
    pub hello_timeout: Duration,
    /// How often the server pings each stream.
    pub ping_interval: Duration,
    /// A stream silent (no message, no pong) this long is dropped as lost.
    pub idle_timeout: Duration,
    /// Streams served at once; further upgrades get 503.
    pub max_connections: usize,
    /// Streams one user or agent token may hold at once (the serving process's own
    /// tailnet is exempt); further upgrades get 429, so one tenant cannot exhaust
    /// `max_connections` for the rest.
    pub max_streams_per_principal: usize,
    /// How long a live agent stream must be silent before another process may take its
    /// id over; see [`crate::proto::coord::server::DEFAULT_TAKEOVER_GRACE`].
    pub takeover_grace: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            derp_map: None,
            queue: 256,
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_connections: 10_000,
            max_streams_per_principal: 32,
            takeover_grace: crate::proto::coord::server::DEFAULT_TAKEOVER_GRACE,
        }
    }
}

/// Counters for the server as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// The registry's counters.
    pub registry: RegistryStats,
    /// Upgrade requests refused with 401.
    pub unauthorized: u64,
    /// Streams closed because their outbound queue overflowed.
    pub slow_closed: u64,
    /// Streams refused before registration (bad hello, agent id squatting, shutdown, limit).
    pub refused: u64,
    /// Upgrades refused with 429 for [`CoordinatorConfig::max_streams_per_principal`].
    pub principal_limited: u64,
}

/// Where a replicated coordinator hands the changes to its own streams, for the other
/// replicas. Called with the registry locked: it must only record the change and return.
pub trait ReplicaSink: Send + Sync + std::fmt::Debug {
    /// Records `change` for publishing.
    fn publish(&self, change: Change);
}

/// The coordinator. Dropping it closes every stream (code 1001) and refuses new ones.
#[derive(Debug)]
pub struct Coordinator {
    shared: Arc<Shared>,
    /// Re-checks live streams when the control plane changes; aborted with the
    /// coordinator.
    _revalidate: Option<tokio_util::task::AbortOnDropHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    control: Arc<dyn ControlPlane>,
    cfg: CoordinatorConfig,
    hub: Mutex<Hub>,
    next_conn: AtomicU64,
    /// Cancelled on shutdown: new upgrades are refused and waiting streams give up.
    cancel: CancellationToken,
    /// Tracks every stream task so shutdown can wait for them.
    tracker: TaskTracker,
    limit: Arc<Semaphore>,
    /// When this coordinator started: agents not seen since are offline or reconnecting.
    started: std::time::Instant,
    /// Streams held per principal, for `max_streams_per_principal`.
    per_principal: Mutex<HashMap<String, usize>>,
    principal_limited: AtomicU64,
    unauthorized: AtomicU64,
    slow_closed: AtomicU64,
    refused: AtomicU64,
    /// With replication on, where local changes go.
    replica: OnceLock<Arc<dyn ReplicaSink>>,
    /// Refusing new streams: this replica's own database heartbeat failed while the
    /// others' succeeded.
    fenced: AtomicBool,
}

/// The registry and the outbound side of every registered stream, under one lock so an
/// output is delivered to exactly the streams the registry believes exist.
#[derive(Debug)]
struct Hub {
    registry: Registry,
    conns: HashMap<ConnId, ConnTx>,
}

#[derive(Debug)]
struct ConnTx {
    msgs: mpsc::Sender<String>,
    close: watch::Sender<Option<(u16, String)>>,
    /// What the stream was admitted with.
    creds: Arc<stream::Creds>,
}

impl ConnTx {
    fn close(&self, code: u16, reason: &str) {
        self.close.send_if_modified(|v| {
            v.is_none()
                .then(|| *v = Some((code, reason.to_string())))
                .is_some()
        });
    }
}

impl Coordinator {
    /// A coordinator authenticating through `control`.
    pub fn new(control: Arc<dyn ControlPlane>, cfg: CoordinatorConfig) -> Self {
        let mut registry = Registry::new(cfg.derp_map.clone());
        registry.set_takeover_grace(cfg.takeover_grace);
        let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
        let changes = control.changes();
        let shared = Arc::new(Shared {
            control,
            hub: Mutex::new(Hub {
                registry,
                conns: HashMap::new(),
            }),
            cfg,
            next_conn: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            limit,
            started: clock::now(),
            per_principal: Mutex::new(HashMap::new()),
            principal_limited: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            slow_closed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            replica: OnceLock::new(),
            fenced: AtomicBool::new(false),
        });
        let revalidate = changes.map(|rx| {
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(revalidate::watch(
                shared.clone(),
                rx,
            )))
        });
        Self {
            shared,
            _revalidate: revalidate,
        }
    }

    /// A router serving [`COORDINATE_PATH`]; merge it into a larger app with
    /// `Router::merge`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(COORDINATE_PATH, get(upgrade))
            .with_state(self.shared.clone())
    }

    /// Current counters.
    pub fn stats(&self) -> CoordinatorStats {
        CoordinatorStats {
            registry: self.shared.hub().registry.stats(),
            unauthorized: self.shared.unauthorized.load(Ordering::Relaxed),
            slow_closed: self.shared.slow_closed.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            principal_limited: self.shared.principal_limited.load(Ordering::Relaxed),
        }
    }

    /// Whether agent `id` is connected, and since when.
    pub fn presence(&self, id: crate::wire::addr::NodeId) -> Presence {
        self.shared.hub().registry.presence(id)
    }

    /// Whether a registered node advertises `key`.
    pub fn knows_key(&self, key: &crate::wire::key::NodePublic) -> bool {
        self.shared.hub().registry.knows_key(key)
    }

    /// Turns replication on: this coordinator is replica `own`, and the changes to its
    /// streams go to `sink` (starting with every stream it already holds). Once only; a
    /// second call is ignored.
    pub fn enable_replication(&self, own: ReplicaId, sink: Arc<dyn ReplicaSink>) {
        if self.shared.replica.set(sink).is_err() {
            return;
        }
        self.shared.with_registry(|r| {
            r.enable_replication(own);
            r.replay_local();
        });
    }

    /// Runs `f` on the registry (to apply what other replicas hold), then delivers its
    /// outputs.
    pub fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        self.shared.with_registry(f);
    }

    /// Replication counters.
    pub fn remote_stats(&self) -> RemoteStats {
        self.shared.hub().registry.remote_stats()
    }

    /// Refuse (`true`) or accept again new streams. Live streams are not touched.
    pub fn set_fenced(&self, fenced: bool) {
        self.shared.fenced.store(fenced, Ordering::Relaxed);
    }

    /// Whether new streams are refused.
    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Relaxed)
    }

    /// When this coordinator started.
    pub fn started(&self) -> std::time::Instant {
        self.shared.started
    }

    /// The peers currently registered.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.hub().registry.peers()
    }

    /// Closes every stream with code 1001, refuses new ones, and waits (at most 5 s) for
    /// the stream tasks to finish.
    pub async fn shutdown(&self) {
        self.shared.close_all();
        self.shared.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::debug!("coordinator streams still closing after 5 s");
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shared.close_all();
    }
}

/// Serves the coordinator alone on `listener` until `shutdown` resolves, then closes every
/// stream.
///
/// # Errors
/// IO errors from the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: &Coordinator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancel = coordinator.shared.cancel.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = cancel.cancelled() => {}
        }
    };
    let app = coordinator.router();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    coordinator.shutdown().await;
    result
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock leaves state that is still memory-safe; serving on
        // is better than taking every stream down with a poisoned lock.
        self.hub
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one of `principal`'s stream slots, or `None` if it holds its maximum.
    fn principal_slot(self: &Arc<Self>, principal: &Principal) -> Option<PrincipalSlot> {
        let key = match principal {
            Principal::Service => return Some(PrincipalSlot(None)),
            Principal::User(u) => format!("user:{}", u.name),
            Principal::Agent { agent_id, .. } => format!("agent:{agent_id}"),
        };
        let mut map = self
            .per_principal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.clone()).or_default();
        if *n >= self.cfg.max_streams_per_principal.max(1) {
            return None;
        }
        *n += 1;
        Some(PrincipalSlot(Some((self.clone(), key))))
    }

    fn close_all(&self) {
        self.cancel.cancel();
        // Forget the streams as well as closing them: peers hear only that the coordinator
        // is going away, not a flurry of `lost` updates about each other.
        let conns = std::mem::take(&mut self.hub().conns);
        for c in conns.values() {
            c.close(coord::CLOSE_GOING_AWAY, "coordinator shutting down");
        }
    }

    /// Runs `f` on the registry, then delivers its outputs.
    fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        let mut hub = self.hub();
        f(&mut hub.registry);
        self.dispatch(&mut hub);
    }

    fn dispatch(&self, hub: &mut Hub) {
        loop {
            let mut slow = Vec::new();
            while let Some(out) = hub.registry.poll_action() {
                match out {
                    Output::Send { conn, msg } => {
                        let Some(c) = hub.conns.get(&conn) else {
                            continue;
                        };
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            c.msgs.try_send(msg.encode())
                        {
                            slow.push(conn);
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(c) = hub.conns.remove(&conn) {
                            c.close(code, &reason);
                        }
                    }
                    Output::Replicate(change) => {
                        if let Some(sink) = self.replica.get() {
                            sink.publish(change);
                        }
                    }
                }
            }
            if slow.is_empty() {
                return;
            }
            let now = clock::now();
            for conn in slow {
                if let Some(c) = hub.conns.remove(&conn) {
                    self.slow_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn, "closing coordinator stream: outbound queue full");
                    c.close(coord::CLOSE_TRY_AGAIN, "too slow: outbound queue full");
                }
                hub.registry.close(conn, false, now);
            }
        }
    }
}

/// One stream's share of its principal's cap; given back on drop.
struct PrincipalSlot(Option<(Arc<Shared>, String)>);

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let Some((shared, key)) = self.0.take() else {
            return;
        };
        let mut map = shared
            .per_principal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&key);
            }
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = bearer(&headers).unwrap_or_default().to_string();
    let principal = match bearer(&headers) {
        None => None,
        Some(token) => match shared.control.authenticate(token).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "coordinator authentication unavailable");
                return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            }
        },
    };
    let Some(principal) = principal else {
        shared.unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut resp = json_error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send Authorization: Bearer TOKEN",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"agentwire\""),
        );
        return resp;
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if shared.cancel.is_cancelled() {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "coordinator shutting down");
    }
    if shared.fenced.load(Ordering::Relaxed) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica lost its place in the database; try another replica",
        );
    }
    let Some(slot) = shared.principal_slot(&principal) else {
        shared.principal_limited.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            who = principal.describe(),
            "coordinator stream refused: per-principal cap"
        );
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many coordinator streams for this token (at most {})",
                shared.cfg.max_streams_per_principal.max(1)
            ),
        );
    };
    let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many coordinator streams",
        );
    };
    // Leave headroom above the protocol cap so a somewhat oversized message reaches the
    // registry, which closes the stream with a clear code; far larger ones fail the read.
    let ws = ws
        .max_message_size(4 * coord::MAX_MESSAGE_BYTES)
        .max_frame_size(4 * coord::MAX_MESSAGE_BYTES);
    let tracker = shared.tracker.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move {
            let _permit = (permit, slot);
            stream::run(shared, socket, principal, token).await;
        })
    })
}
