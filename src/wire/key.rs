//! Curve25519 keys. A node's WireGuard static key is also its DERP identity.
//!
//! Text forms: base64 (as `wg` prints them) for configuration and the coordinator
//! protocol; lowercase hex where DERP uses hex (`Derp-Public-Key`) and in `nodekey:` form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key string did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// Not valid base64 or hex.
    #[error("key is not valid base64 or hex")]
    Encoding,
    /// Decoded to the wrong number of bytes.
    #[error("key must be 32 bytes")]
    Length,
}

fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let s = s.trim();
    let s = s.strip_prefix("nodekey:").unwrap_or(s);
    let bytes = if s.len() == 2 * KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).map_err(|_| KeyError::Encoding)?
    } else {
        B64.decode(s).map_err(|_| KeyError::Encoding)?
    };
    bytes.try_into().map_err(|_| KeyError::Length)
}

/// A node's public key: its WireGuard static public key and DERP address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePublic([u8; KEY_LEN]);

impl NodePublic {
    /// Wraps raw key bytes.
    pub const fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        Self(b)
    }
    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// Reads a key from the first 32 bytes of `b`, if there are that many.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..KEY_LEN)?.try_into().ok().map(Self)
    }
    /// Base64, as `wg` prints keys.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    /// Lowercase hex, as DERP headers carry keys.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// A short form for logs: the first 8 base64 characters.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

impl fmt::Display for NodePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for NodePublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublic({})", self.short())
    }
}

impl FromStr for NodePublic {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

impl serde::Serialize for NodePublic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for NodePublic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's private key. `Debug` never prints it.
#[derive(Clone)]
pub struct NodePrivate([u8; KEY_LEN]);

impl NodePrivate {
    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        let mut b = [0u8; KEY_LEN];
        rand::fill(&mut b);
        Self::from_bytes(b)
    }
    /// Wraps raw bytes, clamping them as X25519 requires.
    pub fn from_bytes(mut b: [u8; KEY_LEN]) -> Self {
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        Self(b)
    }
    /// The raw (clamped) key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// The matching public key.
    pub fn public(&self) -> NodePublic {
        let secret = boringtun::x25519::StaticSecret::from(self.0);
        NodePublic(boringtun::x25519::PublicKey::from(&secret).to_bytes())
    }
    /// The key in the form boringtun takes.
    pub fn to_static_secret(&self) -> boringtun::x25519::StaticSecret {
        boringtun::x25519::StaticSecret::from(self.0)
    }
    /// Base64, as `wg genkey` prints it. Handle with care: this is the secret.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl fmt::Debug for NodePrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePrivate(pub {})", self.public().short())
    }
}

impl FromStr for NodePrivate {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self::from_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wg_genkey_pubkey_vector() {
        // `echo <priv> | wg pubkey`
        let private: NodePrivate = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
            .parse()
            .unwrap();
        assert_eq!(
            private.public().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn hex_and_base64_agree() {
        let k = NodePrivate::generate().public();
        assert_eq!(k.to_hex().parse::<NodePublic>().unwrap(), k);
        assert_eq!(k.to_base64().parse::<NodePublic>().unwrap(), k);
        assert_eq!(
            format!("nodekey:{}", k.to_hex())
                .parse::<NodePublic>()
                .unwrap(),
            k
        );
    }

    #[test]
    fn bad_keys_are_errors() {
        assert_eq!("abc".parse::<NodePublic>(), Err(KeyError::Encoding));
        assert_eq!("AAAA".parse::<NodePublic>(), Err(KeyError::Length));
    }

    #[test]
    fn private_debug_is_redacted() {
        let k = NodePrivate::generate();
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }
}
