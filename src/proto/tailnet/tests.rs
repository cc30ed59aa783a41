//! Every stage and transition of the destinations machine, on a fake clock. Random
//! input sequences are in `crate::fuzzing::tailnet`.

#![allow(clippy::disallowed_methods)]

use super::*;
use crate::fuzzing::tailnet::node;

const IDLE: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_millis(200);
const LOST: Duration = Duration::from_secs(900);

fn machine(role: Role) -> Destinations {
    Destinations::new(DestinationsConfig {
        role,
        idle_timeout: IDLE,
        ready_grace: GRACE,
        lost_client_timeout: LOST,
    })
}

fn agent(n: u128) -> NodeId {
    NodeId(uuid::Uuid::from_u128(n))
}

fn key(n: u8) -> NodePublic {
    NodePublic::from_bytes([n; 32])
}

fn update(id: NodeId, kind: PeerKind, n: Option<Node>) -> PeerUpdate {
    PeerUpdate {
        id,
        kind,
        node: n,
        reason: None,
    }
}

fn actions(m: &mut Destinations) -> Vec<Action> {
    let out = std::iter::from_fn(|| m.poll_action()).collect();
    m.check_invariants();
    out
}

fn program(id: NodeId, k: NodePublic, replace: Option<NodePublic>) -> Action {
    Action::ProgramPeer {
        id,
        node: Box::new(node(id, k)),
        replace,
    }
}

fn resolved(waiter: WaiterId) -> Action {
    Action::Resolve {
        waiter,
        result: Ok(()),
    }
}

fn failed(waiter: WaiterId, f: Failure) -> Action {
    Action::Resolve {
        waiter,
        result: Err(f),
    }
}

fn waiter(a: Acquired) -> WaiterId {
    match a {
        Acquired::Wait(w) => w,
        Acquired::Ready => panic!("expected to wait"),
    }
}

/// Takes `a` from nothing to ready with key `k`; returns the first caller's waiter.
fn bring_up(m: &mut Destinations, a: NodeId, k: NodePublic, t: Instant) -> WaiterId {
    let w = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    assert_eq!(actions(m), vec![Action::AddTunnel(a)]);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, k))), t);
    assert_eq!(actions(m), vec![program(a, k, None)], "programmed at once");
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    assert!(actions(m).is_empty());
    m.handle_session(a, k, true);
    assert_eq!(actions(m), vec![resolved(w)]);
    w
}

#[test]
fn first_call_sets_up_and_later_calls_are_granted_at_once() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    assert_eq!(m.stage(&a), Some(Stage::Ready));
    assert_eq!(m.acquire(a, t + Duration::from_secs(1), t), Acquired::Ready);
    assert!(actions(&mut m).is_empty(), "a warm lease does no work");
    assert_eq!(m.leases(&a), 2);
    assert_eq!(
        m.poll_timeout(),
        None,
        "nothing to wait for while leases are held"
    );
}

#[test]
fn callers_waiting_together_are_resolved_together() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    let w1 = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    let w2 = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    assert_eq!(
        actions(&mut m),
        vec![Action::AddTunnel(a), Action::AddTunnel(a)]
    );
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    assert!(actions(&mut m).is_empty(), "ready before the node");
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    assert_eq!(actions(&mut m), vec![program(a, key(1), None)]);
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(10)),
        "no re-initiation due"
    );
    m.handle_session(a, key(1), true);
    assert_eq!(actions(&mut m), vec![resolved(w1), resolved(w2)]);
}

#[test]
fn an_acknowledged_handshake_without_a_session_is_begun_again_once() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    m.acquire(a, t + Duration::from_secs(30), t);
    actions(&mut m);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    assert_eq!(actions(&mut m), vec![program(a, key(1), None)]);
    assert_eq!(m.stage(&a), Some(Stage::Handshaking));
    assert_eq!(
        m.poll_timeout(),
        Some(t + Duration::from_secs(30)),
        "an agent that never acknowledges is left to WireGuard's own retries"
    );
    // The acknowledgement took 40 ms: the first handshake gets that long again plus the
    // grace before a new one replaces it.
    let ack = t + Duration::from_millis(40);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), ack);
    let due = ack + GRACE + Duration::from_millis(40);
    assert_eq!(m.poll_timeout(), Some(due));
    m.handle_timeout(due - Duration::from_millis(1));
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(due);
    assert_eq!(actions(&mut m), vec![Action::Reinitiate(key(1))]);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), due);
    m.handle_timeout(due + GRACE * 10);
    assert!(actions(&mut m).is_empty(), "once per node");
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(30)));
}

