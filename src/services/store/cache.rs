//! The authentication and workspace cache in front of the database.
//!
//! Every MCP request authenticates its token and resolves a workspace; with this cache
//! both are a hash lookup after the first time. Correctness rests on one rule: **every
//! write clears the whole cache** (writes are rare: an admin's command), and so does a
//! change of the database's control-plane version made by another process. A lookup
//! that raced with a clear is not inserted: each load records the cache's epoch before
//! reading the database and inserts only if the epoch is unchanged, so a stale answer
//! read just before a revocation cannot outlive it.
//!
//! Token expiry is checked on every hit against the wall clock, so an expiring token
//! stops working on time without any write. Unknown tokens are remembered briefly
//! ([`NEGATIVE_TTL`]) so a client retrying a bad token does not reach the database each
//! time; a token created by another process is seen within that time.

use crate::services::control::{Principal, Workspace};
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long an unknown token is remembered as unknown.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Entries per map before it is cleared (a flood of distinct bad tokens must not grow
/// memory without bound).
const MAX_ENTRIES: usize = 65_536;

/// A cached answer for a token digest.
#[derive(Debug, Clone)]
pub(crate) enum TokenEntry {
    /// A stored token.
    Known {
        /// Its row id (for last-used bookkeeping).
        id: Uuid,
        /// Whom it stands for; `None` once revoked.
        principal: Option<Principal>,
        /// When it expires (Unix ms).
        expires_ms: Option<i64>,
    },
    /// No such token, as of `at`.
    Unknown {
        /// When the database said so.
        at: Instant,
    },
}

/// A workspace lookup key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum WsKey {
    /// `owner/name`.
    Named(String, String),
    /// By id.
    Id(Uuid),
    /// By one of its agents.
    Agent(NodeId),
}

#[derive(Debug)]
struct Map<K, V>(Mutex<HashMap<K, V>>);

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, k: &K) -> Option<V> {
        self.lock().get(k).cloned()
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

/// The cache. See the module docs.
#[derive(Debug)]
pub(crate) struct Cache {
    epoch: AtomicU64,
    tokens: Map<[u8; 32], TokenEntry>,
    workspaces: Map<WsKey, Option<Workspace>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            tokens: Map::new(),
            workspaces: Map::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

impl Cache {
    /// The current epoch; take it before reading the database for an insert.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Forgets everything.
    pub(crate) fn invalidate(&self) {
        // Bump first: a load finishing between the bump and the clears sees the new epoch
        // and does not insert.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.tokens.clear();
        self.workspaces.clear();
    }

    fn insert<K: Eq + Hash, V: Clone>(&self, map: &Map<K, V>, epoch: u64, k: K, v: V) {
        let mut m = map.lock();
        // Checked under the map's lock: `invalidate` bumps the epoch before taking it.
        if self.epoch() != epoch {
            return;
        }
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k, v);
    }

    /// A token's cached answer; an expired negative entry is a miss.
    pub(crate) fn token(&self, digest: &[u8; 32], now: Instant) -> Option<TokenEntry> {
        let hit = match self.tokens.get(digest) {
            Some(TokenEntry::Unknown { at }) if now.duration_since(at) >= NEGATIVE_TTL => None,
            other => other,
        };
        self.count(hit.is_some());
        hit
    }

    /// Remembers a token's answer loaded under `epoch`.
    pub(crate) fn put_token(&self, epoch: u64, digest: [u8; 32], entry: TokenEntry) {
        self.insert(&self.tokens, epoch, digest, entry);
    }

    /// A workspace's cached answer (`Some(None)`: known not to exist).
    pub(crate) fn workspace(&self, key: &WsKey) -> Option<Option<Workspace>> {
        let hit = self.workspaces.get(key);
        self.count(hit.is_some());
        hit
    }

    /// Remembers a workspace answer loaded under `epoch`, under `key` and, when it
    /// exists, under its id, name and agents too.
    pub(crate) fn put_workspace(&self, epoch: u64, key: WsKey, ws: Option<Workspace>) {
        if let Some(w) = &ws {
            let mut keys = vec![
                WsKey::Named(w.owner.clone(), w.name.clone()),
                WsKey::Id(w.id),
            ];
            keys.extend(w.agents.iter().map(|a| WsKey::Agent(a.id)));
            for k in keys.into_iter().filter(|k| *k != key) {
                self.insert(&self.workspaces, epoch, k, ws.clone());
            }
        }
        self.insert(&self.workspaces, epoch, key, ws);
    }

    fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Lookups answered from the cache, and those that went to the database.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::clock;
    use crate::services::control::User;

    fn user() -> Principal {
        Principal::User(User {
            name: "alice".into(),
            admin: false,
        })
    }

    #[test]
    fn a_load_that_raced_a_write_is_not_kept() {
        let c = Cache::default();
        let epoch = c.epoch();
        c.invalidate();
        c.put_token(
            epoch,
            [1; 32],
            TokenEntry::Known {
                id: Uuid::nil(),
                principal: Some(user()),
                expires_ms: None,
            },
        );
        assert!(c.token(&[1; 32], clock::now()).is_none());
        let epoch = c.epoch();
        c.put_token(epoch, [1; 32], TokenEntry::Unknown { at: clock::now() });
        assert!(c.token(&[1; 32], clock::now()).is_some());
    }

    #[test]
    fn unknown_tokens_are_forgotten_after_the_ttl() {
        let c = Cache::default();
        let t0 = clock::now();
        c.put_token(c.epoch(), [2; 32], TokenEntry::Unknown { at: t0 });
        assert!(c.token(&[2; 32], t0 + NEGATIVE_TTL / 2).is_some());
        assert!(c.token(&[2; 32], t0 + NEGATIVE_TTL).is_none());
    }

    #[test]
    fn a_workspace_is_found_by_every_key_and_cleared_by_a_write() {
        let c = Cache::default();
        let agent = NodeId::random();
        let ws = Workspace {
            id: Uuid::new_v4(),
            owner: "alice".into(),
            name: "dev".into(),
            shared_with: vec![],
            agents: vec![crate::services::control::Agent {
                id: agent,
                name: "main".into(),
            }],
        };
        c.put_workspace(c.epoch(), WsKey::Agent(agent), Some(ws.clone()));
        for k in [
            WsKey::Named("alice".into(), "dev".into()),
            WsKey::Id(ws.id),
            WsKey::Agent(agent),
        ] {
            assert_eq!(c.workspace(&k), Some(Some(ws.clone())), "{k:?}");
        }
        c.invalidate();
        assert_eq!(c.workspace(&WsKey::Id(ws.id)), None);
    }
}
