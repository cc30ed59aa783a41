//! The tunnel indexes: opening and removing tunnels (with their per-stream and
//! per-principal limits), who is linked with whom, and the registry's invariants.

use super::{
    Change, ConnId, MAX_TUNNELS_PER_PEER, MAX_TUNNELS_PER_PRINCIPAL, PeerAuth, Registry, gone,
    node_update, ready_update,
};
use crate::wire::addr::NodeId;
use crate::wire::coord::PeerKind;
use std::collections::BTreeSet;

impl Registry {
    pub(super) fn add_tunnel(&mut self, conn: ConnId, src: NodeId, dst: NodeId) {
        let Some(peer) = self.peers.get(&src) else {
            return;
        };
        if let PeerAuth::Agent { .. } = peer.auth {
            return self.violation(conn, "agents may not open tunnels".into());
        }
        if !peer.auth.may_tunnel_to(dst) {
            return self.violation(conn, format!("not authorized to open a tunnel to {dst}"));
        }
        if dst == src {
            return self.refuse(conn, "cannot open a tunnel to yourself".into());
        }
        let principal = peer.auth.principal().map(str::to_string);
        let outs = self.tunnels_out.get(&src);
        if !outs.is_some_and(|o| o.contains(&dst)) {
            if outs.map_or(0, BTreeSet::len) >= MAX_TUNNELS_PER_PEER {
                self.stats.tunnel_limit += 1;
                return self.refuse(
                    conn,
                    format!("tunnel limit of {MAX_TUNNELS_PER_PEER} per stream reached"),
                );
            }
            if let Some(p) = &principal {
                let n = self.principal_tunnels.entry(p.clone()).or_default();
                if *n >= MAX_TUNNELS_PER_PRINCIPAL {
                    self.stats.tunnel_limit += 1;
                    return self.refuse(
                        conn,
                        format!("tunnel limit of {MAX_TUNNELS_PER_PRINCIPAL} per user reached"),
                    );
                }
                *n += 1;
            }
            self.tunnels_out.entry(src).or_default().insert(dst);
            self.replicate(Change::Tunnel {
                src,
                dst,
                open: true,
            });
        }
        self.tunnels_in.entry(dst).or_default().insert(src);
        if let Some(node) = self.node_of(dst) {
            self.send(conn, node_update(node));
        }
        if let Some(node) = self.peers.get(&src).and_then(|p| p.node.clone()) {
            self.send_to_peer(dst, node_update(node));
        }
    }

    pub(super) fn remove_tunnel(&mut self, src: NodeId, dst: NodeId) {
        if !self.unlink(src, dst) {
            return;
        }
        self.replicate(Change::Tunnel {
            src,
            dst,
            open: false,
        });
        if self.linked(src, dst) {
            return;
        }
        let reason = "tunnel removed";
        self.send_to_peer(src, gone(dst, PeerKind::Disconnected, reason));
        self.send_to_peer(dst, gone(src, PeerKind::Disconnected, reason));
    }

    pub(super) fn ready_for_handshake(&mut self, conn: ConnId, src: NodeId, dst: NodeId) {
        if !self.linked(src, dst) {
            return self.refuse(
                conn,
                format!("ready for handshake error: no tunnel with peer {dst}"),
            );
        }
        if !self.peers.contains_key(&dst) && self.remote.is_bound(dst) {
            return self.replicate(Change::ReadyForHandshake { src, dst });
        }
        if !self.peers.contains_key(&dst) {
            return self.refuse(
                conn,
                format!("ready for handshake error: peer {dst} is not connected"),
            );
        }
        self.send_to_peer(dst, ready_update(src));
    }

