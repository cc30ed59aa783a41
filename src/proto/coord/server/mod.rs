//! Coordinator registry: peers, tunnels, authorization and fan-out.
//!
//! Sans-IO. The server feeds it stream events and requests; it answers with [`Output`]s
//! (messages to send, streams to close) drained with [`Registry::poll_action`]. It owns
//! which node is live on which stream, which tunnels exist, and every authorization rule;
//! the server owns sockets and authentication.
//!
//! Call order: for each stream, [`Registry::connect`] once, then any number of
//! [`Registry::handle`] / [`Registry::bad_message`], then [`Registry::close`]. After each call
//! drain [`Registry::poll_action`] until `None`. Connection ids MUST be fresh per stream (never
//! reused). After an [`Output::Close`] for a stream, the registry has already forgotten it:
//! later inputs for it are ignored, and no output names it again.
//!
//! Tunnel lifetime: a tunnel `src → dst` lives while `src`'s stream lives. It survives the
//! destination going away (an agent restart), so the destination learns its sources again
//! when it reconnects. It does not survive the source's stream: clients replay their tunnels.
//!
//! Must not import tokio or read the clock.

use crate::wire::addr::NodeId;
use crate::wire::coord::{
    self, ClientMsg, DecodeError, Hello, Node, PeerKind, PeerUpdate, ServerMsg,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

mod auth;
mod identity;
mod presence;
mod remote;
mod revoke;
mod tunnels;

pub use auth::{PeerAuth, TunnelAuthorizer};
pub use identity::{Conflict, MAX_ENDPOINTS, sanitize_endpoints};
use presence::Departure;
pub use presence::Presence;
pub use remote::{Change, PeerRecord, PeerRow, RemoteRole, RemoteStats, ReplicaId, TunnelRow};

use identity::{Keys, Takeover};

/// Identifies one stream. Assigned by the server, never reused.
pub type ConnId = u64;

/// More consecutive undecodable or out-of-order messages than this close the stream.
pub const MAX_CONSECUTIVE_BAD: u32 = 32;

/// The most tunnels one peer may have open as source.
pub const MAX_TUNNELS_PER_PEER: usize = 10_000;

/// The most tunnels all the streams of one user principal may have open together.
pub const MAX_TUNNELS_PER_PRINCIPAL: usize = 20_000;

/// Longest node name kept from `hello`; longer names are truncated.
pub const MAX_NAME_LEN: usize = 128;

/// Longest `instance` kept from `hello`.
pub const MAX_INSTANCE_LEN: usize = 64;

/// How long a live agent stream must have been silent before another process may take
/// its id over. Clients ping every 15 s, so a live one is never silent this long.
pub const DEFAULT_TAKEOVER_GRACE: Duration = Duration::from_secs(40);

/// Something the server must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` on stream `conn`.
    Send {
        /// The stream.
        conn: ConnId,
        /// The message.
        msg: ServerMsg,
    },
    /// Close stream `conn` with a websocket close frame, after sending what is queued.
    Close {
        /// The stream.
        conn: ConnId,
        /// Websocket close code (see the `CLOSE_*` constants in [`crate::wire::coord`]).
        code: u16,
        /// Why, for the peer's logs.
        reason: String,
    },
    /// Tell the other replicas (replication only; see [`Registry::enable_replication`]).
    Replicate(Change),
}

/// Counters since the registry was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Streams that reached [`Registry::connect`].
    pub connections: u64,
    /// Streams currently registered.
    pub active: usize,
    /// Tunnels currently recorded.
    pub tunnels: usize,
    /// Valid requests handled.
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
    /// Undecodable or out-of-order messages.
    pub bad_messages: u64,
    /// Authorization violations (each closed its stream).
    pub violations: u64,
    /// Streams replaced by a newer stream for the same id.
    pub replacements: u64,
    /// Requests refused with an error message without closing (e.g. a racing
    /// `ready_for_handshake`).
    pub refused: u64,
    /// Registrations refused because another process holds the agent id and still answers.
    pub conflicts: u64,
    /// Registrations under a known agent id with a different WireGuard key than before.
    pub key_changes: u64,
    /// Endpoints dropped from nodes: duplicates, non-unicast, or past [`MAX_ENDPOINTS`].
    pub endpoints_dropped: u64,
    /// Tunnels refused for a per-peer or per-principal cap.
    pub tunnel_limit: u64,
    /// Streams closed because their authorization was taken back.
    pub revoked: u64,
}

