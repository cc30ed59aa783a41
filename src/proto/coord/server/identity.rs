//! Who may hold a node id and a WireGuard key, and which endpoints a node may advertise.
//!
//! These rules keep one peer from borrowing another's identity: an agent id belongs to one
//! live process at a time, and a WireGuard key to one node id.

use super::PeerAuth;
use crate::wire::addr::NodeId;
use crate::wire::key::NodePublic;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The most endpoints kept from one node; the rest are dropped.
pub const MAX_ENDPOINTS: usize = 16;

/// Registrations refused for an id while one stream held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// How many were refused.
    pub count: u64,
    /// When the first was refused.
    pub first: Instant,
    /// When the latest was refused.
    pub last: Instant,
}

impl Conflict {
    pub(super) fn record(prev: Option<Conflict>, now: Instant) -> Conflict {
        match prev {
            Some(c) => Conflict {
                count: c.count + 1,
                first: c.first,
                last: now.max(c.last),
            },
            None => Conflict {
                count: 1,
                first: now,
                last: now,
            },
        }
    }
}

/// What a second registration for a live id does to the live stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Takeover {
    /// Clients and services: the newest stream wins (a laptop that moved networks).
    Newest,
    /// The same process reconnected; its old stream is dead.
    SameProcess,
    /// The live stream has been silent past the grace period.
    Silent,
    /// Another process while the live one still answers: refuse the newcomer.
    Refuse {
        /// How long the live stream has been silent.
        silent: Duration,
    },
}

impl Takeover {
    pub(super) fn judge(
        auth: &PeerAuth,
        old_instance: &str,
        new_instance: &str,
        last_seen: Instant,
        grace: Duration,
        now: Instant,
    ) -> Takeover {
        if !matches!(auth, PeerAuth::Agent { .. }) {
            return Takeover::Newest;
        }
        if !new_instance.is_empty() && new_instance == old_instance {
            return Takeover::SameProcess;
        }
        let silent = now.saturating_duration_since(last_seen);
        if silent >= grace {
            Takeover::Silent
        } else {
            Takeover::Refuse { silent }
        }
    }

    /// The close reason the replaced stream gets.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Takeover::Newest | Takeover::Refuse { .. } => "replaced by a newer stream",
            Takeover::SameProcess => "replaced by a newer stream from the same process",
            Takeover::Silent => "replaced: this stream was silent and another process took the id",
        }
    }
}

/// The WireGuard keys in use: one node id per key.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// Keys of live nodes.
    live: BTreeMap<NodePublic, NodeId>,
    /// The latest key of every agent seen, and its reverse: an offline agent's key stays
    /// reserved for it, so nobody can claim it while the agent is away. Bounded by the
    /// agent ids the control plane issues.
    agent_key: BTreeMap<NodeId, NodePublic>,
    agent_of: BTreeMap<NodePublic, NodeId>,
}

impl Keys {
    /// `Err(owner)` if `key` belongs to a node other than `id`.
    pub(super) fn check(&self, id: NodeId, key: NodePublic) -> Result<(), NodeId> {
        let other = |o: &NodeId| *o != id;
        if let Some(o) = self.live.get(&key).filter(|o| other(o)) {
            return Err(*o);
        }
        if let Some(o) = self.agent_of.get(&key).filter(|o| other(o)) {
            return Err(*o);
        }
        Ok(())
    }

    /// Records `key` as `id`'s. True if `id` is an agent known before with another key.
    pub(super) fn claim(&mut self, id: NodeId, key: NodePublic, is_agent: bool) -> bool {
        self.live.insert(key, id);
        if !is_agent {
            return false;
        }
        let prev = self.agent_key.insert(id, key);
        if let Some(old) = prev.filter(|k| *k != key) {
            self.agent_of.remove(&old);
        }
        self.agent_of.insert(key, id);
        prev.is_some_and(|k| k != key)
    }

    /// Whether a live node holds `key`.
    pub(super) fn is_live(&self, key: &NodePublic) -> bool {
        self.live.contains_key(key)
    }

    /// `id`'s stream went away.
    pub(super) fn release(&mut self, id: NodeId, key: Option<NodePublic>) {
        if let Some(k) = key
            && self.live.get(&k) == Some(&id)
        {
            self.live.remove(&k);
        }
    }

    /// # Panics
    /// If the live index does not name `id` for `key`; for tests and fuzzing.
    #[cfg(any(test, fuzzing))]
    pub(super) fn check_live(&self, id: NodeId, key: NodePublic) {
        assert_eq!(self.live.get(&key), Some(&id), "live key index");
    }
}

/// Keeps only endpoints a peer may be sent packets at: unicast addresses with a port,
/// each once, at most [`MAX_ENDPOINTS`], in the order given. Returns how many it dropped.
pub fn sanitize_endpoints(endpoints: &mut Vec<SocketAddr>) -> usize {
    let before = endpoints.len();
    let mut seen = Vec::with_capacity(MAX_ENDPOINTS);
    endpoints.retain(|ep| {
        if seen.len() >= MAX_ENDPOINTS || !is_unicast(ep) || seen.contains(ep) {
            return false;
        }
        seen.push(*ep);
        true
    });
    before - endpoints.len()
}

fn is_unicast(ep: &SocketAddr) -> bool {
    if ep.port() == 0 {
        return false;
    }
    match ep.ip() {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            !(v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || first == 0
                || first >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_unicast(&SocketAddr::new(IpAddr::V4(v4), ep.port())),
            None => !(v6.is_unspecified() || v6.is_multicast()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unicast_unique_and_capped() {
        let mut eps: Vec<SocketAddr> = [
            "10.0.0.1:41641",
            "10.0.0.1:41641",
            "0.0.0.0:1",
            "224.0.0.1:5",
            "255.255.255.255:9",
            "10.0.0.2:0",
            "[ff02::1]:7",
            "[::]:7",
            "[::ffff:224.0.0.1]:7",
            "[fd00::1]:7",
            "127.0.0.1:9",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(sanitize_endpoints(&mut eps), 8);
        let kept: Vec<String> = eps.iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["10.0.0.1:41641", "[fd00::1]:7", "127.0.0.1:9"]);

        let mut many: Vec<SocketAddr> = (0..3000)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 41641)))
            .collect();
        many.insert(1, many[0]);
        assert_eq!(sanitize_endpoints(&mut many), 3001 - MAX_ENDPOINTS);
        assert_eq!(many.len(), MAX_ENDPOINTS);
    }

    #[test]
    fn same_point_many_times_is_one() {
        let ep: SocketAddr = "192.0.2.7:9".parse().unwrap();
        let mut eps = vec![ep; 3000];
        assert_eq!(sanitize_endpoints(&mut eps), 2999);
        assert_eq!(eps, vec![ep]);
    }
}