    /// Removes the tunnel `src → dst`; whether it existed.
    pub(super) fn unlink(&mut self, src: NodeId, dst: NodeId) -> bool {
        let Some(outs) = self.tunnels_out.get_mut(&src) else {
            return false;
        };
        if !outs.remove(&dst) {
            return false;
        }
        if outs.is_empty() {
            self.tunnels_out.remove(&src);
        }
        if let Some(p) = self.peers.get(&src).and_then(|p| p.auth.principal()) {
            let p = p.to_string();
            self.uncount_tunnels(&p, 1);
        }
        if let Some(srcs) = self.tunnels_in.get_mut(&dst) {
            srcs.remove(&src);
            if srcs.is_empty() {
                self.tunnels_in.remove(&dst);
            }
        }
        true
    }

    pub(super) fn uncount_tunnels(&mut self, principal: &str, n: usize) {
        if let Some(c) = self.principal_tunnels.get_mut(principal) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.principal_tunnels.remove(principal);
            }
        }
    }

    /// Whether a tunnel joins `a` and `b` in either direction.
    pub(super) fn linked(&self, a: NodeId, b: NodeId) -> bool {
        let has = |s: &NodeId, d: &NodeId| self.tunnels_out.get(s).is_some_and(|o| o.contains(d));
        has(&a, &b) || has(&b, &a) || self.remote.has_tunnel(a, b) || self.remote.has_tunnel(b, a)
    }

    /// Every peer, local or on another replica, sharing a tunnel with `id`.
    pub(super) fn linked_any(&self, id: NodeId) -> BTreeSet<NodeId> {
        let outs = self.tunnels_out.get(&id).into_iter().flatten().copied();
        let ins = self.tunnels_in.get(&id).into_iter().flatten().copied();
        outs.chain(ins).chain(self.remote.linked_with(id)).collect()
    }

    /// Every live local peer sharing a tunnel with `id`, in either direction.
    pub(super) fn tunnel_peers(&self, id: NodeId) -> BTreeSet<NodeId> {
        let mut linked = self.linked_any(id);
        linked.retain(|p| self.peers.contains_key(p));
        linked
    }

    /// Asserts the registry's internal invariants: the tunnel indexes mirror each other,
    /// every source is live and authorized for its destinations, streams and peers agree.
    ///
    /// # Panics
    /// On any violated invariant; for tests and fuzzing.
    #[cfg(any(test, fuzzing))]
    pub fn check_invariants(&self) {
        for (src, dsts) in &self.tunnels_out {
            let peer = self.peers.get(src).expect("tunnel source is live");
            assert!(!dsts.is_empty(), "empty tunnel set kept");
            for dst in dsts {
                assert!(
                    peer.auth.may_tunnel_to(*dst),
                    "unauthorized tunnel {src} -> {dst}"
                );
                assert!(self.tunnels_in.get(dst).is_some_and(|s| s.contains(src)));
            }
        }
        for (dst, srcs) in &self.tunnels_in {
            assert!(!srcs.is_empty(), "empty reverse tunnel set kept");
            for src in srcs {
                assert!(self.tunnels_out.get(src).is_some_and(|d| d.contains(dst)));
            }
        }
        let mut per_principal: std::collections::BTreeMap<String, usize> = Default::default();
        for (src, dsts) in &self.tunnels_out {
            if let Some(p) = self.peers.get(src).and_then(|p| p.auth.principal()) {
                *per_principal.entry(p.to_string()).or_default() += dsts.len();
            }
        }
        assert_eq!(
            per_principal, self.principal_tunnels,
            "per-principal tunnel counts"
        );
        for (id, p) in &self.peers {
            if let Some(n) = &p.node {
                self.keys.check_live(*id, n.key);
            }
        }
        self.check_remote_invariants();
        assert_eq!(self.conns.len(), self.peers.len());
        for (conn, id) in &self.conns {
            assert_eq!(self.peers.get(id).map(|p| p.conn), Some(*conn));
        }
    }

    /// Every tunnel as `(source, destination)`.
    pub fn tunnels(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.tunnels_out
            .iter()
            .flat_map(|(s, ds)| ds.iter().map(move |d| (*s, *d)))
    }
}
