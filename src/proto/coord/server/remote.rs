//! Replication: what this registry knows of peers and tunnels held by other replicas, and
//! the changes to its own that they must learn.
//!
//! Several coordinator replicas share one database. Each is authoritative for the streams
//! it holds: with replication on, every change to a local peer or tunnel also comes out as
//! [`Output::Replicate`](super::Output::Replicate), which the shell writes to its own rows.
//! The shell reads other replicas' rows back (on a notification, or all of them on a
//! resync) and hands them here; the registry picks the binding that wins for each id and
//! tells its local peers what changed, exactly as if the remote peer were local.
//!
//! Rules, from the reference system's failure history:
//! - A binding on a replica whose heartbeat expired is `lost`, never `disconnected`: the
//!   peer's stream may well be alive and reconnecting elsewhere.
//! - The winning binding for an id is the newest one on a live replica. A newer binding
//!   elsewhere replaces a local stream (closed as replaced), the same rule as two streams
//!   on one replica; an older one waits until its replica sees ours and lets go.
//! - Only a targeted re-read that finds the row gone while its replica is live means the
//!   peer said goodbye (`disconnected`). A resync that misses a row reads as `lost`.
//! - A tunnel removed while its source is still bound is a real removal (`disconnected` to
//!   the destination); tunnels that vanish with their source say nothing more.

use super::{Output, PeerAuth, Registry, gone, node_update, ready_update};
use crate::wire::addr::NodeId;
use crate::wire::coord::{Node, PeerKind};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A replica's identity, as registered in the database.
pub type ReplicaId = String;

/// A local change other replicas must learn.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A local peer registered or sent a new node.
    Peer(PeerRecord),
    /// A local peer's stream ended; its tunnels end with it.
    PeerGone {
        /// The peer.
        id: NodeId,
        /// It said goodbye (`disconnected` to its tunnel peers) rather than vanishing
        /// (`lost`).
        graceful: bool,
    },
    /// A local source opened (`open`) or removed a tunnel.
    Tunnel {
        /// The local source.
        src: NodeId,
        /// The destination, on any replica.
        dst: NodeId,
        /// Opened or removed.
        open: bool,
    },
    /// A local peer is ready for a handshake with a peer held by another replica.
    ReadyForHandshake {
        /// The local peer.
        src: NodeId,
        /// The remote peer to tell.
        dst: NodeId,
    },
}

/// What a role is, in a form that survives the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRole {
    /// A workspace agent.
    Agent,
    /// A user's client, with its principal.
    Client(String),
    /// A serving process's own tailnet.
    Service,
}

impl RemoteRole {
    /// The role of a local stream.
    pub fn of(auth: &PeerAuth) -> Self {
        match auth {
            PeerAuth::Agent { .. } => Self::Agent,
            PeerAuth::Client { principal, .. } => Self::Client(principal.clone()),
            PeerAuth::Service => Self::Service,
        }
    }

    /// The short name stored in the database.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Client(_) => "client",
            Self::Service => "service",
        }
    }

    /// The role from its stored name and principal; `None` for an unknown name.
    pub fn parse(name: &str, principal: Option<&str>) -> Option<Self> {
        match (name, principal) {
            ("agent", _) => Some(Self::Agent),
            ("service", _) => Some(Self::Service),
            ("client", Some(p)) => Some(Self::Client(p.to_string())),
            _ => None,
        }
    }

    /// The user principal, for clients.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Self::Client(p) => Some(p),
            _ => None,
        }
    }

    fn same_principal(&self, auth: &PeerAuth) -> bool {
        match (self, auth) {
            (Self::Agent, PeerAuth::Agent { .. }) | (Self::Service, PeerAuth::Service) => true,
            (Self::Client(a), PeerAuth::Client { principal, .. }) => a == principal,
            _ => false,
        }
    }
}

/// One local peer as other replicas store it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    /// The peer.
    pub id: NodeId,
    /// Its name from `hello`.
    pub name: String,
    /// Its role.
    pub role: RemoteRole,
    /// Its process's `hello` instance.
    pub instance: String,
    /// Its node, once sent.
    pub node: Option<Node>,
}

/// One peer row read back from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    /// The peer and what its replica published.
    pub record: PeerRecord,
    /// The replica that holds its stream.
    pub replica: ReplicaId,
    /// When the replica bound it, by the database's clock (microseconds); orders two
    /// bindings of one id.
    pub bound_at: i64,
    /// How long ago, by the database's clock, its replica last saw the stream alive.
    pub silent: Duration,
    /// The stream ended without a goodbye; the row stays a while so readers can tell.
    pub lost: bool,
}

/// One tunnel row read back from the database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelRow {
    /// The source.
    pub src: NodeId,
    /// The destination.
    pub dst: NodeId,
    /// The replica holding the source's stream.
    pub replica: ReplicaId,
}

