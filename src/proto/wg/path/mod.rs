//! Which transport a peer's datagrams take: direct UDP or a DERP region.
//!
//! Rules:
//! - A peer with no DERP region is reached over UDP at its configured endpoint, or at the
//!   source of its last authenticated datagram (roaming), like wg-quick.
//! - A peer with a DERP region starts on DERP (which always works). Its candidate UDP
//!   endpoints (advertised in its node, sent in its call-me-maybe, or seen as the source
//!   of its pings) are pinged alongside; a handshake initiation sent over DERP is copied
//!   to them too.
//! - Traffic moves to a direct address once authenticated packets flow both ways over it:
//!   a pong to our ping, or an authenticated WireGuard datagram from it. Among several,
//!   the lowest measured round trip wins; a better one must be clearly better
//!   ([`SWITCH_RATIO`]) so the path does not flap.
//! - A discovery round (ping every candidate, and over DERP a call-me-maybe with our
//!   endpoints so the peer pings us at the same moment, which opens both NATs) runs when
//!   the peer is added or its candidates change, when its call-me-maybe arrives, and
//!   every [`PROBE_INTERVAL`] while traffic flows over DERP.
//! - While on a direct path, sends that go unanswered for [`HEARTBEAT_AFTER`] trigger a
//!   ping on it; unanswered for [`DIRECT_UNANSWERED`], or silent for [`DIRECT_TRUST`], the
//!   path is abandoned (back to DERP) and rediscovered.
//! - `relay_only` pins the peer to DERP.

use super::PeerConfig;
use crate::wire::disco::TxId;
use crate::wire::key::NodePublic;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a direct path is trusted without anything authenticated arriving over it.
pub const DIRECT_TRUST: Duration = Duration::from_secs(30);
/// Sends over the direct path unanswered for this long: back to DERP.
pub const DIRECT_UNANSWERED: Duration = Duration::from_millis(1500);
/// Sends over the direct path unanswered for this long: ping it to find out.
pub const HEARTBEAT_AFTER: Duration = Duration::from_millis(500);
/// How often, at most, a discovery round runs while traffic flows over DERP.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A round asked for by the peer (its call-me-maybe) runs at most this often.
const MIN_ROUND_GAP: Duration = Duration::from_millis(250);
/// Rounds run only while we sent something this recently.
const ACTIVE: Duration = Duration::from_secs(5);
/// A ping unanswered for this long is forgotten.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Learned candidates with no pong for this long are forgotten.
const LEARNED_TTL: Duration = Duration::from_secs(120);
/// The most candidates kept, and pings in flight.
const MAX_CANDIDATES: usize = 32;
const MAX_PENDING: usize = 64;
/// A candidate replaces the path in use only with a round trip below this share of it.
pub const SWITCH_RATIO: f64 = 0.7;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathAddr {
    /// Directly over the device's UDP socket.
    Udp(SocketAddr),
    /// Through this DERP region, addressed to the peer's key.
    Derp(u16),
}

impl PathAddr {
    /// For people: `direct ADDR` or `relay (DERP region N)`.
    pub fn describe(self) -> String {
        match self {
            Self::Udp(a) => format!("direct {a}"),
            Self::Derp(r) => format!("relay (DERP region {r})"),
        }
    }
}

impl std::fmt::Display for PathAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp(a) => write!(f, "{a}"),
            Self::Derp(r) => write!(f, "DERP({r})"),
        }
    }
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSrc {
    /// The device's UDP socket, from this address.
    Udp(SocketAddr),
    /// A DERP region, sent by this key.
    Derp {
        /// The region the packet arrived through.
        region: u16,
        /// The sender's key as the relay reported it.
        key: NodePublic,
    },
}

impl PathSrc {
    /// The path a reply takes.
    pub fn reply(&self) -> PathAddr {
        match *self {
            Self::Udp(a) => PathAddr::Udp(a),
            Self::Derp { region, .. } => PathAddr::Derp(region),
        }
    }
}

/// How we came to know a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In the peer's node, from the coordinator (or configuration).
    Advertised,
    /// In the peer's call-me-maybe.
    CallMeMaybe,
    /// The source of the peer's ping: its address as our side of the network sees it.
    PeerReflexive,
}

/// One candidate direct address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// How it was learned.
    pub origin: Origin,
    /// The latest measured round trip.
    pub rtt: Option<Duration>,
    /// When a pong last came from it.
    pub last_pong: Option<Instant>,
    last_ping: Option<Instant>,
    learned: Instant,
}

