//! The control-plane HTTP surface in one router: the coordinator, the DERP relay and the
//! DERP map that points at it. `agentwire serve` mounts it (with the MCP endpoint); tests
//! run it alone on loopback.

use super::control::ControlPlane;
use super::coordinator::{Coordinator, CoordinatorConfig};
use super::derp_server::{DerpServer, DerpServerConfig};
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePrivate;
use axum::Router;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Path where an agent learns its identity from its token.
pub const AGENT_IDENTITY_PATH: &str = "/api/v0/agent/identity";

/// Path of the DERP map (Tailscale JSON).
pub const DERP_MAP_PATH: &str = "/api/v0/derp-map";
/// The region id of the embedded relay.
pub const EMBEDDED_REGION: u16 = 999;

/// Coordinator and relay, sharing one control plane and one listen address.
#[derive(Debug)]
pub struct Hub {
    /// Who may do what.
    pub control: Arc<dyn ControlPlane>,
    /// The coordinator.
    pub coordinator: Coordinator,
    /// The DERP relay.
    pub derp: Arc<DerpServer>,
    /// The DERP map advertised to nodes: the embedded relay at the public address.
    pub derp_map: DerpMap,
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
        let coordinator = Coordinator::new(
            control.clone(),
            CoordinatorConfig {
                derp_map: map_json,
                ..CoordinatorConfig::default()
            },
        );
        let derp = DerpServer::new(derp_key, DerpServerConfig::default());
        Self {
            control,
            coordinator,
            derp,
            derp_map,
        }
    }

    /// Every route: coordinator, DERP (`/derp`, `/derp/latency-check`), the DERP map and
    /// `/healthz`.
    pub fn router(&self) -> Router {
        let map = self.derp_map.to_json();
        self.coordinator
            .router()
            .merge(self.derp.router())
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
        self.coordinator.shutdown().await;
        self.derp.shutdown().await;
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
///
/// # Errors
/// IO errors from the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
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
