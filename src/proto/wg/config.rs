//! Device and peer configuration.

use crate::wire::addr::IpCidr;
use crate::wire::key::NodePublic;
use std::net::SocketAddr;

/// Receiver indices are 24 bits (boringtun shifts them left by 8 for session slots).
pub(crate) const MAX_PEERS: usize = 1 << 24;

/// Errors from configuring the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The peer table is full.
    #[error("too many peers (limit {MAX_PEERS})")]
    TooManyPeers,
    /// A peer cannot be our own key.
    #[error("a peer cannot use the device's own key")]
    OwnKey,
}

/// One peer's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key.
    pub public: NodePublic,
    /// Optional pre-shared key (wg `PresharedKey`).
    pub preshared_key: Option<[u8; 32]>,
    /// Source addresses accepted from the peer and destinations routed to it.
    pub allowed_ips: Vec<IpCidr>,
    /// A fixed UDP endpoint (wg-quick `Endpoint`); roams to the last authenticated source.
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive at least this often, in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The DERP region the peer is reachable through (its home region).
    pub derp_region: Option<u16>,
    /// UDP addresses the peer advertises; probed for a direct path.
    pub candidates: Vec<SocketAddr>,
    /// Never use a direct path to this peer.
    pub relay_only: bool,
}

impl PeerConfig {
    /// A peer with only a key: no addresses, no path.
    pub fn new(public: NodePublic) -> Self {
        Self {
            public,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            derp_region: None,
            candidates: Vec::new(),
            relay_only: false,
        }
    }
}