/// A peer bound on another replica.
#[derive(Debug, Clone, PartialEq)]
struct Binding {
    record: PeerRecord,
    replica: ReplicaId,
    bound_at: i64,
    last_seen: Instant,
}

/// Other replicas' peers and tunnels.
#[derive(Debug, Default)]
pub(super) struct RemoteView {
    /// The replica this registry is; rows of its own are not remote.
    own: ReplicaId,
    /// Whether local changes come out as [`Change`]s.
    pub(super) on: bool,
    peers: BTreeMap<NodeId, Binding>,
    /// Remote sources to their destinations.
    out: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Destinations to their remote sources.
    into: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Our own binding time of local peers, as last read back: a remote binding newer
    /// than this replaces the local stream.
    own_bound: BTreeMap<NodeId, i64>,
}

impl RemoteView {
    pub(super) fn is_bound(&self, id: NodeId) -> bool {
        self.peers.contains_key(&id)
    }

    pub(super) fn node(&self, id: NodeId) -> Option<&Node> {
        self.peers.get(&id).and_then(|b| b.record.node.as_ref())
    }

    pub(super) fn knows_key(&self, key: &crate::wire::key::NodePublic) -> bool {
        self.peers
            .values()
            .any(|b| b.record.node.as_ref().is_some_and(|n| n.key == *key))
    }

    /// Remote sources with a tunnel to `id`, and destinations of `id` as a remote source.
    pub(super) fn linked_with(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let outs = self.out.get(&id).into_iter().flatten();
        let ins = self.into.get(&id).into_iter().flatten();
        outs.chain(ins).copied()
    }

    pub(super) fn has_tunnel(&self, src: NodeId, dst: NodeId) -> bool {
        self.out.get(&src).is_some_and(|d| d.contains(&dst))
    }

    fn add_tunnel(&mut self, src: NodeId, dst: NodeId) -> bool {
        self.into.entry(dst).or_default().insert(src);
        self.out.entry(src).or_default().insert(dst)
    }

    fn remove_tunnel(&mut self, src: NodeId, dst: NodeId) -> bool {
        let Some(outs) = self.out.get_mut(&src) else {
            return false;
        };
        let had = outs.remove(&dst);
        if outs.is_empty() {
            self.out.remove(&src);
        }
        if let Some(ins) = self.into.get_mut(&dst) {
            ins.remove(&src);
            if ins.is_empty() {
                self.into.remove(&dst);
            }
        }
        had
    }

    /// A local registration took `id` over: the remote binding is no longer the one that
    /// counts. Its tunnels stay (they belong to sources, wherever they are).
    pub(super) fn forget_binding(&mut self, id: NodeId) {
        self.peers.remove(&id);
    }

    /// A local stream ended: its binding time no longer matters.
    pub(super) fn forget_own(&mut self, id: NodeId) {
        self.own_bound.remove(&id);
    }

    fn drop_tunnels_of(&mut self, src: NodeId) {
        for dst in self.out.get(&src).cloned().unwrap_or_default() {
            self.remove_tunnel(src, dst);
        }
    }
}

/// Counters for replication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Peers currently bound on other replicas.
    pub remote_peers: usize,
    /// Tunnels whose source is on another replica.
    pub remote_tunnels: usize,
    /// Local streams replaced by a newer binding on another replica.
    pub replaced_remotely: u64,
    /// Remote bindings that ended as `lost` (their replica expired or a resync missed them).
    pub remote_lost: u64,
    /// Remote bindings that ended as `disconnected`.
    pub remote_disconnected: u64,
}

impl Registry {
    /// Turns replication on: this registry is replica `own`, and every local change also
    /// comes out as [`Output::Replicate`].
    pub fn enable_replication(&mut self, own: ReplicaId) {
        self.remote.own = own;
        self.remote.on = true;
    }

    /// Replication counters and sizes.
    pub fn remote_stats(&self) -> RemoteStats {
        RemoteStats {
            remote_peers: self.remote.peers.len(),
            remote_tunnels: self.remote.out.values().map(BTreeSet::len).sum(),
            ..self.remote_counters
        }
    }

    /// Every local peer and tunnel as a fresh series of changes: what a replica writes
    /// again after its rows were lost (expired while it was stopped, or a database restored).
    pub fn replay_local(&mut self) {
        if !self.remote.on {
            return;
        }
        let records: Vec<PeerRecord> = self
            .peers
            .keys()
            .filter_map(|id| self.record(*id))
            .collect();
        for r in records {
            self.replicate(Change::Peer(r));
        }
        let tunnels: Vec<(NodeId, NodeId)> = self.tunnels().collect();
        for (src, dst) in tunnels {
            self.replicate(Change::Tunnel {
                src,
                dst,
                open: true,
            });
        }
    }

