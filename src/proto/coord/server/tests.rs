//! Registry stories: each test connects peers, sends requests and checks exactly what
//! every stream receives.

use super::*;
use crate::wire::coord::{
    CLOSE_NORMAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_REPLACED, CLOSE_TOO_BIG,
};
use crate::wire::key::NodePrivate;
use std::sync::Arc;

mod identity;
mod validation;

struct World {
    reg: Registry,
    now: Instant,
}

fn id(n: u8) -> NodeId {
    NodeId(uuid::Uuid::from_bytes([n; 16]))
}

fn node_of(id: NodeId) -> Node {
    Node {
        id,
        key: NodePrivate::generate().public(),
        preferred_derp: 1,
        addresses: vec![id.tailnet_prefix().parse().unwrap()],
        allowed_ips: vec![id.tailnet_prefix().parse().unwrap()],
        endpoints: vec![],
        as_of: 1,
    }
}

fn client(principal: &str, allowed: &[NodeId]) -> PeerAuth {
    let allowed = allowed.to_vec();
    PeerAuth::Client {
        principal: principal.into(),
        authorizer: Arc::new(move |a: NodeId| allowed.contains(&a)),
    }
}

fn agent(n: u8) -> PeerAuth {
    PeerAuth::Agent { id: id(n) }
}

fn hello(n: u8) -> Hello {
    Hello {
        version: coord::PROTOCOL_VERSION,
        id: id(n),
        name: format!("node{n}"),
        instance: String::new(),
    }
}

impl World {
    // Any starting instant will do: the registry only compares instants it was given.
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        Self {
            reg: Registry::new(Some(serde_json::json!({"Regions": {}}))),
            now: Instant::now(),
        }
    }

    /// Connects stream `conn` as node `n` and checks the welcome.
    fn connect(&mut self, conn: ConnId, n: u8, auth: PeerAuth) -> Vec<Output> {
        self.connect_as(conn, n, auth, "")
    }

    /// Like [`World::connect`], from the process `instance`.
    fn connect_as(&mut self, conn: ConnId, n: u8, auth: PeerAuth, instance: &str) -> Vec<Output> {
        let h = Hello {
            instance: instance.into(),
            ..hello(n)
        };
        self.reg.connect(conn, &h, auth, self.now);
        let mut out = self.drain();
        let welcome = out.iter().position(|o| {
            matches!(o, Output::Send { conn: c, msg: ServerMsg::Welcome { id: i, .. } } if *c == conn && *i == id(n))
        });
        let welcome = welcome.unwrap_or_else(|| panic!("no welcome: {out:?}"));
        out.remove(welcome);
        out
    }

    fn send(&mut self, conn: ConnId, msg: ClientMsg) -> Vec<Output> {
        self.reg.handle_message(conn, msg, self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        let out: Vec<_> = std::iter::from_fn(|| self.reg.poll_action()).collect();
        self.reg.check_invariants();
        out
    }
}

fn update(conn: ConnId, id: NodeId, kind: PeerKind) -> impl Fn(&Output) -> bool {
    move |o| matches!(o, Output::Send { conn: c, msg: ServerMsg::PeerUpdate(u) } if *c == conn && u.id == id && u.kind == kind)
}

fn node_to(conn: ConnId, node: &Node) -> Output {
    Output::Send {
        conn,
        msg: ServerMsg::PeerUpdate(PeerUpdate {
            id: node.id,
            kind: PeerKind::Node,
            node: Some(node.clone()),
            reason: None,
        }),
    }
}

fn closed(out: &[Output], conn: ConnId, code: u16) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Close { conn: c, code: k, .. } if *c == conn && *k == code))
}

fn error_to(out: &[Output], conn: ConnId) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::Send {
            conn: c,
            msg: ServerMsg::Error { message },
        } if *c == conn => Some(message.clone()),
        _ => None,
    })
}

