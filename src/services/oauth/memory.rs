//! [`OAuthStore`] in memory: one mutex over plain maps. For tests, and for `serve`
//! without a database (grants then last until the process stops).

use super::store::{GrantFilter, OAuthStore, Purged, Retention, StoreCounts, StoreError};
use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{
    AccessRecord, ClientRecord, ClientSource, CodeRecord, CodeState, GrantRecord, PendingRecord,
    RefreshLookup, Revocation, SessionRecord, TokenLookup,
};
use crate::proto::oauth::secret::Digest;
use crate::services::control::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<String, ClientRecord>,
    pending: HashMap<Digest, PendingRecord>,
    sessions: HashMap<Digest, SessionRecord>,
    /// Code, whether used, and the grant its use created.
    codes: HashMap<Digest, (CodeRecord, bool, Option<String>)>,
    grants: HashMap<String, GrantRecord>,
    access: HashMap<Digest, AccessRecord>,
    /// Every refresh token ever issued (current and retired) → its grant.
    refresh: HashMap<Digest, String>,
}

impl Inner {
    fn revoke(&mut self, id: &str, at: UnixTime, reason: &str) -> bool {
        match self.grants.get_mut(id) {
            Some(g) if g.revoked.is_none() => {
                g.revoked = Some(Revocation {
                    at,
                    reason: reason.to_string(),
                });
                true
            }
            _ => false,
        }
    }
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, Result<T, StoreError>> {
    Box::pin(std::future::ready(Ok(v)))
}

impl OAuthStore for MemoryStore {
    fn put_client<'a>(&'a self, c: &'a ClientRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().clients.insert(c.client_id.clone(), c.clone());
        ready(())
    }

    fn client<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ClientRecord>, StoreError>> {
        ready(self.lock().clients.get(id).cloned())
    }

