//! One peer: boringtun's `Tunn` plus our bookkeeping (path, counters).
//!
//! This is the one documented place below the runtime where time is read: `Tunn` reads
//! the monotonic clock inside its timers (boringtun `noise/timers.rs`). Everything we
//! add here takes `now` from the caller.

use super::path::Path;
use super::{DropReason, PeerConfig};
use crate::wire::key::{NodePrivate, NodePublic};
use boringtun::noise::Tunn;
use boringtun::noise::errors::WireGuardError;
use std::time::Instant;

/// Discovery messages a peer may send in a burst, and the refill per timer tick
/// (40 per second at the 250 ms tick).
pub(crate) const DISCO_BURST: u32 = 40;
pub(crate) const DISCO_REFILL: u32 = 10;

/// Counters for one peer. Bytes count IP packets (plaintext), not datagrams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// IP packets sent to the peer.
    pub tx_packets: u64,
    /// Plaintext bytes sent to the peer.
    pub tx_bytes: u64,
    /// IP packets received from the peer.
    pub rx_packets: u64,
    /// Plaintext bytes received from the peer.
    pub rx_bytes: u64,
    /// Datagrams (any kind) sent, including handshakes and keepalives.
    pub tx_datagrams: u64,
    /// Authenticated datagrams received.
    pub rx_datagrams: u64,
    /// When the current session's handshake completed.
    pub last_handshake: Option<Instant>,
    /// Datagrams from this peer dropped, by reason (indexed by `DropReason as usize`).
    pub drops: [u64; DropReason::COUNT],
}

/// A configured peer and its session.
pub(crate) struct Peer {
    pub(crate) public: NodePublic,
    pub(crate) tunn: Tunn,
    pub(crate) config: PeerConfig,
    pub(crate) path: Path,
    pub(crate) stats: PeerStats,
    /// `update_timers` reported the session expired; skip it until new traffic.
    pub(crate) expired: bool,
    /// The discovery box with this peer, built on first use (it costs a DH).
    pub(crate) opener: Option<crate::wire::disco::Opener>,
    /// Discovery messages this peer may still send before the next refill.
    pub(crate) disco_tokens: u32,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("public", &self.public)
            .field("path", &self.path)
            .finish()
    }
}

impl Peer {
    pub(crate) fn new(private: &NodePrivate, index: u32, config: PeerConfig, now: Instant) -> Self {
        let tunn = Tunn::new(
            private.to_static_secret(),
            boringtun::x25519::PublicKey::from(*config.public.as_bytes()),
            config.preshared_key,
            config.persistent_keepalive,
            index,
            // Each peer gets its own limiter (reset inside update_timers); the device keeps
            // a shared one in front of the anonymous initiation path.
            None,
        );
        Self {
            public: config.public,
            tunn,
            path: Path::new(&config, now),
            config,
            stats: PeerStats::default(),
            expired: false,
            opener: None,
            disco_tokens: DISCO_BURST,
        }
    }

    /// The discovery box with this peer.
    pub(crate) fn opener(&mut self, private: &NodePrivate) -> &crate::wire::disco::Opener {
        self.opener
            .get_or_insert_with(|| crate::wire::disco::Opener::new(private, self.public))
    }

    pub(crate) fn count_drop(&mut self, r: DropReason) {
        self.stats.drops[r as usize] += 1;
    }

    pub(crate) fn refresh_handshake(&mut self, now: Instant) {
        self.stats.last_handshake = self
            .tunn
            .time_since_last_handshake()
            .and_then(|d| now.checked_sub(d));
    }
}

/// Maps boringtun's errors onto our drop reasons.
pub(crate) fn drop_reason(e: &WireGuardError) -> DropReason {
    use WireGuardError::*;
    match e {
        DuplicateCounter | InvalidCounter => DropReason::Replay,
        InvalidAeadTag | InvalidMac | WrongKey | WrongIndex => DropReason::Auth,
        InvalidTai64nTimestamp | WrongTai64nTimestamp => DropReason::Replay,
        NoCurrentSession => DropReason::NoSession,
        UnderLoad => DropReason::UnderLoad,
        ConnectionExpired => DropReason::Expired,
        IncorrectPacketLength | InvalidPacket | WrongPacketType | UnexpectedPacket => {
            DropReason::Malformed
        }
        DestinationBufferTooSmall | LockFailed => DropReason::Internal,
    }
}
