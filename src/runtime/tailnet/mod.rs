//! The shared `Tailnet`: one long-lived node per process.
//!
//! Composes the packet core (`Tunnel`: WireGuard device, netstack, UDP socket), the DERP
//! relay set and the coordinator client, and hands out cheap [`AgentConn`] handles. The
//! first `agent_conn` to a destination opens a tunnel at the coordinator, waits for the
//! agent's node (and its `ready_for_handshake`, or a short timeout), programs the
//! WireGuard peer and waits for the handshake — all within the caller's deadline. Later
//! calls just take a lease. A destination with no lease for `idle_timeout` is removed.
//!
//! Tasks: the tunnel's driver, one DERP client per region in use, the coordinator client,
//! and one manager task (coordinator events, destination state, idle expiry). All stop on
//! [`Tailnet::shutdown`] or when the `Tailnet` is dropped.

pub mod conn;
mod endpoints;
mod home;
mod manager;

pub use endpoints::stun_servers;
pub use home::tcp_latencies;
mod state;

pub use crate::proto::tailnet::{Role, Stage};
pub use conn::{AgentConn, AgentUdp};
pub use state::DestinationInfo;

/// One departure, as [`GoneEvents`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// This destination is gone.
    Destination(NodeId),
    /// The listener fell behind and some departures were missed: treat every destination
    /// as possibly gone.
    Missed,
}

/// Subscription to [`Tailnet::gone_events`].
#[derive(Debug)]
pub struct GoneEvents(tokio::sync::broadcast::Receiver<NodeId>);

impl GoneEvents {
    /// The next departure; `None` once the Tailnet is gone.
    pub async fn recv(&mut self) -> Option<Gone> {
        use tokio::sync::broadcast::error::RecvError;
        match self.0.recv().await {
            Ok(id) => Some(Gone::Destination(id)),
            Err(RecvError::Lagged(_)) => Some(Gone::Missed),
            Err(RecvError::Closed) => None,
        }
    }
}

use super::coord::{CoordClient, CoordClientConfig};
use super::relay::{DerpRelay, RelayConfig};
use super::{Tunnel, TunnelConfig, TunnelError};
use crate::netstack::NetstackConfig;
use crate::proto::tailnet::{Destinations, DestinationsConfig, Failure};
use crate::runtime::derp::DerpClientOptions;
use crate::wire::addr::NodeId;
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePrivate;
use state::State;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How `agent_conn` reaches agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialMode {
    /// One long-lived stack; handles are leases on it. The mode to use.
    Shared,
    /// A whole new stack (key, UDP socket, DERP and coordinator connections) per handle,
    /// torn down when the handle drops. Exists only so benchmarks can measure what the
    /// shared mode saves; never use it otherwise.
    PerCall,
}

/// Everything a Tailnet needs.
#[derive(Debug, Clone)]
pub struct TailnetConfig {
    /// Our node id (an agent's is fixed by the control plane; clients pick a random one).
    pub id: NodeId,
    /// A name for logs and the coordinator.
    pub name: String,
    /// Our WireGuard (and DERP) key.
    pub private: NodePrivate,
    /// Client or agent.
    pub role: Role,
    /// Coordinator base URL, `http://host:port`.
    pub coordinator_url: String,
    /// Token for the coordinator (and DERP, as a bearer header).
    pub token: String,
    /// A DERP map to use instead of the one the coordinator sends.
    pub derp_map: Option<DerpMap>,
    /// Home DERP region; default: the lowest region id in the map not marked `Avoid`.
    pub home_region: Option<u16>,
    /// Where the UDP socket binds.
    pub udp_listen: SocketAddr,
    /// UDP endpoints to advertise for direct paths; default: derived from the bound
    /// socket and the route to the coordinator. Empty means DERP only.
    pub advertise: Option<Vec<SocketAddr>>,
    /// Never use direct UDP to peers (DERP only), and advertise no endpoints.
    pub relay_only: bool,
    /// Destinations with no lease for this long are removed.
    pub idle_timeout: Duration,
    /// After an agent's `ready_for_handshake`, how much longer the handshake begun when
    /// its node arrived may take before it is begun again (see `proto::tailnet`).
    pub ready_grace: Duration,
    /// Agent role: a client the coordinator reported lost (gone without a goodbye) and
    /// that has not come back is forgotten once its tunnel has been idle this long
    /// (no handshake; a tunnel in use renews its session every two minutes).
    pub lost_client_timeout: Duration,
    /// Netstack sizing (its addresses are replaced by our tailnet address).
    pub netstack: NetstackConfig,
    /// Shared (the default) or per-call.
    pub dial_mode: DialMode,
    /// DERP client tuning.
    pub derp_options: DerpClientOptions,
    /// Trust for `https` coordinator and relay URLs.
    pub tls: crate::runtime::tls::ClientTls,
    /// Send the token over plain `http://` to a host that is not loopback.
    pub allow_insecure_http: bool,
}

