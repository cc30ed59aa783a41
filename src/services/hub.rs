//! The control-plane HTTP surface in one router: the coordinator, the DERP relay and the
//! DERP map that points at it. `agentwire serve` mounts it (with the MCP endpoint); tests
//! run it alone on loopback.

use super::control::ControlPlane;
use super::coordinator::{Coordinator, CoordinatorConfig};
use super::derp_server::{Admission, DerpServer, DerpServerConfig};
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePrivate;
use axum::Router;
use axum::routing::{any, get};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Path where an agent learns its identity from its token.
pub const AGENT_IDENTITY_PATH: &str = "/api/v0/agent/identity";

/// Path of the DERP map (Tailscale JSON).
pub const DERP_MAP_PATH: &str = "/api/v0/derp-map";
/// The region id of the embedded relay.
pub const EMBEDDED_REGION: u16 = 999;

/// Coordinator and relay, sharing one control plane and one listen address. Each can be
/// restarted in place (a fresh instance with empty state takes new connections; the old
/// one closes its own), which is what a crash-restart of that component looks like to
/// its clients.
#[derive(Debug)]
pub struct Hub {
    /// Who may do what.
    pub control: Arc<dyn ControlPlane>,
    /// The DERP map advertised to nodes: the embedded relay at the public address.
    pub derp_map: DerpMap,
    /// Shared with the relay's admission check, which asks whichever coordinator serves.
    coordinator: Arc<RwLock<Arc<Coordinator>>>,
    derp: RwLock<Arc<DerpServer>>,
    derp_key: NodePrivate,
    map_json: Option<serde_json::Value>,
}

impl Hub {
    /// A hub whose relay is reachable at `public` (the address nodes dial).
    pub fn new(control: Arc<dyn ControlPlane>, public: SocketAddr, derp_key: NodePrivate) -> Self {
        let mut derp_map =
            DerpMap::single(EMBEDDED_REGION, "agentwire", public.ip(), public.port());
        if let Some(r) = derp_map.regions.get_mut(&EMBEDDED_REGION) {
            r.embedded_relay = true;
            r.region_name = "agentwire embedded relay".into();
        }
        let map_json = serde_json::to_value(&derp_map).ok();
        let coordinator = Arc::new(RwLock::new(Arc::new(Self::new_coordinator(
            &control, &map_json,
        ))));
        let derp = DerpServer::new(derp_key.clone(), Self::derp_config(&coordinator));
        Self {
            control,
            derp_map,
            coordinator,
            derp: RwLock::new(derp),
            derp_key,
            map_json,
        }
    }

    fn new_coordinator(
        control: &Arc<dyn ControlPlane>,
        map: &Option<serde_json::Value>,
    ) -> Coordinator {
        Coordinator::new(
            control.clone(),
            CoordinatorConfig {
                derp_map: map.clone(),
                ..CoordinatorConfig::default()
            },
        )
    }

    /// The relay serves only nodes registered with the coordinator (Tailscale's
    /// `--verify-clients`): a login waits up to `admit_wait` for its key to register.
    fn derp_config(coordinator: &Arc<RwLock<Arc<Coordinator>>>) -> DerpServerConfig {
        let cell = Arc::downgrade(coordinator);
        DerpServerConfig {
            admission: Some(Admission::new(move |key| {
                cell.upgrade()
                    .is_some_and(|c| c.read().unwrap_or_else(|e| e.into_inner()).knows_key(key))
            })),
            ..DerpServerConfig::default()
        }
    }

