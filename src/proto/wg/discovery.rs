//! Path discovery on the device: disco pings, pongs and call-me-maybe between peers,
//! probes sent alongside traffic, our own candidate endpoints, and user pings.

use super::session::Peer;
use super::{
    Device, DropReason, MAX_USER_PINGS, PathAddr, PathInfo, PathSrc, PingResult, Transmits,
};
use crate::wire::disco;
use crate::wire::key::{NodePrivate, NodePublic};
use std::net::SocketAddr;
use std::time::Instant;

impl Device {
    /// Alongside a send: copy a handshake initiation that went over DERP to the peer's
    /// direct candidates (a public peer then answers directly, before any ping), and run
    /// whatever discovery the path asks for.
    pub(super) fn probe(&mut self, idx: u32, path: PathAddr, now: Instant, tx: &mut Transmits) {
        if let PathAddr::Derp(_) = path
            && let Some(last) = tx.items.last().copied()
            && tx.bytes(&last).first() == Some(&1)
            && let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut())
        {
            let bytes = tx.bytes(&last).to_vec();
            for t in peer.path.initiation_targets(now) {
                tx.push_copy(PathAddr::Udp(t), peer.public, &bytes);
                peer.stats.tx_datagrams += 1;
            }
        }
        self.discover(idx, now, tx);
    }

    /// Sends the pings and call-me-maybe the peer's path asks for now.
    pub(super) fn discover(&mut self, idx: u32, now: Instant, tx: &mut Transmits) {
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        let probe = peer.path.poll_probe(now);
        for addr in probe.pings {
            send_ping(peer, &self.private, PathAddr::Udp(addr), now, tx);
        }
        if probe.call_me_maybe
            && !self.endpoints.is_empty()
            && let Some(region) = peer.path.derp_region()
        {
            let msg = disco::Message::CallMeMaybe {
                endpoints: self.endpoints.clone(),
            };
            send_disco(peer, &self.private, PathAddr::Derp(region), &msg, tx);
        }
    }

    /// Sets our own candidate endpoints. A change is announced to every peer with a
    /// call-me-maybe at its next round.
    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        let mut endpoints = endpoints;
        endpoints.truncate(disco::MAX_ENDPOINTS);
        if endpoints == self.endpoints {
            return;
        }
        self.endpoints = endpoints;
        for p in self.peers.iter_mut().flatten() {
            p.path.endpoints_changed();
        }
    }

    /// Our candidate endpoints.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Pings `key` over its current path. The answer, if one comes, is returned by
    /// [`Device::poll_ping_result`]. Returns the path used, or `None` for an unknown or
    /// unreachable peer.
    pub fn ping(
        &mut self,
        key: &NodePublic,
        now: Instant,
        tx: &mut Transmits,
    ) -> Option<(disco::TxId, PathAddr)> {
        let idx = *self.by_key.get(key)?;
        let peer = self.peers.get_mut(idx as usize)?.as_mut()?;
        let path = peer.path.current(now)?;
        let txid = send_ping(peer, &self.private, path, now, tx)?;
        if self.user_pings.len() >= MAX_USER_PINGS {
            self.user_pings.pop_front();
        }
        self.user_pings.push_back((txid, *key));
        Some((txid, path))
    }

    /// The next answer to a [`Device::ping`].
    pub fn poll_ping_result(&mut self) -> Option<PingResult> {
        self.ping_results.pop_front()
    }

    /// A peer's path, for diagnostics.
    pub fn path_info(&self, key: &NodePublic, now: Instant) -> Option<PathInfo> {
        let idx = *self.by_key.get(key)?;
        Some(self.peers.get(idx as usize)?.as_ref()?.path.info(now))
    }

    /// A discovery message from `src`: authenticated by the box with the key it names,
    /// which must be a peer (and, over DERP, the key the relay says sent it).
    pub(super) fn handle_disco(
        &mut self,
        now: Instant,
        src: PathSrc,
        datagram: &[u8],
        tx: &mut Transmits,
    ) -> Result<(), DropReason> {
        let Ok(key) = disco::sender(datagram) else {
            return Err(self.drop(DropReason::Malformed, None));
        };
        if let PathSrc::Derp { key: relayed, .. } = src
            && relayed != key
        {
            return Err(self.drop(DropReason::Auth, None));
        }
        let Some(&idx) = self.by_key.get(&key) else {
            return Err(self.drop(DropReason::UnknownPeer, None));
        };
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return Err(self.drop(DropReason::Internal, None));
        };
        if peer.disco_tokens == 0 {
            return Err(self.drop(DropReason::DiscoLimited, Some(idx)));
        }
        peer.disco_tokens -= 1;
        let msg = match peer.opener(&self.private).open(datagram) {
            Ok(m) => m,
            Err(disco::DiscoError::BadBox) => return Err(self.drop(DropReason::Auth, Some(idx))),
            Err(_) => return Err(self.drop(DropReason::Malformed, Some(idx))),
        };
        match msg {
            disco::Message::Ping { txid } => {
                let seen = match src {
                    PathSrc::Udp(a) => a,
                    PathSrc::Derp { .. } => SocketAddr::from(([0, 0, 0, 0], 0)),
                };
                let pong = disco::Message::Pong { txid, src: seen };
                send_disco(peer, &self.private, src.reply(), &pong, tx);
                if let PathSrc::Udp(a) = src
                    && peer.path.handle_ping_from(a, now)
                {
                    send_ping(peer, &self.private, PathAddr::Udp(a), now, tx);
                }
            }
            disco::Message::Pong { txid, src: seen } => {
                if let Some(rtt) = peer.path.handle_pong(&txid, src, seen, now)
                    && let Some(i) = self
                        .user_pings
                        .iter()
                        .position(|(t, k)| *t == txid && *k == key)
                {
                    self.user_pings.remove(i);
                    self.ping_results.push_back(PingResult {
                        peer: key,
                        txid,
                        path: src.reply(),
                        rtt,
                    });
                }
            }
            disco::Message::CallMeMaybe { endpoints } => {
                peer.path.handle_call_me_maybe(&endpoints, now);
                self.discover(idx, now, tx);
            }
        }
        Ok(())
    }
}

/// Seals and queues a ping on `to`, recording it in the peer's path.
fn send_ping(
    peer: &mut Peer,
    private: &NodePrivate,
    to: PathAddr,
    now: Instant,
    tx: &mut Transmits,
) -> Option<disco::TxId> {
    let txid: disco::TxId = rand::random();
    if !send_disco(peer, private, to, &disco::Message::Ping { txid }, tx) {
        return None;
    }
    peer.path.record_ping(txid, to, now);
    Some(txid)
}

/// Seals and queues a discovery message to `peer` on `to`.
fn send_disco(
    peer: &mut Peer,
    private: &NodePrivate,
    to: PathAddr,
    msg: &disco::Message,
    tx: &mut Transmits,
) -> bool {
    let public = peer.public;
    match peer.opener(private).seal(rand::random(), msg) {
        Ok(bytes) => {
            tx.push_copy(to, public, &bytes);
            peer.stats.tx_datagrams += 1;
            true
        }
        Err(_) => false,
    }
}
