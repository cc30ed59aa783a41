//! Who may be which node: a reconnect or a second copy of an agent, silent streams taken
//! over, one key per node, endpoint spraying, tunnel budgets per user.

use super::*;
#[test]
fn same_process_reconnect_replaces_the_first() {
    let mut w = World::new();
    w.connect_as(1, 1, agent(1), "p1");
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    let out = w.connect_as(5, 1, agent(1), "p1");
    assert!(closed(&out, 1, CLOSE_REPLACED), "{out:?}");
    assert!(out.iter().any(update(2, id(1), PeerKind::Lost)));
    assert!(!w.reg.is_live(1) && w.reg.is_live(5));
    assert_eq!(w.reg.stats().replacements, 1);
    // The new stream carries the agent: updates from it reach the client.
    let a = node_of(id(1));
    assert_eq!(
        w.send(5, ClientMsg::UpdateSelf { node: a.clone() }),
        vec![node_to(2, &a)]
    );
    assert!(
        w.send(1, ClientMsg::UpdateSelf { node: a }).is_empty(),
        "old stream is ignored"
    );
}

#[test]
fn second_copy_of_a_live_agent_is_refused_and_recorded() {
    let mut w = World::new();
    w.connect_as(1, 1, agent(1), "real");
    w.send(
        1,
        ClientMsg::UpdateSelf {
            node: node_of(id(1)),
        },
    );
    // Every attempt by another process while the first still answers is refused; the
    // first keeps its stream, so calls never alternate between the two.
    for i in 0..5u64 {
        w.now += Duration::from_secs(10);
        w.reg.touch(1, w.now);
        w.reg.connect(
            10 + i,
            &Hello {
                instance: "copy".into(),
                ..hello(1)
            },
            agent(1),
            w.now,
        );
        let out = w.drain();
        assert!(closed(&out, 10 + i, coord::CLOSE_CONFLICT), "{out:?}");
        assert!(error_to(&out, 10 + i).is_some_and(|e| e.contains("live on another stream")));
        assert!(!closed(&out, 1, CLOSE_REPLACED));
        assert!(w.reg.is_live(1) && !w.reg.is_live(10 + i));
    }
    let info = w.reg.peers().into_iter().find(|p| p.id == id(1)).unwrap();
    let c = info.conflict.expect("conflict recorded");
    assert_eq!(c.count, 5);
    assert!(c.last > c.first);
    assert_eq!(w.reg.stats().conflicts, 5);
    assert_eq!(w.reg.stats().replacements, 0);
    // No instance at all is no proof of being the same process.
    w.reg.connect(20, &hello(1), agent(1), w.now);
    assert!(closed(&w.drain(), 20, coord::CLOSE_CONFLICT));
}

#[test]
fn a_silent_agent_stream_can_be_taken_over() {
    let mut w = World::new();
    w.connect_as(1, 1, agent(1), "old");
    w.now += DEFAULT_TAKEOVER_GRACE - Duration::from_secs(1);
    w.reg.connect(
        2,
        &Hello {
            instance: "new".into(),
            ..hello(1)
        },
        agent(1),
        w.now,
    );
    assert!(closed(&w.drain(), 2, coord::CLOSE_CONFLICT));
    w.now += Duration::from_secs(1);
    let out = w.connect_as(3, 1, agent(1), "new");
    let reason = out.iter().find_map(|o| match o {
        Output::Close {
            conn: 1,
            code: CLOSE_REPLACED,
            reason,
        } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.is_some_and(|r| r.contains("silent")), "{out:?}");
    assert!(w.reg.is_live(3) && !w.reg.is_live(1));
}

#[test]
fn grace_is_configurable() {
    let mut w = World::new();
    w.reg.set_takeover_grace(Duration::ZERO);
    w.connect_as(1, 1, agent(1), "a");
    let out = w.connect_as(2, 1, agent(1), "b");
    assert!(closed(&out, 1, CLOSE_REPLACED));
}

#[test]
fn clients_of_one_user_still_replace_each_other() {
    let mut w = World::new();
    w.connect_as(1, 2, client("alice", &[]), "laptop-before-sleep");
    let out = w.connect_as(2, 2, client("alice", &[]), "laptop-after-wake");
    assert!(closed(&out, 1, CLOSE_REPLACED));
}

#[test]
fn a_key_belongs_to_one_node() {
    let mut w = World::new();
    let a = node_of(id(1));
    w.connect(1, 1, agent(1));
    w.send(1, ClientMsg::UpdateSelf { node: a.clone() });
    // Another agent advertising the first one's key is closed; the victim is untouched.
    w.connect(2, 2, agent(2));
    let stolen = Node {
        key: a.key,
        ..node_of(id(2))
    };
    let out = w.send(
        2,
        ClientMsg::UpdateSelf {
            node: stolen.clone(),
        },
    );
    assert!(closed(&out, 2, CLOSE_POLICY), "{out:?}");
    assert!(w.reg.is_live(1));
    // While the victim is away its key stays reserved.
    w.reg.close(1, true, w.now);
    w.drain();
    w.connect(3, 2, agent(2));
    assert!(closed(
        &w.send(3, ClientMsg::UpdateSelf { node: stolen }),
        3,
        CLOSE_POLICY
    ));
    // A client cannot take it either.
    w.connect(4, 7, client("mallory", &[]));
    let as_client = Node {
        key: a.key,
        ..node_of(id(7))
    };
    assert!(closed(
        &w.send(4, ClientMsg::UpdateSelf { node: as_client }),
        4,
        CLOSE_POLICY
    ));
    // The victim comes back with its key, then later with a fresh one: both accepted,
    // the change counted.
    w.connect(5, 1, agent(1));
    assert!(
        w.send(5, ClientMsg::UpdateSelf { node: a.clone() })
            .is_empty()
    );
    assert_eq!(w.reg.stats().key_changes, 0);
    w.reg.close(5, true, w.now);
    w.drain();
    w.connect(6, 1, agent(1));
    assert!(
        w.send(
            6,
            ClientMsg::UpdateSelf {
                node: node_of(id(1))
            }
        )
        .is_empty()
    );
    assert_eq!(w.reg.stats().key_changes, 1);
    // The old key is free once its agent moved on.
    w.connect(8, 2, agent(2));
    assert!(
        w.send(
            8,
            ClientMsg::UpdateSelf {
                node: Node {
                    key: a.key,
                    ..node_of(id(2))
                }
            }
        )
        .is_empty()
    );
}

#[test]
fn key_does_not_change_within_a_stream() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.send(
        1,
        ClientMsg::UpdateSelf {
            node: node_of(id(1)),
        },
    );
    let out = w.send(
        1,
        ClientMsg::UpdateSelf {
            node: node_of(id(1)),
        },
    );
    assert!(closed(&out, 1, CLOSE_POLICY), "{out:?}");
}

