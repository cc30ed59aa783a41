//! The Tailnet's destinations machine driven by arbitrary input sequences, against a
//! model of what the shell holds: leases, waiting callers, tunnels asked of the
//! coordinator, peers in the device.
//!
//! Checked after every input: the machine's own invariants; every waiter resolved
//! exactly once, and never after its deadline has been handled; `poll_timeout` never in
//! the past after `handle_timeout`. At the end, once every caller is gone and time has
//! passed the idle timeout: no destination, tunnel or peer is left, and every lease was
//! released exactly once.

use crate::proto::tailnet::{
    Acquired, Action, Destinations, DestinationsConfig, Failure, Role, Stage, WaiterId,
};
use crate::wire::addr::NodeId;
use crate::wire::coord::{Node, PeerKind, PeerUpdate};
use crate::wire::key::NodePublic;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const IDLE: Duration = Duration::from_secs(60);
const READY_GRACE: Duration = Duration::from_millis(200);
const LOST_CLIENT: Duration = Duration::from_secs(90);

fn id(n: u8) -> NodeId {
    NodeId(uuid::Uuid::from_u128(0x1000 + u128::from(n % 3)))
}

/// One of four keys of destination `d` (an agent restarting gets a new one).
fn key(d: u8, n: u8) -> NodePublic {
    NodePublic::from_bytes([(d % 3) * 4 + n % 4 + 1; 32])
}

/// A node with only what the machine looks at.
pub(crate) fn node(i: NodeId, k: NodePublic) -> Node {
    Node {
        id: i,
        key: k,
        preferred_derp: 1,
        addresses: vec![],
        allowed_ips: vec![],
        endpoints: vec![],
        as_of: 0,
    }
}

/// What the shell would hold.
struct Model {
    m: Destinations,
    now: Instant,
    /// Leases held by handles (not by waiting callers).
    held: Vec<NodeId>,
    /// Waiting callers: their destination and deadline.
    waiting: BTreeMap<WaiterId, (NodeId, Instant)>,
    tunnels: BTreeSet<NodeId>,
    peers: BTreeSet<NodePublic>,
    /// The key each destination's last `ProgramPeer` programmed.
    programmed: BTreeMap<NodeId, NodePublic>,
    taken: u64,
    released: u64,
    /// Lost clients the machine asked about, and whether every answer is now "idle".
    checks: u64,
    all_idle: bool,
}

impl Model {
    fn drain(&mut self) {
        while let Some(a) = self.m.poll_action() {
            match a {
                Action::AddTunnel(i) => {
                    self.tunnels.insert(i);
                }
                Action::RemoveTunnel(i) => {
                    self.tunnels.remove(&i);
                }
                Action::ProgramPeer { id, node, replace } => {
                    if let Some(k) = replace {
                        self.peers.remove(&k);
                    }
                    self.peers.insert(node.key);
                    self.programmed.insert(id, node.key);
                }
                Action::ProgramClient(node) => {
                    self.peers.insert(node.key);
                }
                Action::RemovePeer(k) => {
                    self.peers.remove(&k);
                }
                Action::Resolve { waiter, result } => {
                    let (dest, _) = self
                        .waiting
                        .remove(&waiter)
                        .expect("a waiter resolved twice, or one never registered");
                    match result {
                        // The caller's handle keeps the lease.
                        Ok(()) => {
                            assert_eq!(self.m.stage(&dest), Some(Stage::Ready));
                            self.held.push(dest);
                        }
                        // The caller's guard gives it back.
                        Err(_) => self.release(dest),
                    }
                }
                // The shell's answer, in use and idle in turn (always idle at the end).
                Action::CheckClientIdle { id, key, .. } => {
                    self.checks += 1;
                    let idle = self.all_idle || self.checks.is_multiple_of(2);
                    self.m.handle_client_idle(id, key, idle);
                }
                Action::Initiate(_)
                | Action::Reinitiate(_)
                | Action::ResetConnections(_)
                | Action::Gone(_)
                | Action::Reconnect => {}
            }
        }
        self.m.check_invariants();
        for s in self.m.summaries() {
            let waiting = self.waiting.values().filter(|(d, _)| *d == s.id).count();
            assert_eq!(
                s.waiters, waiting,
                "machine and callers disagree on waiters"
            );
            let held = self.held.iter().filter(|d| **d == s.id).count() + waiting;
            assert_eq!(
                s.leases, held as u64,
                "machine and handles disagree on leases"
            );
        }
    }

    fn release(&mut self, dest: NodeId) {
        self.m
            .release(dest, self.now)
            .expect("a lease the model holds is released");
        self.released += 1;
    }

    fn timeout(&mut self) {
        self.m.handle_timeout(self.now);
        self.drain();
        assert!(
            self.m.poll_timeout().is_none_or(|t| t > self.now),
            "poll_timeout in the past after handle_timeout"
        );
        assert!(
            self.waiting.values().all(|(_, d)| *d > self.now),
            "a waiter outlived its deadline"
        );
    }
}

