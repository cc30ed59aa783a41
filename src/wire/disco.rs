//! Path discovery messages: ping, pong and call-me-maybe, sealed between two nodes.
//!
//! They share the WireGuard UDP socket and travel over DERP too, so they start with a
//! magic that neither WireGuard (type 1–4, then three zero bytes) nor STUN (top two bits
//! zero, magic cookie at 4..8) can begin with:
//!
//! ```text
//! magic "AW🔗" (6) | sender node key (32) | nonce (24) | tag (16) | ciphertext
//! plaintext: type (1) | version (1) = 0 | body
//!   ping (1):          txid (12)
//!   pong (2):          txid (12) | address the ping came from (16, IPv4 mapped) | port (2)
//!   call-me-maybe (3): up to 32 × (address (16) | port (2))
//! ```
//!
//! The box is NaCl's `crypto_box` between the two nodes' WireGuard static keys, as in the
//! DERP login messages. Only a node holding a peer's private key can make us answer or
//! probe: an unauthenticated sender cannot aim our probes at an address of its choice.
//! Unknown message types are refused; a newer version of a known type is accepted and
//! extra body bytes ignored, so the format can grow.

use crate::wire::key::{NodePrivate, NodePublic};
use crypto_box::aead::AeadInPlace;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// The first six bytes of every discovery message.
pub const MAGIC: [u8; 6] = *b"AW\xf0\x9f\x94\x97";
/// Magic plus the sender's key.
pub const HEADER_LEN: usize = MAGIC.len() + 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// The most endpoints a call-me-maybe carries.
pub const MAX_ENDPOINTS: usize = 32;
/// A ping's transaction id.
pub type TxId = [u8; 12];
const ADDR_LEN: usize = 18;
/// The largest message: a full call-me-maybe.
pub const MAX_LEN: usize = OVERHEAD + 2 + MAX_ENDPOINTS * ADDR_LEN;

/// A discovery message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Are you there over this path? Answered with a pong to wherever it came from.
    Ping {
        /// Echoed in the pong.
        txid: TxId,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's transaction id.
        txid: TxId,
        /// Where the ping came from, as the answering node saw it (our reflexive address
        /// toward it, for pings over UDP).
        src: SocketAddr,
    },
    /// "Probe me at these addresses now": sent over DERP to start a simultaneous probe
    /// from both sides, which is what opens two NATs.
    CallMeMaybe {
        /// The sender's candidate endpoints.
        endpoints: Vec<SocketAddr>,
    },
}

/// Why bytes are not a discovery message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DiscoError {
    /// No discovery magic, or too short for a sealed message.
    #[error("not a discovery message")]
    NotDisco,
    /// Longer than the largest message.
    #[error("discovery message too large")]
    TooLarge,
    /// The box did not open: not from the key it names, or corrupted.
    #[error("discovery message does not open with these keys")]
    BadBox,
    /// The plaintext is not a message of a known type and layout.
    #[error("malformed discovery message")]
    Malformed,
    /// Sealing failed; never caused by input.
    #[error("cannot seal discovery message")]
    Seal,
}

/// Whether `d` starts like a discovery message (a cheap test for demultiplexing).
pub fn is_disco(d: &[u8]) -> bool {
    d.len() >= OVERHEAD + 2 && d.starts_with(&MAGIC)
}

/// The sender key a message claims (authenticated only once [`Opener::open`] succeeds).
///
/// # Errors
/// [`DiscoError::NotDisco`].
pub fn sender(d: &[u8]) -> Result<NodePublic, DiscoError> {
    if !is_disco(d) {
        return Err(DiscoError::NotDisco);
    }
    NodePublic::from_slice(&d[MAGIC.len()..HEADER_LEN]).ok_or(DiscoError::NotDisco)
}

/// The shared box between us and one peer. Building it costs a Diffie-Hellman, so the
/// device keeps one per peer and a flood of messages costs only their authentication.
pub struct Opener {
    boxed: SalsaBox,
    ours: NodePublic,
    theirs: NodePublic,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("theirs", &self.theirs)
            .finish()
    }
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn get_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
    let ip = Ipv6Addr::from(ip);
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    Some(SocketAddr::new(ip, port))
}