#[test]
fn a_handshake_answered_in_time_is_not_begun_again() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    let w = waiter(m.acquire(a, t + Duration::from_secs(30), t));
    actions(&mut m);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    actions(&mut m);
    m.handle_session(a, key(1), true);
    assert_eq!(actions(&mut m), vec![resolved(w)]);
    m.handle_timeout(t + GRACE * 10);
    assert!(actions(&mut m).is_empty());
}

#[test]
fn a_caller_past_its_deadline_is_failed_with_the_stage() {
    let t = Instant::now();
    let (a, b) = (agent(1), agent(2));
    let mut m = machine(Role::Client);
    let wa = waiter(m.acquire(a, t + Duration::from_secs(1), t));
    let wb = waiter(m.acquire(b, t + Duration::from_secs(2), t));
    actions(&mut m);
    m.handle_peer(update(b, PeerKind::Node, Some(node(b, key(2)))), t);
    m.handle_peer(update(b, PeerKind::ReadyForHandshake, None), t);
    actions(&mut m);
    assert_eq!(
        m.poll_timeout(),
        Some(t + GRACE),
        "b's handshake is begun again first"
    );
    m.handle_timeout(t + GRACE);
    assert_eq!(actions(&mut m), vec![Action::Reinitiate(key(2))]);
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(1)));
    m.handle_timeout(t + Duration::from_secs(1));
    assert_eq!(
        actions(&mut m),
        vec![failed(wa, Failure::TimedOut(Stage::AwaitingNode))]
    );
    m.handle_timeout(t + Duration::from_secs(2));
    assert_eq!(
        actions(&mut m),
        vec![failed(wb, Failure::TimedOut(Stage::Handshaking))]
    );
    // A deadline already past fails at once, naming where setup is.
    let w = waiter(m.acquire(b, t, t + Duration::from_secs(2)));
    assert_eq!(
        actions(&mut m),
        vec![
            Action::Initiate(key(2)),
            failed(w, Failure::TimedOut(Stage::Handshaking))
        ]
    );
}

#[test]
fn a_failed_handshake_stays_handshaking_and_the_next_caller_initiates() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    m.acquire(a, t + Duration::from_secs(60), t);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    actions(&mut m);
    m.handle_session(a, key(1), false);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.stage(&a), Some(Stage::Handshaking));
    m.handle_session(a, key(9), true);
    assert_eq!(
        m.stage(&a),
        Some(Stage::Handshaking),
        "a session for a key not programmed is ignored"
    );
    m.acquire(a, t + Duration::from_secs(60), t);
    assert_eq!(actions(&mut m), vec![Action::Initiate(key(1))]);
}

#[test]
fn an_agent_restarted_with_a_new_key_is_set_up_again() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(2)))), t);
    assert_eq!(
        actions(&mut m),
        vec![
            Action::ResetConnections(a),
            Action::Gone(a),
            program(a, key(2), Some(key(1)))
        ]
    );
    assert_eq!(m.stage(&a), Some(Stage::Handshaking));
    let w = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    assert_eq!(actions(&mut m), vec![Action::Initiate(key(2))]);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    assert!(actions(&mut m).is_empty());
    m.handle_session(a, key(1), true);
    assert!(actions(&mut m).is_empty(), "the old key's session is stale");
    m.handle_session(a, key(2), true);
    assert_eq!(actions(&mut m), vec![resolved(w)]);
}

