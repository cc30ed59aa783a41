//! Peer-state frame bodies: PeerGone (0x08), PeerPresent (0x09), ClosePeer (0x11).
//!
//! ```text
//! PeerGone     peer key (32) [| reason (1)]            old servers omit the reason
//! PeerPresent  peer key (32) [| IPv6 or v4-mapped IP (16) | port (2, BE) [| flags (1)]]
//! ClosePeer    peer key (32)
//! ```

use super::KEY_LEN;
use super::frame::{Body, FrameErrorKind, key_at};
use crate::wire::key::NodePublic;
use bytes::BufMut;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

const SHORT: FrameErrorKind = FrameErrorKind::TooShort {
    min: KEY_LEN as u32,
};

/// Why the server has no path to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// 0x00: the peer was connected and disconnected.
    Disconnected,
    /// 0x01: the server does not know the peer.
    NotHere,
    /// 0xf0: a mesh link broke; invented locally by Go's mesh client, never sent.
    MeshConnBroke,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for PeerGoneReason {
    fn from(b: u8) -> Self {
        match b {
            0x00 => Self::Disconnected,
            0x01 => Self::NotHere,
            0xf0 => Self::MeshConnBroke,
            b => Self::Unknown(b),
        }
    }
}

impl From<PeerGoneReason> for u8 {
    fn from(r: PeerGoneReason) -> u8 {
        match r {
            PeerGoneReason::Disconnected => 0x00,
            PeerGoneReason::NotHere => 0x01,
            PeerGoneReason::MeshConnBroke => 0xf0,
            PeerGoneReason::Unknown(b) => b,
        }
    }
}

/// The server tells a client that `peer` is gone (or was never here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerGone {
    /// The peer's key.
    pub peer: NodePublic,
    /// The reason byte; `None` from old servers that omit it (meaning disconnected).
    pub reason: Option<PeerGoneReason>,
}

impl PeerGone {
    /// The reason, defaulting as Go does when the byte is missing.
    pub fn reason(&self) -> PeerGoneReason {
        self.reason.unwrap_or(PeerGoneReason::Disconnected)
    }
}

impl Body<'_> for PeerGone {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        let peer = key_at(body, 0).ok_or(SHORT)?;
        Ok(Self {
            peer,
            reason: body.get(KEY_LEN).map(|&b| PeerGoneReason::from(b)),
        })
    }
    fn body_len(&self) -> usize {
        KEY_LEN + usize::from(self.reason.is_some())
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.peer.as_bytes());
        if let Some(r) = self.reason {
            out.put_u8(r.into());
        }
    }
}

/// Bit flags describing a present peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PeerPresentFlags(pub u8);

impl PeerPresentFlags {
    /// An ordinary client.
    pub const REGULAR: Self = Self(1);
    /// A mesh peer (holds the mesh key).
    pub const MESH_PEER: Self = Self(2);
    /// A prober.
    pub const PROBER: Self = Self(4);
    /// The client is not on its ideal node of the region.
    pub const NOT_IDEAL: Self = Self(8);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The server tells a mesh watcher that `key` is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPresent {
    /// The peer's key.
    pub key: NodePublic,
    /// The peer's remote address, if the server sent it (IPv4-mapped addresses are
    /// unmapped). Emitting `None` with flags writes the unspecified address.
    pub endpoint: Option<SocketAddr>,
    /// The flags byte, if the server sent it.
    pub flags: Option<PeerPresentFlags>,
}

const ADDR_LEN: usize = 16 + 2;

impl Body<'_> for PeerPresent {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        let key = key_at(body, 0).ok_or(SHORT)?;
        let endpoint = body.get(KEY_LEN..KEY_LEN + ADDR_LEN).and_then(|a| {
            let (ip, port) = a.split_first_chunk::<16>()?;
            let port = u16::from_be_bytes(port.try_into().ok()?);
            let ip = Ipv6Addr::from(*ip);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(SocketAddr::new(ip, port))
        });
        let flags = match endpoint {
            Some(_) => body.get(KEY_LEN + ADDR_LEN).map(|&f| PeerPresentFlags(f)),
            None => None,
        };
        Ok(Self {
            key,
            endpoint,
            flags,
        })
    }
    fn body_len(&self) -> usize {
        match (self.endpoint, self.flags) {
            (None, None) => KEY_LEN,
            (Some(_), None) => KEY_LEN + ADDR_LEN,
            (_, Some(_)) => KEY_LEN + ADDR_LEN + 1,
        }
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.key.as_bytes());
        if self.endpoint.is_none() && self.flags.is_none() {
            return;
        }
        let (ip, port) = match self.endpoint {
            Some(SocketAddr::V4(a)) => (a.ip().to_ipv6_mapped(), a.port()),
            Some(SocketAddr::V6(a)) => (*a.ip(), a.port()),
            None => (Ipv6Addr::UNSPECIFIED, 0),
        };
        out.put_slice(&ip.octets());
        out.put_u16(port);
        if let Some(f) = self.flags {
            out.put_u8(f.0);
        }
    }
}

