//! How a tool gets a client for an agent's API.
//!
//! The front end never dials by itself: it asks an [`AgentProvider`] after it has checked
//! that the caller may use the workspace. The serving process implements the trait over its
//! shared tailnet (each client holds a lease on the agent's tunnel until dropped); tests
//! and local tools use [`StaticAgentProvider`], which maps agent ids to loopback servers.

pub mod tailnet;

use crate::services::agent::client::{AgentClient, TcpDialer};
use crate::wire::addr::NodeId;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;

/// Why no client could be had for an agent. Every message says what the caller can do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// The agent is not connected or cannot be reached right now.
    #[error("agent {agent} is unreachable: {reason}; check that the workspace agent is running")]
    Unreachable {
        /// The agent.
        agent: NodeId,
        /// What failed.
        reason: String,
    },
    /// No connection came up before the deadline.
    #[error("timed out connecting to agent {agent}; the agent may be offline, try again later")]
    TimedOut {
        /// The agent.
        agent: NodeId,
    },
    /// The coordinator knows the agent is not connected.
    #[error("agent {agent} is {status}; start the workspace agent, or try again once it is back")]
    Offline {
        /// The agent.
        agent: NodeId,
        /// What is known: since when, and why.
        status: String,
    },
    /// The process is shutting down and hands out no more connections.
    #[error("the server is shutting down; retry against a running server")]
    ShutDown,
}

/// Whether an agent is connected, as far as the serving process knows.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Registered with the coordinator.
    Online,
    /// Known not to be connected: calls fail at once.
    Offline,
    /// Not known (no coordinator view, or agents are still reconnecting after a restart).
    #[default]
    Unknown,
}

/// An agent's liveness: the coordinator's view and the tunnel's, joined.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct AgentStatus {
    /// Online, offline or unknown.
    pub state: AgentState,
    /// A sentence for people: since when, why, conflicts.
    pub detail: String,
    /// When it came online or went offline, Unix milliseconds.
    pub since_unix_ms: Option<u64>,
    /// When its coordinator stream was last heard from, Unix milliseconds.
    pub last_seen_unix_ms: Option<u64>,
    /// The tunnel's current path to it ("direct ADDR" or "relay (DERP region N)").
    pub path: Option<String>,
    /// When the tunnel's current session was established, Unix milliseconds.
    pub last_handshake_unix_ms: Option<u64>,
    /// Registrations for its id by another process that were refused.
    pub conflicts: u64,
}

/// Hands out agent API clients.
pub trait AgentProvider: Send + Sync + std::fmt::Debug + 'static {
    /// A client for `agent`, holding a lease on its connection until dropped. Must respect
    /// the deadline and release everything on failure.
    ///
    /// # Errors
    /// [`ProviderError`] if no connection could be had by `deadline`.
    fn connect(
        &self,
        agent: NodeId,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Result<AgentClient, ProviderError>>;

    /// What is known about each of `agents`; agents left out are unknown. The default
    /// knows nothing.
    fn status(&self, agents: Vec<NodeId>) -> BoxFuture<'static, HashMap<NodeId, AgentStatus>> {
        let _ = agents;
        Box::pin(async { HashMap::new() })
    }

    /// How often readers of agents' replies waited for a destination's reply budget, for
    /// how long in all, and what probation did. The default paces nothing.
    fn reply_pacing(&self) -> crate::services::agent::client::PacingCounts {
        Default::default()
    }
}

/// A fixed map from agent id to the TCP address of its API, for tests and local tools
/// (agents running on this host). Unknown ids are [`ProviderError::Unreachable`].
#[derive(Debug, Clone, Default)]
pub struct StaticAgentProvider {
    agents: Arc<HashMap<NodeId, SocketAddr>>,
}

impl StaticAgentProvider {
    /// A provider serving exactly these agents.
    pub fn new(agents: impl IntoIterator<Item = (NodeId, SocketAddr)>) -> Self {
        Self {
            agents: Arc::new(agents.into_iter().collect()),
        }
    }
}

impl AgentProvider for StaticAgentProvider {
    fn connect(
        &self,
        agent: NodeId,
        _deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Result<AgentClient, ProviderError>> {
        let found = self.agents.get(&agent).copied();
        Box::pin(async move {
            let addr = found.ok_or_else(|| ProviderError::Unreachable {
                agent,
                reason: "no route to this agent".into(),
            })?;
            // Connections are dialled lazily per request by the client; each API call is
            // bounded by the caller's own timeout.
            Ok(AgentClient::new(Arc::new(TcpDialer(addr))))
        })
    }
}