#[test]
fn the_same_key_again_reprograms_paths_without_resetting() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    assert_eq!(actions(&mut m), vec![program(a, key(1), None)]);
    assert_eq!(m.stage(&a), Some(Stage::Ready), "sessions keep working");
}

#[test]
fn a_departed_agent_is_torn_down_and_set_up_again_when_it_returns() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.handle_peer(update(a, PeerKind::Disconnected, None), t);
    assert_eq!(
        actions(&mut m),
        vec![
            Action::Gone(a),
            Action::ResetConnections(a),
            Action::RemovePeer(key(1))
        ]
    );
    assert_eq!(m.stage(&a), Some(Stage::AwaitingNode));
    let w = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    assert_eq!(actions(&mut m), vec![Action::AddTunnel(a)]);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    m.handle_peer(update(a, PeerKind::ReadyForHandshake, None), t);
    assert_eq!(actions(&mut m), vec![program(a, key(1), None)]);
    m.handle_session(a, key(1), true);
    assert_eq!(actions(&mut m), vec![resolved(w)]);
}

#[test]
fn coordinator_away_marks_lost_and_keeps_sessions() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.handle_coordinator_down();
    assert!(m.summaries()[0].lost);
    assert_eq!(
        m.acquire(a, t, t),
        Acquired::Ready,
        "the session still works"
    );
    m.handle_coordinator_up();
    assert!(!m.summaries()[0].lost);
    m.handle_peer(update(a, PeerKind::Lost, None), t);
    assert!(m.summaries()[0].lost);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    assert!(!m.summaries()[0].lost, "a fresh node clears lost");
    assert!(
        actions(&mut m)
            .iter()
            .all(|a| matches!(a, Action::ProgramPeer { .. }))
    );
}

#[test]
fn a_refused_tunnel_fails_its_callers_and_is_asked_again_later() {
    let t = Instant::now();
    let (a, b) = (agent(1), agent(2));
    let mut m = machine(Role::Client);
    let wa = waiter(m.acquire(a, t + Duration::from_secs(10), t));
    let _wb = waiter(m.acquire(b, t + Duration::from_secs(10), t));
    actions(&mut m);
    m.handle_coordinator_closed(&format!("tunnel to {a} not allowed"));
    assert_eq!(
        actions(&mut m),
        vec![
            failed(wa, Failure::Refused(format!("tunnel to {a} not allowed"))),
            Action::RemoveTunnel(a)
        ]
    );
    assert_eq!(m.stage(&b), Some(Stage::AwaitingNode), "others untouched");
    // Late news about a refused destination changes nothing.
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    assert_eq!(m.stage(&a), Some(Stage::Refused));
    // The next caller asks again.
    m.acquire(a, t + Duration::from_secs(10), t);
    assert_eq!(actions(&mut m), vec![Action::AddTunnel(a)]);
    assert_eq!(m.stage(&a), Some(Stage::AwaitingNode));
    // Releasing the refused caller's lease leaves the new caller's.
    m.release(a, t).unwrap();
    assert_eq!(m.leases(&a), 1);
}

#[test]
fn a_refused_destination_nobody_holds_disappears() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    m.acquire(a, t + Duration::from_secs(10), t);
    m.handle_coordinator_closed(&format!("{a}"));
    actions(&mut m);
    m.release(a, t).unwrap();
    assert!(m.summaries().is_empty());
    m.handle_timeout(t + IDLE);
    assert!(actions(&mut m).is_empty(), "no second RemoveTunnel");
}

