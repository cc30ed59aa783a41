//! Large file reads in flight per tenant, across all of the tenant's agents.
//!
//! A destination answering large has at most [`super::pool::LARGE_READS`] file reads in
//! flight, but that bound is per agent: a user with ten workspaces answering large would
//! have twenty bulk flows bursting into the shared tunnel, waking tasks on the run queues
//! every tenant shares. A [`TenantReads`] caps the same reads across all of one user's
//! destinations. A read takes its destination's place first and then its tenant's, so a
//! read waiting for its tenant holds only its own destination's place, never one of the
//! tenant's that another of its destinations could use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Large file reads one tenant has in flight across all its destinations (two
/// destinations' worth of [`super::pool::LARGE_READS`]).
pub const TENANT_LARGE_READS: usize = 4;

/// One tenant's places for large file reads. Attach it to the tenant's clients with
/// [`super::client::AgentClient::with_tenant`].
#[derive(Debug)]
pub struct TenantReads {
    permits: tokio::sync::Semaphore,
    waits: Arc<AtomicU64>,
}

impl TenantReads {
    /// Places for `n` large reads at once, counting waits in `waits`.
    pub fn new(n: usize, waits: Arc<AtomicU64>) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(n.max(1)),
            waits,
        }
    }

    /// One place, waiting (and counting the wait) if all are taken.
    pub(super) async fn enter(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        take_counted(&self.permits, &self.waits).await
    }
}

/// A permit of `permits`, counting in `waits` when it has to be waited for. `None` only
/// if the semaphore was closed (these never are).
pub(super) async fn take_counted<'a>(
    permits: &'a tokio::sync::Semaphore,
    waits: &AtomicU64,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    if let Ok(p) = permits.try_acquire() {
        return Some(p);
    }
    waits.fetch_add(1, Ordering::Relaxed);
    permits.acquire().await.ok()
}

#[derive(Debug, Default)]
struct Map {
    tenants: HashMap<String, Weak<TenantReads>>,
    /// Entries at which the map is next swept of tenants with no client left.
    sweep_at: usize,
}

/// Every tenant's [`TenantReads`], made on first use and forgotten once no client holds
/// them.
#[derive(Debug, Default)]
pub struct TenantShares {
    map: Mutex<Map>,
    waits: Arc<AtomicU64>,
}

impl TenantShares {
    /// `tenant`'s share (the same one while any client holds it).
    pub fn get(&self, tenant: &str) -> Arc<TenantReads> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = m.tenants.get(tenant).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(TenantReads::new(TENANT_LARGE_READS, self.waits.clone()));
        m.tenants.insert(tenant.to_owned(), Arc::downgrade(&t));
        if m.tenants.len() >= m.sweep_at {
            m.tenants.retain(|_, w| w.strong_count() > 0);
            m.sweep_at = (m.tenants.len() * 2).max(64);
        }
        t
    }

    /// File reads that waited for a place in their tenant's share.
    pub fn queued(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Tenants remembered (some may have no client left until the next sweep).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tenants
            .len()
    }

    /// Whether no tenant is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_share_per_tenant_while_held_and_forgotten_after() {
        let s = TenantShares::default();
        let a = s.get("alice");
        assert!(Arc::ptr_eq(&a, &s.get("alice")));
        assert!(!Arc::ptr_eq(&a, &s.get("bob")));
        drop(a);
        // Shares nobody holds are swept as the map grows: it never holds more than
        // twice the live ones past the first 64.
        let held: Vec<_> = (0..10).map(|i| s.get(&format!("held{i}"))).collect();
        for i in 0..1000 {
            drop(s.get(&format!("gone{i}")));
        }
        assert!(s.len() <= 128, "{} tenants remembered", s.len());
        for (i, h) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(h, &s.get(&format!("held{i}"))));
        }
    }

    #[tokio::test]
    async fn a_share_counts_the_reads_that_waited() {
        let s = TenantShares::default();
        let t = s.get("bob");
        let held: Vec<_> =
            futures_util::future::join_all((0..TENANT_LARGE_READS).map(|_| t.enter())).await;
        assert_eq!(s.queued(), 0);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.enter().await.is_some() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(s.queued(), 1);
    }
}
