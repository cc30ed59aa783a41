//! The 5-byte frame header: type byte, then the body length as a big-endian u32.

use super::HEADER_LEN;

/// A DERP frame type. Codes we do not know are kept as [`FrameType::Unknown`] so they
/// can be skipped (both Go peers skip unknown frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0x01, server → client: magic + server public key.
    ServerKey,
    /// 0x02, client → server: client public key + nonce + box(JSON).
    ClientInfo,
    /// 0x03, server → client: nonce + box(JSON).
    ServerInfo,
    /// 0x04, client → server: destination key + packet.
    SendPacket,
    /// 0x05, server → client: source key + packet.
    RecvPacket,
    /// 0x06, server → client: empty keep-alive.
    KeepAlive,
    /// 0x07, client → server: one byte, whether this is the client's home region.
    NotePreferred,
    /// 0x08, server → client: a peer is gone, with a reason byte.
    PeerGone,
    /// 0x09, server → mesh watcher: a peer is connected.
    PeerPresent,
    /// 0x0a, mesh client → server: source key + destination key + packet.
    ForwardPacket,
    /// 0x10, mesh client → server: subscribe to connection changes.
    WatchConns,
    /// 0x11, mesh client → server: close a peer's connection.
    ClosePeer,
    /// 0x12, both ways: 8 bytes to echo.
    Ping,
    /// 0x13, both ways: the echoed 8 bytes.
    Pong,
    /// 0x14, server → client: UTF-8 problem text, empty when healthy.
    Health,
    /// 0x15, server → client: reconnect-in and try-for, milliseconds.
    Restarting,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for FrameType {
    fn from(b: u8) -> Self {
        match b {
            0x01 => Self::ServerKey,
            0x02 => Self::ClientInfo,
            0x03 => Self::ServerInfo,
            0x04 => Self::SendPacket,
            0x05 => Self::RecvPacket,
            0x06 => Self::KeepAlive,
            0x07 => Self::NotePreferred,
            0x08 => Self::PeerGone,
            0x09 => Self::PeerPresent,
            0x0a => Self::ForwardPacket,
            0x10 => Self::WatchConns,
            0x11 => Self::ClosePeer,
            0x12 => Self::Ping,
            0x13 => Self::Pong,
            0x14 => Self::Health,
            0x15 => Self::Restarting,
            other => Self::Unknown(other),
        }
    }
}

impl From<FrameType> for u8 {
    fn from(t: FrameType) -> u8 {
        match t {
            FrameType::ServerKey => 0x01,
            FrameType::ClientInfo => 0x02,
            FrameType::ServerInfo => 0x03,
            FrameType::SendPacket => 0x04,
            FrameType::RecvPacket => 0x05,
            FrameType::KeepAlive => 0x06,
            FrameType::NotePreferred => 0x07,
            FrameType::PeerGone => 0x08,
            FrameType::PeerPresent => 0x09,
            FrameType::ForwardPacket => 0x0a,
            FrameType::WatchConns => 0x10,
            FrameType::ClosePeer => 0x11,
            FrameType::Ping => 0x12,
            FrameType::Pong => 0x13,
            FrameType::Health => 0x14,
            FrameType::Restarting => 0x15,
            FrameType::Unknown(b) => b,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub ty: FrameType,
    /// The body length, not counting the header.
    pub len: u32,
}

impl FrameHeader {
    /// Reads a header from the start of `buf`; `None` if fewer than 5 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let [ty, l0, l1, l2, l3] = *h;
        Some(Self {
            ty: FrameType::from(ty),
            len: u32::from_be_bytes([l0, l1, l2, l3]),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        [u8::from(self.ty), l0, l1, l2, l3]
    }

    /// The whole frame's length: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse() {
        let h = FrameHeader::parse(&hex::decode("0400000024ff").unwrap()).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                ty: FrameType::SendPacket,
                len: 0x24
            }
        );
        assert_eq!(h.frame_len(), 41);
        assert_eq!(FrameHeader::parse(&[4, 0, 0, 0]), None);
        let u = FrameHeader::parse(&hex::decode("7fffffffff").unwrap()).unwrap();
        assert_eq!(
            u,
            FrameHeader {
                ty: FrameType::Unknown(0x7f),
                len: u32::MAX
            }
        );
    }

    #[test]
    fn test_emit() {
        let h = FrameHeader {
            ty: FrameType::Restarting,
            len: 8,
        };
        assert_eq!(hex::encode(h.to_bytes()), "1500000008");
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(u8::from(FrameType::from(b)), b);
        }
    }
}