#[test]
fn client_and_agent_exchange_nodes_over_a_tunnel() {
    let mut w = World::new();
    let (a, b) = (node_of(id(1)), node_of(id(2)));
    assert!(w.connect(1, 1, agent(1)).is_empty());
    assert!(
        w.send(1, ClientMsg::UpdateSelf { node: a.clone() })
            .is_empty(),
        "no tunnel yet"
    );
    assert!(w.connect(2, 2, client("alice", &[id(1)])).is_empty());
    assert!(
        w.send(2, ClientMsg::UpdateSelf { node: b.clone() })
            .is_empty()
    );

    let out = w.send(2, ClientMsg::AddTunnel { id: id(1) });
    assert_eq!(out, vec![node_to(2, &a), node_to(1, &b)]);

    // Fan-out in both directions.
    let a2 = Node {
        as_of: 2,
        ..a.clone()
    };
    assert_eq!(
        w.send(1, ClientMsg::UpdateSelf { node: a2.clone() }),
        vec![node_to(2, &a2)]
    );
    let b2 = Node {
        as_of: 2,
        ..b.clone()
    };
    assert_eq!(
        w.send(2, ClientMsg::UpdateSelf { node: b2.clone() }),
        vec![node_to(1, &b2)]
    );
    let s = w.reg.stats();
    assert_eq!((s.active, s.tunnels, s.connections), (2, 1, 2));
}

#[test]
fn node_updates_reach_only_tunnel_peers() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, agent(2));
    w.connect(3, 3, client("alice", &[id(1), id(2)]));
    w.send(3, ClientMsg::AddTunnel { id: id(1) });
    let c = node_of(id(3));
    assert_eq!(
        w.send(3, ClientMsg::UpdateSelf { node: c.clone() }),
        vec![node_to(1, &c)]
    );
    let b = node_of(id(2));
    assert!(
        w.send(2, ClientMsg::UpdateSelf { node: b }).is_empty(),
        "agent 2 has no tunnel"
    );
}

#[test]
fn tunnel_to_an_offline_agent_delivers_nodes_when_it_arrives() {
    let mut w = World::new();
    let c = node_of(id(3));
    w.connect(3, 3, client("alice", &[id(1)]));
    w.send(3, ClientMsg::UpdateSelf { node: c.clone() });
    assert!(w.send(3, ClientMsg::AddTunnel { id: id(1) }).is_empty());
    // The agent learns of its tunnel source on connect, and the source learns the agent's
    // node on the agent's first update.
    assert_eq!(w.connect(1, 1, agent(1)), vec![node_to(1, &c)]);
    let a = node_of(id(1));
    assert_eq!(
        w.send(1, ClientMsg::UpdateSelf { node: a.clone() }),
        vec![node_to(3, &a)]
    );
}

#[test]
fn graceful_disconnect_vs_lost_stream() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });

    // The agent's stream drops: the client hears `lost`, and the tunnel stays for its return.
    w.reg.close(1, false, w.now);
    let out = w.drain();
    assert_eq!(out.len(), 1);
    assert!(update(2, id(1), PeerKind::Lost)(&out[0]));
    assert_eq!(w.reg.stats().tunnels, 1);

    // Back again; then the client leaves gracefully: the agent hears `disconnected`, the
    // client's tunnels are gone, and the server closes the stream normally.
    w.connect(3, 1, agent(1));
    let out = w.send(2, ClientMsg::Disconnect {});
    assert!(update(3, id(2), PeerKind::Disconnected)(&out[0]), "{out:?}");
    assert!(closed(&out, 2, CLOSE_NORMAL));
    assert_eq!(w.reg.stats().tunnels, 0);
    assert!(!w.reg.is_live(2));
    // Input after the close is ignored.
    assert!(w.send(2, ClientMsg::AddTunnel { id: id(1) }).is_empty());
}

