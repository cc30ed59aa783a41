//! The Tailnet's destinations: per-agent leases, setup and teardown, as a sans-IO
//! machine.
//!
//! A client node opens a tunnel to an agent the first time a caller asks for it, waits
//! for the agent's node from the coordinator, programs the WireGuard peer and begins the
//! handshake at once, and waits for a session; callers waiting meanwhile are resolved
//! when the session comes up or failed at their own deadline with the stage that did not
//! complete.
//!
//! The coordinator sends the agent our node at the moment it sends us the agent's, so the
//! agent has usually programmed us by the time our first handshake message reaches it
//! (and an agent holds a handshake from a key it does not know yet for a few seconds, to
//! answer it once the key is programmed). The agent's `ready_for_handshake` is a
//! fallback: if no session follows it within `ready_grace` (plus the time the
//! acknowledgement took), the handshake is begun afresh, for an agent that dropped the
//! first one. Every handle holds a lease; a destination with
//! no lease for `idle_timeout` (measured from the last release) is removed. An agent
//! node does the other half: it programs every client the coordinator introduces and
//! acknowledges it.
//!
//! The machine decides; the shell (`runtime::tailnet`) carries out its [`Action`]s
//! (coordinator messages, device changes, waking callers) and feeds back what happened.
//! Calling contract: see [`crate::proto`].

use crate::wire::addr::NodeId;
use crate::wire::coord::{Node, PeerKind, PeerUpdate};
use crate::wire::key::NodePublic;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

mod clients;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    Acquired, Action, DestinationSummary, DestinationsConfig, Failure, PeerUpdateCounts, Role,
    Stage, UnbalancedRelease, WaiterId,
};

#[derive(Debug)]
struct Dest {
    leases: u64,
    leases_total: u64,
    /// When the lease count last dropped to zero (or the destination was created).
    idle_since: Instant,
    stage: Stage,
    node: Option<Node>,
    /// The key programmed into the device, if any.
    programmed: Option<NodePublic>,
    /// When the current node arrived (programmed and first handshake begun).
    node_at: Option<Instant>,
    /// When the agent acknowledged the current node, while still handshaking.
    ready_at: Option<Instant>,
    /// The handshake was begun afresh after the acknowledgement (once per node).
    reinitiated: bool,
    lost: bool,
    /// Waiting callers and their deadlines.
    waiters: Vec<(WaiterId, Instant)>,
}

impl Dest {
    fn new(now: Instant) -> Self {
        Self {
            leases: 0,
            leases_total: 0,
            idle_since: now,
            stage: Stage::AwaitingNode,
            node: None,
            programmed: None,
            node_at: None,
            ready_at: None,
            reinitiated: false,
            lost: false,
            waiters: Vec::new(),
        }
    }

    /// A new node (or none): its handshake timers start over.
    fn restart_timers(&mut self, node_at: Option<Instant>) {
        self.node_at = node_at;
        self.ready_at = None;
        self.reinitiated = false;
    }

    /// When a handshake begun at node arrival and acknowledged by the agent, but still
    /// without a session, is begun again.
    fn reinitiate_at(&self, grace: Duration) -> Option<Instant> {
        if self.stage != Stage::Handshaking || self.reinitiated {
            return None;
        }
        let ready = self.ready_at?;
        let ack = ready.saturating_duration_since(self.node_at.unwrap_or(ready));
        Some(ready + grace + ack)
    }

    /// Back to the start: no node, no peer (the caller removes the peer).
    fn forget_node(&mut self) -> Option<NodePublic> {
        self.node = None;
        self.stage = Stage::AwaitingNode;
        self.restart_timers(None);
        self.programmed.take()
    }
}

/// Counts one more lease on `id` (creating the destination) and returns it.
fn lease_entry(dests: &mut HashMap<NodeId, Dest>, id: NodeId, now: Instant) -> &mut Dest {
    let d = dests.entry(id).or_insert_with(|| Dest::new(now));
    d.leases += 1;
    d.leases_total += 1;
    d
}