    fn clients(&self) -> BoxFuture<'_, Result<Vec<ClientRecord>, StoreError>> {
        let mut v: Vec<_> = self.lock().clients.values().cloned().collect();
        v.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.client_id.cmp(&b.client_id))
        });
        ready(v)
    }

    fn registered_clients(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let n = self
            .lock()
            .clients
            .values()
            .filter(|c| c.source == ClientSource::Registered)
            .count();
        ready(n as u64)
    }

    fn delete_client<'a>(
        &'a self,
        id: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut g = self.lock();
        let existed = g.clients.remove(id).is_some();
        let ids: Vec<String> = g
            .grants
            .values()
            .filter(|x| x.client_id == id)
            .map(|x| x.id.clone())
            .collect();
        for gid in ids {
            g.revoke(&gid, now, "client deleted");
        }
        ready(existed)
    }

    fn put_pending<'a>(&'a self, p: &'a PendingRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().pending.insert(p.id, p.clone());
        ready(())
    }

    fn pending<'a>(
        &'a self,
        id: &'a Digest,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Option<PendingRecord>, StoreError>> {
        ready(
            self.lock()
                .pending
                .get(id)
                .filter(|p| now < p.expires_at)
                .cloned(),
        )
    }

    fn take_pending<'a>(
        &'a self,
        id: &'a Digest,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Option<PendingRecord>, StoreError>> {
        ready(
            self.lock()
                .pending
                .remove(id)
                .filter(|p| now < p.expires_at),
        )
    }

    fn put_session<'a>(&'a self, s: &'a SessionRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().sessions.insert(s.id, s.clone());
        ready(())
    }

    fn session<'a>(
        &'a self,
        id: &'a Digest,
        now: UnixTime,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        ready(
            self.lock()
                .sessions
                .get(id)
                .filter(|s| now < s.expires_at)
                .cloned(),
        )
    }

    fn delete_session<'a>(&'a self, id: &'a Digest) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().sessions.remove(id);
        ready(())
    }

    fn put_code<'a>(&'a self, c: &'a CodeRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().codes.insert(c.digest, (c.clone(), false, None));
        ready(())
    }

    fn use_code<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<CodeState, StoreError>> {
        let mut g = self.lock();
        let state = match g.codes.get_mut(digest) {
            None => CodeState::Unknown,
            Some((c, used, grant)) => {
                if *used {
                    CodeState::Used {
                        code: c.clone(),
                        grant: grant.clone(),
                    }
                } else {
                    *used = true;
                    CodeState::Fresh(c.clone())
                }
            }
        };
        ready(state)
    }

    fn create_grant<'a>(
        &'a self,
        grant: &'a GrantRecord,
        access: &'a AccessRecord,
        code: &'a Digest,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut g = self.lock();
        if let Some(r) = grant.refresh {
            g.refresh.insert(r, grant.id.clone());
        }
        g.grants.insert(grant.id.clone(), grant.clone());
        g.access.insert(access.digest, access.clone());
        if let Some(c) = g.codes.get_mut(code) {
            c.2 = Some(grant.id.clone());
        }
        ready(())
    }

    fn find_refresh<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<RefreshLookup>, StoreError>> {
        let g = self.lock();
        let found = g
            .refresh
            .get(digest)
            .and_then(|id| g.grants.get(id))
            .map(|grant| RefreshLookup {
                current: grant.refresh == Some(*digest),
                grant: grant.clone(),
            });
        ready(found)
    }

    fn rotate<'a>(
        &'a self,
        old: &'a Digest,
        grant: &'a GrantRecord,
        access: &'a AccessRecord,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut g = self.lock();
        let swapped = match g.grants.get_mut(&grant.id) {
            Some(cur) if cur.refresh == Some(*old) && cur.revoked.is_none() => {
                *cur = grant.clone();
                true
            }
            _ => false,
        };
        if swapped {
            if let Some(r) = grant.refresh {
                g.refresh.insert(r, grant.id.clone());
            }
            g.access.insert(access.digest, access.clone());
        }
        ready(swapped)
    }

    fn access<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<(AccessRecord, GrantRecord)>, StoreError>> {
        let g = self.lock();
        let found = g
            .access
            .get(digest)
            .and_then(|a| Some((a.clone(), g.grants.get(&a.grant_id)?.clone())));
        ready(found)
    }

    fn find_token<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<TokenLookup>, StoreError>> {
        let g = self.lock();
        let found = if let Some(a) = g.access.get(digest) {
            g.grants.get(&a.grant_id).cloned().map(TokenLookup::Access)
        } else {
            g.refresh
                .get(digest)
                .and_then(|id| g.grants.get(id))
                .cloned()
                .map(TokenLookup::Refresh)
        };
        ready(found)
    }

    fn grant<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<GrantRecord>, StoreError>> {
        ready(self.lock().grants.get(id).cloned())
    }

    fn revoke_grant<'a>(
        &'a self,
        id: &'a str,
        at: UnixTime,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.lock().revoke(id, at, reason))
    }

    fn grants<'a>(
        &'a self,
        filter: &'a GrantFilter,
    ) -> BoxFuture<'a, Result<Vec<GrantRecord>, StoreError>> {
        let mut v: Vec<_> = self
            .lock()
            .grants
            .values()
            .filter(|g| filter.matches(g))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        ready(v)
    }

    fn revoke_grants<'a>(
        &'a self,
        filter: &'a GrantFilter,
        at: UnixTime,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut g = self.lock();
        let ids: Vec<String> = g
            .grants
            .values()
            .filter(|x| filter.matches(x))
            .map(|x| x.id.clone())
            .collect();
        let n = ids.iter().filter(|id| g.revoke(id, at, reason)).count();
        ready(n as u64)
    }

    fn purge(&self, now: UnixTime, r: Retention) -> BoxFuture<'_, Result<Purged, StoreError>> {
        let mut g = self.lock();
        let mut p = Purged::default();
        let before = g.codes.len();
        g.codes
            .retain(|_, (c, _, _)| now < c.expires_at.plus(r.codes));
        p.codes = (before - g.codes.len()) as u64;
        let before = g.access.len();
        g.access.retain(|_, a| now < a.expires_at);
        p.access_tokens = (before - g.access.len()) as u64;
        let before = g.pending.len() + g.sessions.len();
        g.pending.retain(|_, x| now < x.expires_at);
        g.sessions.retain(|_, x| now < x.expires_at);
        p.browser = (before - g.pending.len() - g.sessions.len()) as u64;
        let dead: Vec<String> = g
            .grants
            .values()
            .filter(|x| {
                // Kept for a while after it stopped being usable, so admins and users
                // can see what ended it.
                let ended = x.revoked.as_ref().map_or(x.refresh_expires_at, |rv| rv.at);
                now >= ended.plus(r.grants)
            })
            .map(|x| x.id.clone())
            .collect();
        for id in &dead {
            g.grants.remove(id);
        }
        g.refresh.retain(|_, id| !dead.contains(id));
        g.access.retain(|_, a| !dead.contains(&a.grant_id));
        p.grants = dead.len() as u64;
        let used: std::collections::HashSet<String> =
            g.grants.values().map(|x| x.client_id.clone()).collect();
        let before = g.clients.len();
        g.clients.retain(|id, c| {
            c.source != ClientSource::Registered
                || used.contains(id)
                || now < c.created_at.plus(r.unused_clients)
        });
        p.clients = (before - g.clients.len()) as u64;
        ready(p)
    }

    fn counts(&self) -> BoxFuture<'_, Result<StoreCounts, StoreError>> {
        let g = self.lock();
        ready(StoreCounts {
            clients: g.clients.len() as u64,
            codes: g.codes.len() as u64,
            live_grants: g.grants.values().filter(|x| x.revoked.is_none()).count() as u64,
            access_tokens: g.access.len() as u64,
            sessions: g.sessions.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_contract() {
        super::super::store_tests::contract(&super::MemoryStore::new()).await;
    }
}
