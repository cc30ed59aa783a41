//! Drop reasons: why the device refused a datagram or packet.

/// Why a datagram or packet was dropped. Counted per device and per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Not a well-formed WireGuard message.
    Malformed,
    /// Larger than any valid datagram.
    TooLarge,
    /// Arrived over DERP and is neither WireGuard nor a discovery message.
    NotWireGuard,
    /// No peer with that key or receiver index.
    UnknownPeer,
    /// Failed authentication: bad MAC, tag, key or index.
    Auth,
    /// A replayed counter or handshake timestamp.
    Replay,
    /// Transport data for a session we do not have.
    NoSession,
    /// Handshake refused while under load (no cookie possible).
    UnderLoad,
    /// The session expired.
    Expired,
    /// Decrypted packet's source address is not in the peer's allowed IPs.
    SourceNotAllowed,
    /// Outgoing packet with no peer owning its destination.
    NoRoute,
    /// The peer has no endpoint or relay to send to.
    NoPath,
    /// Outgoing packet is not a valid IP packet.
    BadPacket,
    /// A transmit queue was full.
    QueueFull,
    /// An internal invariant failed (buffer sizing); never caused by input.
    Internal,
    /// A discovery message from a peer beyond its rate limit.
    DiscoLimited,
    /// Transport data from a peer over its fair share of a backlogged receive window,
    /// dropped before decryption.
    FairShare,
    /// Transport data from a peer whose decrypted traffic was mostly addressed to
    /// nothing, over its restricted rate; dropped before decryption.
    Wasteful,
}

impl DropReason {
    /// Number of reasons, for counter arrays.
    pub const COUNT: usize = 18;
    /// Every reason, in counter-array order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Malformed,
        Self::TooLarge,
        Self::NotWireGuard,
        Self::UnknownPeer,
        Self::Auth,
        Self::Replay,
        Self::NoSession,
        Self::UnderLoad,
        Self::Expired,
        Self::SourceNotAllowed,
        Self::NoRoute,
        Self::NoPath,
        Self::BadPacket,
        Self::QueueFull,
        Self::Internal,
        Self::DiscoLimited,
        Self::FairShare,
        Self::Wasteful,
    ];
    /// A stable snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::NotWireGuard => "not_wireguard",
            Self::UnknownPeer => "unknown_peer",
            Self::Auth => "auth",
            Self::Replay => "replay",
            Self::NoSession => "no_session",
            Self::UnderLoad => "under_load",
            Self::Expired => "expired",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::NoRoute => "no_route",
            Self::NoPath => "no_path",
            Self::BadPacket => "bad_packet",
            Self::QueueFull => "queue_full",
            Self::Internal => "internal",
            Self::DiscoLimited => "disco_rate_limited",
            Self::FairShare => "fair_share",
            Self::Wasteful => "wasteful",
        }
    }
}