impl TailnetConfig {
    /// A client configuration with defaults: random id and key, loopback UDP, 30 min idle.
    pub fn client(coordinator_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            id: NodeId::random(),
            name: "client".into(),
            private: NodePrivate::generate(),
            role: Role::Client,
            coordinator_url: coordinator_url.into(),
            token: token.into(),
            derp_map: None,
            home_region: None,
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            advertise: None,
            relay_only: false,
            idle_timeout: Duration::from_secs(30 * 60),
            ready_grace: Duration::from_millis(200),
            lost_client_timeout: Duration::from_secs(15 * 60),
            netstack: NetstackConfig::default(),
            dial_mode: DialMode::Shared,
            derp_options: DerpClientOptions::default(),
            tls: crate::runtime::tls::ClientTls::default(),
            allow_insecure_http: false,
        }
    }

    /// An agent configuration for `id`.
    pub fn agent(coordinator_url: impl Into<String>, token: impl Into<String>, id: NodeId) -> Self {
        Self {
            id,
            name: "agent".into(),
            role: Role::Agent,
            ..Self::client(coordinator_url, token)
        }
    }
}

/// Errors starting a Tailnet.
#[derive(Debug, thiserror::Error)]
pub enum TailnetError {
    /// The packet core could not start.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The coordinator URL is not `http://host:port`.
    #[error("coordinator URL {0:?}: expected http://host:port")]
    BadUrl(String),
    /// The token would go to the coordinator in clear.
    #[error(transparent)]
    Insecure(#[from] crate::runtime::tls::InsecureUrl),
}

/// Why `agent_conn` failed. The two timeouts name the stage that did not complete by the
/// caller's deadline: `NoNode` (waiting for the coordinator) and `NoHandshake` (the
/// node arrived, the WireGuard session did not come up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// Agents may not open tunnels.
    #[error("this node is an agent; agents cannot dial other agents")]
    NotAClient,
    /// The coordinator never sent the agent's node (it is offline, unknown, or we may not
    /// reach it).
    #[error(
        "agent {0} is unreachable: the coordinator has no node for it (offline, or not allowed)"
    )]
    NoNode(NodeId),
    /// The node arrived but the WireGuard handshake did not complete.
    #[error(
        "agent {0} is unreachable: no WireGuard handshake (its relay or direct path is not answering)"
    )]
    NoHandshake(NodeId),
    /// The coordinator refused the tunnel.
    #[error("tunnel to agent {0} refused by the coordinator: {1}")]
    Refused(NodeId, String),
    /// The Tailnet is shut down.
    #[error("tailnet is shut down")]
    Closed,
}

impl ConnError {
    fn from_failure(agent: NodeId, f: Failure) -> Self {
        match f {
            Failure::TimedOut(Stage::AwaitingNode | Stage::Refused) => Self::NoNode(agent),
            Failure::TimedOut(Stage::Handshaking | Stage::Ready) => Self::NoHandshake(agent),
            Failure::Refused(reason) => Self::Refused(agent, reason),
            Failure::Closed => Self::Closed,
        }
    }

    /// Whether the caller's deadline passed (rather than a refusal or shutdown).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::NoNode(_) | Self::NoHandshake(_))
    }
}