/// The destinations machine. See the module docs.
#[derive(Debug)]
pub struct Destinations {
    cfg: DestinationsConfig,
    dests: HashMap<NodeId, Dest>,
    /// Agent role: the clients programmed as peers.
    clients: HashMap<NodeId, clients::Client>,
    next_waiter: u64,
    actions: VecDeque<Action>,
    closed: bool,
    /// `disconnected` and `lost` updates received, for destinations and clients alike:
    /// a coordinator that loses one of its own peers must say `lost`, and a count of
    /// `disconnected` lets operators and tests see a coordinator that said otherwise.
    updates: PeerUpdateCounts,
}

impl Destinations {
    /// An empty machine.
    pub fn new(cfg: DestinationsConfig) -> Self {
        Self {
            cfg,
            dests: HashMap::new(),
            clients: HashMap::new(),
            next_waiter: 0,
            actions: VecDeque::new(),
            closed: false,
            updates: PeerUpdateCounts::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DestinationsConfig {
        &self.cfg
    }

    /// A caller wants `id` by `deadline`: takes a lease and, unless a session is up,
    /// moves setup along and registers the caller as a waiter. Client role only (the
    /// shell refuses agents before asking).
    pub fn acquire(&mut self, id: NodeId, deadline: Instant, now: Instant) -> Acquired {
        if self.closed {
            self.take_lease(id, now);
            let waiter = self.new_waiter();
            self.actions.push_back(Action::Resolve {
                waiter,
                result: Err(Failure::Closed),
            });
            return Acquired::Wait(waiter);
        }
        let waiter = self.new_waiter();
        let d = lease_entry(&mut self.dests, id, now);
        match d.stage {
            Stage::Ready => return Acquired::Ready,
            Stage::Refused => {
                d.stage = Stage::AwaitingNode;
                self.actions.push_back(Action::AddTunnel(id));
            }
            Stage::AwaitingNode => self.actions.push_back(Action::AddTunnel(id)),
            Stage::Handshaking => {
                if let Some(k) = d.programmed {
                    self.actions.push_back(Action::Initiate(k));
                }
            }
        }
        if deadline <= now {
            let stage = d.stage;
            self.actions.push_back(Action::Resolve {
                waiter,
                result: Err(Failure::TimedOut(stage)),
            });
        } else {
            d.waiters.push((waiter, deadline));
        }
        Acquired::Wait(waiter)
    }

    /// Another lease on `id` (a handle was cloned). Creates the destination if the
    /// machine does not know it, so the lease always has something to hold.
    pub fn take_lease(&mut self, id: NodeId, now: Instant) {
        lease_entry(&mut self.dests, id, now);
    }

    /// A lease on `id` was given back.
    ///
    /// # Errors
    /// [`UnbalancedRelease`] if none was held (nothing changes).
    pub fn release(&mut self, id: NodeId, now: Instant) -> Result<(), UnbalancedRelease> {
        let Some(d) = self.dests.get_mut(&id).filter(|d| d.leases > 0) else {
            return Err(UnbalancedRelease(id));
        };
        d.leases -= 1;
        if d.leases == 0 {
            d.idle_since = now;
            // A refused tunnel was already given up at the coordinator: nothing lingers.
            if d.stage == Stage::Refused {
                self.dests.remove(&id);
            }
        }
        Ok(())
    }

    /// A waiting caller went away before being resolved (its lease is released
    /// separately). Unknown waiters are ignored.
    pub fn abandon(&mut self, waiter: WaiterId) {
        for d in self.dests.values_mut() {
            d.waiters.retain(|(w, _)| *w != waiter);
        }
    }

    /// The coordinator connection came up: every agent it still knows is re-sent, so
    /// nothing is lost any more until it says so.
    pub fn handle_coordinator_up(&mut self) {
        for d in self.dests.values_mut() {
            d.lost = false;
        }
    }

    /// The coordinator connection dropped: sessions keep working, but what the
    /// coordinator said may be stale.
    pub fn handle_coordinator_down(&mut self) {
        for d in self.dests.values_mut() {
            d.lost = true;
        }
    }

    /// The coordinator closed the stream for a policy reason. Destinations still waiting
    /// for a node that the reason names are refused: they would be replayed after every
    /// reconnect, so they are given up and their callers failed with the reason.
    pub fn handle_coordinator_closed(&mut self, reason: &str) {
        let mut refused: Vec<NodeId> = self
            .dests
            .iter()
            .filter(|(id, d)| d.stage == Stage::AwaitingNode && reason.contains(&id.to_string()))
            .map(|(id, _)| *id)
            .collect();
        refused.sort();
        for id in refused {
            let Some(d) = self.dests.get_mut(&id) else {
                continue;
            };
            d.stage = Stage::Refused;
            for (waiter, _) in d.waiters.drain(..) {
                self.actions.push_back(Action::Resolve {
                    waiter,
                    result: Err(Failure::Refused(reason.to_owned())),
                });
            }
            if d.leases == 0 {
                self.dests.remove(&id);
            }
            self.actions.push_back(Action::RemoveTunnel(id));
        }
    }

    /// A peer update from the coordinator.
    pub fn handle_peer(&mut self, u: PeerUpdate, now: Instant) {
        match u.kind {
            PeerKind::Disconnected => self.updates.disconnected += 1,
            PeerKind::Lost => self.updates.lost += 1,
            PeerKind::Node | PeerKind::ReadyForHandshake => {}
        }
        if self.cfg.role == Role::Agent {
            return self.handle_client_peer(u, now);
        }
        let Some(d) = self.dests.get_mut(&u.id) else {
            return;
        };
        match u.kind {
            PeerKind::Node => {
                let Some(node) = u.node else { return };
                if d.stage == Stage::Refused {
                    return;
                }
                let key_changed = d.programmed.is_some_and(|k| k != node.key);
                d.lost = false;
                if key_changed {
                    // A restarted agent (new key): set up again. Requests in flight to
                    // the old incarnation would wait for answers it can no longer give,
                    // and its pooled connections died with it.
                    d.stage = Stage::Handshaking;
                    self.actions.push_back(Action::ResetConnections(u.id));
                    self.actions.push_back(Action::Gone(u.id));
                }
                if key_changed || d.node_at.is_none() {
                    d.restart_timers(Some(now));
                }
                // A first node, a new key, or the same key with paths or endpoints that
                // may have changed: (re)program it.
                d.node = Some(node);
                self.program(u.id);
            }
            PeerKind::ReadyForHandshake => {
                if d.stage == Stage::Handshaking && d.ready_at.is_none() {
                    d.ready_at = Some(now);
                }
            }
            PeerKind::Lost => d.lost = true,
            PeerKind::Disconnected => {
                if d.stage == Stage::Refused {
                    return;
                }
                let old = d.forget_node();
                self.actions.push_back(Action::Gone(u.id));
                self.actions.push_back(Action::ResetConnections(u.id));
                if let Some(k) = old {
                    self.actions.push_back(Action::RemovePeer(k));
                }
            }
        }
    }

    /// Programs the destination's peer with its current node.
    fn program(&mut self, id: NodeId) {
        let Some(d) = self.dests.get_mut(&id) else {
            return;
        };
        let Some(node) = d.node.clone() else { return };
        let replace = d.programmed.filter(|k| *k != node.key);
        d.programmed = Some(node.key);
        if d.stage != Stage::Ready {
            d.stage = Stage::Handshaking;
        }
        self.actions.push_back(Action::ProgramPeer {
            id,
            node: Box::new(node),
            replace,
        });
    }

    /// The outcome of the handshake started for `key` by an [`Action::ProgramPeer`].
    /// Outcomes for a key no longer programmed are ignored; a failed handshake leaves
    /// the destination handshaking (WireGuard keeps retrying, and the next caller
    /// initiates again).
    pub fn handle_session(&mut self, id: NodeId, key: NodePublic, ok: bool) {
        let Some(d) = self.dests.get_mut(&id) else {
            return;
        };
        if d.programmed != Some(key) || !ok {
            return;
        }
        d.stage = Stage::Ready;
        for (waiter, _) in d.waiters.drain(..) {
            self.actions.push_back(Action::Resolve {
                waiter,
                result: Ok(()),
            });
        }
    }

    /// A clock gap: the machine slept. Every connection is suspect.
    pub fn handle_wake(&mut self) {
        self.actions.push_back(Action::Reconnect);
    }

    /// Time passed: fails callers past their deadline, begins again handshakes that an
    /// acknowledging agent left unanswered past `ready_grace`, removes idle destinations,
    /// and (agent role) asks about clients lost for `lost_client_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_lost_clients(now);
        let mut ids: Vec<NodeId> = self.dests.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(d) = self.dests.get_mut(&id) else {
                continue;
            };
            let stage = d.stage;
            let mut i = 0;
            while i < d.waiters.len() {
                if d.waiters[i].1 <= now {
                    let (waiter, _) = d.waiters.remove(i);
                    self.actions.push_back(Action::Resolve {
                        waiter,
                        result: Err(Failure::TimedOut(stage)),
                    });
                } else {
                    i += 1;
                }
            }
            let idle = d.leases == 0
                && now.saturating_duration_since(d.idle_since) >= self.cfg.idle_timeout;
            if !idle {
                if d.reinitiate_at(self.cfg.ready_grace)
                    .is_some_and(|t| t <= now)
                    && let Some(k) = d.programmed
                {
                    d.reinitiated = true;
                    self.actions.push_back(Action::Reinitiate(k));
                }
                continue;
            }
            if let Some(d) = self.dests.remove(&id) {
                if d.stage != Stage::Refused {
                    self.actions.push_back(Action::RemoveTunnel(id));
                }
                if let Some(k) = d.programmed {
                    self.actions.push_back(Action::RemovePeer(k));
                }
                self.actions.push_back(Action::Gone(id));
            }
        }
    }

