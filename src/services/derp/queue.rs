//! A connection's outbound queues, filled by other connections' readers and drained by
//! its own writer.
//!
//! Packets go in a bounded queue that drops the *oldest* packet when full: fresher
//! packets matter more to the protocols inside (WireGuard keepalives, TCP
//! retransmissions), as in Go's server. Control frames (PeerGone) have their own small
//! queue so a packet flood cannot push them out; one Pong slot, as in Go, so a ping
//! flood gets one answer per write.
//!
//! Queued packets are owned copies (never slices of a reader's buffer, which would pin
//! the whole read chunk), and their bytes are charged to one [`Budget`] shared by every
//! connection: a packet that does not fit the budget is dropped rather than queued, and
//! bytes go back when the writer takes them or the connection closes.

use crate::wire::derp::PeerGoneReason;
use crate::wire::key::NodePublic;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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

/// Bytes of queued packets across all connections, against a limit.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes currently charged.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes; `false` (nothing charged) when they do not fit.
    pub(super) fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok()
    }

    /// Returns `n` bytes charged earlier.
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(n))
                });
        }
    }
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
    /// The global queue budget is spent; the packet was dropped.
    OverBudget,
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
    budget: Arc<Budget>,
    pending: Mutex<Pending>,
    /// Wakes the writer.
    pub(super) notify: Notify,
    /// Cancelled to close the connection (replaced, ClosePeer, stuck watcher).
    pub(super) close: CancellationToken,
}

impl ConnHandle {
    pub(super) fn new(key: NodePublic, depth: usize, budget: Arc<Budget>) -> Self {
        Self {
            key,
            depth: depth.max(1),
            budget,
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            close: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a copy of a packet from `src`, dropping the oldest when full, or the
    /// packet itself when the budget cannot take it.
    pub(super) fn enqueue_packet(&self, src: NodePublic, packet: &[u8]) -> Enqueued {
        let mut p = self.lock();
        if p.closed {
            return Enqueued::Closed;
        }
        let dropped = if p.packets.len() >= self.depth {
            match p.packets.pop_front() {
                Some((_, old)) => {
                    self.budget.release(old.len());
                    true
                }
                None => false,
            }
        } else {
            false
        };
        if !self.budget.try_charge(packet.len()) {
            drop(p);
            if dropped {
                self.notify.notify_one();
            }
            return Enqueued::OverBudget;
        }
        p.packets.push_back((src, Bytes::copy_from_slice(packet)));
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
    /// flag, and up to `max_packets` packets. Returns whether packets remain. The packets
    /// stay charged to the budget: the writer releases them with
    /// [`ConnHandle::release`] once written.
    pub(super) fn take(&self, max_packets: usize, out: &mut Pending) -> bool {
        let mut p = self.lock();
        out.control.extend(p.control.drain(..));
        out.pong = p.pong.take();
        out.mesh = std::mem::take(&mut p.mesh);
        let n = p.packets.len().min(max_packets);
        out.packets.extend(p.packets.drain(..n));
        !p.packets.is_empty()
    }

    /// Returns `n` bytes of taken packets to the budget.
    pub(super) fn release(&self, n: usize) {
        self.budget.release(n);
    }

    /// Marks the queue closed and returns how many packets were still queued.
    pub(super) fn close_queue(&self) -> usize {
        let mut p = self.lock();
        p.closed = true;
        let n = p.packets.len();
        let bytes: usize = p.packets.drain(..).map(|(_, b)| b.len()).sum();
        self.budget.release(bytes);
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
        let h = ConnHandle::new(k(1), 3, Arc::new(Budget::new(1 << 20)));
        for i in 0..5u8 {
            let want = if i < 3 {
                Enqueued::Queued
            } else {
                Enqueued::DroppedOldest
            };
            assert_eq!(h.enqueue_packet(k(2), &[i]), want);
        }
        let mut out = Pending::default();
        assert!(!h.take(10, &mut out));
        let got: Vec<u8> = out.packets.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn take_is_bounded_and_control_is_separate() {
        let h = ConnHandle::new(k(1), 100, Arc::new(Budget::new(1 << 20)));
        for i in 0..10u8 {
            h.enqueue_packet(k(2), &[i]);
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
        assert_eq!(h.enqueue_packet(k(2), &[]), Enqueued::Closed);
        assert!(!h.enqueue_control(Control::PeerGone(k(3), PeerGoneReason::NotHere)));
    }

    #[test]
    fn budget_is_shared_exact_and_given_back() {
        let budget = Arc::new(Budget::new(100));
        let a = ConnHandle::new(k(1), 10, Arc::clone(&budget));
        let b = ConnHandle::new(k(2), 10, Arc::clone(&budget));
        assert_eq!(a.enqueue_packet(k(3), &[0; 60]), Enqueued::Queued);
        assert_eq!(b.enqueue_packet(k(3), &[0; 50]), Enqueued::OverBudget);
        assert_eq!(b.enqueue_packet(k(3), &[0; 40]), Enqueued::Queued);
        assert_eq!(budget.used(), 100);
        let mut out = Pending::default();
        a.take(10, &mut out);
        assert_eq!(budget.used(), 100, "taken but not yet written");
        a.release(out.packets.iter().map(|(_, p)| p.len()).sum());
        assert_eq!(budget.used(), 40);
        assert_eq!(b.close_queue(), 1);
        assert_eq!(budget.used(), 0);
    }
}
