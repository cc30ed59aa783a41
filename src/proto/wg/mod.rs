//! The WireGuard device: many peers in one sans-IO state machine.
//!
//! Owns the peer table (by static key, by receiver index, by allowed IP), one timer
//! schedule for all peers, and the choice of path (UDP or DERP) per peer. It does no IO:
//! datagrams come in as slices with their [`PathSrc`]; what must be sent is appended to a
//! [`Transmits`] buffer with its [`PathAddr`]; time comes in as `now`.
//!
//! Call protocol (after quinn): feed input with [`Device::decapsulate`] and
//! [`Device::encapsulate`]; call [`Device::handle_timeout`] when [`Device::poll_timeout`]
//! passes (calling it early is harmless); send everything in the [`Transmits`] after each
//! call. Bad datagrams are dropped and counted by [`DropReason`]; no input panics.

mod config;
mod discovery;
mod drop;
pub mod fair;
pub mod held;
pub mod path;
pub mod session;
pub mod table;
mod transmit;

pub use config::{DeviceError, PeerConfig};
pub use drop::DropReason;
pub use path::{Candidate, Origin, PathAddr, PathInfo, PathSrc};
pub use session::PeerStats;
pub use transmit::{Transmit, Transmits};

use crate::wire::disco;
use crate::wire::key::{NodePrivate, NodePublic};
use crate::wire::wg::{MessageKind, WgHeader};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use session::{Peer, drop_reason};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use table::AllowedIps;

/// How often every peer's WireGuard timers are driven. boringtun rounds its timers to
/// about a second; its own device uses 250 ms.
pub const TIMER_TICK: Duration = Duration::from_millis(250);

/// Handshake initiations per second the device accepts before demanding cookies.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

use config::MAX_PEERS;

/// Pings asked for by [`Device::ping`] whose pongs are still awaited, at most.
const MAX_USER_PINGS: usize = 256;

/// The answer to a [`Device::ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    /// The peer that answered.
    pub peer: NodePublic,
    /// The ping's transaction id.
    pub txid: disco::TxId,
    /// The path the pong came back on.
    pub path: PathAddr,
    /// Round-trip time.
    pub rtt: Duration,
}

/// The multi-peer WireGuard device.
pub struct Device {
    private: NodePrivate,
    public: NodePublic,
    secret: boringtun::x25519::StaticSecret,
    x_public: boringtun::x25519::PublicKey,
    peers: Vec<Option<Peer>>,
    /// Freed slots, reused oldest first so a stale receiver index rarely meets a new peer.
    free: VecDeque<u32>,
    by_key: HashMap<NodePublic, u32>,
    routes: AllowedIps<u32>,
    limiter: RateLimiter,
    next_tick: Option<Instant>,
    last_limiter_reset: Option<Instant>,
    drops: [u64; DropReason::COUNT],
    scratch: Vec<u8>,
    /// Our own candidate endpoints, sent in call-me-maybe messages.
    endpoints: Vec<SocketAddr>,
    /// Pings sent for [`Device::ping`], and their answers.
    user_pings: VecDeque<(disco::TxId, NodePublic)>,
    ping_results: VecDeque<PingResult>,
    /// Initiations from keys not programmed yet, answered if they are soon.
    held: held::HeldInitiations,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("public", &self.public)
            .field("peers", &self.by_key.len())
            .finish()
    }
}

/// A stable synthetic address per DERP peer, so boringtun's cookie mechanism (which keys
/// on a source IP) still works for handshakes relayed through DERP.
fn derp_pseudo_ip(key: &NodePublic) -> IpAddr {
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..16].copy_from_slice(&key.as_bytes()[..15]);
    IpAddr::V6(Ipv6Addr::from(b))
}

impl Device {
    /// A device with the given static key and no peers.
    pub fn new(private: NodePrivate) -> Self {
        let public = private.public();
        let x_public = boringtun::x25519::PublicKey::from(*public.as_bytes());
        Self {
            secret: private.to_static_secret(),
            limiter: RateLimiter::new(&x_public, HANDSHAKE_RATE_LIMIT),
            private,
            public,
            x_public,
            peers: Vec::new(),
            free: VecDeque::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            next_tick: None,
            last_limiter_reset: None,
            drops: [0; DropReason::COUNT],
            scratch: vec![0; crate::wire::wg::MAX_DATAGRAM + 64],
            endpoints: Vec::new(),
            user_pings: VecDeque::new(),
            ping_results: VecDeque::new(),
            held: held::HeldInitiations::default(),
        }
    }