    /// When [`Self::handle_timeout`] next has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dests
            .values()
            .flat_map(|d| {
                let deadline = d.waiters.iter().map(|(_, t)| *t).min();
                let ready = d.reinitiate_at(self.cfg.ready_grace);
                let idle = (d.leases == 0).then(|| d.idle_since + self.cfg.idle_timeout);
                [deadline, ready, idle].into_iter().flatten()
            })
            .chain(self.lost_clients_due())
            .min()
    }

    /// The next thing for the shell to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Fails every waiting caller; later acquisitions fail at once.
    pub fn close(&mut self) {
        self.closed = true;
        let mut ids: Vec<NodeId> = self.dests.keys().copied().collect();
        ids.sort();
        for id in ids {
            if let Some(d) = self.dests.get_mut(&id) {
                for (waiter, _) in d.waiters.drain(..) {
                    self.actions.push_back(Action::Resolve {
                        waiter,
                        result: Err(Failure::Closed),
                    });
                }
            }
        }
    }

    /// The stage of `id`, if it is a destination.
    pub fn stage(&self, id: &NodeId) -> Option<Stage> {
        self.dests.get(id).map(|d| d.stage)
    }

    /// Leases held on `id`.
    pub fn leases(&self, id: &NodeId) -> u64 {
        self.dests.get(id).map_or(0, |d| d.leases)
    }

    /// Every destination, sorted by id.
    pub fn summaries(&self) -> Vec<DestinationSummary> {
        let mut out: Vec<DestinationSummary> = self
            .dests
            .iter()
            .map(|(id, d)| DestinationSummary {
                id: *id,
                leases: d.leases,
                leases_total: d.leases_total,
                stage: d.stage,
                lost: d.lost,
                key: d.programmed,
                waiters: d.waiters.len(),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Agent role: the clients programmed as peers.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// `disconnected` and `lost` updates received so far.
    pub fn peer_update_counts(&self) -> PeerUpdateCounts {
        self.updates
    }

    /// Checks the machine's invariants; tests and the fuzz target call it after every
    /// input.
    ///
    /// # Panics
    /// If an invariant does not hold.
    pub fn check_invariants(&self) {
        for (id, d) in &self.dests {
            assert!(
                d.leases > 0 || d.waiters.is_empty(),
                "{id}: a waiter without a lease"
            );
            assert!(
                d.stage != Stage::Ready || d.waiters.is_empty(),
                "{id}: waiters on a ready destination"
            );
            assert!(
                d.stage != Stage::Refused || d.leases > 0,
                "{id}: a refused destination nobody holds"
            );
            match d.stage {
                Stage::Handshaking | Stage::Ready => assert!(d.programmed.is_some()),
                Stage::AwaitingNode => assert!(d.node.is_none()),
                Stage::Refused => {}
            }
        }
        if self.cfg.role == Role::Agent {
            assert!(self.dests.values().all(|d| d.waiters.is_empty()));
        }
    }

    fn new_waiter(&mut self) -> WaiterId {
        self.next_waiter += 1;
        WaiterId(self.next_waiter)
    }
}
