//! The control-plane HTTP surface in one router: the coordinator, the DERP relay and the
//! DERP map that points at it. `agentwire serve` mounts it (with the MCP endpoint); tests
//! run it alone on loopback.

use super::control::ControlPlane;
use super::coord::{Coordinator, CoordinatorConfig};
use super::derp::{Admission, DerpServer, DerpServerConfig, Mesh, MeshConfig, MeshPeer, MeshStats};
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePrivate;
use axum::Router;
use axum::routing::{any, get};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

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
    /// The relay's mesh with its peer relays, once started; a restarted relay gets a
    /// fresh mesh with the same settings and peers.
    mesh: Mutex<Option<Mesh>>,
    map_json: Option<serde_json::Value>,
    /// Lines `/healthz` adds after `ok` (configuration an operator should fix).
    warnings: RwLock<Vec<String>>,
    /// The listener's TLS, for its counters.
    tls: std::sync::OnceLock<crate::runtime::tls::ServerTls>,
    /// The STUN server's counters, when one runs beside the relay.
    stun: std::sync::OnceLock<Arc<super::stun::StunCounters>>,
    /// This process as a replica (weak: the replica holds the hub).
    replica: std::sync::OnceLock<std::sync::Weak<super::replica::Replica>>,
}

impl Hub {
    /// A hub whose relay is reachable over plain HTTP at `public` (the address nodes
    /// dial).
    pub fn new(control: Arc<dyn ControlPlane>, public: SocketAddr, derp_key: NodePrivate) -> Self {
        Self::with_map(
            control,
            embedded_map(&public.ip().to_string(), public.port(), false),
            derp_key,
        )
    }