    /// The device's public key.
    pub fn public(&self) -> NodePublic {
        self.public
    }

    /// Adds a peer, or updates it if its key is known. An update that changes the
    /// pre-shared key or keepalive restarts its session; other changes keep it.
    ///
    /// # Errors
    /// [`DeviceError::OwnKey`] for our own key, [`DeviceError::TooManyPeers`] past 2^24.
    pub fn upsert_peer(&mut self, cfg: PeerConfig, now: Instant) -> Result<(), DeviceError> {
        if cfg.public == self.public {
            return Err(DeviceError::OwnKey);
        }
        if let Some(&idx) = self.by_key.get(&cfg.public) {
            let slot = &mut self.peers[idx as usize];
            let restart = slot.as_ref().is_some_and(|p| {
                p.config.preshared_key != cfg.preshared_key
                    || p.config.persistent_keepalive != cfg.persistent_keepalive
            });
            if restart {
                *slot = Some(Peer::new(&self.private, idx, cfg.clone(), now));
            } else if let Some(p) = slot.as_mut() {
                p.path.reconfigure(&cfg, now);
                p.config = cfg.clone();
            }
            self.routes.remove_value(idx);
            for c in &cfg.allowed_ips {
                self.routes.insert(*c, idx);
            }
            return Ok(());
        }
        let idx = match self.free.pop_front() {
            Some(i) => i,
            None if self.peers.len() < MAX_PEERS => {
                self.peers.push(None);
                (self.peers.len() - 1) as u32
            }
            None => return Err(DeviceError::TooManyPeers),
        };
        for c in &cfg.allowed_ips {
            self.routes.insert(*c, idx);
        }
        self.by_key.insert(cfg.public, idx);
        self.peers[idx as usize] = Some(Peer::new(&self.private, idx, cfg, now));
        if self.next_tick.is_none() {
            self.next_tick = Some(now + TIMER_TICK);
        }
        Ok(())
    }

    /// Removes a peer and its routes. Returns whether it existed.
    pub fn remove_peer(&mut self, key: &NodePublic) -> bool {
        let Some(idx) = self.by_key.remove(key) else {
            return false;
        };
        self.routes.remove_value(idx);
        self.peers[idx as usize] = None;
        self.free.push_back(idx);
        true
    }

    /// Whether a peer with this key is configured.
    pub fn has_peer(&self, key: &NodePublic) -> bool {
        self.by_key.contains_key(key)
    }

    /// Number of configured peers.
    pub fn peer_count(&self) -> usize {
        self.by_key.len()
    }

    /// The configured peers' keys.
    pub fn peer_keys(&self) -> impl Iterator<Item = &NodePublic> {
        self.by_key.keys()
    }

    /// A peer's counters and current path.
    pub fn peer_stats(
        &mut self,
        key: &NodePublic,
        now: Instant,
    ) -> Option<(PeerStats, Option<PathAddr>)> {
        let idx = *self.by_key.get(key)?;
        let p = self.peers.get_mut(idx as usize)?.as_mut()?;
        p.refresh_handshake(now);
        Some((p.stats.clone(), p.path.current(now)))
    }

    /// Device-wide drop counters, indexed by `DropReason as usize`.
    pub fn drops(&self) -> &[u64; DropReason::COUNT] {
        &self.drops
    }

    fn drop(&mut self, r: DropReason, peer: Option<u32>) -> DropReason {
        self.drops[r as usize] += 1;
        if let Some(p) = peer
            .and_then(|i| self.peers.get_mut(i as usize))
            .and_then(|p| p.as_mut())
        {
            p.count_drop(r);
        }
        r
    }