/// A mesh peer asks the server to close every connection of `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePeer {
    /// The peer to disconnect.
    pub peer: NodePublic,
}

impl Body<'_> for ClosePeer {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self {
            peer: key_at(body, 0).ok_or(SHORT)?,
        })
    }
    fn body_len(&self) -> usize {
        KEY_LEN
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.peer.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Frame, FrameType};
    use super::*;

    fn fixture(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }
    fn k(b: u8) -> NodePublic {
        NodePublic::from_bytes([b; 32])
    }
    const S2C: Direction = Direction::ServerToClient;

    // type 0x08, length 33, key 0x55.., reason NotHere.
    const GONE: &str = "08 00000021
        5555555555555555555555555555555555555555555555555555555555555555 01";
    // type 0x09, length 51, key 0x66.., ::ffff:192.0.2.1 port 41641, flags Regular.
    const PRESENT: &str = "09 00000033
        6666666666666666666666666666666666666666666666666666666666666666
        00000000000000000000ffffc0000201 a2a9 01";
    // type 0x11, length 32, key 0x77...
    const CLOSE: &str = "11 00000020
        7777777777777777777777777777777777777777777777777777777777777777";

    #[test]
    fn test_parse() {
        let (gone, present, close) = (fixture(GONE), fixture(PRESENT), fixture(CLOSE));
        let f = Frame::parse_frame(&gone, S2C).unwrap();
        let Frame::PeerGone(g) = f else {
            panic!("{f:?}")
        };
        assert_eq!((g.peer, g.reason()), (k(0x55), PeerGoneReason::NotHere));
        let f = Frame::parse_frame(&present, S2C).unwrap();
        let want = PeerPresent {
            key: k(0x66),
            endpoint: Some("192.0.2.1:41641".parse().unwrap()),
            flags: Some(PeerPresentFlags::REGULAR),
        };
        assert_eq!(f, Frame::PeerPresent(want));
        let f = Frame::parse_frame(&close, Direction::ClientToServer).unwrap();
        assert_eq!(f, Frame::ClosePeer(ClosePeer { peer: k(0x77) }));
    }

    #[test]
    fn test_emit() {
        let g = PeerGone {
            peer: k(0x55),
            reason: Some(PeerGoneReason::NotHere),
        };
        assert_eq!(Frame::PeerGone(g).to_vec().unwrap(), fixture(GONE));
        let p = PeerPresent {
            key: k(0x66),
            endpoint: Some("192.0.2.1:41641".parse().unwrap()),
            flags: Some(PeerPresentFlags::REGULAR),
        };
        assert_eq!(Frame::PeerPresent(p).to_vec().unwrap(), fixture(PRESENT));
        assert_eq!(
            Frame::ClosePeer(ClosePeer { peer: k(0x77) })
                .to_vec()
                .unwrap(),
            fixture(CLOSE)
        );
    }

    #[test]
    fn old_server_forms() {
        // PeerGone without a reason byte means Disconnected.
        let f = Frame::parse(FrameType::PeerGone, &[0x55; 32], S2C).unwrap();
        let Frame::PeerGone(g) = f else { panic!() };
        assert_eq!((g.reason, g.reason()), (None, PeerGoneReason::Disconnected));
        assert_eq!(f.frame_len(), 37);
        // PeerPresent with only a key, and with an address but no flags.
        let f = Frame::parse(FrameType::PeerPresent, &[1; 40], S2C).unwrap();
        assert_eq!(
            f,
            Frame::PeerPresent(PeerPresent {
                key: k(1),
                endpoint: None,
                flags: None
            })
        );
        let mut b = vec![1u8; 32];
        b.extend_from_slice(&fixture("20010db8000000000000000000000001 0050"));
        let f = Frame::parse(FrameType::PeerPresent, &b, S2C).unwrap();
        let Frame::PeerPresent(p) = f else { panic!() };
        assert_eq!(p.endpoint, Some("[2001:db8::1]:80".parse().unwrap()));
        assert_eq!(p.flags, None);
        assert_eq!(f.to_vec().unwrap()[5..], b[..]);
        // Short bodies and a ClosePeer of the wrong size are errors.
        assert!(Frame::parse(FrameType::PeerGone, &[0; 31], S2C).is_err());
        assert!(Frame::parse(FrameType::ClosePeer, &[0; 33], Direction::ClientToServer).is_err());
    }

    #[test]
    fn reason_codes_round_trip() {
        for b in 0..=u8::MAX {
            assert_eq!(u8::from(PeerGoneReason::from(b)), b);
        }
        assert!(PeerPresentFlags(3).contains(PeerPresentFlags::MESH_PEER));
    }
}