pub(crate) struct Inner {
    cfg: TailnetConfig,
    addr: Ipv6Addr,
    tunnel: Tunnel,
    relay: DerpRelay,
    /// Taken out on shutdown, for a graceful disconnect.
    coord: Mutex<Option<CoordClient>>,
    state: Mutex<State>,
    /// Tells the manager the machine has work (a caller started waiting).
    kick: tokio::sync::Notify,
    cancel: CancellationToken,
    /// Sleep/wake events detected.
    wakes: std::sync::atomic::AtomicU64,
    /// Network changes detected (addresses or routes).
    net_changes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailnet")
            .field("id", &self.cfg.id)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the coordinator client, unless it was shut down.
    pub(crate) fn coord<R>(&self, f: impl FnOnce(&CoordClient) -> R) -> Option<R> {
        self.coord
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }
}

/// The shared Tailnet. See the module docs.
#[derive(Debug)]
pub struct Tailnet {
    inner: Arc<Inner>,
    manager: Option<tokio::task::JoinHandle<()>>,
}

/// Builds a [`Tailnet`].
#[derive(Debug, Clone)]
pub struct TailnetBuilder {
    cfg: TailnetConfig,
}

impl TailnetBuilder {
    /// Starts from a configuration.
    pub fn new(cfg: TailnetConfig) -> Self {
        Self { cfg }
    }
    /// Sets the DERP map (instead of the coordinator's).
    pub fn derp_map(mut self, map: DerpMap) -> Self {
        self.cfg.derp_map = Some(map);
        self
    }
    /// Forces DERP-only paths.
    pub fn relay_only(mut self, yes: bool) -> Self {
        self.cfg.relay_only = yes;
        self
    }
    /// Sets the idle timeout for unused destinations.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.cfg.idle_timeout = d;
        self
    }
    /// Sets the dial mode.
    pub fn dial_mode(mut self, m: DialMode) -> Self {
        self.cfg.dial_mode = m;
        self
    }
    /// Sets the UDP bind address.
    pub fn udp_listen(mut self, a: SocketAddr) -> Self {
        self.cfg.udp_listen = a;
        self
    }
    /// Sets the node name.
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.cfg.name = n.into();
        self
    }
    /// Starts the Tailnet on the current tokio runtime.
    ///
    /// # Errors
    /// [`TailnetError`] if the UDP socket cannot be bound or the URL is bad.
    pub fn build(self) -> Result<Tailnet, TailnetError> {
        Tailnet::start(self.cfg)
    }
}

impl Tailnet {
    /// A builder for a client with default settings.
    pub fn builder(coordinator_url: impl Into<String>, token: impl Into<String>) -> TailnetBuilder {
        TailnetBuilder::new(TailnetConfig::client(coordinator_url, token))
    }

