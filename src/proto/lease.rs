//! Per-destination lease counts with idle expiry.
//!
//! Every `AgentConn` handle holds one lease on its destination. A destination with no
//! lease for the idle timeout is expired (its tunnel removed); "idle" is measured from the
//! last release, so a destination in constant use never expires and one used once lingers
//! for exactly the timeout. Sans-IO: time comes in as `now`.

use crate::wire::addr::NodeId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u64,
    /// When the count last dropped to zero (or the entry was created).
    idle_since: Instant,
    /// Leases ever taken, for diagnostics.
    total: u64,
}

/// Lease bookkeeping for every destination.
#[derive(Debug, Default)]
pub struct Leases {
    entries: HashMap<NodeId, Entry>,
}

/// Misuse of the lease table: a release without a matching acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease released for {0} with none held")]
pub struct UnbalancedRelease(pub NodeId);

impl Leases {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a lease. Returns `true` if the destination was not known before.
    pub fn acquire(&mut self, id: NodeId, now: Instant) -> bool {
        let mut new = false;
        let e = self.entries.entry(id).or_insert_with(|| {
            new = true;
            Entry {
                count: 0,
                idle_since: now,
                total: 0,
            }
        });
        e.count += 1;
        e.total += 1;
        new
    }

    /// Releases a lease.
    ///
    /// # Errors
    /// [`UnbalancedRelease`] if no lease was held (a bug in the caller; the table is
    /// left unchanged).
    pub fn release(&mut self, id: NodeId, now: Instant) -> Result<(), UnbalancedRelease> {
        match self.entries.get_mut(&id) {
            Some(e) if e.count > 0 => {
                e.count -= 1;
                if e.count == 0 {
                    e.idle_since = now;
                }
                Ok(())
            }
            _ => Err(UnbalancedRelease(id)),
        }
    }

    /// Leases currently held on `id`.
    pub fn count(&self, id: &NodeId) -> u64 {
        self.entries.get(id).map_or(0, |e| e.count)
    }

    /// Leases ever taken on `id`.
    pub fn total(&self, id: &NodeId) -> u64 {
        self.entries.get(id).map_or(0, |e| e.total)
    }

    /// Whether `id` is tracked.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.entries.contains_key(id)
    }

    /// Removes and returns every destination idle for at least `idle`.
    pub fn expire(&mut self, now: Instant, idle: Duration) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.count == 0 && now.saturating_duration_since(e.idle_since) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.entries.remove(id);
        }
        gone
    }

    /// Forgets `id` if it holds no lease. Returns whether it was removed.
    pub fn forget_idle(&mut self, id: &NodeId) -> bool {
        if self.entries.get(id).is_some_and(|e| e.count == 0) {
            self.entries.remove(id);
            return true;
        }
        false
    }

    /// When the next destination will be idle for `idle`, if any is idle now.
    pub fn next_expiry(&self, idle: Duration) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.count == 0)
            .map(|e| e.idle_since + idle)
            .min()
    }

    /// Number of destinations tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no destination is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn leases_count_and_expire_from_last_release() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let a = NodeId::random();
        let mut l = Leases::new();
        assert!(l.acquire(a, t0));
        assert!(!l.acquire(a, t0));
        assert_eq!(l.count(&a), 2);
        l.release(a, t0 + Duration::from_secs(10)).unwrap();
        assert!(
            l.expire(t0 + Duration::from_secs(500), idle).is_empty(),
            "one lease still held"
        );
        l.release(a, t0 + Duration::from_secs(100)).unwrap();
        assert_eq!(l.next_expiry(idle), Some(t0 + Duration::from_secs(160)));
        assert!(l.expire(t0 + Duration::from_secs(159), idle).is_empty());
        assert_eq!(l.expire(t0 + Duration::from_secs(160), idle), vec![a]);
        assert!(!l.contains(&a));
    }

    #[test]
    fn unbalanced_release_is_an_error_and_changes_nothing() {
        let t0 = Instant::now();
        let a = NodeId::random();
        let mut l = Leases::new();
        assert_eq!(l.release(a, t0), Err(UnbalancedRelease(a)));
        l.acquire(a, t0);
        l.release(a, t0).unwrap();
        assert_eq!(l.release(a, t0), Err(UnbalancedRelease(a)));
        assert_eq!(l.total(&a), 1);
    }
}