impl Message {
    /// The plaintext body (type, version, fields), before sealing.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Self::Ping { txid } => {
                out.extend_from_slice(&[1, 0]);
                out.extend_from_slice(txid);
            }
            Self::Pong { txid, src } => {
                out.extend_from_slice(&[2, 0]);
                out.extend_from_slice(txid);
                put_addr(&mut out, src);
            }
            Self::CallMeMaybe { endpoints } => {
                out.extend_from_slice(&[3, 0]);
                for e in endpoints.iter().take(MAX_ENDPOINTS) {
                    put_addr(&mut out, e);
                }
            }
        }
        out
    }

    /// Parses an opened plaintext body.
    ///
    /// # Errors
    /// [`DiscoError::Malformed`].
    pub fn decode(pt: &[u8]) -> Result<Self, DiscoError> {
        let (&kind, rest) = pt.split_first().ok_or(DiscoError::Malformed)?;
        let (_version, body) = rest.split_first().ok_or(DiscoError::Malformed)?;
        let txid = |b: &[u8]| -> Result<TxId, DiscoError> {
            b.get(..12)
                .and_then(|t| t.try_into().ok())
                .ok_or(DiscoError::Malformed)
        };
        match kind {
            1 => Ok(Self::Ping { txid: txid(body)? }),
            2 => {
                let src = body
                    .get(12..)
                    .and_then(get_addr)
                    .ok_or(DiscoError::Malformed)?;
                Ok(Self::Pong {
                    txid: txid(body)?,
                    src,
                })
            }
            3 => {
                if body.len() % ADDR_LEN != 0 || body.len() / ADDR_LEN > MAX_ENDPOINTS {
                    return Err(DiscoError::Malformed);
                }
                let endpoints = body.chunks_exact(ADDR_LEN).filter_map(get_addr).collect();
                Ok(Self::CallMeMaybe { endpoints })
            }
            _ => Err(DiscoError::Malformed),
        }
    }
}

impl Opener {
    /// The box between `ours` and `theirs`.
    pub fn new(ours: &NodePrivate, theirs: NodePublic) -> Self {
        Self {
            boxed: SalsaBox::new(
                &PublicKey::from(*theirs.as_bytes()),
                &SecretKey::from(*ours.as_bytes()),
            ),
            ours: ours.public(),
            theirs,
        }
    }

    /// The peer this box talks to.
    pub fn peer(&self) -> NodePublic {
        self.theirs
    }

