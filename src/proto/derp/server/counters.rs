//! Server counters: relayed traffic and drops by reason. Atomics, so every connection
//! task counts without a lock; [`ServerCounters::snapshot`] reads them all.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the server dropped a packet or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A packet for a key that is not connected.
    NoSuchPeer,
    /// The destination's queue was full; its oldest packet was dropped.
    QueueFull,
    /// The destination left with packets still queued.
    Gone,
    /// A frame over its size limit; the connection is closed.
    TooLarge,
    /// A frame of a type the server does not handle; skipped.
    UnknownFrame,
    /// A malformed frame after login; the connection is closed.
    Malformed,
    /// A failed login: garbage, wrong frame, bad box, timeout.
    BadLogin,
    /// The client's socket stayed unwritable past the write timeout; closed.
    WriteTimeout,
    /// A mesh-only frame from a client without the mesh key; closed.
    MeshDenied,
    /// A control message (PeerGone) that did not fit the client's control queue.
    ControlQueueFull,
    /// A connection refused because its source address has too many open.
    PerIpLimit,
    /// A connection refused because the server has too many open.
    ConnLimit,
    /// A logged-in client that sent nothing for the idle timeout; closed.
    IdleTimeout,
    /// A login with a key the admission check refused; closed.
    NotAdmitted,
    /// A packet for a slow receiver dropped because the global queue budget was spent.
    BudgetFull,
    /// A mesh link's queue was full; its oldest packet was dropped.
    MeshQueueFull,
}

impl DropReason {
    /// Every reason, for iterating counters.
    pub const ALL: [DropReason; 16] = [
        Self::NoSuchPeer,
        Self::QueueFull,
        Self::Gone,
        Self::TooLarge,
        Self::UnknownFrame,
        Self::Malformed,
        Self::BadLogin,
        Self::WriteTimeout,
        Self::MeshDenied,
        Self::ControlQueueFull,
        Self::PerIpLimit,
        Self::ConnLimit,
        Self::IdleTimeout,
        Self::NotAdmitted,
        Self::BudgetFull,
        Self::MeshQueueFull,
    ];

    /// A stable snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSuchPeer => "no_such_peer",
            Self::QueueFull => "queue_full",
            Self::Gone => "gone",
            Self::TooLarge => "too_large",
            Self::UnknownFrame => "unknown_frame",
            Self::Malformed => "malformed",
            Self::BadLogin => "bad_login",
            Self::WriteTimeout => "write_timeout",
            Self::MeshDenied => "mesh_denied",
            Self::ControlQueueFull => "control_queue_full",
            Self::PerIpLimit => "per_ip_limit",
            Self::ConnLimit => "conn_limit",
            Self::IdleTimeout => "idle_timeout",
            Self::NotAdmitted => "not_admitted",
            Self::BudgetFull => "budget_full",
            Self::MeshQueueFull => "mesh_queue_full",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters, shared by all connection tasks.
        #[derive(Debug, Default)]
        pub struct ServerCounters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            drops: [AtomicU64; DropReason::ALL.len()],
        }

        /// A point-in-time copy of [`ServerCounters`].
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct ServerStats {
            $( $(#[$doc])* pub $name: u64, )*
            /// Drops by reason, in [`DropReason::ALL`] order.
            pub drops: [u64; DropReason::ALL.len()],
        }

        impl ServerCounters {
            /// Reads every counter.
            pub fn snapshot(&self) -> ServerStats {
                ServerStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    drops: std::array::from_fn(|i| {
                        self.drops.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
                    }),
                }
            }
        }
    };
}

counters! {
    /// Connections accepted (both transports), before login.
    accepts,
    /// Of those, websocket connections.
    accepts_websocket,
    /// Successful logins.
    logins,
    /// Connections closed because a newer connection logged in with the same key.
    replaced,
    /// SendPacket and ForwardPacket payloads accepted for routing.
    packets_in,
    /// Their payload bytes.
    bytes_in,
    /// RecvPacket frames written to destinations.
    packets_relayed,
    /// Their payload bytes.
    bytes_relayed,
    /// PeerGone(NotHere) frames queued.
    peer_gone_not_here,
    /// PeerGone(Disconnected) frames queued.
    peer_gone_disconnected,
    /// Pings answered.
    pongs,
    /// KeepAlive frames written.
    keepalives,
    /// Restarting frames written at shutdown.
    restarting,
    /// Packets queued on a mesh link for a key connected to a peer relay.
    forwarded_out,
    /// ForwardPacket frames accepted from peer relays.
    forwarded_in,
}

impl ServerCounters {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a drop.
    pub fn drop(&self, reason: DropReason) {
        self.drop_n(reason, 1);
    }

    /// Counts `n` drops.
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl ServerStats {
    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let c = ServerCounters::default();
        c.drop(DropReason::QueueFull);
        c.drop_n(DropReason::QueueFull, 2);
        c.drop(DropReason::BadLogin);
        ServerCounters::add(&c.bytes_in, 10);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::QueueFull), 3);
        assert_eq!(s.dropped(DropReason::BadLogin), 1);
        assert_eq!(s.dropped(DropReason::NoSuchPeer), 0);
        assert_eq!(s.bytes_in, 10);
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
