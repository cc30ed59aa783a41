//! `notifications/cancelled` for a stateless endpoint.
//!
//! Legacy (2025-11-25) clients cancel a call by POSTing `notifications/cancelled
//! {requestId}` as a separate request. With no sessions, rmcp has nowhere to deliver it, so
//! the endpoint does: each in-flight `tools/call` registers its cancellation token under
//! (caller, JSON-RPC id), and a cancellation from the same caller for that id fires it.
//! Scoping by caller means one user can never cancel another's call; two concurrent clients
//! of one user reusing an id could cancel each other's call, which clients avoid by using
//! unique ids. (2026-07-28 clients cancel by closing the response stream instead.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

/// In-flight calls by (user name, JSON-RPC id as JSON text).
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    // A std mutex: held only for a map operation, never across an await.
    calls: Mutex<HashMap<(String, String), (u64, CancellationToken)>>,
    /// Tells registrations of one key apart, so a finished call never removes a newer one.
    serial: AtomicU64,
}

/// Removes its registration when dropped (the call finished or was abandoned).
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<CancelRegistry>,
    key: (String, String),
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut calls = self.registry.lock();
        if calls.get(&self.key).is_some_and(|(n, _)| *n == self.serial) {
            calls.remove(&self.key);
        }
    }
}

impl CancelRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), (u64, CancellationToken)>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call; `token` is what cancellation fires.
    pub(crate) fn register(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        token: CancellationToken,
    ) -> Registration {
        let key = (user.to_string(), id.to_string());
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key.clone(), (serial, token));
        Registration {
            registry: self.clone(),
            key,
            serial,
        }
    }

    /// Cancels `user`'s call `id`, if in flight. Returns whether one was.
    pub(crate) fn cancel(&self, user: &str, id: &str) -> bool {
        let token = self.lock().remove(&(user.to_string(), id.to_string()));
        token.map(|(_, t)| t.cancel()).is_some()
    }

    /// Calls in flight.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_scoped_to_the_caller_and_cleans_up() {
        let r = Arc::new(CancelRegistry::default());
        let t = CancellationToken::new();
        let reg = r.register("alice", "7", t.clone());
        assert!(!r.cancel("bob", "7"), "another user cannot cancel it");
        assert!(!t.is_cancelled());
        assert!(r.cancel("alice", "7"));
        assert!(t.is_cancelled());
        assert!(!r.cancel("alice", "7"), "only once");
        drop(reg);
        assert_eq!(r.len(), 0);
        let reg = r.register("alice", "8", CancellationToken::new());
        assert_eq!(r.len(), 1);
        drop(reg);
        assert_eq!(r.len(), 0, "finished calls are removed");
    }
}
