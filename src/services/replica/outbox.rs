//! The changes to this replica's own streams waiting to be written to its rows.
//!
//! State, not a log: later changes to the same peer or tunnel replace earlier ones, so a
//! database outage of any length costs memory bounded by the streams held, and the writer
//! catches up with one batch. A batch that fails goes back under whatever arrived since.

use crate::proto::coord::server::{Change, PeerRecord};
use crate::services::coord::ReplicaSink;
use crate::wire::addr::NodeId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Ready-for-handshake hints kept at most; they are advisory, and a peer that misses one
/// handshakes on its own.
const MAX_HINTS: usize = 1024;

/// What to write for one peer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PeerOp {
    /// Upsert the row. `fresh`: a new stream, so the binding time is now; otherwise the
    /// row keeps its binding time, or (re-created after it was lost) loses to any other.
    Put {
        record: Box<PeerRecord>,
        fresh: bool,
    },
    /// The stream ended: delete the row (`graceful`) or mark it lost; its tunnels go.
    Gone { graceful: bool },
}

/// One batch to write.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) peers: BTreeMap<NodeId, PeerOp>,
    /// `(src, dst)` → opened (`true`) or removed.
    pub(super) tunnels: BTreeMap<(NodeId, NodeId), bool>,
    pub(super) hints: VecDeque<(NodeId, NodeId)>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.tunnels.is_empty() && self.hints.is_empty()
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Peer(record) => {
                let id = record.id;
                // A stream registering is a new binding; its node arriving later is not.
                let fresh_now = record.node.is_none();
                let fresh = match self.peers.get(&id) {
                    Some(PeerOp::Put { fresh, .. }) => *fresh || fresh_now,
                    Some(PeerOp::Gone { .. }) | None => fresh_now,
                };
                self.peers.insert(
                    id,
                    PeerOp::Put {
                        record: Box::new(record),
                        fresh,
                    },
                );
            }
            Change::PeerGone { id, graceful } => {
                self.peers.insert(id, PeerOp::Gone { graceful });
                // Its tunnels go with the row; an open still queued must not outlive it.
                self.tunnels.retain(|(src, _), _| *src != id);
            }
            Change::Tunnel { src, dst, open } => {
                self.tunnels.insert((src, dst), open);
            }
            Change::ReadyForHandshake { src, dst } => {
                if self.hints.len() < MAX_HINTS {
                    self.hints.push_back((src, dst));
                }
            }
        }
    }

    /// Puts `older` (a batch that failed to write) back under `self`: whatever `self`
    /// says about a peer or tunnel is newer and wins.
    fn restore_under(&mut self, older: Batch) {
        for (id, op) in older.peers {
            match self.peers.get_mut(&id) {
                None => {
                    self.peers.insert(id, op);
                }
                Some(PeerOp::Put { fresh, .. }) => {
                    if let PeerOp::Put { fresh: true, .. } = op {
                        *fresh = true;
                    }
                }
                Some(PeerOp::Gone { .. }) => {}
            }
        }
        for (k, open) in older.tunnels {
            let src_gone = matches!(self.peers.get(&k.0), Some(PeerOp::Gone { .. }));
            if !src_gone {
                self.tunnels.entry(k).or_insert(open);
            }
        }
    }
}

/// The pending changes and the writer's wake-up.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pending: Mutex<Batch>,
    pub(super) wake: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything pending, leaving nothing.
    pub(super) fn take(&self) -> Batch {
        std::mem::take(&mut *self.lock())
    }

    /// A batch that failed goes back, under what arrived since.
    pub(super) fn restore(&self, batch: Batch) {
        self.lock().restore_under(batch);
    }

    /// Peers and tunnels waiting.
    pub(super) fn len(&self) -> usize {
        let b = self.lock();
        b.peers.len() + b.tunnels.len()
    }
}

impl ReplicaSink for Outbox {
    fn publish(&self, change: Change) {
        self.lock().apply(change);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::coord::server::RemoteRole;

    fn id(n: u8) -> NodeId {
        NodeId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn rec(n: u8, with_node: bool) -> PeerRecord {
        let node = with_node.then(|| crate::wire::coord::Node {
            id: id(n),
            key: crate::wire::key::NodePrivate::generate().public(),
            preferred_derp: 1,
            addresses: vec![],
            allowed_ips: vec![],
            endpoints: vec![],
            as_of: 0,
        });
        PeerRecord {
            id: id(n),
            name: format!("n{n}"),
            role: RemoteRole::Agent,
            instance: "i".into(),
            node,
        }
    }

    #[test]
    fn a_registration_stays_fresh_through_its_node_update() {
        let o = Outbox::default();
        o.publish(Change::Peer(rec(1, false)));
        o.publish(Change::Peer(rec(1, true)));
        let b = o.take();
        assert!(
            matches!(b.peers.get(&id(1)), Some(PeerOp::Put { fresh: true, record }) if record.node.is_some())
        );
        // A node update alone is not a new binding.
        o.publish(Change::Peer(rec(1, true)));
        assert!(matches!(
            o.take().peers.get(&id(1)),
            Some(PeerOp::Put { fresh: false, .. })
        ));
    }

    #[test]
    fn a_gone_peer_takes_its_queued_tunnels_with_it() {
        let o = Outbox::default();
        o.publish(Change::Peer(rec(1, false)));
        o.publish(Change::Tunnel {
            src: id(1),
            dst: id(2),
            open: true,
        });
        o.publish(Change::Tunnel {
            src: id(3),
            dst: id(2),
            open: true,
        });
        o.publish(Change::PeerGone {
            id: id(1),
            graceful: false,
        });
        let b = o.take();
        assert_eq!(b.peers.get(&id(1)), Some(&PeerOp::Gone { graceful: false }));
        assert_eq!(b.tunnels.len(), 1);
        assert_eq!(b.tunnels.get(&(id(3), id(2))), Some(&true));
    }

    #[test]
    fn a_failed_batch_goes_back_under_newer_changes() {
        let o = Outbox::default();
        o.publish(Change::Peer(rec(1, false)));
        o.publish(Change::Tunnel {
            src: id(1),
            dst: id(2),
            open: true,
        });
        o.publish(Change::Tunnel {
            src: id(4),
            dst: id(2),
            open: true,
        });
        let failed = o.take();
        // Meanwhile peer 1 left and tunnel 4 → 2 closed.
        o.publish(Change::PeerGone {
            id: id(1),
            graceful: true,
        });
        o.publish(Change::Tunnel {
            src: id(4),
            dst: id(2),
            open: false,
        });
        o.restore(failed);
        let b = o.take();
        assert_eq!(b.peers.get(&id(1)), Some(&PeerOp::Gone { graceful: true }));
        assert_eq!(
            b.tunnels.get(&(id(1), id(2))),
            None,
            "gone source keeps no tunnel"
        );
        assert_eq!(
            b.tunnels.get(&(id(4), id(2))),
            Some(&false),
            "the newer close wins"
        );
        assert!(o.take().is_empty());
    }

    #[test]
    fn hints_are_bounded() {
        let o = Outbox::default();
        for _ in 0..(MAX_HINTS + 10) {
            o.publish(Change::ReadyForHandshake {
                src: id(1),
                dst: id(2),
            });
        }
        assert_eq!(o.take().hints.len(), MAX_HINTS);
    }
}
