//! Handshake initiations from keys the device does not know yet, held briefly.
//!
//! The coordinator introduces a client to an agent and the agent to the client at the
//! same moment, and the client begins its handshake as soon as it hears; its first
//! message can reach the agent before the agent has programmed the client's key (through
//! another replica of the coordinator, or simply on a faster path). Dropping it would
//! cost the client WireGuard's retry timer (5 s). Instead the device keeps the last few
//! such initiations for [`HOLD_FOR`] and answers them when the key is programmed
//! ([`super::Device::replay_held`]). The held bytes are only a copy of what arrived: the
//! replay goes through the same checks (load, MAC, decryption, replay timestamp) as any
//! initiation.

use super::{Device, PathSrc, Transmits};
use crate::wire::key::NodePublic;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An initiation is held this long (WireGuard's initiator retries after 5 s).
pub const HOLD_FOR: Duration = Duration::from_secs(3);
/// Initiations held at most; the oldest gives way.
pub const MAX_HELD: usize = 16;

#[derive(Debug)]
struct Held {
    key: NodePublic,
    src: PathSrc,
    at: Instant,
    bytes: Vec<u8>,
}

/// The held initiations. Bounded in number and age; see the module docs.
#[derive(Debug, Default)]
pub struct HeldInitiations {
    held: VecDeque<Held>,
    total: u64,
}

impl HeldInitiations {
    /// Holds an initiation that claims (or, over UDP, was shown) to come from `key`. A
    /// newer one from the same key and source replaces the older.
    pub fn hold(&mut self, key: NodePublic, src: PathSrc, datagram: &[u8], now: Instant) {
        self.expire(now);
        self.held.retain(|h| !(h.key == key && h.src == src));
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
        }
        self.held.push_back(Held {
            key,
            src,
            at: now,
            bytes: datagram.to_vec(),
        });
        self.total += 1;
    }

    /// Takes the initiations held for `key` that are still young enough to answer.
    pub fn take(&mut self, key: &NodePublic, now: Instant) -> Vec<(PathSrc, Vec<u8>)> {
        self.expire(now);
        let mut out = Vec::new();
        self.held.retain_mut(|h| {
            if h.key != *key {
                return true;
            }
            out.push((h.src, std::mem::take(&mut h.bytes)));
            false
        });
        out
    }

    fn expire(&mut self, now: Instant) {
        self.held
            .retain(|h| now.saturating_duration_since(h.at) < HOLD_FOR);
    }

    /// Held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Initiations ever held.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Device {
    /// Answers the handshake initiations held for `key` (it was just programmed): the
    /// replies go to `tx` like any other. Returns how many were replayed.
    pub fn replay_held(&mut self, key: &NodePublic, now: Instant, tx: &mut Transmits) -> usize {
        if !self.by_key.contains_key(key) {
            return 0;
        }
        let held = self.held.take(key, now);
        let mut plain = [0u8; crate::wire::wg::INITIATION_LEN];
        for (src, bytes) in &held {
            // Counted like any datagram if it fails now.
            let _ = self.decapsulate(now, *src, bytes, &mut plain, tx);
        }
        held.len()
    }

    /// Initiations held for unknown keys now, and ever.
    pub fn held_initiations(&self) -> (usize, u64) {
        (self.held.len(), self.held.total())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn k(n: u8) -> NodePublic {
        NodePublic::from_bytes([n; 32])
    }

    fn udp(port: u16) -> PathSrc {
        PathSrc::Udp(std::net::SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn bounded_by_number_and_age_and_replaced_per_source() {
        let t = Instant::now();
        let mut h = HeldInitiations::default();
        h.hold(k(1), udp(1), b"a", t);
        h.hold(k(1), udp(1), b"b", t);
        h.hold(k(1), udp(2), b"c", t);
        assert_eq!(
            h.len(),
            2,
            "a newer one from the same source replaces the older"
        );
        assert_eq!(
            h.take(&k(1), t),
            vec![(udp(1), b"b".to_vec()), (udp(2), b"c".to_vec())]
        );
        assert!(h.is_empty());

        for n in 0..(MAX_HELD as u8 + 4) {
            h.hold(k(n), udp(1), &[n], t);
        }
        assert_eq!(h.len(), MAX_HELD);
        assert!(h.take(&k(0), t).is_empty(), "the oldest gave way");
        assert_eq!(h.take(&k(5), t).len(), 1);

        h.hold(k(99), udp(1), b"x", t);
        assert!(h.take(&k(99), t + HOLD_FOR).is_empty(), "too old to answer");
        assert_eq!(h.total(), MAX_HELD as u64 + 8);
    }
}
