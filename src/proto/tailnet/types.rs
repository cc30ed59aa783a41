//! The destinations machine's vocabulary: its configuration, what it asks the shell to
//! do, and what it reports.

use crate::wire::addr::NodeId;
use crate::wire::coord::Node;
use crate::wire::key::NodePublic;
use std::time::Duration;

/// What this node is on the tailnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens tunnels to agents (the MCP server, a CLI).
    Client,
    /// Accepts tunnels: programs every client the coordinator introduces and acknowledges
    /// its node with `ready_for_handshake`. May not open tunnels.
    Agent,
}

/// Timers of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationsConfig {
    /// Client or agent.
    pub role: Role,
    /// Destinations with no lease for this long are removed.
    pub idle_timeout: Duration,
    /// After the agent's `ready_for_handshake`, how much longer (beyond the time from its
    /// node to its acknowledgement) the first handshake may take before it is begun again.
    pub ready_grace: Duration,
    /// Agent role: a client the coordinator reported lost, and that has not come back,
    /// is forgotten once its tunnel has had no handshake for this long.
    pub lost_client_timeout: Duration,
}

/// Where setting up a destination got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Tunnel requested; no node yet.
    AwaitingNode,
    /// Peer programmed; handshake in progress.
    Handshaking,
    /// A session exists: leases are granted at once.
    Ready,
    /// The coordinator refused the tunnel; asked again by the next caller.
    Refused,
}

impl Stage {
    /// The name used in diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingNode => "awaiting_node",
            Self::Handshaking => "handshaking",
            Self::Ready => "ready",
            Self::Refused => "refused",
        }
    }
}

/// Why a waiting caller was failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The caller's deadline passed with setup at this stage.
    TimedOut(Stage),
    /// The coordinator refused the tunnel, with its reason.
    Refused(String),
    /// The machine was shut down.
    Closed,
}

/// Identifies one waiting caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub(super) u64);

/// What [`Destinations::acquire`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// A session is up: the lease is usable now.
    Ready,
    /// Setup is under way: wait for [`Action::Resolve`] for this waiter. The lease is
    /// held either way and must be released by the caller.
    Wait(WaiterId),
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the coordinator for a tunnel to the agent (idempotent).
    AddTunnel(NodeId),
    /// Tell the coordinator the tunnel is no longer wanted.
    RemoveTunnel(NodeId),
    /// Program the WireGuard peer for `node` (removing the peer with key `replace`
    /// first, if any), initiate a handshake, and report its outcome with
    /// [`Destinations::handle_session`].
    ProgramPeer {
        /// The destination.
        id: NodeId,
        /// Its node as the coordinator sent it.
        node: Box<Node>,
        /// A stale key of the same destination to remove first.
        replace: Option<NodePublic>,
    },
    /// Initiate a handshake with a peer already programmed (a caller is waiting and an
    /// earlier attempt may have given up).
    Initiate(NodePublic),
    /// Begin a new handshake even though one is in flight: the agent acknowledged us and
    /// the one in flight went unanswered (it reached the agent before our key did).
    Reinitiate(NodePublic),
    /// Remove the WireGuard peer with this key.
    RemovePeer(NodePublic),
    /// Reset every TCP connection to the node's tailnet address: it left or restarted.
    ResetConnections(NodeId),
    /// The destination is gone (removed, or its node left or changed key): connections
    /// kept to it above the Tailnet, such as pooled API connections, are dead.
    Gone(NodeId),
    /// Agent role: program a client peer and, if that works, acknowledge it with
    /// `ready_for_handshake`.
    ProgramClient(Box<Node>),
    /// Agent role: a client lost for a while. Report with
    /// [`Destinations::handle_client_idle`] whether the peer with `key` has had no
    /// handshake for `idle_for` (or none at all).
    CheckClientIdle {
        /// The client.
        id: NodeId,
        /// Its key.
        key: NodePublic,
        /// How long without a handshake counts as idle.
        idle_for: Duration,
    },
    /// Complete a waiting caller.
    Resolve {
        /// The caller.
        waiter: WaiterId,
        /// `Ok` once a session is up.
        result: Result<(), Failure>,
    },
    /// After sleep/wake: reconnect relays and the coordinator, re-handshake every peer.
    Reconnect,
}

/// A lease was released that was not held: a bug in the caller. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease released for {0} with none held")]
pub struct UnbalancedRelease(pub NodeId);

/// One destination, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSummary {
    /// The agent.
    pub id: NodeId,
    /// Leases held now.
    pub leases: u64,
    /// Leases ever taken.
    pub leases_total: u64,
    /// Setup stage.
    pub stage: Stage,
    /// The coordinator reported the agent lost (sessions keep working meanwhile).
    pub lost: bool,
    /// The key programmed into the device, if any.
    pub key: Option<NodePublic>,
    /// Callers waiting.
    pub waiters: usize,
}

/// Peer updates of the kinds that end or suspend a peer, as received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerUpdateCounts {
    /// `disconnected`: the peer left (gracefully, or its stream was replaced).
    pub disconnected: u64,
    /// `lost`: the coordinator stopped hearing from the peer.
    pub lost: u64,
}
