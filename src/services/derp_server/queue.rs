//! A connection's outbound queues, filled by other connections' readers and drained by
//! its own writer.
//!
//! Packets go in a bounded queue that drops the *oldest* packet when full: fresher
//! packets matter more to the protocols inside (WireGuard keepalives, TCP
//! retransmissions), as in Go's server. Control frames (PeerGone) have their own small
//! queue so a packet flood cannot push them out; one Pong slot, as in Go, so a ping
//! flood gets one answer per write.

use crate::wire::derp::PeerGoneReason;
use crate::wire::key::NodePublic;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Control frames queued per connection before further ones are dropped.
const CONTROL_DEPTH: usize = 256;

/// A control frame waiting to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    /// PeerGone for this key with this reason.
    PeerGone(NodePublic, PeerGoneReason),
}

/// Result of queueing a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enqueued {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest queued packet.
    DroppedOldest,
    /// The connection is closing; the packet was dropped.
    Closed,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) packets: VecDeque<(NodePublic, Bytes)>,
    pub(super) control: VecDeque<Control>,
    pub(super) pong: Option<[u8; 8]>,
    pub(super) mesh: bool,
    closed: bool,
}

/// One connection as other tasks see it. Cheap to clone behind an `Arc`; the registry
/// stores these.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    /// The connection's key (its packets' source).
    pub(super) key: NodePublic,
    depth: usize,
    pending: Mutex<Pending>,
    /// Wakes the writer.
    pub(super) notify: Notify,
    /// Cancelled to close the connection (replaced, ClosePeer, stuck watcher).
    pub(super) close: CancellationToken,
}

impl ConnHandle {
    pub(super) fn new(key: NodePublic, depth: usize) -> Self {
        Self {
            key,
            depth: depth.max(1),
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            close: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a packet from `src`, dropping the oldest when full.
    pub(super) fn enqueue_packet(&self, src: NodePublic, packet: Bytes) -> Enqueued {
        let mut p = self.lock();
        if p.closed {
            return Enqueued::Closed;
        }
        let dropped = p.packets.len() >= self.depth && p.packets.pop_front().is_some();
        p.packets.push_back((src, packet));
        drop(p);
        self.notify.notify_one();
        if dropped {
            Enqueued::DroppedOldest
        } else {
            Enqueued::Queued
        }
    }

    /// Queues a control frame; `false` when the control queue is full or closed.
    pub(super) fn enqueue_control(&self, c: Control) -> bool {
        let mut p = self.lock();
        if p.closed || p.control.len() >= CONTROL_DEPTH {
            return false;
        }
        p.control.push_back(c);
        drop(p);
        self.notify.notify_one();
        true
    }

    /// Fills the Pong slot; `false` (ping ignored) when a Pong is already waiting.
    pub(super) fn set_pong(&self, data: [u8; 8]) -> bool {
        let mut p = self.lock();
        if p.pong.is_some() {
            return false;
        }
        p.pong = Some(data);
        drop(p);
        self.notify.notify_one();
        true
    }

    /// Tells the writer mesh updates wait in the registry.
    pub(super) fn wake_mesh(&self) {
        self.lock().mesh = true;
        self.notify.notify_one();
    }

    /// Takes what the writer should send now: all control frames, the pong, the mesh
    /// flag, and up to `max_packets` packets. Returns whether packets remain.
    pub(super) fn take(&self, max_packets: usize, out: &mut Pending) -> bool {
        let mut p = self.lock();
        out.control.extend(p.control.drain(..));
        out.pong = p.pong.take();
        out.mesh = std::mem::take(&mut p.mesh);
        let n = p.packets.len().min(max_packets);
        out.packets.extend(p.packets.drain(..n));
        !p.packets.is_empty()
    }

    /// Marks the queue closed and returns how many packets were still queued.
    pub(super) fn close_queue(&self) -> usize {
        let mut p = self.lock();
        p.closed = true;
        let n = p.packets.len();
        p.packets.clear();
        p.control.clear();
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
    fn full_queue_drops_the_oldest() {
        let h = ConnHandle::new(k(1), 3);
        for i in 0..5u8 {
            let want = if i < 3 {
                Enqueued::Queued
            } else {
                Enqueued::DroppedOldest
            };
            assert_eq!(h.enqueue_packet(k(2), Bytes::from(vec![i])), want);
        }
        let mut out = Pending::default();
        assert!(!h.take(10, &mut out));
        let got: Vec<u8> = out.packets.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn take_is_bounded_and_control_is_separate() {
        let h = ConnHandle::new(k(1), 100);
        for i in 0..10u8 {
            h.enqueue_packet(k(2), Bytes::from(vec![i]));
        }
        assert!(h.enqueue_control(Control::PeerGone(k(3), PeerGoneReason::NotHere)));
        assert!(h.set_pong([1; 8]));
        assert!(!h.set_pong([2; 8]), "one pong slot");
        let mut out = Pending::default();
        assert!(h.take(4, &mut out), "more packets remain");
        assert_eq!(out.packets.len(), 4);
        assert_eq!(out.control.len(), 1);
        assert_eq!(out.pong, Some([1; 8]));
        assert_eq!(h.close_queue(), 6);
        assert_eq!(h.enqueue_packet(k(2), Bytes::new()), Enqueued::Closed);
        assert!(!h.enqueue_control(Control::PeerGone(k(3), PeerGoneReason::NotHere)));
    }
}