#[test]
fn lost_client_drops_its_tunnels_until_it_replays() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    w.reg.close(2, false, w.now);
    let out = w.drain();
    assert!(update(1, id(2), PeerKind::Lost)(&out[0]));
    assert_eq!(w.reg.stats().tunnels, 0);
    assert!(
        w.connect(3, 2, client("alice", &[id(1)])).is_empty(),
        "no tunnel survives"
    );
}

#[test]
fn ready_for_handshake_travels_only_along_a_tunnel() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1), id(4)]));
    w.connect(3, 3, client("bob", &[id(1)]));

    // No tunnel: an error, not a close (it can race with add_tunnel).
    let out = w.send(2, ClientMsg::ReadyForHandshake { id: id(1) });
    assert!(error_to(&out, 2).unwrap().contains("no tunnel"));
    assert!(w.reg.is_live(2));

    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    let out = w.send(1, ClientMsg::ReadyForHandshake { id: id(2) });
    assert_eq!(out.len(), 1);
    assert!(update(2, id(1), PeerKind::ReadyForHandshake)(&out[0]));
    let out = w.send(2, ClientMsg::ReadyForHandshake { id: id(1) });
    assert!(update(1, id(2), PeerKind::ReadyForHandshake)(&out[0]));

    // Bob has no tunnel with alice's client, and the agent's RFH to bob is refused.
    assert!(error_to(&w.send(3, ClientMsg::ReadyForHandshake { id: id(2) }), 3).is_some());
    assert!(error_to(&w.send(1, ClientMsg::ReadyForHandshake { id: id(3) }), 1).is_some());

    // A tunnel to an offline agent: refused as "not connected".
    w.send(2, ClientMsg::AddTunnel { id: id(4) });
    let msg = error_to(&w.send(2, ClientMsg::ReadyForHandshake { id: id(4) }), 2).unwrap();
    assert!(msg.contains("not connected"), "{msg}");
    assert_eq!(w.reg.stats().refused, 4);
}

#[test]
fn remove_tunnel_tells_both_sides() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    let out = w.send(2, ClientMsg::RemoveTunnel { id: id(1) });
    assert_eq!(out.len(), 2);
    assert!(update(2, id(1), PeerKind::Disconnected)(&out[0]));
    assert!(update(1, id(2), PeerKind::Disconnected)(&out[1]));
    assert!(
        w.send(2, ClientMsg::RemoveTunnel { id: id(1) }).is_empty(),
        "idempotent"
    );
    let a = node_of(id(1));
    assert!(w.send(1, ClientMsg::UpdateSelf { node: a }).is_empty());
}

/// Prints the cost of an `update_self` fanned out to 100 tunnel peers.
/// Run with `cargo test --release --lib registry_fanout_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn registry_fanout_cost() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    for n in 0..100u64 {
        let conn = 100 + n;
        w.reg.connect(
            conn,
            &Hello {
                version: 1,
                id: NodeId::random(),
                name: String::new(),
                instance: String::new(),
            },
            PeerAuth::Service,
            w.now,
        );
        w.reg
            .handle_message(conn, ClientMsg::AddTunnel { id: id(1) }, w.now);
    }
    w.drain();
    let node = node_of(id(1));
    let rounds = 2_000;
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut sent = 0;
    for _ in 0..rounds {
        w.reg
            .handle_message(1, ClientMsg::UpdateSelf { node: node.clone() }, w.now);
        while let Some(Output::Send { msg, .. }) = w.reg.poll_action() {
            sent += msg.encode().len();
        }
    }
    let per = start.elapsed() / rounds;
    println!(
        "update_self to 100 peers, encoded: {per:?} per update ({} bytes each message)",
        sent / (rounds as usize * 100)
    );
}

