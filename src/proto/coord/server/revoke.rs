//! Taking authorization back from live streams: a revoked token, a deleted agent or
//! workspace, a share withdrawn. The server learns of the change from the control plane
//! and tells the registry, which closes what may no longer stay open.

use super::{ConnId, Registry};
use crate::wire::coord::{self, PeerKind};
use std::time::Instant;

impl Registry {
    /// Closes stream `conn` because its credentials no longer hold (a revoked or expired
    /// token, a deleted agent). Close code [`coord::CLOSE_POLICY`] with `reason`; its
    /// tunnel peers see it as `lost`. Ignored if `conn` is not registered.
    pub fn revoke(&mut self, conn: ConnId, reason: &str, now: Instant) {
        self.stamp(now);
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.stats.revoked += 1;
        tracing::info!(
            conn,
            reason,
            "coordinator stream closed: authorization revoked"
        );
        self.push_close(conn, coord::CLOSE_POLICY, reason);
        self.remove(conn, PeerKind::Lost, "authorization revoked");
    }

    /// Checks every tunnel against its source's authorization again (after the control
    /// plane changed). A stream holding a tunnel it may no longer hold is closed with
    /// [`coord::CLOSE_POLICY`] and a reason naming the destination, so its client stops
    /// asking for that destination; its other tunnels come back when it reconnects.
    pub fn reauthorize(&mut self, now: Instant) {
        self.stamp(now);
        let mut lost = Vec::new();
        for (src, dsts) in &self.tunnels_out {
            let Some(peer) = self.peers.get(src) else {
                continue;
            };
            if let Some(dst) = dsts.iter().find(|d| !peer.auth.may_tunnel_to(**d)) {
                lost.push((peer.conn, *dst));
            }
        }
        for (conn, dst) in lost {
            self.revoke(
                conn,
                &format!("access to {dst} was revoked; not authorized to open a tunnel to it"),
                now,
            );
        }
    }
}
