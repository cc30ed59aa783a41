//! WireGuard message framing: the type word and the receiver index, enough to route a
//! datagram to the right peer before any cryptography runs.
//!
//! Layouts (all little-endian; the first 4 bytes are the type plus three zero bytes):
//! initiation 148 B, response 92 B, cookie reply 64 B, transport ≥ 32 B
//! (receiver index, counter, ciphertext and tag).

use super::WireError;

/// Handshake initiation size.
pub const INITIATION_LEN: usize = 148;
/// Handshake response size.
pub const RESPONSE_LEN: usize = 92;
/// Cookie reply size.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Transport header plus tag: a keepalive is exactly this long.
pub const TRANSPORT_OVERHEAD: usize = 32;
/// The largest datagram the device accepts: one IP packet of at most 64 KiB plus overhead.
pub const MAX_DATAGRAM: usize = 65535 + TRANSPORT_OVERHEAD;

/// The four WireGuard message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Type 1: starts a handshake; carries the sender's index, not ours.
    Initiation,
    /// Type 2: answers our initiation; carries our index.
    Response,
    /// Type 3: rate-limit cookie for a handshake of ours.
    CookieReply,
    /// Type 4: encrypted data or keepalive.
    Transport,
}

/// A checked view of a WireGuard datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgHeader {
    /// What kind of message this is.
    pub kind: MessageKind,
    /// The index we assigned, for responses, cookie replies and transport messages.
    pub receiver_idx: Option<u32>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(w))
}

impl WgHeader {
    /// Classifies a datagram and checks its size for its kind.
    ///
    /// # Errors
    /// [`WireError::Malformed`] for an unknown type, non-zero reserved bytes or a size
    /// that does not match the kind; [`WireError::TooLarge`] past [`MAX_DATAGRAM`].
    pub fn parse(d: &[u8]) -> Result<Self, WireError> {
        if d.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge);
        }
        let ty = le32(d, 0).ok_or(WireError::Malformed)?;
        let (kind, ok) = match ty {
            1 => (MessageKind::Initiation, d.len() == INITIATION_LEN),
            2 => (MessageKind::Response, d.len() == RESPONSE_LEN),
            3 => (MessageKind::CookieReply, d.len() == COOKIE_REPLY_LEN),
            4 => (MessageKind::Transport, d.len() >= TRANSPORT_OVERHEAD),
            _ => return Err(WireError::Malformed),
        };
        if !ok {
            return Err(WireError::Malformed);
        }
        let receiver_idx = match kind {
            MessageKind::Initiation => None,
            MessageKind::Response => le32(d, 8),
            MessageKind::CookieReply | MessageKind::Transport => le32(d, 4),
        };
        Ok(Self { kind, receiver_idx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_kinds() {
        let mut init = vec![0u8; INITIATION_LEN];
        init[0] = 1;
        assert_eq!(
            WgHeader::parse(&init).unwrap().kind,
            MessageKind::Initiation
        );
        let mut resp = vec![0u8; RESPONSE_LEN];
        resp[0] = 2;
        resp[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(
            WgHeader::parse(&resp).unwrap().receiver_idx,
            Some(0x0102_0304)
        );
        let mut data = vec![0u8; 80];
        data[0] = 4;
        data[4] = 7;
        let h = WgHeader::parse(&data).unwrap();
        assert_eq!((h.kind, h.receiver_idx), (MessageKind::Transport, Some(7)));
    }

    #[test]
    fn test_parse_rejects() {
        assert!(WgHeader::parse(&[]).is_err());
        assert!(WgHeader::parse(&[4, 0, 0]).is_err());
        let mut short = vec![0u8; 31];
        short[0] = 4;
        assert!(WgHeader::parse(&short).is_err());
        let mut reserved = vec![0u8; 64];
        reserved[0] = 4;
        reserved[1] = 1;
        assert!(WgHeader::parse(&reserved).is_err());
        let mut wrong_len = vec![0u8; 149];
        wrong_len[0] = 1;
        assert!(WgHeader::parse(&wrong_len).is_err());
        // Disco magic "TS💬" must never look like WireGuard.
        assert!(WgHeader::parse(b"TS\xf0\x9f\x92\xac0123456789012345678901234567890123").is_err());
    }
}