/// One registered stream.
#[derive(Debug)]
struct Peer {
    conn: ConnId,
    auth: PeerAuth,
    name: String,
    /// The latest node the peer sent; `None` until its first `update_self`.
    node: Option<Node>,
    /// Bad messages since the last good one; bounds how long garbage is tolerated.
    consecutive_bad: u32,
    since: Instant,
    /// The last time anything arrived on the stream (a message, a ping or a pong).
    last_seen: Instant,
    /// The client process's `hello` instance; empty if it sent none.
    instance: String,
    /// Registrations refused while this stream held the id.
    conflict: Option<Conflict>,
}

/// A snapshot of one registered peer, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub id: NodeId,
    /// Its name from `hello`.
    pub name: String,
    /// `agent`, `client` or `service`.
    pub role: &'static str,
    /// Whether it has sent a node yet.
    pub has_node: bool,
    /// Tunnels it has open as source.
    pub tunnels: usize,
    /// When its stream registered.
    pub since: Instant,
    /// When anything last arrived on its stream.
    pub last_seen: Instant,
    /// Other processes refused the id while this stream held it.
    pub conflict: Option<Conflict>,
}

/// The coordinator's registry. See the module docs for the call order.
#[derive(Debug, Default)]
pub struct Registry {
    derp_map: Option<serde_json::Value>,
    /// Live streams to the peer they carry.
    conns: BTreeMap<ConnId, NodeId>,
    /// Live peers by id. Ordered maps keep fan-out order deterministic for tests.
    peers: BTreeMap<NodeId, Peer>,
    /// Tunnels by source; every key is a live peer.
    tunnels_out: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// The same tunnels by destination; destinations need not be live.
    tunnels_in: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Tunnels open per user principal, across all its streams.
    principal_tunnels: BTreeMap<String, usize>,
    /// Which node holds which WireGuard key.
    keys: Keys,
    /// Zero means [`DEFAULT_TAKEOVER_GRACE`].
    takeover_grace: Option<Duration>,
    /// Agents whose streams ended: when and how. Bounded by the agent ids the control
    /// plane issues; an entry goes when its agent registers again.
    departed: BTreeMap<NodeId, Departure>,
    /// The latest instant any input carried; stamps events that have no `now` of their own.
    latest: Option<Instant>,
    outputs: VecDeque<Output>,
    stats: RegistryStats,
    /// Other replicas' peers and tunnels; empty unless replication is on.
    remote: remote::RemoteView,
    remote_counters: RemoteStats,
}

impl Registry {
    /// An empty registry that hands `derp_map` to every stream in its `welcome`.
    pub fn new(derp_map: Option<serde_json::Value>) -> Self {
        Self {
            derp_map,
            ..Self::default()
        }
    }

    /// Sets how long a live agent stream must be silent before another process may take
    /// its id; see [`DEFAULT_TAKEOVER_GRACE`].
    pub fn set_takeover_grace(&mut self, grace: Duration) {
        self.takeover_grace = Some(grace);
    }

