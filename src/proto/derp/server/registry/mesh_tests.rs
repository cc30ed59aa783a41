//! The forwarder table: newest wins, local beats forwarded, links take their
//! forwarders with them, PeerGone once a key is nowhere.

use super::*;

/// Connections and links are plain names.
type Reg = Registry<&'static str, &'static str>;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn k(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}

fn conn(key: u8, handle: &'static str) -> NewConn<&'static str> {
    NewConn {
        key: k(key),
        handle,
        endpoint: None,
        can_mesh: false,
        is_prober: false,
    }
}

fn reg() -> Reg {
    Registry::new(k(0xee))
}

fn gone_to(fx: &Effects<&'static str>) -> Vec<(&'static str, NodePublic)> {
    let mut v: Vec<_> = fx.peer_gone.iter().map(|(h, k, _)| (*h, *k)).collect();
    v.sort();
    v
}

#[test]
fn packets_for_a_forwarded_key_take_its_link() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a"));
    let l2 = r.add_link("relay2");
    assert_eq!(r.route(t, a, &k(2)), Route::NotHere { peer_gone: true });
    assert!(r.add_forwarder(l2, &k(2)));
    assert_eq!(r.route(t, a, &k(2)), Route::Forward("relay2"));
    assert_eq!((r.links(), r.forwarded_keys()), (1, 1));
    // Forwarded packets are never forwarded again.
    let (mesh, _, _) = r.register(NewConn {
        can_mesh: true,
        ..conn(9, "mesh")
    });
    assert_eq!(
        r.forward(mesh, &k(2)),
        Ok(Route::NotHere { peer_gone: false })
    );
    assert!(r.check_invariants());
}

#[test]
fn newest_forwarder_wins_and_the_previous_takes_over() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a"));
    let l2 = r.add_link("relay2");
    let l3 = r.add_link("relay3");
    r.add_forwarder(l2, &k(5));
    r.add_forwarder(l3, &k(5));
    assert_eq!(r.route(t, a, &k(5)), Route::Forward("relay3"));
    // Announced again on relay 2 (it logged in there again): relay 2 is newest.
    r.add_forwarder(l2, &k(5));
    assert_eq!(r.forwarder_link(&k(5)), Some(l2));
    let fx = r.remove_forwarder(l2, &k(5));
    assert!(fx.peer_gone.is_empty(), "still reachable through relay 3");
    assert_eq!(r.route(t, a, &k(5)), Route::Forward("relay3"));
    assert!(r.check_invariants());
    // The last one going tells the sender once.
    let fx = r.remove_forwarder(l3, &k(5));
    assert_eq!(gone_to(&fx), vec![("a", k(5))]);
    assert!(r.remove_forwarder(l3, &k(5)).peer_gone.is_empty());
    assert_eq!(r.route(t, a, &k(5)), Route::NotHere { peer_gone: true });
    assert_eq!(r.forwarded_keys(), 0);
    assert!(r.check_invariants());
}

#[test]
fn a_local_key_beats_a_forwarder() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a"));
    let l2 = r.add_link("relay2");
    r.add_forwarder(l2, &k(2));
    assert_eq!(r.route(t, a, &k(2)), Route::Forward("relay2"));
    let (b, _, _) = r.register(conn(2, "b"));
    assert_eq!(r.route(t, a, &k(2)), Route::Deliver("b"));
    // Leaving while still forwarded: packets follow the forwarder, nobody hears PeerGone.
    let fx = r.unregister(b);
    assert!(fx.peer_gone.is_empty());
    assert_eq!(r.route(t, a, &k(2)), Route::Forward("relay2"));
    assert!(r.check_invariants());
    // Then the forwarder goes too: now a hears it.
    let fx = r.remove_forwarder(l2, &k(2));
    assert_eq!(gone_to(&fx), vec![("a", k(2))]);
    // A forwarder dropped while the key is local tells nobody.
    let (b, _, _) = r.register(conn(2, "b"));
    r.route(t, a, &k(2));
    r.add_forwarder(l2, &k(2));
    assert!(r.remove_forwarder(l2, &k(2)).peer_gone.is_empty());
    assert_eq!(gone_to(&r.unregister(b)), vec![("a", k(2))]);
    assert!(r.check_invariants());
}

#[test]
fn removing_a_link_removes_all_its_forwarders() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a"));
    let l2 = r.add_link("relay2");
    let l3 = r.add_link("relay3");
    for key in 10..20 {
        r.add_forwarder(l2, &k(key));
    }
    r.add_forwarder(l3, &k(10));
    r.route(t, a, &k(11));
    r.route(t, a, &k(10));
    let fx = r.remove_link(l2);
    assert_eq!(
        gone_to(&fx),
        vec![("a", k(11))],
        "k10 still goes via relay 3"
    );
    assert_eq!((r.links(), r.forwarded_keys()), (1, 1));
    assert_eq!(r.route(t, a, &k(10)), Route::Forward("relay3"));
    // The removed link's late updates change nothing.
    assert!(!r.add_forwarder(l2, &k(12)));
    assert!(r.remove_forwarder(l2, &k(10)).peer_gone.is_empty());
    assert!(r.remove_link(l2).peer_gone.is_empty());
    assert_eq!(r.forwarder_link(&k(10)), Some(l3));
    assert!(r.check_invariants());
}

#[test]
fn a_sender_that_left_is_not_told() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a"));
    let l2 = r.add_link("relay2");
    r.add_forwarder(l2, &k(2));
    r.route(t, a, &k(2));
    r.unregister(a);
    assert!(r.check_invariants());
    assert!(r.remove_link(l2).peer_gone.is_empty());
    assert!(r.check_invariants());
}
