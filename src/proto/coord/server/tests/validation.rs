//! What the registry refuses: tunnels it must not open, addresses a node does not own,
//! malformed, oversized or repeated messages.

use super::*;
#[test]
fn agents_may_not_open_tunnels() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, agent(2));
    w.connect(3, 3, client("alice", &[id(1)]));
    w.send(3, ClientMsg::AddTunnel { id: id(1) });
    let out = w.send(1, ClientMsg::AddTunnel { id: id(2) });
    assert!(closed(&out, 1, CLOSE_POLICY), "{out:?}");
    assert!(out.iter().any(update(3, id(1), PeerKind::Lost)));
    assert_eq!(w.reg.stats().violations, 1);
    assert!(w.reg.is_live(2) && w.reg.is_live(3));
}

#[test]
fn agent_must_use_the_id_its_token_binds() {
    let mut w = World::new();
    w.reg.connect(1, &hello(9), agent(1), w.now);
    let out = w.drain();
    assert_eq!(out.len(), 1);
    assert!(closed(&out, 1, CLOSE_POLICY));
    assert!(!w.reg.is_live(1));
}

#[test]
fn nodes_may_claim_only_their_own_address() {
    for auth in [agent(1), client("alice", &[]), PeerAuth::Service] {
        let mut w = World::new();
        w.connect(1, 1, auth.clone());
        w.connect(2, 2, PeerAuth::Service);
        w.send(2, ClientMsg::AddTunnel { id: id(1) });
        let foreign: crate::wire::addr::IpCidr = id(2).tailnet_prefix().parse().unwrap();
        let mut n = node_of(id(1));
        n.allowed_ips.push(foreign);
        let out = w.send(1, ClientMsg::UpdateSelf { node: n });
        assert!(closed(&out, 1, CLOSE_POLICY), "{auth:?}: {out:?}");
        assert!(
            !out.iter().any(update(2, id(1), PeerKind::Node)),
            "nothing leaked"
        );

        w.connect(3, 1, auth.clone());
        let mut n = node_of(id(1));
        n.addresses = vec!["fd7a:115c:a1e0::/48".parse().unwrap()];
        assert!(closed(
            &w.send(3, ClientMsg::UpdateSelf { node: n }),
            3,
            CLOSE_POLICY
        ));

        w.connect(4, 1, auth.clone());
        let n = node_of(id(2));
        let out = w.send(4, ClientMsg::UpdateSelf { node: n });
        assert!(
            closed(&out, 4, CLOSE_POLICY),
            "node id must match the stream"
        );
    }
}

#[test]
fn clients_open_tunnels_only_to_authorized_agents() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, agent(2));
    w.connect(3, 3, client("alice", &[id(1)]));
    w.connect(4, 4, client("bob", &[id(2)]));
    w.send(4, ClientMsg::AddTunnel { id: id(2) });
    let out = w.send(3, ClientMsg::AddTunnel { id: id(2) });
    assert!(closed(&out, 3, CLOSE_POLICY), "{out:?}");
    assert_eq!(out.len(), 1, "no one else is disturbed");
    assert_eq!(w.reg.tunnels().collect::<Vec<_>>(), vec![(id(4), id(2))]);
    // The service may open tunnels anywhere.
    w.connect(5, 5, PeerAuth::Service);
    w.send(5, ClientMsg::AddTunnel { id: id(1) });
    w.send(5, ClientMsg::AddTunnel { id: id(2) });
    assert_eq!(w.reg.stats().tunnels, 3);
}

#[test]
fn self_tunnel_is_refused_without_closing() {
    let mut w = World::new();
    w.connect(1, 1, PeerAuth::Service);
    let out = w.send(1, ClientMsg::AddTunnel { id: id(1) });
    assert!(error_to(&out, 1).is_some());
    assert!(w.reg.is_live(1));
}

#[test]
fn unsupported_version_gets_an_error_and_a_close() {
    let mut w = World::new();
    let h = Hello {
        version: 99,
        ..hello(1)
    };
    w.reg.connect(1, &h, agent(1), w.now);
    let out = w.drain();
    assert!(error_to(&out, 1).unwrap().contains("version 99"));
    assert!(closed(&out, 1, CLOSE_PROTOCOL));
    assert!(!w.reg.is_live(1));
}

#[test]
fn bad_messages_are_answered_then_closed() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.connect(2, 2, client("alice", &[id(1)]));
    w.send(2, ClientMsg::AddTunnel { id: id(1) });
    let bad = |w: &mut World| {
        w.reg.handle_text(1, "{not json", w.now);
        let out = w.drain();
        assert!(error_to(&out, 1).is_some(), "{out:?}");
    };
    for _ in 0..5 {
        bad(&mut w);
    }
    // A good message resets the count.
    let good = r#"{"type":"remove_tunnel","id":"00000000-0000-0000-0000-000000000000"}"#;
    w.reg.handle_text(1, good, w.now);
    for _ in 1..MAX_CONSECUTIVE_BAD {
        bad(&mut w);
    }
    w.reg
        .handle_text(1, r#"{"type":"hello","version":1,"id":"x"}"#, w.now);
    assert!(error_to(&w.drain(), 1).is_some());
    w.reg.handle_text(1, r#"{"type":"nonsense"}"#, w.now);
    let out = w.drain();
    assert!(closed(&out, 1, CLOSE_PROTOCOL), "{out:?}");
    assert!(out.iter().any(update(2, id(1), PeerKind::Lost)));
    assert_eq!(
        w.reg.stats().bad_messages,
        u64::from(MAX_CONSECUTIVE_BAD) + 6
    );
}

#[test]
fn oversized_message_closes_at_once() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    w.reg
        .handle_text(1, &"x".repeat(coord::MAX_MESSAGE_BYTES + 1), w.now);
    assert!(closed(&w.drain(), 1, CLOSE_TOO_BIG));
}

#[test]
fn second_hello_is_a_bad_message() {
    let mut w = World::new();
    w.connect(1, 1, agent(1));
    let out = w.send(1, ClientMsg::Hello(hello(1)));
    assert!(error_to(&out, 1).unwrap().contains("hello"));
    assert!(w.reg.is_live(1));
}

#[test]
fn long_names_are_truncated() {
    let mut w = World::new();
    let h = Hello {
        name: "n".repeat(10_000),
        ..hello(1)
    };
    w.reg.connect(1, &h, agent(1), w.now);
    w.drain();
    assert_eq!(w.reg.peers()[0].name.len(), MAX_NAME_LEN);
}