#[test]
fn sprayed_endpoints_are_cut_before_fan_out() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    let mut a = node_of(id(1));
    a.endpoints = vec!["198.51.100.9:4242".parse().unwrap(); 3000];
    a.endpoints.extend((1..=40).map(doc_addr));
    a.endpoints.push("224.0.0.251:5353".parse().unwrap());
    let out = w.send(1, ClientMsg::UpdateSelf { node: a });
    let Some(Output::Send {
        msg: ServerMsg::PeerUpdate(u),
        ..
    }) = out.first()
    else {
        panic!("{out:?}");
    };
    let eps = &u.node.as_ref().unwrap().endpoints;
    assert_eq!(eps.len(), MAX_ENDPOINTS);
    assert_eq!(
        eps[0],
        "198.51.100.9:4242".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(w.reg.stats().endpoints_dropped, 3041 - MAX_ENDPOINTS as u64);
}

fn doc_addr(i: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([203, 0, 113, i], 41641))
}

#[test]
fn one_user_has_a_tunnel_budget_across_streams() {
    let mut w = World::new();
    let all = |_: NodeId| true;
    let auth = || PeerAuth::Client {
        principal: "alice".into(),
        authorizer: Arc::new(all),
    };
    let dst = |i: usize| NodeId(uuid::Uuid::from_u128(1_000_000 + i as u128));
    w.connect(1, 101, auth());
    w.connect(2, 102, auth());
    w.connect(3, 103, auth());
    for (conn, base) in [(1, 0), (2, MAX_TUNNELS_PER_PEER)] {
        for i in 0..MAX_TUNNELS_PER_PEER {
            w.reg
                .handle_message(conn, ClientMsg::AddTunnel { id: dst(base + i) }, w.now);
        }
        while w.reg.poll_action().is_some() {}
    }
    assert_eq!(w.reg.stats().tunnels, MAX_TUNNELS_PER_PRINCIPAL);
    let out = w.send(3, ClientMsg::AddTunnel { id: dst(999_999) });
    assert!(
        error_to(&out, 3).is_some_and(|e| e.contains("per user")),
        "{out:?}"
    );
    assert_eq!(w.reg.stats().tunnel_limit, 1);
    // Another user is not affected.
    w.connect(4, 104, client("bob", &[dst(5)]));
    assert!(error_to(&w.send(4, ClientMsg::AddTunnel { id: dst(5) }), 4).is_none());
    // Closing a stream returns its share.
    w.reg.close(1, false, w.now);
    w.drain();
    assert!(error_to(&w.send(3, ClientMsg::AddTunnel { id: dst(999_999) }), 3).is_none());
}

#[test]
fn another_principal_cannot_take_over_an_id() {
    let mut w = World::new();
    w.connect(1, 2, client("alice", &[]));
    w.reg.connect(2, &hello(2), client("mallory", &[]), w.now);
    let out = w.drain();
    assert!(closed(&out, 2, CLOSE_POLICY), "{out:?}");
    assert!(!closed(&out, 1, CLOSE_REPLACED));
    assert!(w.reg.is_live(1));
    // Nor can a client take over a live agent's id.
    w.connect(3, 1, agent(1));
    w.reg
        .connect(4, &hello(1), client("alice", &[id(1)]), w.now);
    assert!(closed(&w.drain(), 4, CLOSE_POLICY));
    assert!(w.reg.is_live(3));
}