    /// Counters, and current sizes.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            active: self.peers.len(),
            tunnels: self.tunnels_out.values().map(BTreeSet::len).sum(),
            ..self.stats
        }
    }

    /// The next thing the server must do, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether `conn` is a registered stream.
    pub fn is_live(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Whether a registered node advertises `key`: what a relay that serves only known
    /// nodes asks.
    pub fn knows_key(&self, key: &crate::wire::key::NodePublic) -> bool {
        self.keys.is_live(key) || self.remote.knows_key(key)
    }

    fn stamp(&mut self, now: Instant) {
        self.latest = Some(self.latest.map_or(now, |l| l.max(now)));
    }

    /// The peers currently registered.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(id, p)| PeerInfo {
                id: *id,
                name: p.name.clone(),
                role: p.auth.role(),
                has_node: p.node.is_some(),
                tunnels: self.tunnels_out.get(id).map_or(0, BTreeSet::len),
                since: p.since,
                last_seen: p.last_seen,
                conflict: p.conflict,
            })
            .collect()
    }

    /// Registers stream `conn` after its `hello`. Answers `welcome` followed by the nodes of
    /// its tunnel peers, or an error and a close when the version is unsupported, an agent
    /// names an id its token is not bound to, or the id is live under another principal.
    ///
    /// A live stream for the same id and principal is replaced (closed with
    /// [`coord::CLOSE_REPLACED`]; its tunnel peers see it as `lost`), except for agents: a
    /// live agent stream is replaced only by the same process (the same `hello` instance)
    /// or once it has been silent for the takeover grace. Any other registration for the
    /// id is refused with [`coord::CLOSE_CONFLICT`] and recorded on the live peer, so two
    /// copies of an agent cannot take turns and the operator can see the conflict.
    pub fn connect(&mut self, conn: ConnId, hello: &Hello, auth: PeerAuth, now: Instant) {
        self.stamp(now);
        if self.conns.contains_key(&conn) {
            tracing::debug!(conn, "connect for a stream already registered; ignored");
            return;
        }
        self.stats.connections += 1;
        if hello.version != coord::PROTOCOL_VERSION {
            self.send(
                conn,
                ServerMsg::error(format!(
                    "unsupported protocol version {}; this coordinator speaks version {}",
                    hello.version,
                    coord::PROTOCOL_VERSION
                )),
            );
            self.push_close(conn, coord::CLOSE_PROTOCOL, "unsupported protocol version");
            return;
        }
        if let PeerAuth::Agent { id } = &auth
            && *id != hello.id
        {
            self.stats.violations += 1;
            let reason = format!("agent token is bound to node {id}, not {}", hello.id);
            self.push_close(conn, coord::CLOSE_POLICY, &reason);
            return;
        }
        if let Some(old) = self.peers.get(&hello.id) {
            if !auth.same_principal(&old.auth) {
                self.stats.violations += 1;
                let reason = format!("node id {} is in use by another principal", hello.id);
                self.push_close(conn, coord::CLOSE_POLICY, &reason);
                return;
            }
            let old_conn = old.conn;
            let instance = truncate(&hello.instance, MAX_INSTANCE_LEN);
            let grace = self.takeover_grace.unwrap_or(DEFAULT_TAKEOVER_GRACE);
            let takeover =
                Takeover::judge(&auth, &old.instance, &instance, old.last_seen, grace, now);
            if let Takeover::Refuse { silent } = takeover {
                self.stats.conflicts += 1;
                let id = hello.id;
                if let Some(p) = self.peers.get_mut(&id) {
                    p.conflict = Some(Conflict::record(p.conflict, now));
                }
                tracing::warn!(%id, name = hello.name, silent_ms = silent.as_millis() as u64,
                    "refused a second registration for a live agent");
                let reason = format!(
                    "node id {id} is live on another stream (heard from {} s ago); \
                     is another copy of this agent running?",
                    silent.as_secs()
                );
                self.send(conn, ServerMsg::error(reason.clone()));
                self.push_close(conn, coord::CLOSE_CONFLICT, &reason);
                return;
            }
            self.stats.replacements += 1;
            self.push_close(old_conn, coord::CLOSE_REPLACED, takeover.reason());
            self.remove(old_conn, PeerKind::Lost, "replaced");
        } else if self.remote.on {
            let grace = self.takeover_grace.unwrap_or(DEFAULT_TAKEOVER_GRACE);
            let instance = truncate(&hello.instance, MAX_INSTANCE_LEN);
            if let Err((code, reason)) = self.judge_remote(hello.id, &auth, &instance, grace, now) {
                if code == coord::CLOSE_POLICY {
                    self.stats.violations += 1;
                } else {
                    self.send(conn, ServerMsg::error(reason.clone()));
                }
                self.push_close(conn, code, &reason);
                return;
            }
        }
        let id = hello.id;
        let name = truncate(&hello.name, MAX_NAME_LEN);
        let instance = truncate(&hello.instance, MAX_INSTANCE_LEN);
        tracing::debug!(conn, %id, name, role = auth.role(), "peer connected");
        self.departed.remove(&id);
        self.conns.insert(conn, id);
        self.peers.insert(
            id,
            Peer {
                conn,
                auth,
                name,
                node: None,
                consecutive_bad: 0,
                since: now,
                last_seen: now,
                instance,
                conflict: None,
            },
        );
        self.send(
            conn,
            ServerMsg::Welcome {
                version: coord::PROTOCOL_VERSION,
                id,
                derp_map: self.derp_map.clone(),
            },
        );
        // Bound here now: the other replica's binding gives way once it reads ours.
        self.remote.forget_binding(id);
        if let Some(record) = self.record(id) {
            self.replicate(Change::Peer(record));
        }
        // Sources whose tunnels outlived this peer's previous stream: tell it who they are.
        for other in self.linked_any(id) {
            if let Some(node) = self.node_of(other) {
                self.send(conn, node_update(node));
            }
        }
    }

    /// Something arrived on stream `conn` that the registry does not otherwise see (a
    /// websocket ping or pong): the stream is alive.
    pub fn touch(&mut self, conn: ConnId, now: Instant) {
        self.stamp(now);
        if let Some(p) = self.conns.get(&conn).and_then(|id| self.peers.get_mut(id)) {
            p.last_seen = p.last_seen.max(now);
        }
    }

    /// Handles a decoded request on stream `conn`. Ignored if `conn` is not registered.
    pub fn handle_message(&mut self, conn: ConnId, msg: ClientMsg, now: Instant) {
        let Some(&id) = self.conns.get(&conn) else {
            return;
        };
        self.touch(conn, now);
        if let ClientMsg::Hello(_) = msg {
            self.bad(
                conn,
                "hello may only be sent once, as the first message".into(),
                false,
            );
            return;
        }
        self.stats.messages_in += 1;
        if let Some(p) = self.peers.get_mut(&id) {
            p.consecutive_bad = 0;
        }
        match msg {
            ClientMsg::Hello(_) => {}
            ClientMsg::UpdateSelf { node } => self.update_self(conn, id, node),
            ClientMsg::AddTunnel { id: dst } => self.add_tunnel(conn, id, dst),
            ClientMsg::RemoveTunnel { id: dst } => self.remove_tunnel(id, dst),
            ClientMsg::ReadyForHandshake { id: dst } => self.ready_for_handshake(conn, id, dst),
            ClientMsg::Disconnect {} => {
                self.remove(conn, PeerKind::Disconnected, "graceful disconnect");
                self.push_close(conn, coord::CLOSE_NORMAL, "disconnected");
            }
        }
    }

    /// Decodes `text` and handles it, or counts it as bad. For callers that do not need to
    /// see requests before the registry does.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        match coord::decode_client(text) {
            Ok(msg) => self.handle_message(conn, msg, now),
            Err(e) => self.bad_message(conn, &e, now),
        }
    }

    /// Counts a message that did not decode. Answers with an error message, or closes the
    /// stream for an oversized message or after [`MAX_CONSECUTIVE_BAD`] bad messages in a row.
    pub fn bad_message(&mut self, conn: ConnId, err: &DecodeError, now: Instant) {
        self.stamp(now);
        self.bad(conn, err.to_string(), err.is_fatal());
    }

    /// Stream `conn` ended. `graceful` means the peer said goodbye (its tunnel peers get
    /// `disconnected`); otherwise they get `lost`. Ignored if `conn` is not registered.
    pub fn close(&mut self, conn: ConnId, graceful: bool, now: Instant) {
        self.stamp(now);
        if graceful {
            self.remove(conn, PeerKind::Disconnected, "graceful disconnect");
        } else {
            self.remove(conn, PeerKind::Lost, "connection lost");
        }
    }

    fn bad(&mut self, conn: ConnId, message: String, fatal: bool) {
        let Some(id) = self.conns.get(&conn) else {
            return;
        };
        self.stats.bad_messages += 1;
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.consecutive_bad += 1;
        tracing::debug!(conn, id = %id, message, "bad coordinator message");
        if fatal {
            self.push_close(conn, coord::CLOSE_TOO_BIG, &message);
            self.remove(conn, PeerKind::Lost, "connection lost");
        } else if peer.consecutive_bad > MAX_CONSECUTIVE_BAD {
            self.push_close(
                conn,
                coord::CLOSE_PROTOCOL,
                "too many consecutive bad messages",
            );
            self.remove(conn, PeerKind::Lost, "connection lost");
        } else {
            self.send(conn, ServerMsg::error(message));
        }
    }

    /// Closes `conn` for an authorization violation; nothing else is disturbed.
    fn violation(&mut self, conn: ConnId, reason: String) {
        self.stats.violations += 1;
        tracing::debug!(conn, reason, "coordinator authorization violation");
        self.push_close(conn, coord::CLOSE_POLICY, &reason);
        self.remove(conn, PeerKind::Lost, "connection lost");
    }

    fn refuse(&mut self, conn: ConnId, message: String) {
        self.stats.refused += 1;
        self.send(conn, ServerMsg::error(message));
    }

    fn update_self(&mut self, conn: ConnId, id: NodeId, mut node: Node) {
        if node.id != id {
            return self.violation(
                conn,
                format!("node id {} does not match stream id {id}", node.id),
            );
        }
        // Every node, of any role, may claim only the /128 derived from its own id: that is
        // what keeps one peer from routing another's traffic to itself.
        if let Some(bad) = node
            .addresses
            .iter()
            .chain(&node.allowed_ips)
            .find(|c| !owns(id, c))
        {
            return self.violation(
                conn,
                format!("address {bad} is not the /128 derived from node id {id}"),
            );
        }
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let is_agent = matches!(peer.auth, PeerAuth::Agent { .. });
        let old_key = peer.node.as_ref().map(|n| n.key);
        if let Some(old) = old_key
            && old != node.key
        {
            return self.violation(
                conn,
                "the WireGuard key may change only with a new registration".into(),
            );
        }
        if let Err(owner) = self.keys.check(id, node.key) {
            return self.violation(
                conn,
                format!("WireGuard key {} belongs to node {owner}", node.key),
            );
        }
        if old_key.is_none() && self.keys.claim(id, node.key, is_agent) {
            self.stats.key_changes += 1;
            tracing::info!(%id, key = %node.key, "agent registered with a new WireGuard key");
        }
        let dropped = sanitize_endpoints(&mut node.endpoints);
        if dropped > 0 {
            self.stats.endpoints_dropped += dropped as u64;
            tracing::debug!(%id, dropped, "dropped endpoints from a node");
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.node = Some(node.clone());
        }
        if let Some(record) = self.record(id) {
            self.replicate(Change::Peer(record));
        }
        for other in self.tunnel_peers(id) {
            self.send_to_peer(other, node_update(node.clone()));
        }
    }

    /// Forgets stream `conn` and its peer; tunnel peers get `kind`. Tunnels the peer opened
    /// are removed; tunnels to it stay for when it comes back.
    fn remove(&mut self, conn: ConnId, kind: PeerKind, reason: &str) {
        let Some(id) = self.conns.remove(&conn) else {
            return;
        };
        let notify = self.tunnel_peers(id);
        self.replicate(Change::PeerGone {
            id,
            graceful: kind == PeerKind::Disconnected,
        });
        self.remote.forget_own(id);
        let principal = self.peers.remove(&id).and_then(|p| {
            self.keys.release(id, p.node.map(|n| n.key));
            if let (PeerAuth::Agent { .. }, Some(at)) = (&p.auth, self.latest) {
                let graceful = kind == PeerKind::Disconnected;
                self.departed.insert(
                    id,
                    Departure {
                        since: at,
                        graceful,
                        reason: reason.to_string(),
                        replica_lost: false,
                    },
                );
            }
            p.auth.principal().map(str::to_string)
        });
        let outs = self.tunnels_out.remove(&id).unwrap_or_default();
        if let Some(p) = principal {
            self.uncount_tunnels(&p, outs.len());
        }
        for dst in outs {
            if let Some(srcs) = self.tunnels_in.get_mut(&dst) {
                srcs.remove(&id);
                if srcs.is_empty() {
                    self.tunnels_in.remove(&dst);
                }
            }
        }
        tracing::debug!(conn, %id, ?kind, reason, "peer removed");
        for other in notify {
            self.send_to_peer(other, gone(id, kind, reason));
        }
    }

    fn send_to_peer(&mut self, id: NodeId, msg: ServerMsg) {
        if let Some(conn) = self.peers.get(&id).map(|p| p.conn) {
            self.send(conn, msg);
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.stats.messages_out += 1;
        self.outputs.push_back(Output::Send { conn, msg });
    }

    fn push_close(&mut self, conn: ConnId, code: u16, reason: &str) {
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: reason.to_string(),
        });
    }

    /// The authorization of the live peer `id`.
    pub fn auth_of(&self, id: NodeId) -> Option<&PeerAuth> {
        self.peers.get(&id).map(|p| &p.auth)
    }
}

fn owns(id: NodeId, cidr: &crate::wire::addr::IpCidr) -> bool {
    cidr.prefix_len == 128 && cidr.addr == std::net::IpAddr::V6(id.tailnet_addr())
}

fn node_update(node: Node) -> ServerMsg {
    ServerMsg::PeerUpdate(PeerUpdate {
        id: node.id,
        kind: PeerKind::Node,
        node: Some(node),
        reason: None,
    })
}

fn ready_update(id: NodeId) -> ServerMsg {
    ServerMsg::PeerUpdate(PeerUpdate {
        id,
        kind: PeerKind::ReadyForHandshake,
        node: None,
        reason: None,
    })
}

fn gone(id: NodeId, kind: PeerKind, reason: &str) -> ServerMsg {
    ServerMsg::PeerUpdate(PeerUpdate {
        id,
        kind,
        node: None,
        reason: Some(reason.to_string()),
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
