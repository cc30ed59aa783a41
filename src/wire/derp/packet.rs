//! Packet frame bodies: SendPacket (0x04), RecvPacket (0x05), ForwardPacket (0x0a).
//!
//! ```text
//! SendPacket     destination key (32) | packet (≤ 64 KiB)
//! RecvPacket     source key (32)      | packet            (protocol version 2 layout)
//! ForwardPacket  source key (32) | destination key (32) | packet (≤ 64 KiB)
//! ```

use super::KEY_LEN;
use super::frame::{Body, FrameErrorKind, key_at};
use crate::wire::key::NodePublic;
use bytes::BufMut;

const SHORT: FrameErrorKind = FrameErrorKind::TooShort {
    min: KEY_LEN as u32,
};

/// A client asks the server to deliver `packet` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendPacket<'a> {
    /// The destination's public key.
    pub dst: NodePublic,
    /// The payload, opaque to DERP (a WireGuard datagram for us).
    pub packet: &'a [u8],
}

/// Offset of the payload inside a SendPacket or RecvPacket frame, header included; lets
/// a shell slice a received frame's buffer without copying.
pub const PACKET_OFFSET: usize = super::HEADER_LEN + KEY_LEN;

impl<'a> Body<'a> for SendPacket<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        let dst = key_at(body, 0).ok_or(SHORT)?;
        Ok(Self {
            dst,
            packet: body.get(KEY_LEN..).unwrap_or_default(),
        })
    }
    fn body_len(&self) -> usize {
        KEY_LEN + self.packet.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.dst.as_bytes());
        out.put_slice(self.packet);
    }
}

/// The server delivers `packet`, sent by `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvPacket<'a> {
    /// The sender's public key.
    pub src: NodePublic,
    /// The payload.
    pub packet: &'a [u8],
}

impl<'a> Body<'a> for RecvPacket<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        let src = key_at(body, 0).ok_or(SHORT)?;
        Ok(Self {
            src,
            packet: body.get(KEY_LEN..).unwrap_or_default(),
        })
    }
    fn body_len(&self) -> usize {
        KEY_LEN + self.packet.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.src.as_bytes());
        out.put_slice(self.packet);
    }
}

/// A mesh peer hands over a packet from one of its clients (`src`) for one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardPacket<'a> {
    /// The original sender.
    pub src: NodePublic,
    /// The destination, a client of the receiving server.
    pub dst: NodePublic,
    /// The payload.
    pub packet: &'a [u8],
}

impl<'a> Body<'a> for ForwardPacket<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        let short = FrameErrorKind::TooShort {
            min: 2 * KEY_LEN as u32,
        };
        let src = key_at(body, 0).ok_or(short)?;
        let dst = key_at(body, KEY_LEN).ok_or(short)?;
        Ok(Self {
            src,
            dst,
            packet: body.get(2 * KEY_LEN..).unwrap_or_default(),
        })
    }
    fn body_len(&self) -> usize {
        2 * KEY_LEN + self.packet.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.src.as_bytes());
        out.put_slice(self.dst.as_bytes());
        out.put_slice(self.packet);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Frame, FrameType, MAX_PACKET_SIZE};
    use super::*;

    fn fixture(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }
    fn k(b: u8) -> NodePublic {
        NodePublic::from_bytes([b; 32])
    }

    // type 0x04, length 35, destination key 0x11.., payload "abc".
    const SEND: &str = "04 00000023
        1111111111111111111111111111111111111111111111111111111111111111 616263";
    // type 0x05, length 34, source key 0x22.., payload "hi".
    const RECV: &str = "05 00000022
        2222222222222222222222222222222222222222222222222222222222222222 6869";
    // type 0x0a, length 65, source 0x33.., destination 0x44.., payload 0xff.
    const FORWARD: &str = "0a 00000041
        3333333333333333333333333333333333333333333333333333333333333333
        4444444444444444444444444444444444444444444444444444444444444444 ff";

    #[test]
    fn test_parse() {
        let b = fixture(SEND);
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        assert_eq!(
            f,
            Frame::SendPacket(SendPacket {
                dst: k(0x11),
                packet: b"abc"
            })
        );
        assert_eq!(&b[PACKET_OFFSET..], b"abc");
        let b = fixture(RECV);
        let f = Frame::parse_frame(&b, Direction::ServerToClient).unwrap();
        assert_eq!(
            f,
            Frame::RecvPacket(RecvPacket {
                src: k(0x22),
                packet: b"hi"
            })
        );
        let b = fixture(FORWARD);
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        let want = ForwardPacket {
            src: k(0x33),
            dst: k(0x44),
            packet: &[0xff],
        };
        assert_eq!(f, Frame::ForwardPacket(want));
    }

    #[test]
    fn test_emit() {
        let f = Frame::SendPacket(SendPacket {
            dst: k(0x11),
            packet: b"abc",
        });
        assert_eq!(f.to_vec().unwrap(), fixture(SEND));
        let f = Frame::RecvPacket(RecvPacket {
            src: k(0x22),
            packet: b"hi",
        });
        assert_eq!(f.to_vec().unwrap(), fixture(RECV));
        let f = Frame::ForwardPacket(ForwardPacket {
            src: k(0x33),
            dst: k(0x44),
            packet: &[0xff],
        });
        assert_eq!(f.to_vec().unwrap(), fixture(FORWARD));
    }

    #[test]
    fn size_limits() {
        let body = vec![0u8; KEY_LEN + MAX_PACKET_SIZE];
        assert!(Frame::parse(FrameType::SendPacket, &body, Direction::ClientToServer).is_ok());
        let body = vec![0u8; KEY_LEN + MAX_PACKET_SIZE + 1];
        let e = Frame::parse(FrameType::SendPacket, &body, Direction::ClientToServer);
        assert!(matches!(e, Err(e) if matches!(e.kind, FrameErrorKind::TooLarge { .. })));
        let e = Frame::parse(FrameType::SendPacket, &[0; 31], Direction::ClientToServer);
        assert!(matches!(e, Err(e) if e.kind == SHORT));
        let e = Frame::parse(
            FrameType::ForwardPacket,
            &[0; 63],
            Direction::ClientToServer,
        );
        assert!(e.is_err());
        // An empty payload is legal.
        let f = Frame::parse(FrameType::RecvPacket, &[1; 32], Direction::ServerToClient);
        assert_eq!(
            f,
            Ok(Frame::RecvPacket(RecvPacket {
                src: k(1),
                packet: &[]
            }))
        );
    }
}
