//! What the registry says about an agent id: online (here or on another replica),
//! offline and why, or unknown.

use super::{Conflict, Registry};
use crate::wire::addr::NodeId;
use std::time::Instant;

/// What the registry knows about an agent id being connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// Registered now.
    Online {
        /// When its stream registered.
        since: Instant,
        /// When anything last arrived on its stream.
        last_seen: Instant,
        /// Other processes refused the id meanwhile.
        conflict: Option<Conflict>,
    },
    /// Was registered, and its stream is gone.
    Offline {
        /// When the stream went away.
        since: Instant,
        /// It said goodbye (stopped cleanly) rather than vanishing.
        graceful: bool,
        /// Why the stream ended, for the operator.
        reason: String,
        /// The stream was on another replica that stopped answering: the agent itself
        /// may be fine (its relay and tunnels do not depend on that replica), and it
        /// registers again elsewhere once it notices.
        replica_lost: bool,
    },
    /// Not seen since this registry started.
    Unknown,
}
/// How an agent's stream ended, as [`Presence::Offline`] reports it.
#[derive(Debug, Clone)]
pub(super) struct Departure {
    pub(super) since: Instant,
    pub(super) graceful: bool,
    pub(super) reason: String,
    pub(super) replica_lost: bool,
}

impl Registry {
    /// Whether agent `id` is connected, and since when.
    pub fn presence(&self, id: NodeId) -> Presence {
        if let Some(p) = self.peers.get(&id) {
            return Presence::Online {
                since: p.since,
                last_seen: p.last_seen,
                conflict: p.conflict,
            };
        }
        if self.remote.is_bound(id)
            && let Some(at) = self.latest
        {
            return Presence::Online {
                since: at,
                last_seen: at,
                conflict: None,
            };
        }
        match self.departed.get(&id) {
            Some(d) => Presence::Offline {
                since: d.since,
                graceful: d.graceful,
                reason: d.reason.clone(),
                replica_lost: d.replica_lost,
            },
            None => Presence::Unknown,
        }
    }
}
