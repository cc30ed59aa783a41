//! The key → connection map and the rules around it.
//!
//! - One connection per key: a newer login with the same key replaces the older
//!   connection, which the shell closes ([`Effects::close`]). (Go keeps duplicates and
//!   routes to the last writer; one node key must hold one connection per region, so a
//!   duplicate is a stale connection and closing it is the useful answer.)
//! - Routing: SendPacket goes to the destination key's connection, or comes back as
//!   [`Route::NotHere`] with PeerGone(NotHere) rate-limited to 1/s, burst 3, per sender.
//! - PeerGone(Disconnected): when a key leaves, every connection that exchanged packets
//!   with it (sent to it, or received from it — Go's rule) hears about it once.
//! - Mesh: WatchConns, ClosePeer and ForwardPacket need the mesh key. Watchers get a
//!   PeerPresent for every connected key, then a stream of present/gone changes, queued
//!   here (bounded) until the shell drains them.
//! - Forwarders: keys connected to other relays of the mesh,
//!   each reachable through an outbound mesh link `F`. A local key always wins; among
//!   forwarders the newest wins, and the previous one takes over when it goes.
//!   PeerGone(Disconnected) goes out when a key is neither local nor forwarded any more.

use super::token_bucket::TokenBucket;
use crate::wire::derp::{PeerGoneReason, PeerPresentFlags};
use crate::wire::key::NodePublic;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;
use thiserror::Error;

/// Identifies one connection for its whole life; never reused.
pub type ConnId = u64;

/// PeerGone(NotHere) budget per sender: rate per second and burst, as Go's server.
const PEER_GONE_PER_SEC: f64 = 1.0;
const PEER_GONE_BURST: u32 = 3;

/// Mesh updates a watcher may have pending beyond one per connected key before it is
/// considered stuck and closed.
pub const MAX_PENDING_MESH: usize = 1 << 16;

/// A mesh-only request from a connection without the mesh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("frame requires the mesh key")]
pub struct NotPermitted;

/// A newly logged-in connection.
#[derive(Debug, Clone)]
pub struct NewConn<H> {
    /// Its proven key.
    pub key: NodePublic,
    /// The shell's handle to it.
    pub handle: H,
    /// Its remote address, reported to mesh watchers.
    pub endpoint: Option<SocketAddr>,
    /// Whether it presented the mesh key.
    pub can_mesh: bool,
    /// Whether it said it is a prober.
    pub is_prober: bool,
}

/// A presence change queued for a mesh watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerChange {
    /// The key that connected or left.
    pub key: NodePublic,
    /// Connected (PeerPresent) or gone (PeerGone, Disconnected).
    pub present: bool,
    /// Its remote address, for present changes.
    pub endpoint: Option<SocketAddr>,
    /// Its flags, for present changes.
    pub flags: PeerPresentFlags,
}

/// What the shell must do after a registry change.
#[derive(Debug)]
pub struct Effects<H> {
    /// Connections to close (replaced, or mesh watchers that fell too far behind).
    pub close: Vec<H>,
    /// Watchers with new mesh updates to drain ([`Registry::take_mesh_updates`]).
    pub wake: Vec<H>,
    /// PeerGone frames to queue: (recipient, gone key, reason).
    pub peer_gone: Vec<(H, NodePublic, PeerGoneReason)>,
}