#[test]
fn idle_expiry_counts_from_the_last_release() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.take_lease(a, t);
    m.release(a, t + Duration::from_secs(10)).unwrap();
    m.handle_timeout(t + Duration::from_secs(500));
    assert!(actions(&mut m).is_empty(), "one lease still held");
    m.release(a, t + Duration::from_secs(100)).unwrap();
    assert_eq!(m.poll_timeout(), Some(t + Duration::from_secs(160)));
    m.handle_timeout(t + Duration::from_secs(159));
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(t + Duration::from_secs(160));
    assert_eq!(
        actions(&mut m),
        vec![
            Action::RemoveTunnel(a),
            Action::RemovePeer(key(1)),
            Action::Gone(a)
        ]
    );
    assert!(m.summaries().is_empty());
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_new_lease_just_before_expiry_keeps_the_destination() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.release(a, t).unwrap();
    let almost = t + IDLE - Duration::from_millis(1);
    assert_eq!(
        m.acquire(a, almost + Duration::from_secs(1), almost),
        Acquired::Ready
    );
    m.handle_timeout(t + IDLE);
    assert!(actions(&mut m).is_empty(), "held again: not idle");
    m.release(a, t + IDLE).unwrap();
    assert_eq!(m.poll_timeout(), Some(t + IDLE + IDLE));
}

#[test]
fn a_destination_expired_is_set_up_from_scratch() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    bring_up(&mut m, a, key(1), t);
    m.release(a, t).unwrap();
    m.handle_timeout(t + IDLE);
    actions(&mut m);
    let later = t + IDLE + Duration::from_secs(1);
    let w = waiter(m.acquire(a, later + Duration::from_secs(5), later));
    assert_eq!(actions(&mut m), vec![Action::AddTunnel(a)]);
    m.handle_timeout(later + Duration::from_secs(5));
    assert_eq!(
        actions(&mut m),
        vec![failed(w, Failure::TimedOut(Stage::AwaitingNode))]
    );
}

#[test]
fn unbalanced_release_is_an_error_and_changes_nothing() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    assert_eq!(m.release(a, t), Err(UnbalancedRelease(a)));
    m.take_lease(a, t);
    m.release(a, t).unwrap();
    assert_eq!(m.release(a, t), Err(UnbalancedRelease(a)));
    assert_eq!(m.summaries()[0].leases_total, 1);
}

#[test]
fn an_abandoned_waiter_is_never_resolved() {
    let t = Instant::now();
    let a = agent(1);
    let mut m = machine(Role::Client);
    let w = waiter(m.acquire(a, t + Duration::from_secs(5), t));
    actions(&mut m);
    m.abandon(w);
    m.release(a, t).unwrap();
    m.handle_timeout(t + Duration::from_secs(5));
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.poll_timeout(), Some(t + IDLE));
}

#[test]
fn close_fails_every_waiter_and_every_later_caller() {
    let t = Instant::now();
    let (a, b) = (agent(1), agent(2));
    let mut m = machine(Role::Client);
    let wa = waiter(m.acquire(a, t + Duration::from_secs(5), t));
    let wb = waiter(m.acquire(b, t + Duration::from_secs(5), t));
    actions(&mut m);
    m.close();
    let mut got = actions(&mut m);
    got.sort_by_key(|a| format!("{a:?}"));
    let mut want = vec![failed(wa, Failure::Closed), failed(wb, Failure::Closed)];
    want.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(got, want);
    let w = waiter(m.acquire(a, t + Duration::from_secs(5), t));
    assert_eq!(actions(&mut m), vec![failed(w, Failure::Closed)]);
}

#[test]
fn wake_asks_for_a_reconnect() {
    let mut m = machine(Role::Client);
    m.handle_wake();
    assert_eq!(actions(&mut m), vec![Action::Reconnect]);
}

#[test]
fn agents_program_every_client_and_replace_restarted_ones() {
    let t = Instant::now();
    let c = agent(7);
    let mut m = machine(Role::Agent);
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(1)))), t);
    assert_eq!(
        actions(&mut m),
        vec![Action::ProgramClient(Box::new(node(c, key(1))))]
    );
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(1)))), t);
    assert_eq!(
        actions(&mut m),
        vec![Action::ProgramClient(Box::new(node(c, key(1))))],
        "same key: paths refreshed, nothing reset"
    );
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(2)))), t);
    assert_eq!(
        actions(&mut m),
        vec![
            Action::ResetConnections(c),
            Action::RemovePeer(key(1)),
            Action::ProgramClient(Box::new(node(c, key(2))))
        ]
    );
    m.handle_peer(update(c, PeerKind::Lost, None), t);
    m.handle_peer(update(c, PeerKind::ReadyForHandshake, None), t);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.client_count(), 1);
    m.handle_peer(update(c, PeerKind::Disconnected, None), t);
    assert_eq!(
        actions(&mut m),
        vec![Action::ResetConnections(c), Action::RemovePeer(key(2))]
    );
    m.handle_peer(update(c, PeerKind::Disconnected, None), t);
    assert!(
        actions(&mut m).is_empty(),
        "an unknown client: nothing to do"
    );
    assert_eq!(m.client_count(), 0);
}