    /// A hub advertising `derp_map` (see [`embedded_map`]).
    pub fn with_map(
        control: Arc<dyn ControlPlane>,
        derp_map: DerpMap,
        derp_key: NodePrivate,
    ) -> Self {
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
            mesh: Mutex::new(None),
            map_json,
            warnings: RwLock::new(Vec::new()),
            tls: std::sync::OnceLock::new(),
            stun: std::sync::OnceLock::new(),
            replica: std::sync::OnceLock::new(),
        }
    }

    /// Records the listener's TLS so `/metrics` shows its counters.
    pub fn set_tls(&self, tls: crate::runtime::tls::ServerTls) {
        let _ = self.tls.set(tls);
    }

    /// The listener's TLS, if it terminates TLS.
    pub fn tls(&self) -> Option<&crate::runtime::tls::ServerTls> {
        self.tls.get()
    }

    /// Records the STUN server's counters so `/metrics` shows them.
    pub fn set_stun(&self, counters: Arc<super::stun::StunCounters>) {
        let _ = self.stun.set(counters);
    }

    /// Records this process's replica so `/healthz` and `/metrics` report it.
    pub fn set_replica(&self, replica: &Arc<super::replica::Replica>) {
        let _ = self.replica.set(Arc::downgrade(replica));
    }

    /// This process as a replica, while it runs.
    pub fn replica(&self) -> Option<Arc<super::replica::Replica>> {
        self.replica.get().and_then(std::sync::Weak::upgrade)
    }

    /// The STUN server's counters, if one runs.
    pub fn stun_stats(&self) -> Option<super::stun::StunStats> {
        self.stun.get().map(|c| c.snapshot())
    }

    /// Adds a line to what `/healthz` reports (it still answers 200).
    pub fn add_health_warning(&self, line: impl Into<String>) {
        self.warnings
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.into());
    }

    /// `/healthz`: 503 while a replica starts (load balancers wait for it), else 200
    /// with a warning line per known trouble.
    fn health(&self) -> (http::StatusCode, String) {
        if let Some(why) = self.replica().and_then(|r| r.starting()) {
            return (http::StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
        }
        let mut out = String::from("ok\n");
        for w in self
            .warnings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str("warning: ");
            out.push_str(w);
            out.push('\n');
        }
        if let Some(line) = self.replica().and_then(|r| r.health()) {
            out.push_str("warning: ");
            out.push_str(&line);
            out.push('\n');
        }
        (http::StatusCode::OK, out)
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
    /// connection of the old one; clients reconnect. A running mesh moves to the fresh
    /// relay (same settings and peers; its links log in again and re-watch).
    pub async fn restart_derp(&self) {
        let fresh = DerpServer::new(self.derp_key.clone(), Self::derp_config(&self.coordinator));
        let old_mesh = {
            let mut slot = self.mesh_slot();
            let old_mesh = slot.take();
            if let Some(m) = &old_mesh {
                let mesh = fresh.start_mesh(m.config().clone());
                mesh.set_peers(m.peers());
                *slot = Some(mesh);
            }
            old_mesh
        };
        let old = std::mem::replace(
            &mut *self.derp.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        if let Some(m) = old_mesh {
            m.shutdown().await;
        }
        old.shutdown().await;
    }

    fn mesh_slot(&self) -> MutexGuard<'_, Option<Mesh>> {
        self.mesh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Meshes the relay with its peer relays (replicas of this server): sets the
    /// relay's mesh key to `cfg.mesh_key` and starts a mesh with no peers yet (see
    /// [`Self::set_mesh_peers`]). A mesh already running is replaced. Must be called
    /// within a tokio runtime.
    pub fn start_mesh(&self, cfg: MeshConfig) {
        let mesh = self.derp().start_mesh(cfg);
        let old = self.mesh_slot().replace(mesh);
        // Dropping stops the old links and removes their forwarders.
        drop(old);
    }

    /// Sets the peer relays of the running mesh (the desired set; this relay's own URL
    /// is skipped). Does nothing when no mesh runs. Must be called within a tokio
    /// runtime.
    pub fn set_mesh_peers(&self, peers: Vec<MeshPeer>) {
        if let Some(m) = self.mesh_slot().as_ref() {
            m.set_peers(peers);
        }
    }

    /// The running mesh's links, if a mesh runs.
    pub fn mesh_stats(&self) -> Option<MeshStats> {
        self.mesh_slot().as_ref().map(Mesh::stats)
    }

    /// Stops the mesh, if one runs, and waits for its links to end. The relay keeps
    /// its mesh key.
    pub async fn stop_mesh(&self) {
        let mesh = self.mesh_slot().take();
        if let Some(m) = mesh {
            m.shutdown().await;
        }
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
            .route(super::coord::COORDINATE_PATH, any(coord))
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
            .route("/healthz", {
                let hub = self.clone();
                get(move || {
                    let body = hub.health();
                    async move { body }
                })
            })
            .route(
                AGENT_IDENTITY_PATH,
                get(agent_identity).with_state(self.control.clone()),
            )
    }

    /// Stops the mesh and closes coordinator streams and relay connections.
    pub async fn shutdown(&self) {
        self.stop_mesh().await;
        self.coordinator().shutdown().await;
        self.derp().shutdown().await;
    }
}

use super::http::dispatch;
pub use super::http::{HEADER_READ_TIMEOUT, MAX_REQUEST_HEAD, serve};

/// The one-region map naming the embedded relay at `host:port` (a DNS name or an IP
/// literal), over TLS when `tls`.
pub fn embedded_map(host: &str, port: u16, tls: bool) -> DerpMap {
    let mut m = DerpMap::single_node(EMBEDDED_REGION, "agentwire", host, port, tls);
    if let Some(r) = m.regions.get_mut(&EMBEDDED_REGION) {
        r.embedded_relay = true;
        r.region_name = "agentwire embedded relay".into();
    }
    m
}

/// Sets every node's `STUNPort`: the port a STUN server answers on beside the relay, or
/// none (-1, which tells clients not to try).
pub fn set_stun_port(map: &mut DerpMap, port: Option<u16>) {
    let v = port.map_or(-1, i32::from);
    for node in map.regions.values_mut().flat_map(|r| r.nodes.iter_mut()) {
        node.stun_port = v;
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