    /// The coordinator currently serving.
    pub fn coordinator(&self) -> Arc<Coordinator> {
        self.coordinator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The relay currently serving.
    pub fn derp(&self) -> Arc<DerpServer> {
        self.derp.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the coordinator with a fresh one (empty registry) and closes every stream
    /// of the old one; clients reconnect and replay their tunnels.
    pub async fn restart_coordinator(&self) {
        let fresh = Arc::new(Self::new_coordinator(&self.control, &self.map_json));
        let old = std::mem::replace(
            &mut *self.coordinator.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        old.shutdown().await;
    }

    /// Replaces the relay with a fresh one (same key, no clients) and closes every
    /// connection of the old one; clients reconnect.
    pub async fn restart_derp(&self) {
        let fresh = DerpServer::new(self.derp_key.clone(), Self::derp_config(&self.coordinator));
        let old = std::mem::replace(
            &mut *self.derp.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        old.shutdown().await;
    }

    /// Every route: coordinator, DERP (`/derp`, `/derp/latency-check`, `/derp/probe`),
    /// the DERP map, the agent identity endpoint and `/healthz`. Requests go to whichever
    /// coordinator and relay are current.
    pub fn router(self: &Arc<Self>) -> Router {
        let map = self.derp_map.to_json();
        let coord = {
            let hub = self.clone();
            move |req: axum::extract::Request| {
                let router = hub.coordinator().router();
                async move { dispatch(router, req).await }
            }
        };
        let derp = {
            let hub = self.clone();
            move |req: axum::extract::Request| {
                let router = hub.derp().router();
                async move { dispatch(router, req).await }
            }
        };
        Router::new()
            .route(super::coordinator::COORDINATE_PATH, any(coord))
            .route("/derp", any(derp.clone()))
            .route("/derp/latency-check", any(derp.clone()))
            .route("/derp/probe", any(derp))
            .route(
                DERP_MAP_PATH,
                get(move || {
                    let map = map.clone();
                    async move { ([(http::header::CONTENT_TYPE, "application/json")], map) }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                AGENT_IDENTITY_PATH,
                get(agent_identity).with_state(self.control.clone()),
            )
    }

    /// Closes coordinator streams and relay connections.
    pub async fn shutdown(&self) {
        self.coordinator().shutdown().await;
        self.derp().shutdown().await;
    }
}

async fn dispatch(router: Router, req: axum::extract::Request) -> axum::response::Response {
    use tower::ServiceExt;
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// How long a client may take to send a request's headers; also how long an idle
/// keep-alive connection stays open. Bounds what slow or silent clients can hold.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head (request line and headers) a listener reads: hyper's read buffer
/// is capped here, and a head that does not fit is answered 431 and the connection closed.
/// Real clients send a few KiB; without the cap hyper buffers ~400 KiB per connection.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// How long shutdown waits for requests in flight before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves: HTTP/1.1 with upgrades
/// (DERP, websockets), each request carrying the peer's [`ConnectInfo`]. Then stops
/// accepting, lets requests in flight finish (up to a grace period) and returns.
///
/// [`ConnectInfo`]: axum::extract::ConnectInfo
///
/// # Errors
/// Never in practice; accept errors are logged and retried after a pause.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    let app = router
                        .clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
                    conns.spawn(serve_one(tcp, app, stop_rx.clone()));
                }
                Err(e) => {
                    // Out of descriptors, usually: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.shutdown().await;
    }
    Ok(())
}

async fn serve_one(
    tcp: tokio::net::TcpStream,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            Ok::<_, std::convert::Infallible>(dispatch(app, req.map(axum::body::Body::new)).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// What an agent token stands for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AgentIdentity {
    /// The agent's node id.
    pub id: crate::wire::addr::NodeId,
    /// The agent's name in its workspace.
    pub name: String,
    /// The workspace (`owner/name`).
    pub workspace: String,
}

async fn agent_identity(
    axum::extract::State(control): axum::extract::State<Arc<dyn ControlPlane>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let token = super::control::bearer(&headers);
    let unauthorized = || {
        (
            http::StatusCode::UNAUTHORIZED,
            [(http::header::WWW_AUTHENTICATE, "Bearer realm=\"agentwire\"")],
            axum::Json(serde_json::json!({"message": "an agent token is required"})),
        )
            .into_response()
    };
    let Some(token) = token else {
        return unauthorized();
    };
    match control.authenticate(token).await {
        Ok(Some(super::control::Principal::Agent {
            agent_id,
            workspace,
        })) => {
            let name = workspace
                .agents
                .iter()
                .find(|a| a.id == agent_id)
                .map(|a| a.name.clone())
                .unwrap_or_default();
            axum::Json(AgentIdentity {
                id: agent_id,
                name,
                workspace: format!("{}/{}", workspace.owner, workspace.name),
            })
            .into_response()
        }
        Ok(_) => unauthorized(),
        Err(e) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"message": format!("control plane unavailable: {e}")})),
        )
            .into_response(),
    }
}
