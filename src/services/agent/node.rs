//! The agent as a tailnet node: joins the coordinator with its agent token, serves the
//! API on tailnet port 4, and forwards every other port (from 9 up) to the same port on
//! its host's loopback, so any service in the workspace is dialable.

use super::api::{self, AgentApi, AgentApiConfig};
use crate::runtime::tailnet::{Tailnet, TailnetConfig, TailnetError};
use crate::runtime::{TcpListener, TcpStream};
use crate::wire::addr::{AGENT_API_PORT, AGENT_MIN_FORWARD_PORT, NodeId};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a forwarded connection may take to reach the local port.
const FORWARD_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffer per direction for forwarded connections.
const FORWARD_BUF: usize = 256 << 10;

/// An agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node's tailnet settings (role agent, id, token, coordinator).
    pub tailnet: TailnetConfig,
    /// The API's settings.
    pub api: AgentApiConfig,
    /// Forward tailnet connections on other ports to the host's loopback.
    pub forward_ports: bool,
}

impl AgentConfig {
    /// An agent for `id`, joining `coordinator_url` with `token`, working in `dir`.
    pub fn new(coordinator_url: &str, token: &str, id: NodeId, dir: std::path::PathBuf) -> Self {
        let mut tailnet = TailnetConfig::agent(coordinator_url, token, id);
        tailnet.name = format!("agent-{id}");
        Self {
            tailnet,
            api: AgentApiConfig {
                workdir: dir,
                ..Default::default()
            },
            forward_ports: true,
        }
    }
}

/// A running agent. Dropping it closes the tunnel, which ends every task it started;
/// [`Agent::shutdown`] also kills its processes and waits.
#[derive(Debug)]
pub struct Agent {
    tailnet: Tailnet,
    api: AgentApi,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Agent {
    /// Starts the node, the API listener and port forwarding.
    ///
    /// # Errors
    /// [`TailnetError`] if the node cannot start.
    pub fn start(cfg: AgentConfig) -> Result<Self, TailnetError> {
        let tailnet = Tailnet::start(cfg.tailnet)?;
        let api = AgentApi::new(cfg.api);
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let listener = tailnet.tunnel().listen_tcp(AGENT_API_PORT).map_err(|e| {
            TailnetError::Tunnel(crate::runtime::TunnelError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], AGENT_API_PORT)),
                source: e,
            })
        })?;
        tasks.spawn(serve_api(
            listener,
            api::router(api.clone()),
            tasks.clone(),
            cancel.clone(),
        ));
        if cfg.forward_ports
            && let Ok(l) = tailnet.tunnel().listen_tcp_any(AGENT_MIN_FORWARD_PORT)
        {
            tasks.spawn(forward(l, tasks.clone(), cancel.clone()));
        }
        Ok(Self {
            tailnet,
            api,
            tasks,
            cancel,
        })
    }

    /// The agent's node id.
    pub fn id(&self) -> NodeId {
        self.tailnet.id()
    }

    /// The tailnet node.
    pub fn tailnet(&self) -> &Tailnet {
        &self.tailnet
    }

    /// The API state (process table and settings).
    pub fn api(&self) -> &AgentApi {
        &self.api
    }

    /// Waits until the node is connected to the coordinator and its home relay.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.tailnet.wait_ready(timeout).await
    }

    /// Stops serving, kills the processes it started, and leaves the tailnet.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.api.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        self.tailnet.shutdown().await;
    }
}

async fn serve_api(
    listener: TcpListener,
    app: axum::Router,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    let app = app.clone();
                    let cancel = cancel.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = api::serve_connection(s, app) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "agent API listener closed");
                    return;
                }
            },
        }
    }
}

async fn forward(listener: TcpListener, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, peer)) => {
                    let cancel = cancel.clone();
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = forward_one(s, peer) => {}
                        }
                    });
                }
                Err(_) => return,
            },
        }
    }
}

/// Carries one tailnet connection to the same port on loopback (IPv4, then IPv6).
async fn forward_one(mut s: TcpStream, peer: SocketAddr) {
    let port = s.local_addr().port();
    let mut local = None;
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        if let Ok(Ok(c)) = tokio::time::timeout(
            FORWARD_DIAL_TIMEOUT,
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await
        {
            local = Some(c);
            break;
        }
    }
    let Some(mut local) = local else {
        tracing::debug!(%peer, port, "nothing listens on the forwarded port; resetting");
        return;
    };
    let _ = local.set_nodelay(true);
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut s, &mut local, FORWARD_BUF, FORWARD_BUF).await
    {
        tracing::debug!(%peer, port, error = %e, "forwarded connection ended");
    }
}