/// What the device should send for this peer now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// Ping these addresses.
    pub pings: Vec<SocketAddr>,
    /// Send a call-me-maybe with our endpoints over DERP.
    pub call_me_maybe: bool,
}

/// A snapshot for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path the next datagram takes.
    pub current: Option<PathAddr>,
    /// The DERP region, if any.
    pub derp_region: Option<u16>,
    /// The direct address in use or last used.
    pub direct: Option<SocketAddr>,
    /// Its round trip, when measured.
    pub direct_rtt: Option<Duration>,
    /// The latest round trip over DERP (from a ping sent there).
    pub derp_rtt: Option<Duration>,
    /// Every candidate.
    pub candidates: Vec<Candidate>,
    /// Our address as the peer saw it (from its pongs).
    pub seen_as: Option<SocketAddr>,
    /// Discovery rounds run.
    pub rounds: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    txid: TxId,
    to: PathAddr,
    sent: Instant,
}

/// Path state for one peer.
#[derive(Debug, Clone)]
pub struct Path {
    derp_region: Option<u16>,
    relay_only: bool,
    candidates: Vec<Candidate>,
    /// The direct address in use: configured, or proven by authenticated traffic.
    udp: Option<SocketAddr>,
    udp_rtt: Option<Duration>,
    udp_last_rx: Option<Instant>,
    /// First UDP send since the last UDP receive.
    udp_unanswered_since: Option<Instant>,
    last_heartbeat: Option<Instant>,
    last_send: Option<Instant>,
    last_round: Option<Instant>,
    /// A round is due at once (peer added, candidates changed, call-me-maybe, wake).
    round_due: bool,
    pending: Vec<Pending>,
    derp_rtt: Option<Duration>,
    seen_as: Option<SocketAddr>,
    rounds: u64,
}

impl Path {
    pub(crate) fn new(cfg: &PeerConfig, now: Instant) -> Self {
        let mut p = Self {
            derp_region: cfg.derp_region,
            relay_only: cfg.relay_only,
            candidates: Vec::new(),
            udp: cfg.endpoint,
            udp_rtt: None,
            udp_last_rx: None,
            udp_unanswered_since: None,
            last_heartbeat: None,
            last_send: None,
            last_round: None,
            round_due: false,
            pending: Vec::new(),
            derp_rtt: None,
            seen_as: None,
            rounds: 0,
        };
        p.set_advertised(&cfg.candidates, now);
        p
    }

    fn discovers(&self) -> bool {
        self.derp_region.is_some() && !self.relay_only
    }

    /// Replaces the advertised candidates; a change starts a round with a call-me-maybe.
    fn set_advertised(&mut self, advertised: &[SocketAddr], now: Instant) {
        let before: Vec<SocketAddr> = self
            .candidates
            .iter()
            .filter(|c| c.origin == Origin::Advertised)
            .map(|c| c.addr)
            .collect();
        if before == advertised {
            return;
        }
        self.candidates.retain(|c| c.origin != Origin::Advertised);
        for a in advertised.iter().rev() {
            self.learn(*a, Origin::Advertised, now);
        }
        if self.discovers() {
            self.round_due = true;
        }
    }

    /// Applies a configuration change, keeping what was learned where it still applies.
    pub(crate) fn reconfigure(&mut self, cfg: &PeerConfig, now: Instant) {
        self.derp_region = cfg.derp_region;
        self.relay_only = cfg.relay_only;
        if cfg.endpoint.is_some() {
            self.udp = cfg.endpoint;
        }
        self.set_advertised(&cfg.candidates, now);
    }