    /// Seals `msg` for the peer. `nonce` must be fresh random bytes for every message.
    ///
    /// # Errors
    /// [`DiscoError::Seal`], never for messages of protocol size.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], msg: &Message) -> Result<Vec<u8>, DiscoError> {
        let mut ct = msg.encode();
        let tag = self
            .boxed
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut ct)
            .map_err(|_| DiscoError::Seal)?;
        let mut out = Vec::with_capacity(OVERHEAD + ct.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.ours.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a message the peer sealed to us.
    ///
    /// # Errors
    /// [`DiscoError::NotDisco`] for other traffic or another sender, `TooLarge`, `BadBox`
    /// for a forgery or corruption, `Malformed` for an unknown type or layout.
    pub fn open(&self, d: &[u8]) -> Result<Message, DiscoError> {
        if sender(d)? != self.theirs {
            return Err(DiscoError::NotDisco);
        }
        if d.len() > MAX_LEN {
            return Err(DiscoError::TooLarge);
        }
        let nonce = &d[HEADER_LEN..HEADER_LEN + NONCE_LEN];
        let tag = &d[HEADER_LEN + NONCE_LEN..OVERHEAD];
        let mut pt = d[OVERHEAD..].to_vec();
        self.boxed
            .decrypt_in_place_detached(Nonce::from_slice(nonce), b"", &mut pt, tag.into())
            .map_err(|_| DiscoError::BadBox)?;
        Message::decode(&pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Opener, Opener) {
        let a = NodePrivate::generate();
        let b = NodePrivate::generate();
        (Opener::new(&a, b.public()), Opener::new(&b, a.public()))
    }

    #[test]
    fn every_message_round_trips() {
        let (a, b) = pair();
        let msgs = [
            Message::Ping { txid: [7; 12] },
            Message::Pong {
                txid: [9; 12],
                src: "203.0.113.5:41641".parse().unwrap(),
            },
            Message::Pong {
                txid: [1; 12],
                src: "[2001:db8::1]:9".parse().unwrap(),
            },
            Message::CallMeMaybe {
                endpoints: vec![
                    "192.0.2.1:1".parse().unwrap(),
                    "[2001:db8::2]:65535".parse().unwrap(),
                ],
            },
            Message::CallMeMaybe { endpoints: vec![] },
        ];
        for m in msgs {
            let sealed = a.seal([3; 24], &m).unwrap();
            assert!(is_disco(&sealed));
            assert!(sealed.len() <= MAX_LEN);
            assert_eq!(sender(&sealed).unwrap(), a.ours);
            assert_eq!(b.open(&sealed).unwrap(), m);
        }
    }

    #[test]
    fn forgeries_and_strangers_are_refused() {
        let (a, b) = pair();
        let (c, _) = pair();
        let ping = Message::Ping { txid: [1; 12] };
        let mut sealed = a.seal([0; 24], &ping).unwrap();
        // A third node's message opened as if from `a`.
        assert_eq!(
            b.open(&c.seal([0; 24], &ping).unwrap()),
            Err(DiscoError::NotDisco)
        );
        // Claiming to be `a` without its key.
        let mut forged = c.seal([0; 24], &ping).unwrap();
        forged[MAGIC.len()..HEADER_LEN].copy_from_slice(a.ours.as_bytes());
        assert_eq!(b.open(&forged), Err(DiscoError::BadBox));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(b.open(&sealed), Err(DiscoError::BadBox));
        assert!(!is_disco(&[1, 0, 0, 0]));
        assert!(!is_disco(&MAGIC));
    }

    #[test]
    fn oversized_or_unknown_bodies_are_refused() {
        let (a, b) = pair();
        let big = Message::CallMeMaybe {
            endpoints: vec!["192.0.2.1:1".parse().unwrap(); MAX_ENDPOINTS + 5],
        };
        // Encoding caps at the limit, so what we send always opens.
        let sealed = a.seal([0; 24], &big).unwrap();
        let Message::CallMeMaybe { endpoints } = b.open(&sealed).unwrap() else {
            panic!("not a call-me-maybe");
        };
        assert_eq!(endpoints.len(), MAX_ENDPOINTS);
        assert_eq!(Message::decode(&[9, 0]), Err(DiscoError::Malformed));
        assert_eq!(Message::decode(&[1, 0, 1, 2]), Err(DiscoError::Malformed));
        assert_eq!(Message::decode(&[3, 0, 1]), Err(DiscoError::Malformed));
        // A newer ping version with extra bytes is still a ping.
        assert_eq!(
            Message::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 99]),
            Ok(Message::Ping { txid: [0; 12] })
        );
        let mut long = vec![0u8; MAX_LEN + 1];
        long[..6].copy_from_slice(&MAGIC);
        long[6..38].copy_from_slice(a.ours.as_bytes());
        assert_eq!(b.open(&long), Err(DiscoError::TooLarge));
    }

    #[test]
    fn no_input_panics() {
        let (a, b) = pair();
        let sealed = a.seal([5; 24], &Message::Ping { txid: [2; 12] }).unwrap();
        for n in 0..=sealed.len() {
            let _ = b.open(&sealed[..n]);
            let _ = sender(&sealed[..n]);
        }
        for n in 0..40 {
            let _ = Message::decode(&vec![3u8; n]);
            let _ = Message::decode(&vec![2u8; n]);
        }
    }
}
