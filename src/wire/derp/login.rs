//! Login frame bodies: ServerKey (0x01), ClientInfo (0x02), ServerInfo (0x03).
//!
//! ```text
//! ServerKey   magic "DERP🔑" (8) | server public key (32) | future bytes (ignored)
//! ClientInfo  client public key (32) | nonce (24) | box(JSON)
//! ServerInfo  nonce (24) | box(JSON)
//! ```
//!
//! The sealed parts (`nonce | box`) are opened in [`super::info`].

use super::frame::{Body, FrameErrorKind, key_at};
use super::{KEY_LEN, MAGIC};
use crate::wire::key::NodePublic;
use bytes::BufMut;

/// The server's greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerKey<'a> {
    /// The server's public key: the key the client seals ClientInfo to.
    pub key: NodePublic,
    /// Bytes after the key, reserved for future use; clients ignore them.
    pub extra: &'a [u8],
}

impl<'a> Body<'a> for ServerKey<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        if body.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(FrameErrorKind::BadMagic);
        }
        let key = key_at(body, MAGIC.len()).ok_or(FrameErrorKind::TooShort {
            min: (MAGIC.len() + KEY_LEN) as u32,
        })?;
        let extra = body.get(MAGIC.len() + KEY_LEN..).unwrap_or_default();
        Ok(Self { key, extra })
    }
    fn body_len(&self) -> usize {
        MAGIC.len() + KEY_LEN + self.extra.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&MAGIC);
        out.put_slice(self.key.as_bytes());
        out.put_slice(self.extra);
    }
}

/// The client's login: its key and the sealed [`super::ClientInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfoFrame<'a> {
    /// The client's public key: its identity and the key its packets are addressed to.
    pub key: NodePublic,
    /// Nonce followed by the box; opened with [`super::ClientInfo::open`].
    pub sealed: &'a [u8],
}

impl<'a> Body<'a> for ClientInfoFrame<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        let key = key_at(body, 0).ok_or(FrameErrorKind::TooShort {
            min: KEY_LEN as u32,
        })?;
        Ok(Self {
            key,
            sealed: body.get(KEY_LEN..).unwrap_or_default(),
        })
    }
    fn body_len(&self) -> usize {
        KEY_LEN + self.sealed.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.key.as_bytes());
        out.put_slice(self.sealed);
    }
}

/// The server's login reply: the sealed [`super::ServerInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfoFrame<'a> {
    /// Nonce followed by the box; opened with [`super::ServerInfo::open`].
    pub sealed: &'a [u8],
}

impl<'a> Body<'a> for ServerInfoFrame<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self { sealed: body })
    }
    fn body_len(&self) -> usize {
        self.sealed.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.sealed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Frame, FrameType};
    use super::*;

    const KEY_HEX: &str = "1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c";

    fn key() -> NodePublic {
        NodePublic::from_slice(&hex::decode(KEY_HEX).unwrap()).unwrap()
    }

    fn fixture(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    // type 0x01, length 40, magic, key.
    const SERVER_KEY: &str = "01 00000028 44455250f09f9491
        1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c";

    #[test]
    fn test_parse_server_key() {
        let b = fixture(SERVER_KEY);
        let f = Frame::parse_frame(&b, Direction::ServerToClient).unwrap();
        assert_eq!(
            f,
            Frame::ServerKey(ServerKey {
                key: key(),
                extra: &[]
            })
        );
        // Future servers may append bytes; they are kept, not rejected.
        let mut longer = b.clone();
        longer[4] += 2;
        longer.extend_from_slice(&[9, 9]);
        let f = Frame::parse_frame(&longer, Direction::ServerToClient).unwrap();
        assert_eq!(
            f,
            Frame::ServerKey(ServerKey {
                key: key(),
                extra: &[9, 9]
            })
        );
        // Wrong magic.
        let mut bad = b;
        bad[5] = b'X';
        let e = Frame::parse_frame(&bad, Direction::ServerToClient).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::BadMagic);
    }

    #[test]
    fn test_emit_server_key() {
        let f = Frame::ServerKey(ServerKey {
            key: key(),
            extra: &[],
        });
        assert_eq!(f.to_vec().unwrap(), fixture(SERVER_KEY));
    }

    const CLIENT_INFO: &str = "02 00000039
        1c8828f7137324c58b2804928624ea2326f1674537c062e251e2753ca7fcca4c
        000102030405060708090a0b0c0d0e0f1011121314151617 ff";

    #[test]
    fn test_parse_client_info() {
        let b = fixture(CLIENT_INFO);
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        let Frame::ClientInfo(ci) = f else {
            panic!("{f:?}")
        };
        assert_eq!(ci.key, key());
        assert_eq!(ci.sealed.len(), 25);
        assert_eq!(f.to_vec().unwrap(), b);
        // Shorter than key + nonce.
        let e = Frame::parse(FrameType::ClientInfo, &b[5..60], Direction::ClientToServer);
        assert!(matches!(e, Err(e) if e.kind == FrameErrorKind::TooShort { min: 56 }));
    }

    #[test]
    fn test_emit_server_info() {
        let sealed = [7u8; 24];
        let f = Frame::ServerInfo(ServerInfoFrame { sealed: &sealed });
        let v = f.to_vec().unwrap();
        assert_eq!(hex::encode(&v[..5]), "0300000018");
        assert_eq!(
            Frame::parse_frame(&v, Direction::ServerToClient).unwrap(),
            f
        );
        let e = Frame::parse(
            FrameType::ServerInfo,
            &sealed[..23],
            Direction::ServerToClient,
        );
        assert!(e.is_err());
    }
}
