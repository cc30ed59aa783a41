//! Replication stories: two or three registries and a model of the shared database (rows
//! written from their `Replicate` outputs, notifications delivered as targeted re-reads),
//! checking exactly what each local stream hears.

use super::*;
use crate::wire::coord::{CLOSE_CONFLICT, CLOSE_REPLACED};
use crate::wire::key::NodePrivate;
use std::sync::Arc;

fn id(n: u8) -> NodeId {
    NodeId(uuid::Uuid::from_bytes([n; 16]))
}

fn node_of(id: NodeId, as_of: u64) -> Node {
    Node {
        id,
        key: NodePrivate::from_bytes([id.0.as_bytes()[0]; 32]).public(),
        preferred_derp: 1,
        addresses: vec![id.tailnet_prefix().parse().unwrap()],
        allowed_ips: vec![id.tailnet_prefix().parse().unwrap()],
        endpoints: vec![],
        as_of,
    }
}

fn client(principal: &str) -> PeerAuth {
    PeerAuth::Client {
        principal: principal.into(),
        authorizer: Arc::new(|_: NodeId| true),
    }
}

fn hello(n: u8, instance: &str) -> Hello {
    Hello {
        version: coord::PROTOCOL_VERSION,
        id: id(n),
        name: format!("node{n}"),
        instance: instance.into(),
    }
}

/// What one stream heard: `(kind, about)`, or a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Node(NodeId),
    Gone(NodeId, PeerKind),
    Ready(NodeId),
    Closed(u16),
}

struct Rep {
    name: ReplicaId,
    reg: Registry,
    heard: BTreeMap<ConnId, Vec<Heard>>,
}

/// The database: rows and a clock, and the notifications of the last write.
#[derive(Default)]
struct Db {
    peers: BTreeMap<(NodeId, ReplicaId), PeerRow>,
    tunnels: BTreeSet<TunnelRow>,
    clock: i64,
    live: BTreeSet<ReplicaId>,
}

enum Note {
    Peer(NodeId),
    Tunnels(NodeId),
    Hint(NodeId, NodeId),
}

struct World {
    reps: Vec<Rep>,
    db: Db,
    now: Instant,
}