    /// Counts a drop decided outside the device (such as a full transmit queue).
    pub fn count_drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Encrypts one IP packet from the netstack and appends the datagram(s) to `tx`.
    /// With no session yet, the packet is queued (up to 256 per peer) and a handshake
    /// initiation is produced instead.
    ///
    /// # Errors
    /// The drop reason, already counted: [`DropReason::BadPacket`],
    /// [`DropReason::NoRoute`], [`DropReason::NoPath`] or a session error.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        packet: &[u8],
        tx: &mut Transmits,
    ) -> Result<(), DropReason> {
        let Some(dst) = crate::wire::ip::dst_addr(packet) else {
            return Err(self.drop(DropReason::BadPacket, None));
        };
        let Some(idx) = self.routes.lookup(dst) else {
            return Err(self.drop(DropReason::NoRoute, None));
        };
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return Err(self.drop(DropReason::Internal, None));
        };
        let Some(path) = peer.path.current(now) else {
            return Err(self.drop(DropReason::NoPath, Some(idx)));
        };
        peer.expired = false;
        let len = match peer.tunn.encapsulate(packet, tx.space(packet.len() + 148)) {
            TunnResult::WriteToNetwork(out) => out.len(),
            TunnResult::Done => 0,
            TunnResult::Err(e) => {
                let r = drop_reason(&e);
                return Err(self.drop(r, Some(idx)));
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {
                return Err(self.drop(DropReason::Internal, Some(idx)));
            }
        };
        let public = peer.public;
        if len > 0 {
            let is_data = tx.buf.get(tx.used).copied() == Some(4);
            tx.commit(path, public, len);
            peer.stats.tx_datagrams += 1;
            if is_data {
                peer.stats.tx_packets += 1;
                peer.stats.tx_bytes += packet.len() as u64;
            }
            peer.path.on_send(path, now);
            self.probe(idx, path, now, tx);
        }
        Ok(())
    }

    /// Processes one datagram. If it carried an IP packet, its plaintext is written to the
    /// start of `plain` and its length returned. Handshake replies and packets released
    /// by a completed handshake are appended to `tx`.
    ///
    /// `plain` must hold at least `datagram.len().max(148)` bytes; a smaller buffer is
    /// API misuse and the datagram is dropped as [`DropReason::Internal`].
    ///
    /// # Errors
    /// The drop reason, already counted.
    pub fn decapsulate(
        &mut self,
        now: Instant,
        src: PathSrc,
        datagram: &[u8],
        plain: &mut [u8],
        tx: &mut Transmits,
    ) -> Result<Option<usize>, DropReason> {
        if disco::is_disco(datagram) {
            return self.handle_disco(now, src, datagram, tx).map(|()| None);
        }
        let header = match WgHeader::parse(datagram) {
            Ok(h) => h,
            Err(crate::wire::WireError::TooLarge) => {
                return Err(self.drop(DropReason::TooLarge, None));
            }
            Err(_) if matches!(src, PathSrc::Derp { .. }) => {
                return Err(self.drop(DropReason::NotWireGuard, None));
            }
            Err(_) => return Err(self.drop(DropReason::Malformed, None)),
        };
        if plain.len() < datagram.len().max(crate::wire::wg::INITIATION_LEN) {
            return Err(self.drop(DropReason::Internal, None));
        }
        let src_ip = match src {
            PathSrc::Udp(a) => a.ip(),
            PathSrc::Derp { key, .. } => derp_pseudo_ip(&key),
        };
        let reply_path = match src {
            PathSrc::Udp(a) => PathAddr::Udp(a),
            PathSrc::Derp { region, .. } => PathAddr::Derp(region),
        };

        let idx = match (src, header.kind) {
            (PathSrc::Derp { key, .. }, kind) => match self.by_key.get(&key) {
                Some(&i) => i,
                None => {
                    if kind == MessageKind::Initiation {
                        self.held.hold(key, src, datagram, now);
                    }
                    return Err(self.drop(DropReason::UnknownPeer, None));
                }
            },
            (PathSrc::Udp(_), MessageKind::Initiation) => {
                // Identify the sender: MAC1 and load check first (cheap), then the DH.
                let mut cookie = [0u8; crate::wire::wg::COOKIE_REPLY_LEN];
                let init = match self
                    .limiter
                    .verify_packet(Some(src_ip), datagram, &mut cookie)
                {
                    Ok(Packet::HandshakeInit(init)) => init,
                    Ok(_) => return Err(self.drop(DropReason::Malformed, None)),
                    Err(TunnResult::WriteToNetwork(c)) => {
                        let c = c.to_vec();
                        // The cookie reply goes back to the source; we do not know the peer yet.
                        tx.push_copy(reply_path, NodePublic::from_bytes([0; 32]), &c);
                        return Ok(None);
                    }
                    Err(TunnResult::Err(e)) => {
                        let r = drop_reason(&e);
                        return Err(self.drop(r, None));
                    }
                    Err(_) => return Err(self.drop(DropReason::Internal, None)),
                };
                match boringtun::noise::handshake::parse_handshake_anon(
                    &self.secret,
                    &self.x_public,
                    &init,
                ) {
                    Ok(half) => {
                        let key = NodePublic::from_bytes(half.peer_static_public);
                        match self.by_key.get(&key) {
                            Some(&i) => i,
                            None => {
                                self.held.hold(key, src, datagram, now);
                                return Err(self.drop(DropReason::UnknownPeer, None));
                            }
                        }
                    }
                    Err(e) => {
                        let r = drop_reason(&e);
                        return Err(self.drop(r, None));
                    }
                }
            }
            (PathSrc::Udp(_), _) => {
                let ridx = header.receiver_idx.unwrap_or(u32::MAX) >> 8;
                match self.peers.get(ridx as usize) {
                    Some(Some(_)) => ridx,
                    _ => return Err(self.drop(DropReason::UnknownPeer, None)),
                }
            }
        };

        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return Err(self.drop(DropReason::Internal, None));
        };
        enum Out {
            Reply(usize),
            Packet(usize, IpAddr),
            Nothing,
        }
        let out = match peer.tunn.decapsulate(Some(src_ip), datagram, plain) {
            TunnResult::WriteToNetwork(b) => Out::Reply(b.len()),
            TunnResult::WriteToTunnelV4(b, ip) => Out::Packet(b.len(), IpAddr::V4(ip)),
            TunnResult::WriteToTunnelV6(b, ip) => Out::Packet(b.len(), IpAddr::V6(ip)),
            TunnResult::Done => Out::Nothing,
            TunnResult::Err(e) => {
                let r = drop_reason(&e);
                return Err(self.drop(r, Some(idx)));
            }
        };
        peer.expired = false;
        peer.stats.rx_datagrams += 1;
        peer.path.on_authenticated(src, now);
        match out {
            Out::Nothing => Ok(None),
            Out::Reply(len) => {
                let public = peer.public;
                tx.push_copy(reply_path, public, &plain[..len]);
                peer.stats.tx_datagrams += 1;
                peer.path.on_send(reply_path, now);
                self.flush_queue(idx, now, tx);
                Ok(None)
            }
            Out::Packet(len, inner_src) => {
                if self.routes.lookup(inner_src) != Some(idx) {
                    return Err(self.drop(DropReason::SourceNotAllowed, Some(idx)));
                }
                peer.stats.rx_packets += 1;
                peer.stats.rx_bytes += len as u64;
                Ok(Some(len))
            }
        }
    }

    /// After a handshake completes, boringtun releases queued packets one per call of
    /// `decapsulate` with empty input; drain them all.
    fn flush_queue(&mut self, idx: u32, now: Instant, tx: &mut Transmits) {
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        let Some(path) = peer.path.current(now) else {
            return;
        };
        while let TunnResult::WriteToNetwork(b) =
            peer.tunn.decapsulate(None, &[], &mut self.scratch)
        {
            let len = b.len();
            tx.push_copy(path, peer.public, &self.scratch[..len]);
            peer.stats.tx_datagrams += 1;
            if len > crate::wire::wg::TRANSPORT_OVERHEAD {
                peer.stats.tx_packets += 1;
                peer.stats.tx_bytes += (len - crate::wire::wg::TRANSPORT_OVERHEAD) as u64;
            }
        }
        peer.path.on_send(path, now);
    }

    /// Starts a handshake with `key` now, unless a session exists or (unless `force`) one
    /// is in flight. Returns whether the peer exists.
    pub fn initiate(
        &mut self,
        key: &NodePublic,
        force: bool,
        now: Instant,
        tx: &mut Transmits,
    ) -> bool {
        let Some(&idx) = self.by_key.get(key) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return false;
        };
        if peer.tunn.time_since_last_handshake().is_some() {
            return true;
        }
        let Some(path) = peer.path.current(now) else {
            self.drops[DropReason::NoPath as usize] += 1;
            return true;
        };
        peer.expired = false;
        self.send_initiation(idx, path, force, now, tx);
        true
    }

    /// Formats a handshake initiation for peer `idx` (a new one even if one is in flight
    /// when `force`), sends it on `path` and probes direct candidates alongside. Returns
    /// whether one was sent.
    fn send_initiation(
        &mut self,
        idx: u32,
        path: PathAddr,
        force: bool,
        now: Instant,
        tx: &mut Transmits,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(idx as usize).and_then(|p| p.as_mut()) else {
            return false;
        };
        let len = match peer.tunn.format_handshake_initiation(tx.space(256), force) {
            TunnResult::WriteToNetwork(b) => b.len(),
            _ => 0,
        };
        if len == 0 {
            return false;
        }
        tx.commit(path, peer.public, len);
        peer.stats.tx_datagrams += 1;
        peer.path.on_send(path, now);
        self.probe(idx, path, now, tx);
        true
    }

    /// After a sleep or network change: forgets every learned direct path (it may be gone;
    /// DERP is used until a direct one proves itself again) and starts a fresh handshake
    /// with every peer that had a session, instead of waiting for timers to notice.
    /// Returns how many handshakes were started.
    pub fn rehandshake_all(&mut self, now: Instant, tx: &mut Transmits) -> usize {
        let mut n = 0;
        for idx in 0..self.peers.len() {
            let Some(peer) = self.peers[idx].as_mut() else {
                continue;
            };
            peer.path.forget_direct();
            if peer.expired || peer.tunn.time_since_last_handshake().is_none() {
                continue;
            }
            let Some(path) = peer.path.current(now) else {
                continue;
            };
            n += usize::from(self.send_initiation(idx as u32, path, true, now, tx));
        }
        n
    }

    /// Whether the peer has a current session (a completed handshake).
    pub fn has_session(&self, key: &NodePublic) -> bool {
        self.by_key
            .get(key)
            .and_then(|i| self.peers.get(*i as usize))
            .and_then(|p| p.as_ref())
            .is_some_and(|p| p.tunn.time_since_last_handshake().is_some())
    }

    /// When the timers should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Drives every peer's WireGuard timers (handshake retries, rekeys, keepalives).
    /// Calling it before [`Device::poll_timeout`] does nothing.
    pub fn handle_timeout(&mut self, now: Instant, tx: &mut Transmits) {
        match self.next_tick {
            Some(t) if now >= t => {}
            _ => return,
        }
        self.next_tick = if self.by_key.is_empty() {
            None
        } else {
            Some(now + TIMER_TICK)
        };
        if self
            .last_limiter_reset
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.limiter.reset_count();
            self.last_limiter_reset = Some(now);
        }
        for idx in 0..self.peers.len() {
            let Some(peer) = self.peers[idx].as_mut() else {
                continue;
            };
            peer.disco_tokens =
                (peer.disco_tokens + session::DISCO_REFILL).min(session::DISCO_BURST);
            if peer.expired {
                self.discover(idx as u32, now, tx);
                continue;
            }
            let len = match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(b) => b.len(),
                TunnResult::Err(boringtun::noise::errors::WireGuardError::ConnectionExpired) => {
                    peer.expired = true;
                    self.discover(idx as u32, now, tx);
                    continue;
                }
                _ => {
                    self.discover(idx as u32, now, tx);
                    continue;
                }
            };
            let Some(path) = peer.path.current(now) else {
                self.drops[DropReason::NoPath as usize] += 1;
                continue;
            };
            tx.push_copy(path, peer.public, &self.scratch[..len]);
            peer.stats.tx_datagrams += 1;
            peer.path.on_send(path, now);
            self.probe(idx as u32, path, now, tx);
        }
    }
}

#[cfg(test)]
mod tests;