#[test]
fn agents_forget_lost_clients_once_their_tunnel_is_idle() {
    let t = Instant::now();
    let (c, d) = (agent(7), agent(8));
    let mut m = machine(Role::Agent);
    for (id, k) in [(c, key(1)), (d, key(2))] {
        m.handle_peer(
            update(id, PeerKind::Node, Some(node(id, key(k.as_bytes()[0])))),
            t,
        );
    }
    actions(&mut m);
    assert_eq!(
        m.poll_timeout(),
        None,
        "nothing to check while both are connected"
    );
    // c goes without a word; d stays.
    m.handle_peer(update(c, PeerKind::Lost, None), t);
    assert_eq!(m.poll_timeout(), Some(t + LOST));
    // A second `lost` does not move the clock.
    m.handle_peer(update(c, PeerKind::Lost, None), t + LOST / 2);
    m.handle_timeout(t + LOST / 2);
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(t + LOST);
    let check = Action::CheckClientIdle {
        id: c,
        key: key(1),
        idle_for: LOST,
    };
    assert_eq!(actions(&mut m), vec![check.clone()]);
    // Its tunnel is in use: kept, asked again a timeout later.
    m.handle_client_idle(c, key(1), false);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.client_count(), 2);
    assert_eq!(m.poll_timeout(), Some(t + 2 * LOST));
    m.handle_timeout(t + 2 * LOST);
    assert_eq!(actions(&mut m), vec![check]);
    // Idle now: forgotten, its peer removed; d is untouched.
    m.handle_client_idle(c, key(1), true);
    assert_eq!(
        actions(&mut m),
        vec![Action::ResetConnections(c), Action::RemovePeer(key(1))]
    );
    assert_eq!(m.client_count(), 1);
    assert_eq!(m.poll_timeout(), None);
    // A late or repeated answer changes nothing.
    m.handle_client_idle(c, key(1), true);
    m.handle_client_idle(d, key(2), true);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.client_count(), 1);
}

#[test]
fn a_lost_client_that_comes_back_is_kept() {
    let t = Instant::now();
    let c = agent(7);
    let mut m = machine(Role::Agent);
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(1)))), t);
    m.handle_peer(update(c, PeerKind::Lost, None), t);
    m.handle_timeout(t + LOST);
    actions(&mut m);
    // Introduced again (its stream is back) before the shell answered: the idle answer
    // for the old question is ignored, and nothing is due any more.
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(1)))), t + LOST);
    actions(&mut m);
    m.handle_client_idle(c, key(1), true);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.client_count(), 1);
    assert_eq!(m.poll_timeout(), None);
    // Back with a new key: an answer about the old key forgets nothing.
    m.handle_peer(update(c, PeerKind::Lost, None), t + LOST);
    m.handle_peer(update(c, PeerKind::Node, Some(node(c, key(2)))), t + LOST);
    m.handle_peer(update(c, PeerKind::Lost, None), t + LOST);
    actions(&mut m);
    m.handle_client_idle(c, key(1), true);
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.client_count(), 1);
}

#[test]
fn updates_for_unknown_destinations_are_ignored() {
    let t = Instant::now();
    let mut m = machine(Role::Client);
    let a = agent(1);
    m.handle_peer(update(a, PeerKind::Node, Some(node(a, key(1)))), t);
    m.handle_peer(update(a, PeerKind::Disconnected, None), t);
    m.handle_session(a, key(1), true);
    assert!(actions(&mut m).is_empty());
    assert!(m.summaries().is_empty());
}
