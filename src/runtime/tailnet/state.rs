//! Per-destination state, shared by the handles (leases) and the manager (everything
//! else) under one short-held mutex.

use super::Inner;
use crate::proto::lease::Leases;
use crate::proto::wg::PathAddr;
use crate::wire::addr::NodeId;
use crate::wire::coord::Node;
use crate::wire::key::NodePublic;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};
use tokio::sync::oneshot;

/// Where setting up a destination got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Tunnel requested; no node yet.
    AwaitingNode,
    /// Node known; waiting for the agent's `ready_for_handshake` (or the timeout).
    AwaitingReady,
    /// Peer programmed; handshake in progress.
    Handshaking,
    /// A session exists: handles are handed out at once.
    Ready,
}

/// Why waiting callers were failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Refused(String),
}

#[derive(Debug)]
pub(crate) struct Dest {
    pub(crate) node: Option<Node>,
    /// The key programmed into the device, if any.
    pub(crate) programmed: Option<NodePublic>,
    pub(crate) stage: Stage,
    pub(crate) ready_received: bool,
    /// When the node arrived (starts the `ready_wait` timer).
    pub(crate) node_at: Option<Instant>,
    /// The coordinator reported the agent lost (we keep using the session).
    pub(crate) lost: bool,
    pub(crate) waiters: Vec<oneshot::Sender<Result<(), Failure>>>,
    /// The API client whose keep-alive pool every handle on this destination shares.
    pub(crate) client: Option<crate::runtime::agent_client::AgentClient>,
}

impl Dest {
    pub(crate) fn new() -> Self {
        Self {
            node: None,
            programmed: None,
            stage: Stage::AwaitingNode,
            ready_received: false,
            node_at: None,
            lost: false,
            waiters: Vec::new(),
            client: None,
        }
    }

    pub(crate) fn wake_all(&mut self, r: Result<(), Failure>) {
        for w in self.waiters.drain(..) {
            let _ = w.send(r.clone());
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) home: Option<u16>,
    pub(crate) leases: Leases,
    pub(crate) dests: HashMap<NodeId, Dest>,
    /// Agent role: the clients programmed as peers.
    pub(crate) clients: HashMap<NodeId, NodePublic>,
}

impl State {
    pub(crate) fn new(home: Option<u16>) -> Self {
        Self {
            home,
            leases: Leases::new(),
            dests: HashMap::new(),
            clients: HashMap::new(),
        }
    }
}

/// One destination, for diagnostics.
#[derive(Debug, Clone)]
pub struct DestinationInfo {
    /// The agent.
    pub agent: NodeId,
    /// Handles currently held.
    pub leases: u64,
    /// Handles ever taken.
    pub leases_total: u64,
    /// Setup stage: "awaiting_node", "awaiting_ready", "handshaking" or "ready".
    pub stage: &'static str,
    /// The coordinator reported it lost (sessions keep working meanwhile).
    pub lost: bool,
    /// The agent's key, once known.
    pub key: Option<NodePublic>,
    /// Current path: direct UDP address or DERP region.
    pub path: Option<PathAddr>,
    /// When the current session's handshake completed (wall clock).
    pub last_handshake: Option<SystemTime>,
    /// Plaintext bytes sent.
    pub tx_bytes: u64,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
}

pub(crate) async fn destinations(inner: &Inner) -> Vec<DestinationInfo> {
    let rows: Vec<DestinationInfo> = {
        let st = inner.state();
        st.dests
            .iter()
            .map(|(id, d)| DestinationInfo {
                agent: *id,
                leases: st.leases.count(id),
                leases_total: st.leases.total(id),
                stage: match d.stage {
                    Stage::AwaitingNode => "awaiting_node",
                    Stage::AwaitingReady => "awaiting_ready",
                    Stage::Handshaking => "handshaking",
                    Stage::Ready => "ready",
                },
                lost: d.lost,
                key: d.programmed,
                path: None,
                last_handshake: None,
                tx_bytes: 0,
                rx_bytes: 0,
            })
            .collect()
    };
    let now = crate::runtime::clock::now();
    let wall = crate::runtime::clock::wall();
    let mut out = Vec::with_capacity(rows.len());
    for mut r in rows {
        if let Some(k) = r.key
            && let Ok(Some((s, path))) = inner.tunnel.peer_stats(k).await
        {
            r.path = path;
            r.tx_bytes = s.tx_bytes;
            r.rx_bytes = s.rx_bytes;
            r.last_handshake = s
                .last_handshake
                .map(|t| wall - now.saturating_duration_since(t));
        }
        out.push(r);
    }
    out.sort_by_key(|r| r.agent);
    out
}
