//! Who a registry stream is and what it may do.

use crate::wire::addr::NodeId;
use std::fmt;
use std::sync::Arc;

/// Answers whether a client's principal may use an agent. Must answer without blocking.
pub trait TunnelAuthorizer: Send + Sync {
    /// Whether a tunnel to `agent` is allowed.
    fn may_use(&self, agent: NodeId) -> bool;
}

impl<F: Fn(NodeId) -> bool + Send + Sync> TunnelAuthorizer for F {
    fn may_use(&self, agent: NodeId) -> bool {
        self(agent)
    }
}

/// What a stream is allowed to do, decided by the server from its token.
#[derive(Clone)]
pub enum PeerAuth {
    /// A workspace agent; its token binds it to one node id. May not open tunnels.
    Agent {
        /// The id the token is bound to.
        id: NodeId,
    },
    /// A user's client: may open tunnels only to agents `authorizer` allows.
    Client {
        /// Who the user is; a stream may only replace a stream of the same principal.
        principal: String,
        /// Which agents the principal may use.
        authorizer: Arc<dyn TunnelAuthorizer>,
    },
    /// The serving process's own tailnet: may open tunnels to any node.
    Service,
}

impl PeerAuth {
    /// A short name for the role, for logs.
    pub fn role(&self) -> &'static str {
        match self {
            Self::Agent { .. } => "agent",
            Self::Client { .. } => "client",
            Self::Service => "service",
        }
    }

    /// The user principal of a client stream; `None` for agents and services.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Self::Client { principal, .. } => Some(principal),
            _ => None,
        }
    }

    /// Whether a stream with `self` may replace a live stream with `other` for the same id.
    pub(super) fn same_principal(&self, other: &PeerAuth) -> bool {
        match (self, other) {
            (Self::Agent { id: a }, Self::Agent { id: b }) => a == b,
            (Self::Client { principal: a, .. }, Self::Client { principal: b, .. }) => a == b,
            (Self::Service, Self::Service) => true,
            _ => false,
        }
    }

    /// Whether this stream may hold a tunnel to `dst`.
    pub(super) fn may_tunnel_to(&self, dst: NodeId) -> bool {
        match self {
            Self::Agent { .. } => false,
            Self::Client { authorizer, .. } => authorizer.may_use(dst),
            Self::Service => true,
        }
    }
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent { id } => f.debug_struct("Agent").field("id", id).finish(),
            Self::Client { principal, .. } => f
                .debug_struct("Client")
                .field("principal", principal)
                .finish_non_exhaustive(),
            Self::Service => f.write_str("Service"),
        }
    }
}