    /// Adds (or refreshes) a candidate. Advertised ones go first; learned ones beyond
    /// the cap replace the oldest learned one.
    fn learn(&mut self, addr: SocketAddr, origin: Origin, now: Instant) -> bool {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            if origin == Origin::Advertised {
                c.origin = origin;
            }
            c.learned = now;
            return false;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            let oldest = self
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| c.origin != Origin::Advertised)
                .min_by_key(|(_, c)| c.learned)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => return false,
            }
        }
        let c = Candidate {
            addr,
            origin,
            rtt: None,
            last_pong: None,
            last_ping: None,
            learned: now,
        };
        if origin == Origin::Advertised {
            self.candidates.insert(0, c);
        } else {
            self.candidates.push(c);
        }
        true
    }

    fn direct_alive(&self, now: Instant) -> bool {
        let Some(rx) = self.udp_last_rx else {
            return false;
        };
        if now.saturating_duration_since(rx) >= DIRECT_TRUST {
            return false;
        }
        self.udp_unanswered_since
            .is_none_or(|t| now.saturating_duration_since(t) < DIRECT_UNANSWERED)
    }

    /// The path for the next datagram, or `None` if the peer is unreachable.
    pub fn current(&self, now: Instant) -> Option<PathAddr> {
        match self.derp_region {
            None => self.udp.map(PathAddr::Udp),
            Some(region) if self.relay_only => Some(PathAddr::Derp(region)),
            Some(region) => match self.udp {
                Some(a) if self.direct_alive(now) => Some(PathAddr::Udp(a)),
                _ => Some(PathAddr::Derp(region)),
            },
        }
    }

    /// Whether the peer is currently on a direct path.
    pub fn is_direct(&self, now: Instant) -> bool {
        matches!(self.current(now), Some(PathAddr::Udp(_)))
    }

    /// The DERP region, if any.
    pub fn derp_region(&self) -> Option<u16> {
        self.derp_region
    }

    /// A snapshot for diagnostics.
    pub fn info(&self, now: Instant) -> PathInfo {
        PathInfo {
            current: self.current(now),
            derp_region: self.derp_region,
            direct: self.udp,
            direct_rtt: self.udp_rtt,
            derp_rtt: self.derp_rtt,
            candidates: self.candidates.clone(),
            seen_as: self.seen_as,
            rounds: self.rounds,
        }
    }

    /// Records a datagram we sent on `path`.
    pub(crate) fn on_send(&mut self, path: PathAddr, now: Instant) {
        self.last_send = Some(now);
        if let PathAddr::Udp(_) = path {
            self.on_send_direct(now);
        }
    }

    /// Something that expects an answer went out on the direct path.
    fn on_send_direct(&mut self, now: Instant) {
        if self.derp_region.is_some() && self.udp_unanswered_since.is_none() {
            self.udp_unanswered_since = Some(now);
        }
    }

    /// Records an authenticated WireGuard datagram from `src`: over UDP it proves the
    /// address works both ways (the peer sent from it, so its NAT lets our answer in).
    pub(crate) fn on_authenticated(&mut self, src: PathSrc, now: Instant) {
        if let PathSrc::Udp(addr) = src {
            if self.relay_only {
                return;
            }
            if self.udp != Some(addr) {
                self.udp_rtt = None;
            }
            self.udp = Some(addr);
            self.udp_last_rx = Some(now);
            self.udp_unanswered_since = None;
        }
    }

    /// The peer's call-me-maybe: its endpoints, and a request to probe them now.
    pub(crate) fn handle_call_me_maybe(&mut self, endpoints: &[SocketAddr], now: Instant) {
        if !self.discovers() {
            return;
        }
        for e in endpoints {
            self.learn(*e, Origin::CallMeMaybe, now);
        }
        if !self.direct_alive(now) {
            self.round_due = true;
        }
    }

    /// A ping from the peer arrived over UDP from `from`. Returns whether to ping back
    /// (an address we have not pinged lately: our ping through our own NAT is what lets
    /// the peer's next packets in).
    pub(crate) fn handle_ping_from(&mut self, from: SocketAddr, now: Instant) -> bool {
        if !self.discovers() {
            return false;
        }
        self.learn(from, Origin::PeerReflexive, now);
        let recently = self
            .candidates
            .iter()
            .find(|c| c.addr == from)
            .and_then(|c| c.last_ping)
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
        !recently && !self.direct_alive(now)
    }

    /// Records a ping we sent (the device made the transaction id).
    pub(crate) fn record_ping(&mut self, txid: TxId, to: PathAddr, now: Instant) {
        self.pending
            .retain(|p| now.saturating_duration_since(p.sent) < PING_TIMEOUT);
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending {
            txid,
            to,
            sent: now,
        });
        if let PathAddr::Udp(a) = to {
            if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == a) {
                c.last_ping = Some(now);
            }
            // A ping on the path in use expects an answer like any send: with no data
            // flowing (a peer only pinged, as `agentwire ping` does), a NAT that dropped
            // its mapping would otherwise keep the path "direct" until DIRECT_TRUST.
            if self.udp == Some(a) {
                self.on_send_direct(now);
            }
        }
    }

    /// A pong from the peer. Returns the round trip if it answers a ping of ours over the
    /// path it came back on.
    pub(crate) fn handle_pong(
        &mut self,
        txid: &TxId,
        from: PathSrc,
        seen_as: SocketAddr,
        now: Instant,
    ) -> Option<Duration> {
        let i = self
            .pending
            .iter()
            .position(|p| p.txid == *txid && p.to == from.reply())?;
        let p = self.pending.swap_remove(i);
        let rtt = now.saturating_duration_since(p.sent);
        match p.to {
            PathAddr::Derp(_) => self.derp_rtt = Some(rtt),
            PathAddr::Udp(addr) => {
                self.seen_as = Some(seen_as);
                if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) {
                    c.rtt = Some(rtt);
                    c.last_pong = Some(now);
                }
                if self.relay_only {
                    return Some(rtt);
                }
                let alive = self.direct_alive(now);
                let better = match (self.udp, self.udp_rtt) {
                    (Some(cur), _) if cur == addr => true,
                    (Some(_), Some(cur_rtt)) if alive => {
                        rtt.as_secs_f64() < cur_rtt.as_secs_f64() * SWITCH_RATIO
                    }
                    (Some(_), None) if alive => false,
                    _ => true,
                };
                if better {
                    self.udp = Some(addr);
                    self.udp_rtt = Some(rtt);
                    self.udp_last_rx = Some(now);
                    self.udp_unanswered_since = None;
                }
            }
        }
        Some(rtt)
    }

    /// What to send now: a discovery round, or a heartbeat on the direct path.
    pub(crate) fn poll_probe(&mut self, now: Instant) -> Probe {
        let mut probe = Probe::default();
        if !self.discovers() {
            return probe;
        }
        let alive = self.direct_alive(now);
        let active = self
            .last_send
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE);
        let since_round = self.last_round.map(|t| now.saturating_duration_since(t));
        let asked = self.round_due && since_round.is_none_or(|d| d >= MIN_ROUND_GAP);
        let periodic = !alive && active && since_round.is_none_or(|d| d >= PROBE_INTERVAL);
        if asked || periodic {
            self.round_due = false;
            self.last_round = Some(now);
            self.rounds += 1;
            self.candidates.retain(|c| {
                c.origin == Origin::Advertised
                    || now.saturating_duration_since(c.last_pong.unwrap_or(c.learned)) < LEARNED_TTL
            });
            probe.pings = self.candidates.iter().map(|c| c.addr).collect();
            // Over DERP, ask the peer to probe us at the same moment.
            probe.call_me_maybe = !alive;
            return probe;
        }
        // Heartbeat: the direct path has gone quiet while we send on it.
        if alive
            && let (Some(addr), Some(t)) = (self.udp, self.udp_unanswered_since)
            && now.saturating_duration_since(t) >= HEARTBEAT_AFTER
            && self
                .last_heartbeat
                .is_none_or(|h| now.saturating_duration_since(h) >= HEARTBEAT_AFTER)
        {
            self.last_heartbeat = Some(now);
            probe.pings.push(addr);
        }
        probe
    }

    /// Forgets what was learned about the direct path (after a sleep or network change)
    /// and asks for a fresh round. Peers with a configured endpoint and no relay keep it.
    pub(crate) fn forget_direct(&mut self) {
        self.udp_last_rx = None;
        self.udp_unanswered_since = None;
        self.udp_rtt = None;
        self.pending.clear();
        self.last_round = None;
        if self.discovers() {
            self.round_due = true;
        }
    }

    /// Our own endpoints changed: tell the peer at the next round.
    pub(crate) fn endpoints_changed(&mut self) {
        if self.discovers() {
            self.round_due = true;
        }
    }

    /// Where to copy a handshake initiation sent over DERP: every candidate, unless a
    /// direct path already works.
    pub(crate) fn initiation_targets(&self, now: Instant) -> Vec<SocketAddr> {
        if !self.discovers() || self.direct_alive(now) {
            return Vec::new();
        }
        let mut targets: Vec<SocketAddr> = self.candidates.iter().map(|c| c.addr).collect();
        if let Some(a) = self.udp
            && !targets.contains(&a)
        {
            targets.push(a);
        }
        targets
    }
}

#[cfg(test)]
mod tests;