    pub(super) fn record(&self, id: NodeId) -> Option<PeerRecord> {
        self.peers.get(&id).map(|p| PeerRecord {
            id,
            name: p.name.clone(),
            role: RemoteRole::of(&p.auth),
            instance: p.instance.clone(),
            node: p.node.clone(),
        })
    }

    pub(super) fn replicate(&mut self, change: Change) {
        if self.remote.on {
            self.outputs.push_back(Output::Replicate(change));
        }
    }

    /// The node of `id`, local or remote.
    pub(super) fn node_of(&self, id: NodeId) -> Option<Node> {
        match self.peers.get(&id) {
            Some(p) => p.node.clone(),
            None => self.remote.node(id).cloned(),
        }
    }

    /// Whether a second registration for `id` under `auth` must be refused because a
    /// live binding on another replica holds it: `Err(reason)` to refuse. The same rule
    /// as two streams on one replica (see [`Registry::connect`]).
    pub(super) fn judge_remote(
        &mut self,
        id: NodeId,
        auth: &PeerAuth,
        instance: &str,
        grace: Duration,
        now: Instant,
    ) -> Result<(), (u16, String)> {
        let Some(b) = self.remote.peers.get(&id) else {
            return Ok(());
        };
        if !b.record.role.same_principal(auth) {
            return Err((
                crate::wire::coord::CLOSE_POLICY,
                format!("node id {id} is in use by another principal"),
            ));
        }
        let takeover = super::identity::Takeover::judge(
            auth,
            &b.record.instance,
            instance,
            b.last_seen,
            grace,
            now,
        );
        if let super::identity::Takeover::Refuse { silent } = takeover {
            self.stats.conflicts += 1;
            return Err((
                crate::wire::coord::CLOSE_CONFLICT,
                format!(
                    "node id {id} is live on another replica (heard from {} s ago); \
                     is another copy of this agent running?",
                    silent.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// The rows for peer `id` were read back after a notification (`targeted`) or as part
    /// of a resync. `live` is every replica whose heartbeat has not expired.
    pub fn remote_peer_rows(
        &mut self,
        id: NodeId,
        rows: &[PeerRow],
        live: &BTreeSet<ReplicaId>,
        targeted: bool,
        now: Instant,
    ) {
        self.stamp(now);
        if let Some(own) = rows.iter().find(|r| r.replica == self.remote.own) {
            self.remote.own_bound.insert(id, own.bound_at);
        }
        let winner = rows
            .iter()
            .filter(|r| r.replica != self.remote.own && !r.lost && live.contains(&r.replica))
            .max_by_key(|r| (r.bound_at, r.replica.clone()));
        let Some(w) = winner else {
            if let Some(old) = self.remote.peers.get(&id) {
                // Gone. Said goodbye only when its row vanished (rather than being marked
                // lost) while its replica lives.
                let marked_lost = rows.iter().any(|r| r.replica == old.replica && r.lost);
                let replica_live = live.contains(&old.replica);
                let graceful = targeted && !marked_lost && replica_live;
                self.unbind_remote(id, graceful, !replica_live);
            }
            return;
        };
        if let Some(local) = self.peers.get(&id) {
            let ours = self.remote.own_bound.get(&id).copied();
            // Ours is newer until its row says otherwise: a stream not yet written back
            // was bound after anything we can read.
            if ours.is_none_or(|o| w.bound_at <= o) {
                return;
            }
            let conn = local.conn;
            self.remote_counters.replaced_remotely += 1;
            tracing::info!(%id, replica = w.replica, "stream replaced by a newer one on another replica");
            self.push_close(
                conn,
                crate::wire::coord::CLOSE_REPLACED,
                "replaced by a newer stream on another replica",
            );
            self.remove(conn, PeerKind::Lost, "replaced");
        }
        let last_seen = now.checked_sub(w.silent).unwrap_or(now);
        let binding = Binding {
            record: w.record.clone(),
            replica: w.replica.clone(),
            bound_at: w.bound_at,
            last_seen,
        };
        let node_changed = self
            .remote
            .peers
            .get(&id)
            .is_none_or(|old| old.record.node != binding.record.node);
        self.remote.peers.insert(id, binding);
        self.remote.own_bound.remove(&id);
        self.departed.remove(&id);
        if node_changed && let Some(node) = self.remote.node(id).cloned() {
            for other in self.tunnel_peers(id) {
                self.send_to_peer(other, node_update(node.clone()));
            }
        }
    }

    /// The tunnel rows of remote source `src` were read back.
    pub fn remote_tunnel_rows(&mut self, src: NodeId, rows: &[TunnelRow], now: Instant) {
        self.stamp(now);
        let want: BTreeSet<NodeId> = rows
            .iter()
            .filter(|r| r.src == src && r.replica != self.remote.own)
            .map(|r| r.dst)
            .collect();
        let have = self.remote.out.get(&src).cloned().unwrap_or_default();
        for dst in have.difference(&want) {
            self.remote.remove_tunnel(src, *dst);
            // A real removal only while the source is still bound; otherwise it left
            // (and its peers heard how) or its replica expired.
            if self.remote.is_bound(src) && self.peers.contains_key(dst) && !self.linked(src, *dst)
            {
                self.send_to_peer(*dst, gone(src, PeerKind::Disconnected, "tunnel removed"));
            }
        }
        for dst in want.difference(&have) {
            self.remote.add_tunnel(src, *dst);
            if let Some(node) = self.remote.node(src).cloned() {
                self.send_to_peer(*dst, node_update(node));
            }
        }
    }

    /// Everything other replicas hold, read at once: after the listener (re)connected, or
    /// when a replica expired. Bindings and tunnels missing from the rows end as `lost`.
    pub fn remote_resync(
        &mut self,
        peers: &[PeerRow],
        tunnels: &[TunnelRow],
        live: &BTreeSet<ReplicaId>,
        now: Instant,
    ) {
        let mut by_id: BTreeMap<NodeId, Vec<PeerRow>> = BTreeMap::new();
        for r in peers {
            by_id.entry(r.record.id).or_default().push(r.clone());
        }
        let ids: BTreeSet<NodeId> = by_id
            .keys()
            .copied()
            .chain(self.remote.peers.keys().copied())
            .collect();
        for id in ids {
            let rows = by_id.remove(&id).unwrap_or_default();
            self.remote_peer_rows(id, &rows, live, false, now);
        }
        let mut by_src: BTreeMap<NodeId, Vec<TunnelRow>> = BTreeMap::new();
        for t in tunnels {
            if live.contains(&t.replica) {
                by_src.entry(t.src).or_default().push(t.clone());
            }
        }
        let srcs: BTreeSet<NodeId> = by_src
            .keys()
            .copied()
            .chain(self.remote.out.keys().copied())
            .collect();
        for src in srcs {
            let rows = by_src.remove(&src).unwrap_or_default();
            self.remote_tunnel_rows(src, &rows, now);
        }
    }

    /// A peer on another replica is ready for a handshake with local peer `dst`.
    pub fn remote_ready_for_handshake(&mut self, src: NodeId, dst: NodeId, now: Instant) {
        self.stamp(now);
        if self.remote.is_bound(src) && self.peers.contains_key(&dst) && self.linked(src, dst) {
            self.send_to_peer(dst, ready_update(src));
        }
    }

    fn unbind_remote(&mut self, id: NodeId, graceful: bool, replica_lost: bool) {
        let notify = self.tunnel_peers(id);
        let Some(old) = self.remote.peers.remove(&id) else {
            return;
        };
        self.remote.drop_tunnels_of(id);
        if graceful {
            self.remote_counters.remote_disconnected += 1;
        } else {
            self.remote_counters.remote_lost += 1;
        }
        if old.record.role == RemoteRole::Agent
            && let Some(at) = self.latest
        {
            let reason = if graceful {
                "graceful disconnect"
            } else if replica_lost {
                "the replica holding its stream stopped answering"
            } else {
                "connection lost"
            };
            self.departed.insert(
                id,
                super::Departure {
                    since: at,
                    graceful,
                    reason: reason.to_string(),
                    replica_lost,
                },
            );
        }
        let (kind, reason) = if graceful {
            (PeerKind::Disconnected, "graceful disconnect")
        } else {
            (PeerKind::Lost, "connection lost")
        };
        for other in notify {
            self.send_to_peer(other, gone(id, kind, reason));
        }
    }

    /// Asserts the remote view's invariants: the two tunnel indexes mirror each other and
    /// no id is both local and remote.
    #[cfg(any(test, fuzzing))]
    pub(super) fn check_remote_invariants(&self) {
        for (src, dsts) in &self.remote.out {
            assert!(!dsts.is_empty(), "empty remote tunnel set kept");
            for dst in dsts {
                assert!(self.remote.into.get(dst).is_some_and(|s| s.contains(src)));
            }
        }
        for (dst, srcs) in &self.remote.into {
            assert!(!srcs.is_empty(), "empty remote reverse set kept");
            for src in srcs {
                assert!(self.remote.out.get(src).is_some_and(|d| d.contains(dst)));
            }
        }
        for id in self.remote.peers.keys() {
            assert!(
                !self.peers.contains_key(id),
                "{id} is both local and remote"
            );
        }
    }
}