#[test]
fn presence_follows_agent_streams() {
    let mut w = World::new();
    assert_eq!(w.reg.presence(id(1)), Presence::Unknown);
    let t0 = w.now;
    w.connect(1, 1, agent(1));
    assert!(matches!(w.reg.presence(id(1)), Presence::Online { since, .. } if since == t0));
    w.now += Duration::from_secs(3);
    w.reg.touch(1, w.now);
    assert!(
        matches!(w.reg.presence(id(1)), Presence::Online { last_seen, .. } if last_seen == w.now)
    );
    w.now += Duration::from_secs(1);
    w.reg.close(1, false, w.now);
    w.drain();
    let at = w.now;
    assert!(
        matches!(w.reg.presence(id(1)), Presence::Offline { since, graceful: false, .. } if since == at)
    );
    w.connect(2, 1, agent(1));
    assert!(matches!(w.reg.presence(id(1)), Presence::Online { .. }));
    w.now += Duration::from_secs(1);
    w.send(2, ClientMsg::Disconnect {});
    assert!(matches!(
        w.reg.presence(id(1)),
        Presence::Offline { graceful: true, .. }
    ));
    // Clients are not tracked once gone.
    w.connect(3, 9, client("alice", &[]));
    w.reg.close(3, false, w.now);
    w.drain();
    assert_eq!(w.reg.presence(id(9)), Presence::Unknown);
}

#[test]
fn a_revoked_stream_is_closed_and_its_peers_see_it_lost() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.send(
        1,
        ClientMsg::UpdateSelf {
            node: node_of(id(1)),
        },
    );
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(
        2,
        ClientMsg::UpdateSelf {
            node: node_of(id(2)),
        },
    );
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    w.reg.revoke(1, "token revoked", w.now);
    let out = w.drain();
    assert!(closed(&out, 1, CLOSE_POLICY), "{out:?}");
    assert!(out.iter().any(update(2, id(1), PeerKind::Lost)), "{out:?}");
    assert_eq!(w.reg.stats().revoked, 1);
    assert!(
        matches!(
            w.reg.presence(id(1)),
            Presence::Offline {
                graceful: false,
                ..
            }
        ),
        "the agent is offline"
    );
    w.reg.revoke(1, "again", w.now);
    assert!(w.drain().is_empty(), "a closed stream is not closed twice");
    assert_eq!(w.reg.stats().revoked, 1);
}

#[test]
fn reauthorize_closes_only_streams_holding_a_withdrawn_tunnel() {
    let mut w = World::new();
    let allowed = Arc::new(std::sync::Mutex::new(vec![id(1), id(2)]));
    let auth = |a: &Arc<std::sync::Mutex<Vec<NodeId>>>| {
        let a = a.clone();
        PeerAuth::Client {
            principal: "alice".into(),
            authorizer: Arc::new(move |n: NodeId| a.lock().unwrap().contains(&n)),
        }
    };
    w.connect(1, 1, agent(1));
    w.connect(2, 2, agent(2));
    w.connect(3, 3, auth(&allowed));
    w.connect(4, 4, client("bob", &[id(2)]));
    w.send(3, ClientMsg::AddTunnel { id: id(1) });
    w.send(3, ClientMsg::AddTunnel { id: id(2) });
    w.send(4, ClientMsg::AddTunnel { id: id(2) });
    w.reg.reauthorize(w.now);
    assert!(w.drain().is_empty(), "nothing changed");
    allowed.lock().unwrap().retain(|n| *n != id(1));
    w.reg.reauthorize(w.now);
    let out = w.drain();
    let reason = out.iter().find_map(|o| match o {
        Output::Close {
            conn: 3,
            code,
            reason,
        } if *code == CLOSE_POLICY => Some(reason.clone()),
        _ => None,
    });
    let reason = reason.unwrap_or_else(|| panic!("alice's stream closed: {out:?}"));
    assert!(
        reason.contains(&id(1).to_string()),
        "names the agent: {reason}"
    );
    assert!(!closed(&out, 4, CLOSE_POLICY), "bob keeps his stream");
    assert_eq!(w.reg.stats().tunnels, 1, "only bob's tunnel is left");
}
