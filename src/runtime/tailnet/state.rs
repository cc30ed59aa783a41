//! What the shell keeps beside the destinations machine, under one short-held mutex:
//! the callers waiting on it, where departures are announced, and the actions the manager
//! task must still carry out.

use super::Inner;
use crate::proto::tailnet::{Action, Destinations, Failure, WaiterId};
use crate::proto::wg::PathAddr;
use crate::wire::addr::NodeId;
use crate::wire::key::NodePublic;
use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;
use tokio::sync::{broadcast, oneshot};

/// Departures a slow listener may fall behind by before it is told it missed some.
const GONE_BACKLOG: usize = 256;

pub(crate) struct State {
    pub(crate) home: Option<u16>,
    /// Our addresses as the relays' STUN servers see them (none behind a NAT that maps
    /// per destination: peers could not use them).
    pub(crate) reflexive: Vec<std::net::SocketAddr>,
    /// The endpoints we last published (so that address changes that leave them alone
    /// send nothing).
    pub(crate) advertised: Vec<std::net::SocketAddr>,
    /// Picks the home region by latency when the map has several.
    pub(crate) chooser: crate::proto::home::HomeChooser,
    pub(crate) machine: Destinations,
    /// Callers waiting for a destination, by the machine's waiter id.
    pub(crate) waiters: HashMap<WaiterId, oneshot::Sender<Result<(), Failure>>>,
    /// Announces destinations that are gone, to whoever keeps connections to them above
    /// the Tailnet ([`super::GoneEvents`]).
    pub(crate) gone: broadcast::Sender<NodeId>,
    /// Actions that need the tunnel or the coordinator: for the manager task.
    pub(crate) pending: VecDeque<Action>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("machine", &self.machine)
            .field("waiters", &self.waiters.len())
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(home: Option<u16>, machine: Destinations) -> Self {
        Self {
            home,
            reflexive: Vec::new(),
            advertised: Vec::new(),
            chooser: crate::proto::home::HomeChooser::new(home, []),
            machine,
            waiters: HashMap::new(),
            gone: broadcast::channel(GONE_BACKLOG).0,
            pending: VecDeque::new(),
        }
    }

    /// Drains the machine: wakes resolved callers and announces departures here (both are
    /// quick and need no I/O), queues the rest for the manager.
    pub(crate) fn settle(&mut self) {
        while let Some(a) = self.machine.poll_action() {
            match a {
                Action::Resolve { waiter, result } => {
                    if let Some(tx) = self.waiters.remove(&waiter) {
                        let _ = tx.send(result);
                    }
                }
                Action::Gone(id) => {
                    // No receiver is fine: nothing is pooled above.
                    let _ = self.gone.send(id);
                }
                other => self.pending.push_back(other),
            }
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
    /// Setup stage: "awaiting_node", "awaiting_ready", "handshaking", "ready" or
    /// "refused".
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
    let rows: Vec<DestinationInfo> = inner
        .state()
        .machine
        .summaries()
        .into_iter()
        .map(|d| DestinationInfo {
            agent: d.id,
            leases: d.leases,
            leases_total: d.leases_total,
            stage: d.stage.as_str(),
            lost: d.lost,
            key: d.key,
            path: None,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
        })
        .collect();
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
    out
}
