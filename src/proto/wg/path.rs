//! Which transport a peer's datagrams take: direct UDP or a DERP region.
//!
//! Rules:
//! - A peer with no DERP region is reached over UDP at its configured endpoint, or at the
//!   source of its last authenticated datagram (roaming), like wg-quick.
//! - A peer with a DERP region starts on DERP (which always works). Its advertised UDP
//!   endpoints are probed alongside; once an authenticated datagram arrives over UDP,
//!   traffic moves to that address.
//! - The direct path is abandoned (back to DERP) when it goes silent: nothing authenticated
//!   over UDP for [`DIRECT_TRUST`], or our UDP sends unanswered for [`DIRECT_UNANSWERED`].
//! - `relay_only` pins the peer to DERP.

use super::PeerConfig;
use crate::wire::key::NodePublic;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an unrefreshed direct path is trusted.
pub const DIRECT_TRUST: Duration = Duration::from_secs(30);
/// Sending over UDP with no reply for this long marks the direct path dead.
pub const DIRECT_UNANSWERED: Duration = Duration::from_secs(5);
/// How often, at most, candidates are probed while on DERP.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathAddr {
    /// Directly over the device's UDP socket.
    Udp(SocketAddr),
    /// Through this DERP region, addressed to the peer's key.
    Derp(u16),
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

/// Path state for one peer.
#[derive(Debug, Clone)]
pub struct Path {
    derp_region: Option<u16>,
    relay_only: bool,
    candidates: Vec<SocketAddr>,
    /// The direct address in use: configured, or learned from an authenticated datagram.
    udp: Option<SocketAddr>,
    udp_last_rx: Option<Instant>,
    /// First UDP send since the last UDP receive.
    udp_unanswered_since: Option<Instant>,
    last_probe: Option<Instant>,
}

impl Path {
    pub(crate) fn new(cfg: &PeerConfig, _now: Instant) -> Self {
        Self {
            derp_region: cfg.derp_region,
            relay_only: cfg.relay_only,
            candidates: cfg.candidates.clone(),
            udp: cfg.endpoint,
            udp_last_rx: None,
            udp_unanswered_since: None,
            last_probe: None,
        }
    }

    /// Applies a configuration change, keeping what was learned where it still applies.
    pub(crate) fn reconfigure(&mut self, cfg: &PeerConfig) {
        self.derp_region = cfg.derp_region;
        self.relay_only = cfg.relay_only;
        self.candidates = cfg.candidates.clone();
        if cfg.endpoint.is_some() {
            self.udp = cfg.endpoint;
        }
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

    /// Records a datagram we sent on `path`.
    pub(crate) fn on_send(&mut self, path: PathAddr, now: Instant) {
        if let PathAddr::Udp(_) = path
            && self.derp_region.is_some()
            && self.udp_unanswered_since.is_none()
        {
            self.udp_unanswered_since = Some(now);
        }
    }

    /// Records an authenticated datagram from `src`. Roams the direct address to it.
    pub(crate) fn on_authenticated(&mut self, src: PathSrc, now: Instant) {
        if let PathSrc::Udp(addr) = src {
            if self.relay_only {
                return;
            }
            self.udp = Some(addr);
            self.udp_last_rx = Some(now);
            self.udp_unanswered_since = None;
        }
    }

    /// Forgets what was learned about the direct path (after a sleep or network change).
    /// Peers with a configured endpoint and no relay keep using it.
    pub(crate) fn forget_direct(&mut self) {
        self.udp_last_rx = None;
        self.udp_unanswered_since = None;
        self.last_probe = None;
    }

    /// Addresses to probe now alongside a DERP send, if it is time to probe.
    pub(crate) fn probe_targets(&mut self, now: Instant) -> Vec<SocketAddr> {
        if self.relay_only || self.derp_region.is_none() || self.direct_alive(now) {
            return Vec::new();
        }
        if self
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_INTERVAL)
        {
            return Vec::new();
        }
        let mut targets = self.candidates.clone();
        if let Some(a) = self.udp
            && !targets.contains(&a)
        {
            targets.push(a);
        }
        if !targets.is_empty() {
            self.last_probe = Some(now);
        }
        targets
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::wire::key::NodePrivate;

    fn cfg(derp: Option<u16>, endpoint: Option<SocketAddr>, cands: &[&str]) -> PeerConfig {
        let mut c = PeerConfig::new(NodePrivate::generate().public());
        c.derp_region = derp;
        c.endpoint = endpoint;
        c.candidates = cands.iter().map(|s| s.parse().unwrap()).collect();
        c
    }

    #[test]
    fn static_endpoint_without_derp_roams() {
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut p = Path::new(&cfg(None, Some(a), &[]), t0);
        assert_eq!(p.current(t0), Some(PathAddr::Udp(a)));
        p.on_authenticated(PathSrc::Udp(b), t0);
        assert_eq!(
            p.current(t0 + Duration::from_secs(3600)),
            Some(PathAddr::Udp(b))
        );
        assert!(p.probe_targets(t0).is_empty());
    }

    #[test]
    fn derp_first_then_direct_then_back() {
        let t0 = Instant::now();
        let c: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        let mut p = Path::new(&cfg(Some(7), None, &["127.0.0.1:3000"]), t0);
        assert_eq!(p.current(t0), Some(PathAddr::Derp(7)));
        assert_eq!(p.probe_targets(t0), vec![c]);
        assert!(p.probe_targets(t0 + Duration::from_millis(500)).is_empty());
        p.on_authenticated(PathSrc::Udp(c), t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(p.current(t1), Some(PathAddr::Udp(c)));
        // Sends go unanswered: after DIRECT_UNANSWERED we are back on DERP.
        p.on_send(PathAddr::Udp(c), t1);
        assert_eq!(
            p.current(t1 + Duration::from_secs(4)),
            Some(PathAddr::Udp(c))
        );
        assert_eq!(p.current(t1 + DIRECT_UNANSWERED), Some(PathAddr::Derp(7)));
        // A reply revives it.
        p.on_authenticated(PathSrc::Udp(c), t1 + Duration::from_secs(6));
        assert_eq!(
            p.current(t1 + Duration::from_secs(6)),
            Some(PathAddr::Udp(c))
        );
        // Silence past DIRECT_TRUST falls back too.
        assert_eq!(
            p.current(t1 + Duration::from_secs(6) + DIRECT_TRUST),
            Some(PathAddr::Derp(7))
        );
    }

    #[test]
    fn relay_only_ignores_udp() {
        let t0 = Instant::now();
        let mut c = cfg(Some(1), None, &["127.0.0.1:3000"]);
        c.relay_only = true;
        let mut p = Path::new(&c, t0);
        p.on_authenticated(PathSrc::Udp("127.0.0.1:3000".parse().unwrap()), t0);
        assert_eq!(p.current(t0), Some(PathAddr::Derp(1)));
        assert!(p.probe_targets(t0).is_empty());
    }
}