impl World {
    #[allow(clippy::disallowed_methods)]
    fn new(n: usize) -> Self {
        let mut db = Db::default();
        let reps = (0..n)
            .map(|i| {
                let name = format!("r{i}");
                db.live.insert(name.clone());
                let mut reg = Registry::new(None);
                reg.enable_replication(name.clone());
                Rep {
                    name,
                    reg,
                    heard: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            reps,
            db,
            now: Instant::now(),
        }
    }

    /// Drains every replica's outputs into streams and rows, and delivers notifications
    /// until nothing moves.
    fn pump(&mut self) {
        for _ in 0..20 {
            let mut notes = Vec::new();
            for r in 0..self.reps.len() {
                while let Some(out) = self.reps[r].reg.poll_action() {
                    let rep = &mut self.reps[r];
                    match out {
                        Output::Send { conn, msg } => {
                            if let ServerMsg::PeerUpdate(u) = msg {
                                let h = match u.kind {
                                    PeerKind::Node => Heard::Node(u.id),
                                    PeerKind::ReadyForHandshake => Heard::Ready(u.id),
                                    k => Heard::Gone(u.id, k),
                                };
                                rep.heard.entry(conn).or_default().push(h);
                            }
                        }
                        Output::Close { conn, code, .. } => {
                            rep.heard.entry(conn).or_default().push(Heard::Closed(code));
                        }
                        Output::Replicate(c) => {
                            let name = rep.name.clone();
                            notes.extend(self.db.write(&name, c));
                        }
                    }
                }
            }
            if notes.is_empty() {
                return;
            }
            for note in notes {
                for r in 0..self.reps.len() {
                    let now = self.now;
                    let live = self.db.live.clone();
                    let reg = &mut self.reps[r].reg;
                    match &note {
                        Note::Peer(p) => {
                            let rows: Vec<PeerRow> = self
                                .db
                                .peers
                                .values()
                                .filter(|row| row.record.id == *p)
                                .cloned()
                                .collect();
                            reg.remote_peer_rows(*p, &rows, &live, true, now);
                        }
                        Note::Tunnels(s) => {
                            let rows: Vec<TunnelRow> = self
                                .db
                                .tunnels
                                .iter()
                                .filter(|t| t.src == *s)
                                .cloned()
                                .collect();
                            reg.remote_tunnel_rows(*s, &rows, now);
                        }
                        Note::Hint(s, d) => reg.remote_ready_for_handshake(*s, *d, now),
                    }
                    reg.check_invariants();
                }
            }
        }
        panic!("replication did not settle");
    }

    fn heard(&mut self, r: usize, conn: ConnId) -> Vec<Heard> {
        self.reps[r].heard.remove(&conn).unwrap_or_default()
    }

    fn connect(&mut self, r: usize, conn: ConnId, n: u8, auth: PeerAuth, instance: &str) {
        let now = self.now;
        self.reps[r]
            .reg
            .connect(conn, &hello(n, instance), auth, now);
        self.pump();
    }

    fn msg(&mut self, r: usize, conn: ConnId, msg: ClientMsg) {
        let now = self.now;
        self.reps[r].reg.handle_message(conn, msg, now);
        self.pump();
    }

    fn node(&mut self, r: usize, conn: ConnId, n: u8, as_of: u64) {
        self.msg(
            r,
            conn,
            ClientMsg::UpdateSelf {
                node: node_of(id(n), as_of),
            },
        );
    }

    /// Replica `r` expires: the survivors' sweeper deletes its rows and each resyncs.
    fn expire(&mut self, r: usize) {
        let name = self.reps[r].name.clone();
        self.db.live.remove(&name);
        self.db.peers.retain(|(_, rep), _| *rep != name);
        self.db.tunnels.retain(|t| t.replica != name);
        let peers: Vec<PeerRow> = self.db.peers.values().cloned().collect();
        let tunnels: Vec<TunnelRow> = self.db.tunnels.iter().cloned().collect();
        let live = self.db.live.clone();
        let now = self.now;
        for (i, rep) in self.reps.iter_mut().enumerate() {
            if i != r {
                rep.reg.remote_resync(&peers, &tunnels, &live, now);
            }
        }
        self.pump();
    }
}

impl Db {
    fn write(&mut self, replica: &str, c: Change) -> Vec<Note> {
        self.clock += 1;
        match c {
            Change::Peer(record) => {
                let key = (record.id, replica.to_string());
                let fresh = record.node.is_none();
                let bound_at = match self.peers.get(&key) {
                    Some(old) if !fresh && !old.lost => old.bound_at,
                    _ if fresh => self.clock,
                    _ => 0,
                };
                let id = record.id;
                self.peers.insert(
                    key,
                    PeerRow {
                        record,
                        replica: replica.to_string(),
                        bound_at,
                        silent: Duration::ZERO,
                        lost: false,
                    },
                );
                vec![Note::Peer(id)]
            }
            Change::PeerGone { id, graceful } => {
                let key = (id, replica.to_string());
                if graceful {
                    self.peers.remove(&key);
                } else if let Some(row) = self.peers.get_mut(&key) {
                    row.lost = true;
                }
                self.tunnels
                    .retain(|t| !(t.src == id && t.replica == replica));
                vec![Note::Peer(id), Note::Tunnels(id)]
            }
            Change::Tunnel { src, dst, open } => {
                let row = TunnelRow {
                    src,
                    dst,
                    replica: replica.to_string(),
                };
                if open {
                    self.tunnels.insert(row);
                } else {
                    self.tunnels.remove(&row);
                }
                vec![Note::Tunnels(src)]
            }
            Change::ReadyForHandshake { src, dst } => vec![Note::Hint(src, dst)],
        }
    }
}

/// Agent 1 on replica 0 (stream 10), client 2 on replica 1 (stream 20) with a tunnel to it.
fn agent_and_client() -> World {
    let mut w = World::new(2);
    w.connect(0, 10, 1, PeerAuth::Agent { id: id(1) }, "agent-proc");
    w.node(0, 10, 1, 1);
    w.connect(1, 20, 2, client("alice"), "");
    w.node(1, 20, 2, 1);
    w.msg(1, 20, ClientMsg::AddTunnel { id: id(1) });
    assert_eq!(
        w.heard(1, 20),
        vec![Heard::Node(id(1))],
        "client learns the agent"
    );
    assert_eq!(
        w.heard(0, 10),
        vec![Heard::Node(id(2))],
        "agent learns its source"
    );
    w
}

#[test]
fn a_tunnel_across_replicas_introduces_both_sides() {
    let mut w = agent_and_client();
    // A new node reaches the other side.
    w.node(0, 10, 1, 2);
    assert_eq!(w.heard(1, 20), vec![Heard::Node(id(1))]);
    w.node(1, 20, 2, 2);
    assert_eq!(w.heard(0, 10), vec![Heard::Node(id(2))]);
    // Presence and relay admission see the remote agent.
    assert!(matches!(
        w.reps[1].reg.presence(id(1)),
        Presence::Online { .. }
    ));
    assert!(w.reps[1].reg.knows_key(&node_of(id(1), 0).key));
    // Ready-for-handshake travels too.
    w.msg(1, 20, ClientMsg::ReadyForHandshake { id: id(1) });
    assert_eq!(w.heard(0, 10), vec![Heard::Ready(id(2))]);
}

#[test]
fn goodbye_is_disconnected_and_a_dropped_stream_is_lost() {
    let mut w = agent_and_client();
    w.msg(0, 10, ClientMsg::Disconnect {});
    assert_eq!(
        w.heard(1, 20),
        vec![Heard::Gone(id(1), PeerKind::Disconnected)]
    );
    assert!(matches!(
        w.reps[1].reg.presence(id(1)),
        Presence::Offline { graceful: true, .. }
    ));
    // The agent comes back: the client learns it again (its tunnel outlived the agent).
    w.connect(0, 11, 1, PeerAuth::Agent { id: id(1) }, "agent-proc");
    assert_eq!(
        w.heard(0, 11),
        vec![Heard::Node(id(2))],
        "agent learns its source"
    );
    w.node(0, 11, 1, 3);
    assert_eq!(w.heard(1, 20), vec![Heard::Node(id(1))]);
    // Its stream drops without a goodbye: lost, never disconnected.
    let now = w.now;
    w.reps[0].reg.close(11, false, now);
    w.pump();
    assert_eq!(w.heard(1, 20), vec![Heard::Gone(id(1), PeerKind::Lost)]);
    // Its own stream dropped on a live replica: offline, not merely unknown.
    assert!(matches!(
        w.reps[1].reg.presence(id(1)),
        Presence::Offline {
            graceful: false,
            replica_lost: false,
            ..
        }
    ));
    // The client's stream drops: the agent (back again) hears lost, and no tunnel
    // removal turns it into disconnected.
    w.connect(0, 12, 1, PeerAuth::Agent { id: id(1) }, "agent-proc");
    w.node(0, 12, 1, 4);
    w.heard(0, 12);
    w.heard(1, 20);
    let now = w.now;
    w.reps[1].reg.close(20, false, now);
    w.pump();
    assert_eq!(w.heard(0, 12), vec![Heard::Gone(id(2), PeerKind::Lost)]);
}

#[test]
fn removing_a_tunnel_is_disconnected_on_the_other_replica() {
    let mut w = agent_and_client();
    w.msg(1, 20, ClientMsg::RemoveTunnel { id: id(1) });
    assert_eq!(
        w.heard(0, 10),
        vec![Heard::Gone(id(2), PeerKind::Disconnected)]
    );
    assert_eq!(
        w.heard(1, 20),
        vec![Heard::Gone(id(1), PeerKind::Disconnected)]
    );
}

#[test]
fn an_expired_replica_reads_as_lost_never_disconnected() {
    let mut w = agent_and_client();
    w.expire(0);
    assert_eq!(w.heard(1, 20), vec![Heard::Gone(id(1), PeerKind::Lost)]);
    // Said to be lost with its replica, not by its own doing: callers still try it.
    assert!(matches!(
        w.reps[1].reg.presence(id(1)),
        Presence::Offline {
            graceful: false,
            replica_lost: true,
            ..
        }
    ));
    assert_eq!(w.reps[1].reg.remote_stats().remote_peers, 0);
    // The agent reconnects to the surviving replica: the client's tunnel finds it.
    w.connect(1, 21, 1, PeerAuth::Agent { id: id(1) }, "agent-proc");
    assert_eq!(w.heard(1, 21), vec![Heard::Node(id(2))]);
    w.node(1, 21, 1, 5);
    assert_eq!(w.heard(1, 20), vec![Heard::Node(id(1))]);
}

#[test]
fn the_same_agent_on_a_second_replica_replaces_the_first() {
    let mut w = agent_and_client();
    // Same process (instance) reconnecting through another replica: newest wins.
    w.connect(1, 21, 1, PeerAuth::Agent { id: id(1) }, "agent-proc");
    let stale = w.heard(0, 10);
    assert_eq!(
        stale.last(),
        Some(&Heard::Closed(CLOSE_REPLACED)),
        "{stale:?}"
    );
    assert_eq!(w.reps[0].reg.stats().active, 0);
    assert_eq!(w.reps[0].reg.remote_stats().replaced_remotely, 1);
    // The client never heard disconnected: at most lost, then the node again.
    w.node(1, 21, 1, 6);
    let heard = w.heard(1, 20);
    assert!(
        !heard
            .iter()
            .any(|h| matches!(h, Heard::Gone(_, PeerKind::Disconnected))),
        "{heard:?}"
    );
    assert_eq!(heard.last(), Some(&Heard::Node(id(1))), "{heard:?}");
    // Replica 0 now sees the agent as remote on replica 1.
    assert!(matches!(
        w.reps[0].reg.presence(id(1)),
        Presence::Online { .. }
    ));
}

#[test]
fn a_second_copy_of_a_live_agent_is_refused_on_another_replica() {
    let mut w = agent_and_client();
    w.connect(1, 22, 1, PeerAuth::Agent { id: id(1) }, "other-proc");
    let heard = w.heard(1, 22);
    assert_eq!(
        heard.last(),
        Some(&Heard::Closed(CLOSE_CONFLICT)),
        "{heard:?}"
    );
    assert!(w.heard(0, 10).is_empty(), "the live stream is untouched");
    // Another user's client may not take alice's client id (node 2) on another replica.
    let now = w.now;
    w.reps[0]
        .reg
        .connect(25, &hello(2, ""), client("mallory"), now);
    w.pump();
    assert_eq!(
        w.heard(0, 25),
        vec![Heard::Closed(crate::wire::coord::CLOSE_POLICY)]
    );
}

#[test]
fn a_binding_written_back_after_expiry_loses_to_a_newer_one() {
    let mut w = World::new(3);
    w.connect(0, 10, 1, PeerAuth::Agent { id: id(1) }, "p");
    w.node(0, 10, 1, 1);
    w.connect(2, 30, 3, client("alice"), "");
    w.node(2, 30, 3, 1);
    w.msg(2, 30, ClientMsg::AddTunnel { id: id(1) });
    w.heard(2, 30);
    // Replica 0 stops; it expires; the agent reconnects through replica 1.
    w.expire(0);
    w.connect(1, 20, 1, PeerAuth::Agent { id: id(1) }, "p");
    w.node(1, 20, 1, 2);
    assert_eq!(
        w.heard(2, 30),
        vec![Heard::Gone(id(1), PeerKind::Lost), Heard::Node(id(1))]
    );
    // Replica 0 resumes, registers again and writes its (stale) stream back.
    w.db.live.insert("r0".into());
    w.reps[0].reg.replay_local();
    w.pump();
    let peers: Vec<PeerRow> = w.db.peers.values().cloned().collect();
    let tunnels: Vec<TunnelRow> = w.db.tunnels.iter().cloned().collect();
    let live = w.db.live.clone();
    let now = w.now;
    w.reps[0].reg.remote_resync(&peers, &tunnels, &live, now);
    w.pump();
    // The stale stream is the one that goes; the fresh one is untouched.
    let stale = w.heard(0, 10);
    assert_eq!(
        stale.last(),
        Some(&Heard::Closed(CLOSE_REPLACED)),
        "{stale:?}"
    );
    assert!(
        w.heard(1, 20)
            .iter()
            .all(|h| !matches!(h, Heard::Closed(_)))
    );
    let heard = w.heard(2, 30);
    assert!(
        !heard
            .iter()
            .any(|h| matches!(h, Heard::Gone(_, PeerKind::Disconnected))),
        "{heard:?}"
    );
}