impl<H> Default for Effects<H> {
    fn default() -> Self {
        Self {
            close: Vec::new(),
            wake: Vec::new(),
            peer_gone: Vec::new(),
        }
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<H, F = ()> {
    /// Queue it on this connection.
    Deliver(H),
    /// The key is connected to another relay of the mesh: send a ForwardPacket on this
    /// mesh link.
    Forward(F),
    /// Nobody has that key; drop it. When `peer_gone` is set, tell the sender with
    /// PeerGone(NotHere) (the rate limit allowed it).
    NotHere {
        /// Whether to send PeerGone(NotHere) to the sender.
        peer_gone: bool,
    },
    /// The sender itself is no longer registered (it was replaced); drop silently.
    SenderGone,
}

#[derive(Debug)]
struct Conn<H> {
    key: NodePublic,
    handle: H,
    endpoint: Option<SocketAddr>,
    flags: PeerPresentFlags,
    can_mesh: bool,
    preferred: bool,
    peer_gone_limit: TokenBucket,
    /// Keys whose departure this connection is told about.
    watching: HashSet<NodePublic>,
    /// Pending mesh updates; `Some` once the connection sent WatchConns.
    mesh: Option<Vec<PeerChange>>,
    /// The watcher fell too far behind and is being closed; queue nothing more.
    mesh_stuck: bool,
}

/// Every logged-in connection, by id and by key, and the keys forwarded to other
/// relays. `H` is the shell's handle to a connection, `F` its handle to an outbound mesh
/// link. The shell keeps it behind a mutex and never awaits while holding it.
#[derive(Debug)]
pub struct Registry<H, F = ()> {
    /// The server's own key: a mesh watcher with this key is ourselves and gets nothing.
    server_key: NodePublic,
    conns: HashMap<ConnId, Conn<H>>,
    by_key: HashMap<NodePublic, ConnId>,
    /// Key → connections to tell when that key leaves.
    gone_watchers: HashMap<NodePublic, HashSet<ConnId>>,
    watchers: HashSet<ConnId>,
    next_id: ConnId,
    home: usize,
    /// Outbound mesh links, by id.
    links: HashMap<LinkId, mesh::Link<F>>,
    /// Key → links that reach it, oldest first; the last one is used.
    forwarders: HashMap<NodePublic, Vec<LinkId>>,
    next_link: LinkId,
}

impl<H: Clone, F: Clone> Registry<H, F> {
    /// An empty registry for the server with key `server_key`.
    pub fn new(server_key: NodePublic) -> Self {
        Self {
            server_key,
            conns: HashMap::new(),
            by_key: HashMap::new(),
            gone_watchers: HashMap::new(),
            watchers: HashSet::new(),
            next_id: 1,
            home: 0,
            links: HashMap::new(),
            forwarders: HashMap::new(),
            next_link: 1,
        }
    }

    /// Connected keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is connected.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Connections that said this server is their home region.
    pub fn home_clients(&self) -> usize {
        self.home
    }

    /// Mesh watchers.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// Whether `key` is connected.
    pub fn is_connected(&self, key: &NodePublic) -> bool {
        self.by_key.contains_key(key)
    }

    /// The connection id currently serving `key`.
    pub fn conn_of(&self, key: &NodePublic) -> Option<ConnId> {
        self.by_key.get(key).copied()
    }

    /// Registers a logged-in connection. An older connection with the same key is
    /// removed and returned in [`Effects::close`]; the returned flag says so.
    pub fn register(&mut self, c: NewConn<H>) -> (ConnId, Effects<H>, bool) {
        let id = self.next_id;
        self.next_id += 1;
        let mut fx = Effects::default();
        let replaced = match self.by_key.insert(c.key, id) {
            Some(old) => match self.remove_conn(old) {
                Some(old) => {
                    fx.close.push(old.handle);
                    true
                }
                None => false,
            },
            None => false,
        };
        let mut flags = PeerPresentFlags::REGULAR;
        if c.can_mesh {
            flags.0 |= PeerPresentFlags::MESH_PEER.0;
        }
        if c.is_prober {
            flags.0 |= PeerPresentFlags::PROBER.0;
        }
        let change = PeerChange {
            key: c.key,
            present: true,
            endpoint: c.endpoint,
            flags,
        };
        self.conns.insert(
            id,
            Conn {
                key: c.key,
                handle: c.handle,
                endpoint: c.endpoint,
                flags,
                can_mesh: c.can_mesh,
                preferred: false,
                peer_gone_limit: TokenBucket::new(PEER_GONE_PER_SEC, PEER_GONE_BURST),
                watching: HashSet::new(),
                mesh: None,
                mesh_stuck: false,
            },
        );
        self.broadcast(change, &mut fx);
        (id, fx, replaced)
    }

    /// Removes a connection that closed. If it still held its key, everyone who
    /// exchanged packets with that key gets PeerGone(Disconnected), and mesh watchers
    /// hear it left. A replaced connection's unregister does nothing.
    pub fn unregister(&mut self, id: ConnId) -> Effects<H> {
        let mut fx = Effects::default();
        let Some(conn) = self.remove_conn(id) else {
            return fx;
        };
        if self.by_key.get(&conn.key) != Some(&id) {
            return fx;
        }
        self.by_key.remove(&conn.key);
        // Still reachable through the mesh: the packets follow it, nobody is told.
        if !self.forwarders.contains_key(&conn.key) {
            self.notify_gone(&conn.key, &mut fx);
        }
        let change = PeerChange {
            key: conn.key,
            present: false,
            endpoint: None,
            flags: PeerPresentFlags::default(),
        };
        self.broadcast(change, &mut fx);
        fx
    }

    /// Tells everyone who exchanged packets with `key` that it left, once.
    fn notify_gone(&mut self, key: &NodePublic, fx: &mut Effects<H>) {
        if let Some(ws) = self.gone_watchers.remove(key) {
            for w in ws {
                if let Some(c) = self.conns.get_mut(&w) {
                    c.watching.remove(key);
                    fx.peer_gone
                        .push((c.handle.clone(), *key, PeerGoneReason::Disconnected));
                }
            }
        }
    }

    /// Drops a connection's entry and everything that points at it, except `by_key`.
    fn remove_conn(&mut self, id: ConnId) -> Option<Conn<H>> {
        let conn = self.conns.remove(&id)?;
        for k in &conn.watching {
            if let Some(set) = self.gone_watchers.get_mut(k) {
                set.remove(&id);
                if set.is_empty() {
                    self.gone_watchers.remove(k);
                }
            }
        }
        self.watchers.remove(&id);
        if conn.preferred {
            self.home = self.home.saturating_sub(1);
        }
        Some(conn)
    }

    fn broadcast(&mut self, change: PeerChange, fx: &mut Effects<H>) {
        let limit = MAX_PENDING_MESH + self.by_key.len();
        for w in &self.watchers {
            let Some(c) = self.conns.get_mut(w) else {
                continue;
            };
            let Some(pending) = c.mesh.as_mut().filter(|_| !c.mesh_stuck) else {
                continue;
            };
            pending.push(change);
            if pending.len() >= limit {
                c.mesh_stuck = true;
                fx.close.push(c.handle.clone());
            } else if pending.len() == 1 {
                fx.wake.push(c.handle.clone());
            }
        }
    }

    /// Routes a SendPacket from connection `from` to key `dst`, recording that the two
    /// exchanged packets (for PeerGone later). A local key wins over a forwarder.
    pub fn route(&mut self, now: Instant, from: ConnId, dst: &NodePublic) -> Route<H, F> {
        let Some(src_key) = self.conns.get(&from).map(|c| c.key) else {
            return Route::SenderGone;
        };
        let Some(&dst_id) = self.by_key.get(dst) else {
            if let Some(link) = self.forwarder_of(dst) {
                self.note_exchange(from, *dst);
                return Route::Forward(link);
            }
            let allowed = self
                .conns
                .get_mut(&from)
                .is_some_and(|c| c.peer_gone_limit.allow(now));
            return Route::NotHere { peer_gone: allowed };
        };
        if dst_id != from {
            self.note_exchange(from, *dst);
            self.note_exchange(dst_id, src_key);
        }
        match self.conns.get(&dst_id) {
            Some(d) => Route::Deliver(d.handle.clone()),
            None => Route::NotHere { peer_gone: false },
        }
    }

    /// Marks that connection `id` wants to hear when `key` leaves.
    fn note_exchange(&mut self, id: ConnId, key: NodePublic) {
        if let Some(c) = self.conns.get_mut(&id)
            && c.watching.insert(key)
        {
            self.gone_watchers.entry(key).or_default().insert(id);
        }
    }

    /// Routes a ForwardPacket from mesh peer `from` to key `dst`. Forwarded packets are
    /// never forwarded again and do not take part in PeerGone bookkeeping.
    ///
    /// # Errors
    /// [`NotPermitted`] unless `from` holds the mesh key.
    pub fn forward(&mut self, from: ConnId, dst: &NodePublic) -> Result<Route<H, F>, NotPermitted> {
        self.require_mesh(from)?;
        Ok(
            match self.by_key.get(dst).and_then(|id| self.conns.get(id)) {
                Some(d) => Route::Deliver(d.handle.clone()),
                None => Route::NotHere { peer_gone: false },
            },
        )
    }

    fn require_mesh(&self, id: ConnId) -> Result<(), NotPermitted> {
        match self.conns.get(&id) {
            Some(c) if c.can_mesh => Ok(()),
            _ => Err(NotPermitted),
        }
    }

    /// Subscribes mesh peer `id` to connection changes and queues a PeerPresent for
    /// every connected key. Returns the handle to wake (`None` when the watcher is
    /// the server itself).
    ///
    /// # Errors
    /// [`NotPermitted`] unless `id` holds the mesh key.
    pub fn watch_conns(&mut self, id: ConnId) -> Result<Option<H>, NotPermitted> {
        self.require_mesh(id)?;
        let flood: Vec<PeerChange> = self
            .by_key
            .values()
            .filter_map(|cid| self.conns.get(cid))
            .map(|c| PeerChange {
                key: c.key,
                present: true,
                endpoint: c.endpoint,
                flags: c.flags,
            })
            .collect();
        let server_key = self.server_key;
        let Some(c) = self.conns.get_mut(&id) else {
            return Err(NotPermitted);
        };
        if c.key == server_key {
            return Ok(None);
        }
        c.mesh.get_or_insert_with(Vec::new).extend(flood);
        self.watchers.insert(id);
        Ok(Some(c.handle.clone()))
    }

    /// Takes the mesh updates queued for watcher `id`.
    pub fn take_mesh_updates(&mut self, id: ConnId) -> Vec<PeerChange> {
        self.conns
            .get_mut(&id)
            .and_then(|c| c.mesh.as_mut())
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Mesh peer `id` asks to close `target`'s connection; returns its handle.
    ///
    /// # Errors
    /// [`NotPermitted`] unless `id` holds the mesh key.
    pub fn close_peer(
        &mut self,
        id: ConnId,
        target: &NodePublic,
    ) -> Result<Option<H>, NotPermitted> {
        self.require_mesh(id)?;
        Ok(self
            .by_key
            .get(target)
            .and_then(|t| self.conns.get(t))
            .map(|c| c.handle.clone()))
    }

    /// Records the client's NotePreferred.
    pub fn note_preferred(&mut self, id: ConnId, preferred: bool) {
        if let Some(c) = self.conns.get_mut(&id)
            && c.preferred != preferred
        {
            c.preferred = preferred;
            if preferred {
                self.home += 1;
            } else {
                self.home = self.home.saturating_sub(1);
            }
        }
    }

    /// Every registered handle, for shutdown.
    pub fn handles(&self) -> Vec<H> {
        self.conns.values().map(|c| c.handle.clone()).collect()
    }

    /// Internal consistency, for tests and fuzzing: every index points at live entries.
    pub fn check_invariants(&self) -> bool {
        let keys_ok = self
            .by_key
            .iter()
            .all(|(k, id)| self.conns.get(id).is_some_and(|c| c.key == *k));
        let conns_ok = self
            .conns
            .iter()
            .all(|(id, c)| self.by_key.get(&c.key) == Some(id));
        let watch_ok = self.gone_watchers.iter().all(|(k, set)| {
            !set.is_empty()
                && set
                    .iter()
                    .all(|id| self.conns.get(id).is_some_and(|c| c.watching.contains(k)))
        });
        let home_ok = self.home == self.conns.values().filter(|c| c.preferred).count();
        // Someone waits to hear a key left only while it is here or forwarded.
        let gone_ok = self
            .gone_watchers
            .keys()
            .all(|k| self.by_key.contains_key(k) || self.forwarders.contains_key(k));
        keys_ok
            && conns_ok
            && watch_ok
            && home_ok
            && gone_ok
            && self.forwarders_consistent()
            && self.watchers.iter().all(|w| self.conns.contains_key(w))
    }
}

mod mesh;
pub use mesh::LinkId;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mesh_tests;