    /// Starts a Tailnet: binds UDP, starts the driver, the coordinator client and the
    /// manager. Connections to DERP and the coordinator happen in the background.
    ///
    /// # Errors
    /// [`TailnetError`] if the UDP socket cannot be bound or the URL is bad.
    pub fn start(mut cfg: TailnetConfig) -> Result<Self, TailnetError> {
        if !(cfg.coordinator_url.starts_with("http://")
            || cfg.coordinator_url.starts_with("https://"))
        {
            return Err(TailnetError::BadUrl(cfg.coordinator_url));
        }
        crate::runtime::tls::check_secret_url(&cfg.coordinator_url, cfg.allow_insecure_http)?;
        let addr = cfg.id.tailnet_addr();
        cfg.netstack.addresses = vec![IpAddr::V6(addr)];
        let map = cfg.derp_map.clone().unwrap_or_default();
        let home = cfg.home_region.or_else(|| manager::default_home(&map));
        let (relay, relay_rx) = DerpRelay::new(RelayConfig {
            private: cfg.private.clone(),
            map,
            home,
            headers: vec![("Authorization".into(), format!("Bearer {}", cfg.token))],
            options: cfg.derp_options.clone(),
            tls: cfg.tls.clone(),
            allow_insecure_http: cfg.allow_insecure_http,
        });
        let tunnel = Tunnel::start_with_relay(
            TunnelConfig {
                private: cfg.private.clone(),
                netstack: cfg.netstack.clone(),
                listen: cfg.udp_listen,
                peers: vec![],
            },
            Some((Box::new(relay.clone()), relay_rx)),
        )?;
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let coord = CoordClient::spawn(
            CoordClientConfig {
                url: cfg.coordinator_url.clone(),
                token: cfg.token.clone(),
                id: cfg.id,
                name: cfg.name.clone(),
                tls: cfg.tls.clone(),
            },
            ev_tx,
        );
        let machine = Destinations::new(DestinationsConfig {
            role: cfg.role,
            idle_timeout: cfg.idle_timeout,
            ready_grace: cfg.ready_grace,
            lost_client_timeout: cfg.lost_client_timeout,
        });
        let inner = Arc::new(Inner {
            addr,
            tunnel,
            relay,
            coord: Mutex::new(Some(coord)),
            state: Mutex::new(State::new(home, machine)),
            kick: tokio::sync::Notify::new(),
            cancel: CancellationToken::new(),
            wakes: std::sync::atomic::AtomicU64::new(0),
            net_changes: std::sync::atomic::AtomicU64::new(0),
            cfg,
        });
        manager::publish_self(&inner);
        let manager = tokio::spawn(manager::run(inner.clone(), ev_rx));
        Ok(Self {
            inner,
            manager: Some(manager),
        })
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    /// Our tailnet address.
    pub fn addr(&self) -> Ipv6Addr {
        self.inner.addr
    }

    /// The packet core, for listeners (agents serve on it) and statistics.
    pub fn tunnel(&self) -> &Tunnel {
        &self.inner.tunnel
    }

    /// The DERP relay set.
    pub fn relay(&self) -> &DerpRelay {
        &self.inner.relay
    }

    /// The coordinator client's state and counters.
    pub fn coordinator_status(&self) -> Option<crate::runtime::coord::CoordStatus> {
        self.inner.coord(CoordClient::status)
    }

    /// Whether the coordinator connection is up.
    pub fn coordinator_connected(&self) -> bool {
        self.inner.coord(|c| c.status().connected).unwrap_or(false)
    }

    /// Waits until the coordinator connection is up and the home DERP region is logged in.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let start = crate::runtime::clock::now();
        while !self.coordinator_connected() {
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = timeout.saturating_sub(start.elapsed());
        self.inner.relay.home().is_none() || self.inner.relay.wait_home(left).await
    }

    /// A handle on `agent`, within `deadline`. The first call for a destination sets up the
    /// tunnel and waits for a WireGuard handshake; later calls take a lease on it. On
    /// failure nothing is held and no task outlives the call.
    ///
    /// # Errors
    /// [`ConnError`], naming the stage that did not complete.
    pub async fn agent_conn(
        &self,
        agent: NodeId,
        deadline: tokio::time::Instant,
    ) -> Result<AgentConn, ConnError> {
        self.dial(agent, deadline, None).await
    }

    /// [`DialMode::PerCall`] only (benchmarks): as [`Self::agent_conn`], with the DERP map
    /// the caller fetched for this call, as the reference's per-call path fetches one with
    /// its connection info before it builds the stack. In shared mode the map is ignored.
    ///
    /// # Errors
    /// As [`Self::agent_conn`].
    pub async fn agent_conn_with_map(
        &self,
        agent: NodeId,
        deadline: tokio::time::Instant,
        derp_map: DerpMap,
    ) -> Result<AgentConn, ConnError> {
        self.dial(agent, deadline, Some(derp_map)).await
    }

    async fn dial(
        &self,
        agent: NodeId,
        deadline: tokio::time::Instant,
        derp_map: Option<DerpMap>,
    ) -> Result<AgentConn, ConnError> {
        if self.inner.cfg.role != Role::Client {
            return Err(ConnError::NotAClient);
        }
        if self.inner.cancel.is_cancelled() {
            return Err(ConnError::Closed);
        }
        if self.inner.cfg.dial_mode == DialMode::PerCall {
            return conn::per_call(&self.inner.cfg, agent, deadline, derp_map).await;
        }
        conn::acquire(&self.inner, agent, deadline).await
    }

    /// How `agent_conn` reaches agents.
    pub fn dial_mode(&self) -> DialMode {
        self.inner.cfg.dial_mode
    }

    /// Whether `agent` is a destination with a session now (a lease is granted at once).
    pub fn is_ready(&self, agent: NodeId) -> bool {
        self.inner.state().machine.stage(&agent) == Some(Stage::Ready)
    }

    /// Departures from now on: a destination is announced when it is removed or its node
    /// left or changed key, so that connections kept to it above the Tailnet (pooled API
    /// connections) are let go at once rather than found dead on next use.
    pub fn gone_events(&self) -> GoneEvents {
        GoneEvents(self.inner.state().gone.subscribe())
    }

    /// Per-destination state: leases, path, last handshake, bytes.
    pub async fn destinations(&self) -> Vec<DestinationInfo> {
        state::destinations(&self.inner).await
    }

    /// Sends a discovery ping to `agent` over the path its packets take now and waits up
    /// to `timeout` for the pong. `Ok(None)`: no destination with a known key (take an
    /// [`AgentConn`] first). Otherwise the path the ping took, and the pong if it came
    /// (the path it came back on and the round trip).
    ///
    /// # Errors
    /// [`ConnError::Closed`] after shutdown.
    pub async fn ping(
        &self,
        agent: NodeId,
        timeout: Duration,
    ) -> Result<
        Option<(
            crate::proto::wg::PathAddr,
            Option<crate::proto::wg::PingResult>,
        )>,
        ConnError,
    > {
        let key = self
            .destinations()
            .await
            .into_iter()
            .find(|d| d.agent == agent)
            .and_then(|d| d.key);
        let Some(key) = key else {
            return Ok(None);
        };
        self.inner
            .tunnel
            .ping(key, timeout)
            .await
            .map_err(|_| ConnError::Closed)
    }

    /// The path state toward `agent`: the path in use, every candidate and its round
    /// trip. `None` for an agent with no destination or no known key yet.
    pub async fn path_info(&self, agent: NodeId) -> Option<crate::proto::wg::PathInfo> {
        let key = self
            .destinations()
            .await
            .into_iter()
            .find(|d| d.agent == agent)
            .and_then(|d| d.key)?;
        self.inner.tunnel.path_info(key).await.ok().flatten()
    }

    /// This node's advertised endpoints and what endpoint discovery last found.
    pub fn discovery(&self) -> crate::proto::discovery::Report {
        self.inner.tunnel.discovery().borrow().clone()
    }

    /// The home DERP region.
    pub fn home_region(&self) -> Option<u16> {
        self.inner.state().home
    }

    /// Reconnects DERP and the coordinator at once and re-handshakes every peer: for
    /// callers that noticed sleep/wake or a network change.
    pub fn rebind(&self) {
        self.inner.relay.reconnect_all();
        self.inner.coord(CoordClient::reconnect_now);
    }

    /// The server was seen answering again (its API did): a coordinator connection
    /// waiting out its backoff retries now. A stream that is up, or an attempt under way,
    /// is left alone.
    pub fn server_answered(&self) {
        if !self.coordinator_connected() {
            self.inner.coord(CoordClient::retry_now);
        }
    }

    /// How many network changes (interface addresses) were detected and handled.
    pub fn network_changes(&self) -> u64 {
        self.inner
            .net_changes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `disconnected` and `lost` peer updates the coordinator sent so far.
    pub fn peer_update_counts(&self) -> crate::proto::tailnet::PeerUpdateCounts {
        self.inner.state().machine.peer_update_counts()
    }

    /// How many times a sleep/wake (a clock gap) was detected and handled.
    pub fn wake_count(&self) -> u64 {
        self.inner.wakes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops every task this Tailnet started and waits for them. Open handles fail.
    pub async fn shutdown(mut self) {
        self.inner.cancel.cancel();
        if let Some(m) = self.manager.take() {
            let _ = m.await;
        }
        let coord = self
            .inner
            .coord
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = coord {
            c.shutdown().await;
        }
        self.inner.relay.shutdown().await;
        self.inner.tunnel.close().await;
    }
}

impl Drop for Tailnet {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        if let Some(m) = self.manager.take() {
            m.abort();
            // Without an await: dropping the clients stops their tasks; closing the
            // tunnel fails open sockets so nothing waits on a dead stack.
            drop(
                self.inner
                    .coord
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
            let relay = self.inner.relay.clone();
            relay.stop_all();
            self.inner.tunnel.close_now();
        }
    }
}
