use super::*;
use std::time::Duration;

/// Handles are plain names in these tests.
type Reg = Registry<&'static str>;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn k(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}

fn conn(key: u8, handle: &'static str, can_mesh: bool) -> NewConn<&'static str> {
    NewConn {
        key: k(key),
        handle,
        endpoint: None,
        can_mesh,
        is_prober: false,
    }
}

fn reg() -> Reg {
    Registry::new(k(0xee))
}

#[test]
fn routes_by_key() {
    let mut r = reg();
    let t = origin();
    let (a, fx, replaced) = r.register(conn(1, "a", false));
    assert!(fx.close.is_empty() && !replaced);
    let (b, _, _) = r.register(conn(2, "b", false));
    assert_eq!(r.route(t, a, &k(2)), Route::Deliver("b"));
    assert_eq!(r.route(t, b, &k(1)), Route::Deliver("a"));
    assert_eq!(
        r.route(t, a, &k(1)),
        Route::Deliver("a"),
        "sending to yourself works"
    );
    assert_eq!(r.len(), 2);
    assert!(r.check_invariants());
}

#[test]
fn second_login_replaces_the_first() {
    let mut r = reg();
    let t = origin();
    let (old, _, _) = r.register(conn(1, "old", false));
    let (sender, _, _) = r.register(conn(2, "sender", false));
    assert_eq!(r.route(t, sender, &k(1)), Route::Deliver("old"));
    let (new, fx, replaced) = r.register(conn(1, "new", false));
    assert!(replaced);
    assert_eq!(fx.close, vec!["old"]);
    assert_eq!(r.route(t, sender, &k(1)), Route::Deliver("new"));
    // The old connection's late frames and its unregister change nothing.
    assert_eq!(r.route(t, old, &k(2)), Route::SenderGone);
    let fx = r.unregister(old);
    assert!(fx.peer_gone.is_empty() && fx.close.is_empty());
    assert!(r.is_connected(&k(1)));
    assert_eq!(r.conn_of(&k(1)), Some(new));
    assert!(r.check_invariants());
}

#[test]
fn not_here_is_rate_limited_per_sender() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a", false));
    let (b, _, _) = r.register(conn(2, "b", false));
    let gone = |r: &mut Reg, id, at| r.route(at, id, &k(9)) == Route::NotHere { peer_gone: true };
    assert!((0..3).all(|_| gone(&mut r, a, t)));
    assert!(!gone(&mut r, a, t), "burst of 3 used up");
    assert!(gone(&mut r, b, t), "other senders have their own budget");
    assert!(!gone(&mut r, a, t + Duration::from_millis(500)));
    assert!(gone(&mut r, a, t + Duration::from_millis(1100)));
}

#[test]
fn peer_gone_goes_to_everyone_who_exchanged_packets() {
    let mut r = reg();
    let t = origin();
    let (a, _, _) = r.register(conn(1, "a", false));
    let (b, _, _) = r.register(conn(2, "b", false));
    let (c, _, _) = r.register(conn(3, "c", false));
    let (_d, _, _) = r.register(conn(4, "d", false));
    // a sends to b; c receives from b.
    r.route(t, a, &k(2));
    r.route(t, b, &k(3));
    r.route(t, a, &k(2));
    let fx = r.unregister(b);
    let mut got: Vec<_> = fx
        .peer_gone
        .iter()
        .map(|(h, key, why)| (*h, *key, *why))
        .collect();
    got.sort_by_key(|(h, _, _)| *h);
    let d = PeerGoneReason::Disconnected;
    assert_eq!(got, vec![("a", k(2), d), ("c", k(2), d)]);
    assert!(r.check_invariants());
    // Told once: b coming back and leaving again, with no new traffic, tells nobody.
    let (b2, _, _) = r.register(conn(2, "b2", false));
    assert!(r.unregister(b2).peer_gone.is_empty());
    // A connection that left is not told about others.
    r.route(t, a, &k(3));
    r.unregister(a);
    assert!(r.unregister(c).peer_gone.is_empty());
    assert!(r.check_invariants());
}

#[test]
fn mesh_frames_need_the_mesh_key() {
    let mut r = reg();
    let (plain, _, _) = r.register(conn(1, "plain", false));
    let (mesh, _, _) = r.register(conn(2, "mesh", true));
    assert_eq!(r.watch_conns(plain), Err(NotPermitted));
    assert_eq!(r.close_peer(plain, &k(2)), Err(NotPermitted));
    assert_eq!(r.forward(plain, &k(2)), Err(NotPermitted));
    assert_eq!(r.close_peer(mesh, &k(1)), Ok(Some("plain")));
    assert_eq!(r.close_peer(mesh, &k(7)), Ok(None));
    assert_eq!(r.forward(mesh, &k(1)), Ok(Route::Deliver("plain")));
    assert_eq!(
        r.forward(mesh, &k(7)),
        Ok(Route::NotHere { peer_gone: false })
    );
    assert_eq!(r.watchers(), 0);
}

#[test]
fn watchers_get_a_flood_then_changes() {
    let mut r = reg();
    for i in 1..=5 {
        r.register(conn(i, "peer", false));
    }
    let (w, _, _) = r.register(conn(0x40, "watcher", true));
    assert_eq!(r.watch_conns(w), Ok(Some("watcher")));
    let flood = r.take_mesh_updates(w);
    assert_eq!(flood.len(), 6, "five peers and the watcher itself");
    assert!(flood.iter().all(|c| c.present));
    let me = flood.iter().find(|c| c.key == k(0x40)).unwrap();
    assert!(me.flags.contains(PeerPresentFlags::MESH_PEER));
    assert!(r.take_mesh_updates(w).is_empty());
    // A new connection wakes the watcher; a departure is queued as gone.
    let (n, fx, _) = r.register(conn(9, "new", false));
    assert_eq!(fx.wake, vec!["watcher"]);
    let fx = r.unregister(n);
    assert!(fx.wake.is_empty(), "already woken, not drained yet");
    let changes = r.take_mesh_updates(w);
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.key, c.present))
            .collect::<Vec<_>>(),
        vec![(k(9), true), (k(9), false)]
    );
    // The server watching itself gets nothing.
    let (own, _, _) = r.register(conn(0xee, "self", true));
    assert_eq!(r.watch_conns(own), Ok(None));
    assert!(r.check_invariants());
}

#[test]
fn stuck_watchers_are_closed() {
    let mut r = reg();
    let (w, _, _) = r.register(conn(1, "watcher", true));
    r.watch_conns(w).unwrap();
    let mut closed = 0;
    for i in 0..(MAX_PENDING_MESH + 10) {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        b[31] = 1;
        let (id, fx, _) = r.register(NewConn {
            key: NodePublic::from_bytes(b),
            handle: "x",
            endpoint: None,
            can_mesh: false,
            is_prober: false,
        });
        closed += fx.close.iter().filter(|h| **h == "watcher").count();
        let fx = r.unregister(id);
        closed += fx.close.iter().filter(|h| **h == "watcher").count();
    }
    assert_eq!(closed, 1, "closed exactly once when it fell behind");
}

#[test]
fn home_clients_are_counted() {
    let mut r = reg();
    let (a, _, _) = r.register(conn(1, "a", false));
    r.note_preferred(a, true);
    r.note_preferred(a, true);
    assert_eq!(r.home_clients(), 1);
    let (b, _, _) = r.register(conn(2, "b", false));
    r.note_preferred(b, true);
    r.note_preferred(b, false);
    assert_eq!(r.home_clients(), 1);
    r.unregister(a);
    assert_eq!(r.home_clients(), 0);
    assert!(r.check_invariants());
}
