//! A mesh link's outbound queue: packets other relays' clients sent to keys homed on
//! the link's peer relay, waiting to go out as ForwardPacket.
//!
//! Same rules as a connection's queue: bounded, the oldest packet dropped when full,
//! bytes charged to the server's shared budget.

use super::super::queue::{Budget, Enqueued};
use crate::wire::key::NodePublic;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// One packet to forward: source, destination, payload.
pub(super) type Forward = (NodePublic, NodePublic, Bytes);

#[derive(Debug, Default)]
struct State {
    packets: VecDeque<Forward>,
    closed: bool,
}

/// What the registry stores for a logged-in mesh link; conn tasks queue into it.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    depth: usize,
    budget: Arc<Budget>,
    state: Mutex<State>,
    /// Wakes the link's writer.
    pub(super) notify: Notify,
}

impl LinkHandle {
    pub(super) fn new(depth: usize, budget: Arc<Budget>) -> Self {
        Self {
            depth: depth.max(1),
            budget,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a copy of `packet` from `src` to `dst`.
    pub(in crate::services::derp) fn enqueue(
        &self,
        src: NodePublic,
        dst: NodePublic,
        packet: &[u8],
    ) -> Enqueued {
        let mut s = self.lock();
        if s.closed {
            return Enqueued::Closed;
        }
        let mut dropped = false;
        if s.packets.len() >= self.depth
            && let Some((_, _, old)) = s.packets.pop_front()
        {
            self.budget.release(old.len());
            dropped = true;
        }
        if !self.budget.try_charge(packet.len()) {
            return Enqueued::OverBudget;
        }
        s.packets
            .push_back((src, dst, Bytes::copy_from_slice(packet)));
        drop(s);
        self.notify.notify_one();
        if dropped {
            Enqueued::DroppedOldest
        } else {
            Enqueued::Queued
        }
    }

    /// Moves up to `max` packets into `out` and gives their bytes back to the budget
    /// (they are about to be copied into a write batch). Returns whether more wait.
    pub(super) fn take(&self, max: usize, out: &mut Vec<Forward>) -> bool {
        let mut s = self.lock();
        let n = max.min(s.packets.len());
        out.extend(s.packets.drain(..n));
        let more = !s.packets.is_empty();
        drop(s);
        self.budget
            .release(out.iter().map(|(_, _, p)| p.len()).sum());
        more
    }

    /// Refuses further packets and drops the queued ones; returns how many.
    pub(super) fn close(&self) -> usize {
        let mut s = self.lock();
        s.closed = true;
        let n = s.packets.len();
        let bytes = s.packets.drain(..).map(|(_, _, p)| p.len()).sum();
        drop(s);
        self.budget.release(bytes);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> NodePublic {
        NodePublic::from_bytes([b; 32])
    }

    #[test]
    fn bounded_oldest_first_and_budgeted() {
        let budget = Arc::new(Budget::new(100));
        let h = LinkHandle::new(2, Arc::clone(&budget));
        assert_eq!(h.enqueue(k(1), k(2), &[1; 10]), Enqueued::Queued);
        assert_eq!(h.enqueue(k(1), k(2), &[2; 10]), Enqueued::Queued);
        assert_eq!(h.enqueue(k(1), k(2), &[3; 10]), Enqueued::DroppedOldest);
        assert_eq!(budget.used(), 20);
        let mut out = Vec::new();
        assert!(h.take(1, &mut out));
        assert_eq!(&out[0].2[..], &[2; 10]);
        assert_eq!(budget.used(), 10);
        assert_eq!(h.enqueue(k(1), k(2), &[4; 200]), Enqueued::OverBudget);
        assert_eq!(h.enqueue(k(1), k(2), &[5; 10]), Enqueued::Queued);
        assert_eq!(h.close(), 2);
        assert_eq!(budget.used(), 0);
        assert_eq!(h.enqueue(k(1), k(2), &[6]), Enqueued::Closed);
    }
}