/// An arbitrary origin for synthetic time.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Runs one input sequence.
pub fn destinations(data: &[u8]) {
    let role = if data.first().is_some_and(|b| b & 0x80 != 0) {
        Role::Agent
    } else {
        Role::Client
    };
    let t0 = origin();
    let mut s = Model {
        m: Destinations::new(DestinationsConfig {
            role,
            idle_timeout: IDLE,
            ready_grace: READY_GRACE,
            lost_client_timeout: LOST_CLIENT,
        }),
        now: t0,
        held: Vec::new(),
        waiting: BTreeMap::new(),
        tunnels: BTreeSet::new(),
        peers: BTreeSet::new(),
        programmed: BTreeMap::new(),
        taken: 0,
        released: 0,
        checks: 0,
        all_idle: false,
    };
    for op in data.chunks(2).skip(1) {
        let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
        let dest = id(b);
        match a % 15 {
            0 | 1 if role == Role::Client => {
                let deadline = s.now + Duration::from_millis(u64::from(b) * 50);
                s.taken += 1;
                match s.m.acquire(dest, deadline, s.now) {
                    Acquired::Ready => s.held.push(dest),
                    Acquired::Wait(w) => {
                        assert!(s.waiting.insert(w, (dest, deadline)).is_none());
                    }
                }
            }
            2 if !s.held.is_empty() => {
                let d = s.held[usize::from(b) % s.held.len()];
                s.m.take_lease(d, s.now);
                s.taken += 1;
                s.held.push(d);
            }
            3 if !s.held.is_empty() => {
                let d = s.held.swap_remove(usize::from(b) % s.held.len());
                s.release(d);
            }
            4 => {
                // The caller gave up: its guard abandons the wait and releases.
                if let Some((&w, &(d, _))) = s.waiting.iter().nth(usize::from(b) % 4) {
                    s.waiting.remove(&w);
                    s.m.abandon(w);
                    s.release(d);
                }
            }
            5 | 6 => s.m.handle_peer(
                PeerUpdate {
                    id: dest,
                    kind: PeerKind::Node,
                    node: Some(node(dest, key(b, b >> 2))),
                    reason: None,
                },
                s.now,
            ),
            7 | 8 => {
                let kind = match a % 15 {
                    7 => PeerKind::ReadyForHandshake,
                    _ if b & 1 == 0 => PeerKind::Lost,
                    _ => PeerKind::Disconnected,
                };
                s.m.handle_peer(
                    PeerUpdate {
                        id: dest,
                        kind,
                        node: None,
                        reason: None,
                    },
                    s.now,
                );
            }
            9 => {
                let k = match s.programmed.get(&dest) {
                    Some(k) if b & 4 == 0 => *k,
                    _ => key(b, b >> 3),
                };
                s.m.handle_session(dest, k, b & 2 == 0);
            }
            10 => s.m.handle_coordinator_up(),
            11 => s.m.handle_coordinator_down(),
            12 => {
                s.m.handle_coordinator_closed(&format!("tunnel to {dest} not allowed"))
            }
            13 => s.m.handle_wake(),
            _ => {
                s.now += Duration::from_millis(u64::from(b) * 250);
                s.timeout();
                continue;
            }
        }
        s.drain();
    }
    // Everyone leaves: the machine closes, handles drop, time passes.
    s.m.close();
    s.drain();
    assert!(s.waiting.is_empty(), "close left a caller waiting");
    for d in std::mem::take(&mut s.held) {
        s.release(d);
    }
    assert_eq!(s.taken, s.released, "every lease released exactly once");
    assert!(s.m.release(id(0), s.now).is_err());
    s.now += IDLE;
    s.timeout();
    if role == Role::Client {
        assert!(
            s.m.summaries().is_empty(),
            "a destination outlived its idle timeout"
        );
        assert!(
            s.tunnels.is_empty(),
            "a tunnel left open at the coordinator"
        );
        assert!(s.peers.is_empty(), "a peer left in the device");
    } else {
        // Every client goes away without a word and its tunnel stays idle: within two
        // lost-client timeouts (lost, then asked) none is left programmed.
        for b in 0..=u8::MAX {
            s.m.handle_peer(
                PeerUpdate {
                    id: id(b),
                    kind: PeerKind::Lost,
                    node: None,
                    reason: None,
                },
                s.now,
            );
        }
        s.all_idle = true;
        s.now += LOST_CLIENT;
        s.timeout();
        assert_eq!(s.m.client_count(), 0, "a lost, idle client was kept");
        assert!(
            s.peers.is_empty(),
            "a lost client's peer left in the device"
        );
    }
    let closed = s.m.acquire(id(0), s.now + IDLE, s.now);
    let Acquired::Wait(w) = closed else {
        panic!("a closed machine granted a lease");
    };
    assert_eq!(
        s.m.poll_action(),
        Some(Action::Resolve {
            waiter: w,
            result: Err(Failure::Closed)
        })
    );
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    /// Property test: random input sequences keep every invariant.
    #[test]
    fn random_sequences_keep_the_invariants() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x007a_11e7);
        for _ in 0..3000 {
            let len = rng.random_range(0..400);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            super::destinations(&data);
        }
    }

    #[test]
    fn fuzz_entry_point_runs() {
        super::destinations(&[]);
        super::destinations(&[0x80, 5, 1]);
    }
}
